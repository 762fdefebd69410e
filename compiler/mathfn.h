/* mathfn.h: exp, log, sigmoid and tanh as inline LLVM IR.
 *
 * Each builder emits, at the builder's position, straight-line IR computing
 * f(x) elementwise, where x is float or <N x float>, and returns a value of
 * x's type. The IR uses only arithmetic, compares, selects, integer ops on
 * the bit pattern, fptosi/sitofp and the llvm.fma / llvm.fabs /
 * llvm.copysign intrinsics, so a loop that calls a builder on scalars still
 * vectorizes (a call to expf or tanhf would stop the loop vectorizer: the
 * C API's pipeline has no vector math library). No fast-math flags are set:
 * the range reductions depend on the exact order of rounding.
 *
 * Error against libm's double-precision functions, as tests/test_mathfn.c
 * measures it over every 61st float bit pattern (70 million inputs) plus
 * the special values; ulp = spacing of floats at the exact result (2^-149
 * below FLT_MIN); "abs" where |f(x)| <= 1. Measured maximum, then the bound
 * the test asserts:
 *
 *   mf_exp      0.86 ulp (<= 1), abs 4.8e-8 (<= 6e-8). +inf for
 *               x > 88.7228; subnormal results (x < -87.34) within the
 *               same ulp bound; 0 for x < -103.97; +inf -> +inf,
 *               -inf -> +0, NaN -> NaN.
 *   mf_log      0.78 ulp (<= 1) for every x > 0, subnormals included;
 *               abs 4.6e-8 (<= 6e-8). log(+-0) = -inf, log(x < 0) = NaN,
 *               log(+inf) = +inf, NaN -> NaN.
 *   mf_sigmoid  1.47 ulp (<= 2), abs 4.5e-8 (<= 6e-8). The error is
 *               relative for x < 0 down into the subnormals
 *               (sigmoid(-100) = 3.7e-44, not 0). Exactly 1 for
 *               x > 17.33, exactly 0 for x < -103.97; +inf -> 1,
 *               -inf -> 0, NaN -> NaN.
 *   mf_tanh     1.30 ulp (<= 1.5), abs 7.7e-8 (<= 1e-7). Odd bit for bit;
 *               tanh(x) == x for |x| < 2^-12 (tanh(1e-10) = 1e-10,
 *               tanh(-0) = -0); exactly +-1 for |x| > 9.01; +-inf -> +-1,
 *               NaN -> NaN.
 *
 * The scalar and vector forms of each builder give the same bits.
 * The module m receives the intrinsic declarations the IR calls. */
#ifndef RNNC_MATHFN_H
#define RNNC_MATHFN_H

#include <llvm-c/Core.h>

LLVMValueRef mf_exp(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef mf_log(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef mf_sigmoid(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x);
LLVMValueRef mf_tanh(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x);

/* Replaces every call of llvm.fma on float or <N x float> in m by the same
 * function in double-precision arithmetic, bit for bit (rounding to odd,
 * see mathfn.c), for a target without a fused multiply-add, where the
 * intrinsic would become a call to libm's fmaf. */
void mf_lower_fma(LLVMModuleRef m);

#endif

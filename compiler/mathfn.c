/* mathfn.c: exp, log, sigmoid and tanh as straight-line LLVM IR (see
 * mathfn.h for the contract and the measured error bounds).
 *
 * Every function is branch-free: special inputs are computed along with
 * the rest and fixed up by selects at the end, so a vector of mixed inputs
 * takes one path. Polynomials and range reductions are Cephes' (Stephen L.
 * Moshier, the single-precision library cephes/single: expf.c, logf.c,
 * tanhf.c), the same ones Eigen's pexp_float / plog_float use; Horner steps
 * are fused multiply-adds. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mathfn.h"

/* The types and handles one builder call works with. A value of "float
 * type" is float or <n x float>; "int type" is i32 or <n x i32>. */
typedef struct MF {
  LLVMModuleRef m;
  LLVMBuilderRef b;
  LLVMContextRef ctx;
  LLVMTypeRef f32, i32; /* element types */
  LLVMTypeRef fty, ity; /* float type and int type of x's shape */
  unsigned n;           /* vector width; 0 for a scalar */
} MF;

static MF mf_begin(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x) {
  MF f = {.m = m, .b = b, .fty = LLVMTypeOf(x)};
  f.ctx = LLVMGetTypeContext(f.fty);
  f.f32 = LLVMFloatTypeInContext(f.ctx);
  f.i32 = LLVMInt32TypeInContext(f.ctx);
  if (LLVMGetTypeKind(f.fty) == LLVMVectorTypeKind) {
    f.n = LLVMGetVectorSize(f.fty);
    f.ity = LLVMVectorType(f.i32, f.n);
  } else {
    f.ity = f.i32;
  }
  /* x is float or <n x float> (fixed width) */
  assert(f.fty == f.f32 || (f.n > 0 && LLVMGetElementType(f.fty) == f.f32));
  return f;
}

static LLVMValueRef splat(MF *f, LLVMValueRef s) {
  if (f->n == 0)
    return s;
  LLVMValueRef *e = malloc(f->n * sizeof *e);
  if (!e)
    abort();
  for (unsigned i = 0; i < f->n; i++)
    e[i] = s;
  LLVMValueRef v = LLVMConstVector(e, f->n);
  free(e);
  return v;
}

/* c is converted to float by rounding; every constant below is written as
 * a float literal, so the conversion is exact. */
static LLVMValueRef cf(MF *f, float c) { return splat(f, LLVMConstReal(f->f32, c)); }
static LLVMValueRef ci(MF *f, int c) {
  return splat(f, LLVMConstInt(f->i32, (unsigned long long)(long long)c, 1));
}

/* Plain IEEE operations: no fast-math flags (see mathfn.h). */
static LLVMValueRef add(MF *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFAdd(f->b, a, b, "");
}
static LLVMValueRef sub(MF *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFSub(f->b, a, b, "");
}
static LLVMValueRef mul(MF *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFMul(f->b, a, b, "");
}
static LLVMValueRef div_(MF *f, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFDiv(f->b, a, b, "");
}
static LLVMValueRef cmp(MF *f, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(f->b, p, a, b, "");
}
static LLVMValueRef sel(MF *f, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(f->b, c, a, b, "");
}

/* A call to an intrinsic overloaded on x's float type. */
static LLVMValueRef intrinsic(MF *f, const char *name, LLVMValueRef *args, unsigned nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  assert(id != 0); /* a known intrinsic name */
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(f->m, id, &f->fty, 1);
  LLVMTypeRef fnty = LLVMIntrinsicGetType(f->ctx, id, &f->fty, 1);
  return LLVMBuildCall2(f->b, fnty, fn, args, nargs, "");
}

/* a * b + c, rounded once. */
static LLVMValueRef fma_(MF *f, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return intrinsic(f, "llvm.fma", args, 3);
}
static LLVMValueRef fabs_(MF *f, LLVMValueRef a) { return intrinsic(f, "llvm.fabs", &a, 1); }
static LLVMValueRef copysign_(MF *f, LLVMValueRef mag, LLVMValueRef sgn) {
  LLVMValueRef args[2] = {mag, sgn};
  return intrinsic(f, "llvm.copysign", args, 2);
}

/* c[0] * x^(n-1) + ... + c[n-1], by Horner's rule. */
static LLVMValueRef poly(MF *f, LLVMValueRef x, const float *c, int n) {
  LLVMValueRef y = cf(f, c[0]);
  for (int i = 1; i < n; i++)
    y = fma_(f, y, x, cf(f, c[i]));
  return y;
}

/* 2^k for integer k in [-126, 127]: the exponent field alone. */
static LLVMValueRef pow2i(MF *f, LLVMValueRef k) {
  LLVMValueRef bits = LLVMBuildShl(f->b, LLVMBuildAdd(f->b, k, ci(f, 127), ""), ci(f, 23), "");
  return LLVMBuildBitCast(f->b, bits, f->fty, "");
}

/* ------------------------------------------------------------------ exp */

/* exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2, |r| <= ln2/2.
 * ln2 is split Cody-Waite style into C1 + C2 (Cephes expf.c): C1 has 9
 * significant bits, so rhi = x - n C1 is exact for the |n| <= 150 here;
 * r = rhi - n C2 (C2 = ln2 - C1) is rounded, and its rounding error rlo
 * (Fast2Sum) is added back in with the polynomial's small term, taking exp
 * from 1.0 to 0.86 ulp. The minimax polynomial P(r) ~ (exp(r) - 1 - r) /
 * r^2 on [-ln2/2, ln2/2] is Cephes expf.c's; exp(r) = ((r^2 P + rlo) + r) + 1.
 *
 * x is clamped to [-104, 89] first: outside, the result is 0 or +inf in
 * float (exp overflows above 88.7228 and rounds to 0 below -103.97), and
 * the clamp keeps n in [-150, 128]. 2^n is applied as two normal factors
 * 2^n1 2^n2 (n1 = floor(n/2), n2 = n - n1): exp(r) 2^n1 is exact, and only
 * the last product rounds, into the subnormals or to +inf as it should. */
LLVMValueRef mf_exp(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x) {
  static const float P[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
  MF f = mf_begin(m, b, x);
  /* select(x > lo, x, lo) is one max instruction and sends NaN to lo, so
   * no NaN reaches fptosi (whose result would be poison). */
  LLVMValueRef lo = cf(&f, -104.0f), hi = cf(&f, 89.0f);
  LLVMValueRef xc = sel(&f, cmp(&f, LLVMRealOGT, x, lo), x, lo);
  xc = sel(&f, cmp(&f, LLVMRealOLT, xc, hi), xc, hi);

  /* n = round-to-nearest(x log2 e): adding 1.5 * 2^23 leaves no fraction
   * bits in the sum (|x log2 e| < 2^22), subtracting it back is exact. */
  LLVMValueRef magic = cf(&f, 0x1.8p23f);
  LLVMValueRef nf = sub(&f, fma_(&f, xc, cf(&f, 1.44269504088896341f), magic), magic);
  LLVMValueRef rhi = fma_(&f, nf, cf(&f, -0.693359375f), xc);
  LLVMValueRef c = mul(&f, nf, cf(&f, 2.12194440e-4f));
  LLVMValueRef r = add(&f, rhi, c);
  LLVMValueRef rlo = add(&f, sub(&f, rhi, r), c);

  LLVMValueRef z = mul(&f, r, r);
  LLVMValueRef p = fma_(&f, poly(&f, r, P, 6), z, rlo);
  p = add(&f, add(&f, p, r), cf(&f, 1.0f));

  LLVMValueRef n = LLVMBuildFPToSI(b, nf, f.ity, "");
  LLVMValueRef n1 = LLVMBuildAShr(b, n, ci(&f, 1), "");
  LLVMValueRef n2 = LLVMBuildSub(b, n, n1, "");
  LLVMValueRef y = mul(&f, mul(&f, p, pow2i(&f, n1)), pow2i(&f, n2));
  return sel(&f, cmp(&f, LLVMRealUNO, x, x), x, y);
}

/* ------------------------------------------------------------------ log */

/* x = 2^e * m with m in [sqrt(1/2), sqrt(2)); log x = e ln2 + log(1 + t),
 * t = m - 1 (exact: Sterbenz). log(1 + t) = t - t^2/2 + t^3 P(t), with
 * Cephes logf.c's minimax P on [sqrt(1/2) - 1, sqrt(2) - 1], and e ln2
 * added in two parts (C1 = 0.693359375 exact in 9 bits, C2 = ln2 - C1)
 * so that the large part enters last. A subnormal x is first scaled by
 * 2^23 (exact) and e corrected by 23. */
LLVMValueRef mf_log(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x) {
  static const float P[] = {7.0376836292e-2f,  -1.1514610310e-1f, 1.1676998740e-1f,
                            -1.2420140846e-1f, 1.4249322787e-1f,  -1.6668057665e-1f,
                            2.0000714765e-1f,  -2.4999993993e-1f, 3.3333331174e-1f};
  MF f = mf_begin(m, b, x);
  LLVMValueRef den = cmp(&f, LLVMRealOLT, x, cf(&f, 0x1p-126f)); /* also true for x <= 0 */
  LLVMValueRef xs = sel(&f, den, mul(&f, x, cf(&f, 0x1p23f)), x);
  LLVMValueRef bits = LLVMBuildBitCast(b, xs, f.ity, "");

  /* m in [0.5, 1): keep the fraction bits, set the exponent field to 126. */
  LLVMValueRef mbits =
      LLVMBuildOr(b, LLVMBuildAnd(b, bits, ci(&f, 0x007fffff), ""), ci(&f, 0x3f000000), "");
  LLVMValueRef mant = LLVMBuildBitCast(b, mbits, f.fty, "");
  LLVMValueRef ebits = LLVMBuildSub(b, LLVMBuildLShr(b, bits, ci(&f, 23), ""),
                                    sel(&f, den, ci(&f, 126 + 23), ci(&f, 126)), "");
  LLVMValueRef e = LLVMBuildSIToFP(b, ebits, f.fty, "");

  /* Move m below sqrt(1/2) up an octave: m in [sqrt(1/2), sqrt(2)). */
  LLVMValueRef low = cmp(&f, LLVMRealOLT, mant, cf(&f, 0.707106781186547524f));
  e = sub(&f, e, sel(&f, low, cf(&f, 1.0f), cf(&f, 0.0f)));
  LLVMValueRef t = sub(&f, sel(&f, low, add(&f, mant, mant), mant), cf(&f, 1.0f));

  LLVMValueRef z = mul(&f, t, t);
  LLVMValueRef y = mul(&f, mul(&f, poly(&f, t, P, 9), t), z);
  y = fma_(&f, e, cf(&f, -2.12194440e-4f), y);
  y = fma_(&f, z, cf(&f, -0.5f), y);
  LLVMValueRef r = add(&f, t, y);
  r = fma_(&f, e, cf(&f, 0.693359375f), r);

  r = sel(&f, cmp(&f, LLVMRealOEQ, x, cf(&f, INFINITY)), x, r);
  r = sel(&f, cmp(&f, LLVMRealOEQ, x, cf(&f, 0.0f)), cf(&f, -INFINITY), r);
  /* ult: x < 0 or NaN. */
  return sel(&f, cmp(&f, LLVMRealULT, x, cf(&f, 0.0f)), cf(&f, NAN), r);
}

/* -------------------------------------------------------------- sigmoid */

/* With t = exp(-|x|) in [0, 1] and d = 1 + t: sigmoid(x) = 1 / d for
 * x >= 0 and t / d for x < 0. exp never overflows here, and for x < 0 the
 * result keeps exp's relative accuracy all the way into the subnormals,
 * where 1 / (1 + exp(-x)) would give 0 once exp(-x) overflows.
 *
 * Rounding d = 1 + t alone would cost up to 1 ulp of the result, so the
 * quotient is corrected for it: dlo = t - (d - 1) is d's rounding error
 * exactly (Fast2Sum, 1 >= t), rem = num - q d the division's remainder
 * exactly (one fma), and num / (d + dlo) = q + (rem - q dlo) / (d + dlo),
 * where 1 / d is q (x >= 0) or 1 - q (x < 0) to the few bits the
 * correction needs. What remains is the last rounding and exp's own error.
 * For x > 17.33, t < 2^-25 and the result rounds to exactly 1. */
LLVMValueRef mf_sigmoid(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x) {
  MF f = mf_begin(m, b, x);
  LLVMValueRef one = cf(&f, 1.0f);
  LLVMValueRef t = mf_exp(m, b, LLVMBuildFNeg(b, fabs_(&f, x), ""));
  /* oge is false for NaN: t = NaN then gives NaN. */
  LLVMValueRef pos = cmp(&f, LLVMRealOGE, x, cf(&f, 0.0f));
  LLVMValueRef num = sel(&f, pos, one, t);
  LLVMValueRef d = add(&f, one, t);
  LLVMValueRef dlo = sub(&f, t, sub(&f, d, one));
  LLVMValueRef q = div_(&f, num, d);
  LLVMValueRef negq = LLVMBuildFNeg(b, q, "");
  LLVMValueRef rem = fma_(&f, negq, d, num);
  LLVMValueRef inv = sel(&f, pos, q, sub(&f, one, q));
  return fma_(&f, fma_(&f, negq, dlo, rem), inv, q);
}

/* ----------------------------------------------------------------- tanh */

/* |x| < 0.625: tanh x = x + x^3 P(x^2), Cephes tanhf.c's minimax P; for
 * |x| < 2^-12 the correction is below half an ulp and tanh x = x exactly.
 * |x| >= 0.625: tanh |x| = 1 - 2 / (exp(2|x|) + 1), where the cancellation
 * is at most a factor 0.8. Either result then gets the sign of x copied
 * on, so the function is odd bit for bit (and tanh(-0) = -0, which the
 * polynomial alone gets wrong). For |x| > 9.01, 2 / (exp(2|x|) + 1) <
 * 2^-25 and the result rounds to exactly 1; exp overflowing to +inf
 * (|x| > 44.4) gives exactly 1 as well. */
LLVMValueRef mf_tanh(LLVMModuleRef m, LLVMBuilderRef b, LLVMValueRef x) {
  static const float P[] = {-5.70498872745e-3f, 2.06390887954e-2f, -5.37397155531e-2f,
                            1.33314422036e-1f, -3.33332819422e-1f};
  MF f = mf_begin(m, b, x);
  LLVMValueRef ax = fabs_(&f, x);
  LLVMValueRef z = mul(&f, x, x);
  LLVMValueRef small = fma_(&f, mul(&f, x, z), poly(&f, z, P, 5), x);

  LLVMValueRef e = mf_exp(m, b, add(&f, ax, ax));
  LLVMValueRef big = sub(&f, cf(&f, 1.0f), div_(&f, cf(&f, 2.0f), add(&f, e, cf(&f, 1.0f))));
  /* olt is false for NaN, and the exp path carries NaN through. The sign
   * is copied on last: the polynomial alone gives tanh(-0) = +0. */
  LLVMValueRef y = sel(&f, cmp(&f, LLVMRealOLT, ax, cf(&f, 0.625f)), small, big);
  return copysign_(&f, y, x);
}

/* ------------------------------------------------------------------ fma */

/* fma(a, b, c) in double precision, rounded once, for targets without a
 * fused multiply-add (WebAssembly, x86-64 before FMA3), where llvm.fma
 * would be a call to libm's fmaf. The product of two floats is exact in a
 * double (24 + 24 bits < 53), so only the sum s = ab + c rounds; rounding
 * s to float as well could round twice. Rounding s to odd instead (when
 * the sum was inexact and s's last bit is 0, move s one ulp towards the
 * exact sum) makes the final rounding to float correct: a double has more
 * than 24 + 2 bits (Boldo and Melquiond, "Emulation of FMA and correctly
 * rounded sums: proved algorithms using rounding to odd", 2008). The
 * rounding error of s is exact by Knuth's TwoSum; infinities and NaNs make
 * it NaN, and s is then left as it is. */
static LLVMValueRef soft_fma(MF *f, LLVMValueRef a, LLVMValueRef bv, LLVMValueRef c) {
  LLVMTypeRef f64 = LLVMDoubleTypeInContext(f->ctx), i64 = LLVMInt64TypeInContext(f->ctx);
  LLVMTypeRef dty = f->n ? LLVMVectorType(f64, f->n) : f64;
  LLVMTypeRef lty = f->n ? LLVMVectorType(i64, f->n) : i64;
  LLVMBuilderRef b = f->b;
  LLVMValueRef p = LLVMBuildFMul(b, LLVMBuildFPExt(b, a, dty, ""), LLVMBuildFPExt(b, bv, dty, ""),
                                 "");
  LLVMValueRef cd = LLVMBuildFPExt(b, c, dty, "");
  LLVMValueRef s = LLVMBuildFAdd(b, p, cd, "");
  LLVMValueRef bb = LLVMBuildFSub(b, s, p, "");
  LLVMValueRef err = LLVMBuildFAdd(b, LLVMBuildFSub(b, p, LLVMBuildFSub(b, s, bb, ""), ""),
                                   LLVMBuildFSub(b, cd, bb, ""), "");

  MF g = *f; /* constants of the double shape */
  g.f32 = f64;
  g.i32 = i64;
  LLVMValueRef sbits = LLVMBuildBitCast(b, s, lty, "");
  LLVMValueRef one = splat(&g, LLVMConstInt(i64, 1, 0));
  LLVMValueRef even = LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildAnd(b, sbits, one, ""),
                                    splat(&g, LLVMConstInt(i64, 0, 0)), "");
  LLVMValueRef inexact = LLVMBuildFCmp(b, LLVMRealONE, err, splat(&g, LLVMConstReal(f64, 0)), "");
  /* the magnitude grows when err has the sign of s */
  LLVMValueRef same_sign =
      LLVMBuildICmp(b, LLVMIntSGE, LLVMBuildXor(b, LLVMBuildBitCast(b, err, lty, ""), sbits, ""),
                    splat(&g, LLVMConstInt(i64, 0, 0)), "");
  LLVMValueRef step = LLVMBuildSelect(b, same_sign, one, splat(&g, LLVMConstAllOnes(i64)), "");
  LLVMValueRef odd = LLVMBuildAdd(b, sbits, step, "");
  sbits = LLVMBuildSelect(b, LLVMBuildAnd(b, inexact, even, ""), odd, sbits, "");
  return LLVMBuildFPTrunc(b, LLVMBuildBitCast(b, sbits, dty, ""), f->fty, "");
}

void mf_lower_fma(LLVMModuleRef m) {
  LLVMBuilderRef b = LLVMCreateBuilderInContext(LLVMGetModuleContext(m));
  for (LLVMValueRef fn = LLVMGetFirstFunction(m), next; fn; fn = next) {
    next = LLVMGetNextFunction(fn);
    size_t len;
    const char *name = LLVMGetValueName2(fn, &len);
    if (len < 9 || strncmp(name, "llvm.fma.", 9))
      continue;
    /* every use is a call: intrinsics are only called */
    for (LLVMUseRef u; (u = LLVMGetFirstUse(fn));) {
      LLVMValueRef call = LLVMGetUser(u);
      LLVMPositionBuilderBefore(b, call);
      MF f = mf_begin(m, b, LLVMGetOperand(call, 0));
      LLVMValueRef y =
          soft_fma(&f, LLVMGetOperand(call, 0), LLVMGetOperand(call, 1), LLVMGetOperand(call, 2));
      LLVMReplaceAllUsesWith(call, y);
      LLVMInstructionEraseFromParent(call);
    }
    LLVMDeleteFunction(fn);
  }
  LLVMDisposeBuilder(b);
}

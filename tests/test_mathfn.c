/* test_mathfn.c: the inline exp, log, sigmoid and tanh of mathfn.c against
 * libm in double precision.
 *
 * One module holds, for each function F, three kernels
 * void K(const float *x, float *y, int64_t n), y[i] = F(x[i]):
 *   F_v16     the builder on <16 x float> (n a multiple of 16);
 *   F_loop    the builder on one float inside a loop, which the O3 loop
 *             vectorizer must turn into a vector loop (what codegen emits):
 *             zmm on AVX-512 hosts, ymm on AVX hosts;
 *   F_scalar  a loop calling the noinline float F_s(float), so scalar
 *             instructions run.
 * The module goes through the O3 pipeline for the host and ORC LLJIT.
 * Every 61st float bit pattern (70 million inputs) and a list of special
 * values run through all three kernels; the three must agree bit for bit,
 * and the error against the double-precision reference must stay within
 * the bounds documented in mathfn.h. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "mathfn.h"
#include "testutil.h"
#include "util.h"

typedef LLVMValueRef (*Builder)(LLVMModuleRef, LLVMBuilderRef, LLVMValueRef);
typedef void (*Kernel)(const float *x, float *y, int64_t n);

/* The bounds mathfn.h documents. ulp: spacing of floats at the exact
 * result (2^-149 below FLT_MIN). abs: |y - f(x)| where |f(x)| <= 1. */
typedef struct Fn {
  const char *name;
  Builder build;
  double (*ref)(double);
  double max_ulp, max_abs;
  Kernel v16, loop, scalar; /* JIT'd */
} Fn;

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }

enum { FN_EXP, FN_LOG, FN_SIGMOID, FN_TANH, FN_COUNT };
static Fn fns[FN_COUNT] = {
    [FN_EXP] = {"exp", mf_exp, exp, 1.0, 6e-8},
    [FN_LOG] = {"log", mf_log, log, 1.0, 6e-8},
    [FN_SIGMOID] = {"sigmoid", mf_sigmoid, sigmoid_ref, 2.0, 6e-8},
    [FN_TANH] = {"tanh", mf_tanh, tanh, 1.5, 1e-7},
};

static LLVMOrcLLJITRef jit;
static char *asm_text; /* the optimized module as host assembly */

/* --------------------------------------------------------- the kernels */

/* void name(const float *x, float *y, int64_t n): y[i] = f(x[i]), width
 * floats at a time; elem, if given, is a float(float) function to call
 * instead of building f inline. */
static void build_kernel(LLVMModuleRef m, const char *name, Builder f, unsigned width,
                         LLVMValueRef elem) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), i64 = LLVMInt64TypeInContext(ctx);
  LLVMTypeRef ptr = LLVMPointerTypeInContext(ctx, 0);
  LLVMTypeRef vty = width > 1 ? LLVMVectorType(f32, width) : f32;
  LLVMTypeRef params[3] = {ptr, ptr, i64};
  LLVMValueRef fn =
      LLVMAddFunction(m, name, LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, 3, 0));
  /* Intel's AVX-512 parts are tuned for 256-bit vectors in vectorized
   * loops unless told otherwise (this AMD host picks 512 either way). */
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(ctx, "prefer-vector-width", 19, "512", 3));
  LLVMValueRef x = LLVMGetParam(fn, 0), y = LLVMGetParam(fn, 1), n = LLVMGetParam(fn, 2);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry");
  LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(ctx, fn, "loop");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(ctx, fn, "done");
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);

  LLVMPositionBuilderAtEnd(b, entry);
  LLVMValueRef zero = LLVMConstInt(i64, 0, 0);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, ""), loop, done);

  LLVMPositionBuilderAtEnd(b, loop);
  LLVMValueRef i = LLVMBuildPhi(b, i64, "i");
  LLVMValueRef xv = LLVMBuildLoad2(b, vty, LLVMBuildInBoundsGEP2(b, f32, x, &i, 1, ""), "");
  LLVMSetAlignment(xv, 4);
  LLVMValueRef yv;
  if (elem) {
    LLVMTypeRef ety = LLVMFunctionType(f32, &f32, 1, 0);
    yv = LLVMBuildCall2(b, ety, elem, &xv, 1, "");
  } else {
    yv = f(m, b, xv);
  }
  LLVMValueRef st = LLVMBuildStore(b, yv, LLVMBuildInBoundsGEP2(b, f32, y, &i, 1, ""));
  LLVMSetAlignment(st, 4);
  LLVMValueRef next = LLVMBuildAdd(b, i, LLVMConstInt(i64, width, 0), "");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, n, ""), loop, done);
  LLVMBasicBlockRef from[2] = {entry, loop};
  LLVMValueRef vals[2] = {zero, next};
  LLVMAddIncoming(i, vals, from, 2);

  LLVMPositionBuilderAtEnd(b, done);
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
}

/* float name(float), never inlined, so that the loop calling it runs
 * scalar instructions. */
static LLVMValueRef build_scalar_fn(LLVMModuleRef m, const char *name, Builder f) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx);
  LLVMValueRef fn = LLVMAddFunction(m, name, LLVMFunctionType(f32, &f32, 1, 0));
  unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(ctx, noinline, 0));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
  LLVMBuildRet(b, f(m, b, LLVMGetParam(fn, 0)));
  LLVMDisposeBuilder(b);
  return fn;
}

/* void name(const float *a, const float *b, const float *c, float *y,
 * int64_t n): y[i] = llvm.fma(a[i], b[i], c[i]), width floats at a time
 * (width 1: a scalar loop the vectorizer may widen). */
static void build_fma_kernel(LLVMModuleRef m, const char *name, unsigned width) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), i64 = LLVMInt64TypeInContext(ctx);
  LLVMTypeRef ptr = LLVMPointerTypeInContext(ctx, 0);
  LLVMTypeRef vty = width > 1 ? LLVMVectorType(f32, width) : f32;
  LLVMTypeRef params[5] = {ptr, ptr, ptr, ptr, i64};
  LLVMValueRef fn =
      LLVMAddFunction(m, name, LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, 5, 0));
  LLVMValueRef n = LLVMGetParam(fn, 4);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(ctx, fn, "entry");
  LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(ctx, fn, "loop");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(ctx, fn, "done");
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, entry);
  LLVMValueRef zero = LLVMConstInt(i64, 0, 0);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, ""), loop, done);
  LLVMPositionBuilderAtEnd(b, loop);
  LLVMValueRef i = LLVMBuildPhi(b, i64, "i");
  LLVMValueRef args[3];
  for (int k = 0; k < 3; k++) {
    args[k] = LLVMBuildLoad2(b, vty, LLVMBuildInBoundsGEP2(b, f32, LLVMGetParam(fn, (unsigned)k),
                                                           &i, 1, ""), "");
    LLVMSetAlignment(args[k], 4);
  }
  unsigned id = LLVMLookupIntrinsicID("llvm.fma", 8);
  LLVMValueRef y = LLVMBuildCall2(b, LLVMIntrinsicGetType(ctx, id, &vty, 1),
                                  LLVMGetIntrinsicDeclaration(m, id, &vty, 1), args, 3, "");
  LLVMValueRef st = LLVMBuildStore(b, y, LLVMBuildInBoundsGEP2(b, f32, LLVMGetParam(fn, 3), &i, 1, ""));
  LLVMSetAlignment(st, 4);
  LLVMValueRef next = LLVMBuildAdd(b, i, LLVMConstInt(i64, width, 0), "");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, n, ""), loop, done);
  LLVMBasicBlockRef from[2] = {entry, loop};
  LLVMValueRef vals[2] = {zero, next};
  LLVMAddIncoming(i, vals, from, 2);
  LLVMPositionBuilderAtEnd(b, done);
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
}

typedef void (*FmaKernel)(const float *a, const float *b, const float *c, float *y, int64_t n);
static FmaKernel soft_fma_1, soft_fma_8; /* mf_lower_fma's fma, scalar and <8 x float> */

static void fail_llvm(const char *what, LLVMErrorRef err) {
  char *msg = LLVMGetErrorMessage(err); /* consumes err */
  print_error("%s: %s\n", what, msg);
  LLVMDisposeErrorMessage(msg);
  fail();
}

static LLVMTargetMachineRef host_machine(void) {
  char *triple = LLVMGetDefaultTargetTriple();
  char *cpu = LLVMGetHostCPUName();
  char *features = LLVMGetHostCPUFeatures();
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    print_error("target %s: %s\n", triple, msg);
    fail();
  }
  LLVMTargetMachineRef tm =
      LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                              LLVMRelocDefault, LLVMCodeModelJITDefault);
  assert_non_null(tm);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  return tm;
}

/* The O3 pipeline for tm, as optimize_module runs it (with unrolling). */
static void optimize(LLVMModuleRef m, LLVMTargetMachineRef tm) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, layout);
  LLVMDisposeTargetData(layout);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(opts, 1);
  LLVMErrorRef err = LLVMRunPasses(m, "default<O3>", tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err)
    fail_llvm("LLVMRunPasses", err);
}

static int setup(void **state) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("mathfn", ctx);
  for (int k = 0; k < FN_COUNT; k++) {
    char name[64];
    snprintf(name, sizeof name, "%s_v16", fns[k].name);
    build_kernel(m, name, fns[k].build, 16, NULL);
    snprintf(name, sizeof name, "%s_loop", fns[k].name);
    build_kernel(m, name, fns[k].build, 1, NULL);
    snprintf(name, sizeof name, "%s_s", fns[k].name);
    LLVMValueRef s = build_scalar_fn(m, name, fns[k].build);
    snprintf(name, sizeof name, "%s_scalar", fns[k].name);
    build_kernel(m, name, NULL, 1, s);
  }
  char *msg = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    print_error("module does not verify: %s\n", msg);
    fail();
  }
  LLVMDisposeMessage(msg);

  /* The fma of a target without FMA, in a module of its own (the one
   * above keeps llvm.fma): every call is replaced. */
  LLVMModuleRef soft = LLVMModuleCreateWithNameInContext("soft_fma", ctx);
  build_fma_kernel(soft, "soft_fma_1", 1);
  build_fma_kernel(soft, "soft_fma_8", 8);
  mf_lower_fma(soft);
  for (LLVMValueRef f = LLVMGetFirstFunction(soft); f; f = LLVMGetNextFunction(f))
    assert_true(strncmp(LLVMGetValueName(f), "llvm.fma", 8) != 0);
  if (LLVMVerifyModule(soft, LLVMReturnStatusAction, &msg)) {
    print_error("soft_fma does not verify: %s\n", msg);
    fail();
  }
  LLVMDisposeMessage(msg);

  LLVMTargetMachineRef tm = host_machine();
  optimize(m, tm);
  optimize(soft, tm);

  /* Code generation rewrites IR in place (CodeGenPrepare), so the
   * assembly comes from a copy; the JIT gets the original. */
  LLVMModuleRef copy = LLVMCloneModule(m);
  LLVMMemoryBufferRef mb = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, copy, LLVMAssemblyFile, &msg, &mb)) {
    print_error("emit asm: %s\n", msg);
    fail();
  }
  asm_text = xstrndup(LLVMGetBufferStart(mb), LLVMGetBufferSize(mb));
  LLVMDisposeMemoryBuffer(mb);
  const char *dir = getenv("RNNC_TMP_DIR"); /* set by ctest: keep the asm to read */
  if (dir) {
    char *path = xasprintf("%s/mathfn.s", dir);
    write_text(path, asm_text);
    free(path);
  }
  LLVMDisposeModule(copy);
  LLVMDisposeTargetMachine(tm);

  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, tsc); /* owns m */
  LLVMOrcThreadSafeModuleRef tsm_soft = LLVMOrcCreateNewThreadSafeModule(soft, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc); /* the modules keep the context alive */
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMErrorRef err = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
  if (err)
    fail_llvm("detect host", err);
  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb); /* jb owns jtmb */
  err = LLVMOrcCreateLLJIT(&jit, jb);                      /* consumes jb */
  if (err)
    fail_llvm("LLVMOrcCreateLLJIT", err);
  err = LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), tsm); /* owns tsm */
  if (err)
    fail_llvm("add module", err);
  err = LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), tsm_soft);
  if (err)
    fail_llvm("add module", err);
  FmaKernel *fslot[2] = {&soft_fma_1, &soft_fma_8};
  const char *fname[2] = {"soft_fma_1", "soft_fma_8"};
  for (int j = 0; j < 2; j++) {
    LLVMOrcExecutorAddress addr = 0;
    err = LLVMOrcLLJITLookup(jit, &addr, fname[j]);
    if (err)
      fail_llvm(fname[j], err);
    *fslot[j] = (FmaKernel)(uintptr_t)addr;
  }
  for (int k = 0; k < FN_COUNT; k++) {
    Kernel *slot[3] = {&fns[k].v16, &fns[k].loop, &fns[k].scalar};
    const char *suffix[3] = {"v16", "loop", "scalar"};
    for (int j = 0; j < 3; j++) {
      char name[64];
      snprintf(name, sizeof name, "%s_%s", fns[k].name, suffix[j]);
      LLVMOrcExecutorAddress addr = 0;
      err = LLVMOrcLLJITLookup(jit, &addr, name);
      if (err)
        fail_llvm(name, err);
      *slot[j] = (Kernel)(uintptr_t)addr;
    }
  }
  (void)state;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  LLVMErrorRef err = LLVMOrcDisposeLLJIT(jit);
  if (err)
    fail_llvm("dispose JIT", err);
  free(asm_text);
  return 0;
}

/* ----------------------------------------------------------- measuring */

typedef union {
  float f;
  uint32_t u;
} Pun;
static float from_bits(uint32_t u) { return (Pun){.u = u}.f; }
static uint32_t to_bits(float f) { return (Pun){.f = f}.u; }

/* |y - ref| in units of the spacing of floats at ref: 2^(e - 23) for ref
 * in [2^e, 2^(e+1)), 2^-149 below FLT_MIN. An infinity, and a ref beyond
 * the float range, count as +-2^128, one step past FLT_MAX. A NaN on one
 * side only is an infinite error. */
static double ulp_error(float y, double ref) {
  double yd = y, rd = ref;
  if (yd == rd)
    return 0;
  if (isnan(yd) || isnan(rd))
    return isnan(yd) && isnan(rd) ? 0 : INFINITY;
  if (isinf(yd))
    yd = copysign(0x1p128, yd);
  if (fabs(rd) > 0x1p128)
    rd = copysign(0x1p128, rd);
  /* A union, not memcpy: no stack slot for ASan to guard on this hot path. */
  union {
    double d;
    uint64_t u;
  } pun = {.d = rd};
  int e = (int)((pun.u >> 52) & 0x7ff) - 1023; /* floor(log2 |rd|); -1023 for 0 */
  e = e < -126 ? -126 : e > 127 ? 127 : e;
  pun.u = (uint64_t)(1023 + 23 - e) << 52; /* 1 / ulp = 2^(23 - e) */
  return fabs(yd - rd) * pun.d;
}

typedef struct Stats {
  double ulp, abs, rel; /* maxima; abs where |f(x)| <= 1, rel where |f(x)| >= FLT_MIN */
  float ulp_x, abs_x, rel_x;
  long mismatches; /* the three kernels disagree */
  long checked;
} Stats;

/* y2 (from the kernel named what) must equal y1 bit for bit, NaNs aside. */
static void agree(const Fn *fn, const char *what, const float *x, const float *y1,
                  const float *y2, int64_t n, Stats *st) {
  if (memcmp(y1, y2, (size_t)n * sizeof *y1) == 0)
    return;
  for (int64_t i = 0; i < n; i++) {
    if (to_bits(y1[i]) != to_bits(y2[i]) && !(isnan(y1[i]) && isnan(y2[i])) &&
        st->mismatches++ < 5)
      print_error("%s(%a): v16 %a, %s %a\n", fn->name, (double)x[i], (double)y1[i], what,
                  (double)y2[i]);
  }
}

/* Runs the kernels on x[0..n) (n a multiple of 16; buffers of n), the
 * scalar one only if asked, and folds the errors into st. */
static void measure(const Fn *fn, const float *x, float *y1, float *y2, int64_t n, bool scalar,
                    Stats *st) {
  fn->v16(x, y1, n);
  fn->loop(x, y2, n);
  agree(fn, "loop", x, y1, y2, n, st);
  if (scalar) {
    fn->scalar(x, y2, n);
    agree(fn, "scalar", x, y1, y2, n, st);
  }
  /* Locals, so the maxima stay in registers across the calls to ref. */
  double (*ref_fn)(double) = fn->ref;
  double max_ulp = st->ulp, max_abs = st->abs, max_rel = st->rel;
  float ulp_x = st->ulp_x, abs_x = st->abs_x, rel_x = st->rel_x;
  for (int64_t i = 0; i < n; i++) {
    double ref = ref_fn(x[i]);
    double u = ulp_error(y1[i], ref);
    if (u > max_ulp) {
      max_ulp = u;
      ulp_x = x[i];
    }
    if (isfinite(ref) && isfinite(y1[i]) && fabs(ref) >= FLT_MIN) {
      double d = fabs(y1[i] - ref);
      if (d > max_abs && fabs(ref) <= 1) {
        max_abs = d;
        abs_x = x[i];
      }
      if (d > max_rel * fabs(ref)) {
        max_rel = d / fabs(ref);
        rel_x = x[i];
      }
    }
  }
  st->ulp = max_ulp;
  st->abs = max_abs;
  st->rel = max_rel;
  st->ulp_x = ulp_x;
  st->abs_x = abs_x;
  st->rel_x = rel_x;
  st->checked += n;
}

/* Special values and their neighbours, appended to x; returns the count. */
static int special_values(float *x) {
  static const float base[] = {
      0.0f, FLT_TRUE_MIN, 0x1p-140f, 0x1.fffffcp-127f, FLT_MIN, 1e-10f, 0x1p-12f, 0.5f,
      0.625f, 0.70710678f, 1.0f, 1.41421356f, 2.0f, 9.0f, 9.01f, 17.33f, 20.0f, 44.36f,
      80.0f, 87.33654f, 88.0f, 0x1.62e42ep6f, 89.0f, 100.0f, 0x1.9fe368p6f, 104.0f,
      105.0f, 1e10f, FLT_MAX, INFINITY};
  int n = 0;
  for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
    for (int s = 0; s < 2; s++) {
      float v = s ? -base[i] : base[i];
      x[n++] = v;
      if (isfinite(v)) {
        x[n++] = nextafterf(v, INFINITY);
        x[n++] = nextafterf(v, -INFINITY);
      }
    }
  }
  x[n++] = NAN;
  x[n++] = -NAN;
  x[n++] = from_bits(0x7f800001); /* signaling */
  x[n++] = from_bits(0xffc12345);
  return n;
}

enum { CHUNK = 1 << 16, STRIDE = 61 };

static void sweep(Fn *fn) {
  float *x = xmalloc(CHUNK * sizeof *x), *y1 = xmalloc(CHUNK * sizeof *y1);
  float *y2 = xmalloc(CHUNK * sizeof *y2);
  Stats st = {0};
  double t0 = now_seconds();

  int n = special_values(x);
  while (n % 16)
    x[n++] = 0;
  measure(fn, x, y1, y2, n, true, &st);

  /* Every STRIDE-th bit pattern: k * STRIDE for k * STRIDE < 2^32. */
  const uint64_t total = ((1ull << 32) + STRIDE - 1) / STRIDE;
  for (uint64_t k0 = 0; k0 < total; k0 += CHUNK) {
    int64_t m = (int64_t)(total - k0 < CHUNK ? total - k0 : CHUNK);
    for (int64_t i = 0; i < m; i++)
      x[i] = from_bits((uint32_t)((k0 + (uint64_t)i) * STRIDE));
    int64_t mm = m;
    while (mm % 16)
      x[mm++] = 0;
    /* The scalar kernel is slow (a call per element): every 8th chunk. */
    measure(fn, x, y1, y2, mm, k0 % (8 * CHUNK) == 0, &st);
  }
  print_message("%-8s %ld inputs in %.2f s: max error %.3f ulp (x = %a), max abs error %.3g "
                "where |f| <= 1 (x = %a), max rel error %.3g (x = %a)\n",
                fn->name, st.checked, now_seconds() - t0, st.ulp, (double)st.ulp_x, st.abs,
                (double)st.abs_x, st.rel, (double)st.rel_x);
  free(x);
  free(y1);
  free(y2);
  assert_int_equal(st.mismatches, 0);
  assert_true(st.ulp <= fn->max_ulp);
  assert_true(st.abs <= fn->max_abs);
}

/* Absolute error where |f| <= 1, over a dense sweep of the region where
 * sigmoid and tanh are not saturated. */
static void abs_sweep(Fn *fn) {
  float *x = xmalloc(CHUNK * sizeof *x), *y = xmalloc(CHUNK * sizeof *y);
  double worst = 0;
  float worst_x = 0;
  for (int k = 0; k < 64; k++) {
    for (int i = 0; i < CHUNK; i++)
      x[i] = -20.0f + 40.0f * (float)(k * CHUNK + i) / (float)(64 * CHUNK);
    fn->v16(x, y, CHUNK);
    for (int i = 0; i < CHUNK; i++) {
      double d = fabs(y[i] - fn->ref(x[i]));
      if (d > worst) {
        worst = d;
        worst_x = x[i];
      }
    }
  }
  print_message("%-8s max abs error on [-20, 20]: %.3g (x = %a)\n", fn->name, worst,
                (double)worst_x);
  free(x);
  free(y);
  assert_true(worst <= fn->max_abs);
}

/* f at one point, from the v16 kernel; the scalar kernel must agree. */
static float at(const Fn *fn, float v) {
  float x[16], y[16];
  for (int i = 0; i < 16; i++)
    x[i] = v;
  fn->v16(x, y, 16);
  float s;
  fn->scalar(&v, &s, 1);
  assert_memory_equal(&s, &y[0], sizeof s);
  return y[0];
}

/* -------------------------------------------------------------- tests */

static void test_exp(void **state) {
  (void)state;
  Fn *f = &fns[FN_EXP];
  sweep(f);
  assert_true(at(f, INFINITY) == INFINITY);
  assert_true(at(f, -INFINITY) == 0 && !signbit(at(f, -INFINITY)));
  assert_true(isnan(at(f, NAN)));
  assert_true(isnan(at(f, -NAN)));
  assert_true(at(f, 0.0f) == 1.0f && at(f, -0.0f) == 1.0f);
  /* The largest x with a finite result, and the smallest with a nonzero one. */
  assert_true(at(f, 0x1.62e42ep6f) == (float)exp(0x1.62e42ep6) && at(f, 0x1.62e42ep6f) < INFINITY);
  assert_true(at(f, nextafterf(0x1.62e42ep6f, INFINITY)) == INFINITY);
  assert_true(at(f, -0x1.9fe368p6f) == FLT_TRUE_MIN);
  assert_true(at(f, nextafterf(-0x1.9fe368p6f, -INFINITY)) == 0);
  assert_true(at(f, 89.0f) == INFINITY && at(f, FLT_MAX) == INFINITY);
  assert_true(at(f, -103.0f) > 0 && at(f, -103.0f) < FLT_MIN); /* subnormal */
  assert_true(at(f, -104.0f) == 0 && at(f, -FLT_MAX) == 0);
  assert_true(at(f, FLT_TRUE_MIN) == 1.0f);
}

static void test_log(void **state) {
  (void)state;
  Fn *f = &fns[FN_LOG];
  sweep(f);
  assert_true(at(f, 0.0f) == -INFINITY && at(f, -0.0f) == -INFINITY);
  assert_true(at(f, INFINITY) == INFINITY);
  assert_true(isnan(at(f, -INFINITY)) && isnan(at(f, -1.0f)) && isnan(at(f, -FLT_TRUE_MIN)));
  assert_true(isnan(at(f, NAN)));
  assert_true(at(f, 1.0f) == 0.0f);
  assert_true(ulp_error(at(f, FLT_TRUE_MIN), log(FLT_TRUE_MIN)) <= 1); /* subnormal */
  assert_true(ulp_error(at(f, FLT_MAX), log(FLT_MAX)) <= 1);
}

static void test_sigmoid(void **state) {
  (void)state;
  Fn *f = &fns[FN_SIGMOID];
  sweep(f);
  abs_sweep(f);
  assert_true(at(f, INFINITY) == 1.0f && at(f, 18.0f) == 1.0f && at(f, FLT_MAX) == 1.0f);
  assert_true(at(f, -INFINITY) == 0.0f && at(f, -FLT_MAX) == 0.0f && at(f, -104.0f) == 0.0f);
  assert_true(isnan(at(f, NAN)));
  assert_true(at(f, 0.0f) == 0.5f && at(f, -0.0f) == 0.5f);
  /* Tiny but accurate for very negative x, down into the subnormals. */
  float s80 = at(f, -80.0f);
  assert_true(s80 > 0 && fabs(s80 - sigmoid_ref(-80.0)) <= 2 * 0x1p-24 * sigmoid_ref(-80.0));
  assert_true(at(f, -100.0f) > 0 && ulp_error(at(f, -100.0f), sigmoid_ref(-100.0)) <= 1);
}

static void test_tanh(void **state) {
  (void)state;
  Fn *f = &fns[FN_TANH];
  sweep(f);
  abs_sweep(f);
  assert_true(at(f, INFINITY) == 1.0f && at(f, -INFINITY) == -1.0f);
  assert_true(at(f, 9.02f) == 1.0f && at(f, -9.02f) == -1.0f);
  assert_true(at(f, FLT_MAX) == 1.0f && at(f, -FLT_MAX) == -1.0f);
  assert_true(isnan(at(f, NAN)));
  assert_true(at(f, 1e-10f) == 1e-10f && at(f, -1e-10f) == -1e-10f);
  assert_true(at(f, 0x1p-12f) == 0x1p-12f && at(f, -0x1.fffffep-13f) == -0x1.fffffep-13f);
  assert_true(at(f, FLT_TRUE_MIN) == FLT_TRUE_MIN);
  assert_true(at(f, -0.0f) == 0 && signbit(at(f, -0.0f)));
  assert_true(at(f, 0.0f) == 0 && !signbit(at(f, 0.0f)));

  /* Odd bit for bit: every 61st positive pattern against its negation. */
  float *x = xmalloc(CHUNK * sizeof *x), *y = xmalloc(CHUNK * sizeof *y);
  float *nx = xmalloc(CHUNK * sizeof *nx), *ny = xmalloc(CHUNK * sizeof *ny);
  long bad = 0;
  for (uint32_t u = 0; u < 0x7f800000u; u += CHUNK * STRIDE) {
    for (int i = 0; i < CHUNK; i++) {
      uint32_t v = u + (uint32_t)i * STRIDE;
      x[i] = from_bits(v < 0x7f800000u ? v : 0);
      nx[i] = -x[i];
    }
    f->v16(x, y, CHUNK);
    f->v16(nx, ny, CHUNK);
    for (int i = 0; i < CHUNK; i++)
      bad += to_bits(ny[i]) != (to_bits(y[i]) ^ 0x80000000u);
  }
  free(x);
  free(y);
  free(nx);
  free(ny);
  assert_int_equal(bad, 0);
}

/* mf_lower_fma's double-precision fma against libm's fmaf (correctly
 * rounded: glibc's), bit for bit: the special values; random operands
 * whose product and addend overlap, so that the sum cancels or rounds
 * near a tie, some of few significant bits; and products that are exact
 * ties between two floats plus an addend too small to change the sum in
 * double precision, where rounding twice would go wrong half the time. */
static void test_soft_fma(void **state) {
  (void)state;
  enum { N = 1 << 20 };
  float *a = xmalloc(N * sizeof *a), *b = xmalloc(N * sizeof *b), *c = xmalloc(N * sizeof *c);
  float *y1 = xmalloc(N * sizeof *y1), *y8 = xmalloc(N * sizeof *y8);
  static const float special[] = {0.0f,     -0.0f,     INFINITY, -INFINITY,   NAN,       1.0f,
                                  -1.0f,    FLT_MAX,   -FLT_MAX, FLT_MIN,     -FLT_MIN,  FLT_TRUE_MIN,
                                  0x1p-75f, 0x1p+64f,  0.5f,     0x1.000002p0f, 3.0f, 0x1.fffffep-1f};
  enum { NS = sizeof special / sizeof special[0] };
  Rng r;
  rng_seed(&r, 16);
  long bad = 0;
  for (int round = 0; round < 9; round++) {
    int n = 0;
    if (round == 0) /* every triple of special values */
      for (int i = 0; i < NS; i++)
        for (int j = 0; j < NS; j++)
          for (int k = 0; k < NS; k++, n++)
            a[n] = special[i], b[n] = special[j], c[n] = special[k];
    for (; n < N; n++) {
      uint32_t u = (uint32_t)rng_u64(&r), v = (uint32_t)rng_u64(&r), w = (uint32_t)rng_u64(&r);
      /* exponents near each other (c near a * b), sometimes far apart or
       * subnormal */
      int ea = 100 + (int)(u >> 26) % 56, eb = 100 + (int)(v >> 26) % 56;
      int ec = ea + eb - 127 + (int)(w >> 27) % 32 - 16;
      uint32_t ma = u, mb = v, mask = round % 3 == 1 ? 0x7f0000u : 0x7fffffu;
      if (round % 3 == 2) {
        /* a = 1.5 * 2^ea, b = (1 + k 2^-23) 2^eb, k odd: ab = (1.5 + k 2^-23
         * + k 2^-24) 2^(ea+eb), a tie; c at least 2^-54 smaller */
        ma = 0x400000u;
        mb = (v & 0x3ffu) | 1;
        ec = ea + eb - 127 - 54 - (int)(w >> 27) % 16;
      }
      ec = ec < 0 ? 0 : ec > 254 ? 254 : ec;
      a[n] = from_bits((u & 0x80000000u) | (uint32_t)ea << 23 | (ma & mask));
      b[n] = from_bits((v & 0x80000000u) | (uint32_t)eb << 23 | (mb & mask));
      c[n] = from_bits((w & 0x80000000u) | (uint32_t)ec << 23 | ((w * 2654435761u) & 0x7fffffu));
    }
    soft_fma_1(a, b, c, y1, N);
    soft_fma_8(a, b, c, y8, N);
    for (int i = 0; i < N; i++) {
      float want = fmaf(a[i], b[i], c[i]);
      bool ok1 = isnan(want) ? isnan(y1[i]) : to_bits(y1[i]) == to_bits(want);
      bool ok8 = isnan(want) ? isnan(y8[i]) : to_bits(y8[i]) == to_bits(want);
      if ((!ok1 || !ok8) && bad++ < 5)
        print_error("fma(%a, %a, %a) = %a, soft: %a (scalar), %a (vector)\n", (double)a[i],
                    (double)b[i], (double)c[i], (double)want, (double)y1[i], (double)y8[i]);
    }
  }
  print_message("soft fma: %d triples, %ld differ from fmaf\n", 9 * N, bad);
  free(a);
  free(b);
  free(c);
  free(y1);
  free(y8);
  assert_int_equal(bad, 0);
}

/* The lines of the assembly between "name:" and the function's end. */
static char *function_asm(const char *name) {
  char label[80];
  snprintf(label, sizeof label, "\n%s:", name);
  const char *start = strstr(asm_text, label);
  assert_non_null(start);
  const char *end = strstr(start, ".Lfunc_end");
  assert_non_null(end);
  return xstrndup(start, (size_t)(end - start));
}

/* The vector kernels and the vectorized scalar loops run on the host's
 * widest vector registers (zmm with AVX-512, ymm with AVX) and call
 * nothing. */
static void test_vectorized(void **state) {
  (void)state;
  Err e;
  char *cpuinfo = read_file("/proc/cpuinfo", NULL, &e);
  const char *reg = cpuinfo && strstr(cpuinfo, " avx512f") ? "zmm"
                    : cpuinfo && strstr(cpuinfo, " avx")   ? "ymm"
                                                           : "xmm";
  free(cpuinfo);
  for (int k = 0; k < FN_COUNT; k++) {
    const char *suffix[2] = {"v16", "loop"};
    for (int j = 0; j < 2; j++) {
      char name[64];
      snprintf(name, sizeof name, "%s_%s", fns[k].name, suffix[j]);
      char *text = function_asm(name);
      int nreg = 0;
      for (const char *p = text; (p = strstr(p, reg)); p++)
        nreg++;
      print_message("%-14s %6zu bytes of asm, %4d %s operands, %s\n", name, strlen(text), nreg,
                    reg, strstr(text, "call") ? "calls" : "no calls");
      bool calls = strstr(text, "call") != NULL;
      free(text);
      assert_true(nreg > 0);
      assert_false(calls);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectorized), cmocka_unit_test(test_exp),
      cmocka_unit_test(test_log),        cmocka_unit_test(test_sigmoid),
      cmocka_unit_test(test_tanh),       cmocka_unit_test(test_soft_fma),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_kernels.c: every product micro-kernel of kernels.c, generated alone
 * into a JIT-compiled function, against a scalar reference in double
 * precision at odd shapes.
 *
 *   gemm             m = 1..37 rows, K in {0, 1, 3, 17, 59, 256},
 *                    n in {1, 7, 18, 33, 256, 768}, overwrite and accumulate,
 *                    with the strides of its three uses (forward products,
 *                    W^T u, weight gradients), for the host's vectors and
 *                    for AVX-512's and for no vectors (the tile is
 *                    chosen from cg->simd; LLVM splits vectors wider than
 *                    the machine's, so every tile runs anywhere), and
 *                    compiled for the CPUs "haswell" (when the host has
 *                    AVX2 and FMA) and "x86-64" (SSE2); C outside the m x n
 *                    block stays as it was, an overwrite reads no C, and
 *                    rows give the same bits however the calls split them
 *   transpose        odd shapes
 *   matvec_block_n,  the batch-1 kernels (16-float vectors), nx = 1, 2, 4;
 *                    matvec_block_n also with the accumulators of other
 *                    targets (mv_lanes 1, 2, 4: Cortex-M, NEON) and with
 *                    int8 rows and their scales (--quantize int8)
 *   matvec_t_block,
 *   outer_seq_rows,  T = 1..9, with and without u, first or not
 *   step_tuples      T = 1..9: every step once, in tuples of 4, 2, 1
 *   no estimates     a / sqrt(x) with the kernels' fast-math flags, through
 *                    optimize_module for x86 CPUs: no rsqrt or rcp in the
 *                    code (their bits differ between CPUs)
 *
 * A float sum of K products differs from the exact one by at most
 * (K + 1) 2^-24 times the sum of the magnitudes (C's included): the
 * bound asserted, far below the size of any product left out or added
 * twice. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "testutil.h"

typedef void Fn(float *a, float *b, float *c, int64_t m, int64_t k);
/* Emits a test function's body; p[0..2] the pointers, p[3], p[4] the i64s. */
typedef void Body(Cg *cg, LLVMValueRef *p, const void *ctx);

static Jit *jit_or_fail(const char *cpu) {
  Err e;
  Jit *j = jit_new(cpu, &e);
  if (!j)
    fail_msg("jit_new(%s): %s", cpu ? cpu : "host", e.msg);
  return j;
}

/* Functions void f(float *, float *, float *, i64, i64), built into one
 * module (kernels.c's GEMM shares its micro-kernels within a module) for
 * vectors simd, then optimized for the JIT's target and compiled. */
typedef struct Mod {
  Jit *j;
  LLVMContextRef ctx;
  LLVMModuleRef m;
  Simd simd;
  int n;
  char names[64][16];
} Mod;

static Mod mod_begin(Jit *j, Simd simd) {
  static int serial;
  char name[16];
  snprintf(name, sizeof name, "m%d", serial++);
  LLVMContextRef ctx = LLVMContextCreate();
  return (Mod){j, ctx, LLVMModuleCreateWithNameInContext(name, ctx), simd, 0, {{0}}};
}

/* Adds a function whose body is body(ctx); returns its index. */
static int mod_add(Mod *md, Body *body, const void *ctx) {
  static int serial;
  assert_true(md->n < (int)ARRAY_LEN(md->names));
  char *name = md->names[md->n];
  snprintf(name, sizeof md->names[0], "k%d", serial++);
  Cg cg;
  cg_init(&cg, md->m, md->simd);
  LLVMTypeRef params[5] = {cg.pty, cg.pty, cg.pty, cg.i64, cg.i64};
  cg.fn = LLVMAddFunction(md->m, name, LLVMFunctionType(LLVMVoidTypeInContext(cg.ctx), params, 5, 0));
  LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, cg.fn, "entry"));
  LLVMValueRef p[5];
  for (int i = 0; i < 5; i++)
    p[i] = LLVMGetParam(cg.fn, (unsigned)i);
  body(&cg, p, ctx);
  LLVMBuildRetVoid(cg.b);
  cg_dispose(&cg);
  return md->n++;
}

/* Compiles the module; fns[i] = function i. */
static void mod_end(Mod *md, Fn **fns) {
  Err e;
  Buf obj = {0};
  JitTimes t = {0};
  if (jit_compile(md->j, md->m, &obj, &t, &e) || jit_add_object(md->j, obj.data, obj.len, &e))
    fail_msg("%s", e.msg);
  buf_free(&obj);
  LLVMDisposeModule(md->m);
  LLVMContextDispose(md->ctx);
  for (int i = 0; i < md->n; i++)
    if (!(fns[i] = (Fn *)jit_lookup(md->j, md->names[i], &e)))
      fail_msg("%s", e.msg);
}

/* One function alone. */
static Fn *build(Jit *j, Simd simd, Body *body, const void *ctx) {
  Mod md = mod_begin(j, simd);
  mod_add(&md, body, ctx);
  Fn *f;
  mod_end(&md, &f);
  return f;
}

static void fill(Rng *r, float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    x[i] = rng_uniform(r, -1, 1);
}

/* |got - want| within the bound of a float sum of `terms` products whose
 * magnitudes add up to mag. */
static void check_sum(const char *what, size_t at, double got, double want, double mag, long long terms) {
  double tol = (double)(terms + 1) * 0x1p-24 * mag + 1e-30;
  if (!(fabs(got - want) <= tol))
    fail_msg("%s [%zu]: %.9g, reference %.9g (|diff| %.3g > %.3g)", what, at, got, want,
             fabs(got - want), tol);
}

/* ------------------------------------------------------------------ GEMM */

enum { MMAX = 37, KMAX = 256 };

/* The three uses, with the strides they take (ldx: a row of the input
 * sequence or batch, padded as scratch rows are):
 *   FWD      Y[b][:] = W x_b, W packed transposed: i = batch row, k = input
 *            feature, j = output feature; A = X [m][ldx], B = W^T [K][n]
 *   WT       Y[b][:] = W^T u_b: i = batch row, k = row of W, j = column of
 *            W; A = U [m][ldx], B = W itself, a column range of a wider W
 *   DW       dW[i][:] += sum over rows r of u_r[i] v_r: i = row of dW, k =
 *            batch/packed row; A = U [K][ldu] read down a column, B = V */
typedef enum Use { FWD, WT, DW } Use;
static const char *const use_names[] = {"forward", "W^T u", "weight gradient"};

static Gemm shape(Use use, long long n, bool acc) {
  switch (use) {
  case FWD:
    return (Gemm){.n = n, .a_si = KMAX + 3, .a_sk = 1, .ldb = n, .ldc = n + 1, .accumulate = acc};
  case WT:
    return (Gemm){.n = n, .a_si = KMAX + 16, .a_sk = 1, .ldb = n + 5, .ldc = n, .accumulate = acc};
  case DW:
  default:
    return (Gemm){.n = n, .a_si = 1, .a_sk = MMAX + 2, .ldb = n + 16, .ldc = n + 7, .accumulate = acc};
  }
}

static void gemm_body(Cg *cg, LLVMValueRef *p, const void *ctx) {
  Gemm g = *(const Gemm *)ctx;
  g.a = p[0], g.b = p[1], g.c = p[2], g.m = p[3], g.k = p[4];
  gemm(cg, &g);
}

static size_t a_size(const Gemm *g) { return (size_t)((MMAX - 1) * g->a_si + (KMAX - 1) * g->a_sk + 1); }

/* Function f, the GEMM of shape(use, n, acc), at every m and K; returns
 * the number of calls checked. */
static int check_gemm(Fn *f, const char *label, Use use, long long n, bool acc) {
  Gemm g = shape(use, n, acc);
  size_t na = a_size(&g), nb = (size_t)(KMAX * g.ldb), nc = (size_t)(MMAX * g.ldc);
  float *A = xmalloc(na * sizeof *A), *B = xmalloc(nb * sizeof *B);
  float *C0 = xmalloc(nc * sizeof *C0), *C = xmalloc(nc * sizeof *C);
  double *ref = xmalloc((size_t)MMAX * n * sizeof *ref), *mag = xmalloc((size_t)MMAX * n * sizeof *mag);
  Rng r;
  rng_seed(&r, (uint64_t)(use * 1000 + n));
  fill(&r, A, na);
  fill(&r, B, nb);
  fill(&r, C0, nc);
  static const long long ks[] = {0, 1, 3, 17, 59, KMAX};
  int calls = 0;
  char what[160];
  for (size_t ki = 0; ki < ARRAY_LEN(ks); ki++) {
    long long K = ks[ki];
    /* the reference for all MMAX rows; a call with m rows must match its first m */
    for (long long i = 0; i < MMAX; i++)
      for (long long jj = 0; jj < n; jj++) {
        double c0 = acc ? C0[i * g.ldc + jj] : 0, s = c0, a = fabs(c0);
        for (long long k = 0; k < K; k++) {
          double t = (double)A[i * g.a_si + k * g.a_sk] * B[k * g.ldb + jj];
          s += t;
          a += fabs(t);
        }
        ref[i * n + jj] = s;
        mag[i * n + jj] = a;
      }
    for (long long m = 1; m <= MMAX; m++) {
      memcpy(C, C0, nc * sizeof *C);
      if (!acc) /* an overwrite must not read C */
        for (long long i = 0; i < m; i++)
          for (long long jj = 0; jj < n; jj++)
            C[i * g.ldc + jj] = NAN;
      f(A, B, C, m, K);
      snprintf(what, sizeof what, "%s: gemm %s, n %lld, %s, m %lld, K %lld", label, use_names[use], n,
               acc ? "C +=" : "C =", m, K);
      for (long long i = 0; i < MMAX; i++)
        for (long long jj = 0; jj < g.ldc; jj++) {
          size_t at = (size_t)(i * g.ldc + jj);
          if (i < m && jj < n)
            check_sum(what, at, C[at], ref[i * n + jj], mag[i * n + jj], K);
          else if (memcmp(&C[at], &C0[at], sizeof *C)) /* outside the block: untouched */
            fail_msg("%s: C[%lld][%lld] outside the product was written", what, i, jj);
        }
      calls++;
    }
    /* The same rows in three calls give the same bits as in one. */
    if (K > 0) {
      float *whole = xmalloc(nc * sizeof *whole);
      memcpy(whole, C0, nc * sizeof *whole);
      f(A, B, whole, MMAX, K);
      memcpy(C, C0, nc * sizeof *C);
      static const long long cuts[] = {0, 5, 18, MMAX};
      for (int q = 0; q < 3; q++)
        f(A + cuts[q] * g.a_si, B, C + cuts[q] * g.ldc, cuts[q + 1] - cuts[q], K);
      if (memcmp(whole, C, nc * sizeof *C))
        fail_msg("%s: rows split 5 + 13 + 19 differ from one call", what);
      free(whole);
    }
  }
  free(A), free(B), free(C0), free(C), free(ref), free(mag);
  return calls;
}

static void gemm_all(Jit *j, Simd simd, const char *label) {
  static const long long ns[] = {1, 7, 18, 33, 256, 768};
  Mod md = mod_begin(j, simd);
  Gemm shapes[3 * ARRAY_LEN(ns) * 2];
  int nf = 0;
  for (int use = FWD; use <= DW; use++)
    for (size_t ni = 0; ni < ARRAY_LEN(ns); ni++)
      for (int acc = 0; acc < 2; acc++) {
        shapes[nf] = shape((Use)use, ns[ni], acc);
        mod_add(&md, gemm_body, &shapes[nf++]);
      }
  Fn *fns[ARRAY_LEN(shapes)];
  mod_end(&md, fns);
  int calls = 0, f = 0;
  for (int use = FWD; use <= DW; use++)
    for (size_t ni = 0; ni < ARRAY_LEN(ns); ni++)
      for (int acc = 0; acc < 2; acc++)
        calls += check_gemm(fns[f++], label, (Use)use, ns[ni], acc);
  print_message("%-34s %d gemm calls match the reference\n", label, calls);
}

static void test_gemm_host(void **state) {
  Jit *j = jit_or_fail(NULL);
  Simd host = jit_simd(j);
  /* jit_simd reads the host's features without a target machine: what
   * simd_of finds in the host's target machine */
  Err e;
  LLVMTargetMachineRef tm = target_machine(NULL, NULL, NULL, LLVMRelocPIC, &e);
  assert_non_null(tm);
  Simd of_tm = simd_of(tm);
  LLVMDisposeTargetMachine(tm);
  assert_int_equal(host.lanes, of_tm.lanes);
  assert_int_equal(host.regs, of_tm.regs);
  assert_int_equal(host.mv_lanes, of_tm.mv_lanes);
  char label[64];
  snprintf(label, sizeof label, "host (%d x %d)", host.lanes, host.regs);
  gemm_all(j, host, label);
  /* other machines' tiles, legalized to this one's registers */
  gemm_all(j, (Simd){.lanes = 16, .regs = 32}, "host, AVX-512's tile (16 x 32)");
  gemm_all(j, (Simd){.lanes = 1, .regs = 16}, "host, no vectors (1 x 16)");
  jit_free(j);
}

static void test_gemm_cpus(void **state) {
  static const struct {
    const char *cpu, *needs[2];
    Simd want;
  } cpus[] = {{"haswell", {"avx2", "fma"}, {.lanes = 8, .regs = 16}},
              {"x86-64", {NULL, NULL}, {.lanes = 4, .regs = 16}}};
  for (size_t i = 0; i < ARRAY_LEN(cpus); i++) {
    if ((cpus[i].needs[0] && !host_has(cpus[i].needs[0])) ||
        (cpus[i].needs[1] && !host_has(cpus[i].needs[1]))) {
      print_message("%s: skipped (the host cannot run its code)\n", cpus[i].cpu);
      continue;
    }
    Jit *j = jit_or_fail(cpus[i].cpu);
    Simd s = jit_simd(j);
    assert_int_equal(s.lanes, cpus[i].want.lanes);
    assert_int_equal(s.regs, cpus[i].want.regs);
    char label[64];
    snprintf(label, sizeof label, "cpu %s (%d x %d)", cpus[i].cpu, s.lanes, s.regs);
    gemm_all(j, s, label);
    jit_free(j);
  }
}

/* simd_of from a host feature list, and from a CPU name alone (asking the
 * back end), against what the CPU is known to have. */
static void test_simd_of(void **state) {
  static const struct {
    const char *triple, *cpu;
    int lanes, regs, mv_lanes;
  } named[] = {{NULL, "x86-64", 4, 16, 16},
               {NULL, "x86-64-v2", 4, 16, 16},
               {NULL, "sandybridge", 8, 16, 16},
               {NULL, "haswell", 8, 16, 16},
               {NULL, "znver3", 8, 16, 16},
               {NULL, "x86-64-v4", 16, 32, 16},
               {NULL, "znver4", 16, 32, 16},
               {NULL, "skylake-avx512", 16, 32, 16},
               /* other targets: the batch-1 products at their own width */
               {"aarch64-linux-gnu", "cortex-a76", 4, 32, 4},
               {"thumbv7em-none-eabihf", "cortex-m4", 1, 16, 1},
               {"riscv64-linux-gnu", "sifive-u74", 1, 16, 1}};
  Err e;
  for (size_t i = 0; i < ARRAY_LEN(named); i++) {
    LLVMTargetMachineRef tm = target_machine(named[i].triple, named[i].cpu, "", LLVMRelocDefault, &e);
    assert_non_null(tm);
    Simd s = simd_of(tm);
    if (s.lanes != named[i].lanes || s.regs != named[i].regs || s.mv_lanes != named[i].mv_lanes)
      fail_msg("%s: %d x %d (batch-1 products %d), want %d x %d (%d)", named[i].cpu, s.lanes, s.regs,
               s.mv_lanes, named[i].lanes, named[i].regs, named[i].mv_lanes);
    LLVMDisposeTargetMachine(tm);
  }
  LLVMTargetMachineRef tm = target_machine(NULL, NULL, NULL, LLVMRelocDefault, &e);
  assert_non_null(tm);
  Simd s = simd_of(tm);
  int lanes = host_has("avx512f") ? 16 : host_has("avx") ? 8 : 4;
  assert_int_equal(s.lanes, lanes);
  assert_int_equal(s.regs, lanes == 16 ? 32 : 16);
  assert_int_equal(s.mv_lanes, 16);
  LLVMDisposeTargetMachine(tm);
}

/* ---------------------------------------------------------- no estimates */

/* 2 / sqrt(x), scalar and on 8 lanes, as cg.h's fdiv builds divisions
 * (arcp, contract) after llvm.sqrt: with fast math x86's back end would
 * make it rsqrtss / rsqrtps and a Newton step, whose bits depend on the
 * CPU it runs on; optimize_module (jit.c's no_estimates) forbids that. */
static void test_no_estimates(void **state) {
  (void)state;
  static const char *cpus[] = {"x86-64", "haswell", "skylake-avx512", "znver4", "sapphirerapids"};
  for (size_t i = 0; i < ARRAY_LEN(cpus); i++) {
    Err e;
    LLVMTargetMachineRef tm = target_machine("x86_64-pc-linux-gnu", cpus[i], "", LLVMRelocDefault, &e);
    assert_non_null(tm);
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef m = LLVMModuleCreateWithNameInContext("estimates", ctx);
    LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), ptr = LLVMPointerTypeInContext(ctx, 0);
    LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(ctx), &ptr, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(m, "f", fty);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
    LLVMTypeRef types[2] = {f32, LLVMVectorType(f32, 8)};
    for (int k = 0; k < 2; k++) {
      LLVMTypeRef t = types[k];
      LLVMValueRef p = LLVMBuildGEP2(b, f32, LLVMGetParam(fn, 0),
                                     (LLVMValueRef[]){LLVMConstInt(LLVMInt64TypeInContext(ctx), 16 * (unsigned)k, 0)}, 1, "");
      LLVMValueRef x = LLVMBuildLoad2(b, t, p, "");
      unsigned id = LLVMLookupIntrinsicID("llvm.sqrt", 9);
      LLVMValueRef sq = LLVMBuildCall2(b, LLVMIntrinsicGetType(ctx, id, &t, 1),
                                       LLVMGetIntrinsicDeclaration(m, id, &t, 1), &x, 1, "");
      LLVMValueRef two = k ? LLVMConstVector((LLVMValueRef[]){LLVMConstReal(f32, 2), LLVMConstReal(f32, 2),
                                                              LLVMConstReal(f32, 2), LLVMConstReal(f32, 2),
                                                              LLVMConstReal(f32, 2), LLVMConstReal(f32, 2),
                                                              LLVMConstReal(f32, 2), LLVMConstReal(f32, 2)}, 8)
                           : LLVMConstReal(f32, 2);
      LLVMValueRef q = LLVMBuildFDiv(b, two, sq, "");
      LLVMSetFastMathFlags(q, LLVMFastMathAllowContract | LLVMFastMathAllowReciprocal);
      LLVMBuildStore(b, q, p);
    }
    LLVMBuildRetVoid(b);
    LLVMDisposeBuilder(b);
    assert_int_equal(optimize_module(m, tm, &e), 0);
    char *text = target_asm_text(tm, m);
    assert_non_null(text);
    if (strstr(text, "rsqrt") || strstr(text, "rcp"))
      fail_msg("%s: an estimate in the code:\n%s", cpus[i], text);
    assert_non_null(strstr(text, "sqrt")); /* the exact one */
    free(text);
    LLVMDisposeModule(m);
    LLVMContextDispose(ctx);
    LLVMDisposeTargetMachine(tm);
  }
}

/* ------------------------------------------------------------- transpose */

typedef struct Tr {
  long long rows, cols, lds, ldd;
  bool nontemporal; /* dst 64-byte aligned */
} Tr;

static void transpose_body(Cg *cg, LLVMValueRef *p, const void *ctx) {
  const Tr *t = ctx;
  transpose(cg, p[2], t->ldd, p[0], t->lds, t->rows, ci64(cg, t->cols), t->nontemporal);
}

static void test_transpose(void **state) {
  Jit *j = jit_or_fail(NULL);
  static const Tr shapes[] = {
      {1, 1, 1, 1, false},       {7, 3, 5, 9, false},        {8, 8, 8, 8, false},
      {37, 19, 21, 40, false},   {16, 16, 16, 16, false},    {15, 17, 17, 15, false},
      {16, 15, 15, 16, false},   {35, 37, 40, 41, false},    {48, 33, 33, 50, false},
      {768, 59, 59, 768, false}, {768, 256, 256, 768, false},
      /* the blocks stored non-temporally (ldd a multiple of 16), or not
       * (ldd 40: the flag is ignored) */
      {16, 16, 16, 16, true}, {35, 37, 40, 48, true}, {768, 59, 59, 768, true},
      {37, 19, 21, 40, true}};
  Rng r;
  rng_seed(&r, 3);
  for (size_t i = 0; i < ARRAY_LEN(shapes); i++) {
    const Tr *t = &shapes[i];
    Fn *f = build(j, (Simd){.lanes = 8, .regs = 16}, transpose_body, t);
    size_t ns = (size_t)(t->rows * t->lds), nd = (size_t)(t->cols * t->ldd);
    float *src = xmalloc(ns * sizeof *src);
    float *dst = aligned_alloc(64, (nd * sizeof(float) + 63) & ~(size_t)63);
    assert_non_null(dst);
    fill(&r, src, ns);
    for (size_t k = 0; k < nd; k++)
      dst[k] = -7;
    f(src, NULL, dst, 0, 0);
    for (long long c = 0; c < t->cols; c++)
      for (long long q = 0; q < t->ldd; q++) {
        float want = q < t->rows ? src[q * t->lds + c] : -7;
        if (memcmp(&dst[c * t->ldd + q], &want, sizeof want))
          fail_msg("transpose %lldx%lld: dst[%lld][%lld] = %g, want %g", t->rows, t->cols, c, q,
                   dst[c * t->ldd + q], want);
      }
    free(src);
    free(dst);
  }
  jit_free(j);
}

/* ---------------------------------------------------- the batch-1 kernels */

typedef struct MV {
  int nx;
  long long nv, ld, M; /* M: rows of W (matvec_t_block) */
  bool q8;             /* matvec_block_n: int8 W */
  int blocked;         /* matvec_block_n: > 0, W float in baked_blocked's layout for
                        * vectors of this many lanes (ld, the row stride, unused) */
} MV;

/* a = W (16 rows, or M; int8: 16 row scales, then the rows), b = the nx
 * vectors x (or u) one after another, c = the nx results one after
 * another */
static void matvec_body(Cg *cg, LLVMValueRef *p, const void *ctx) {
  const MV *t = ctx;
  LLVMValueRef xs[4], ys[4];
  for (int i = 0; i < t->nx; i++) {
    xs[i] = fptr(cg, p[1], ci64(cg, i * t->nv));
    ys[i] = fptr(cg, p[2], ci64(cg, i * (BLOCK / t->nx)));
  }
  if (t->q8)
    matvec_block_n(cg, gep(cg, cg->i8, p[0], ci64(cg, 4 * BLOCK)), t->ld, 0, xs, t->nx, t->nv, ys, p[0]);
  else if (t->blocked)
    matvec_block_n(cg, p[0], t->blocked, BLOCK * t->blocked, xs, t->nx, t->nv, ys, NULL);
  else
    matvec_block_n(cg, p[0], t->ld, 0, xs, t->nx, t->nv, ys, NULL);
}

static void matvec_t_body(Cg *cg, LLVMValueRef *p, const void *ctx) {
  const MV *t = ctx;
  LLVMValueRef us[4], ys[4];
  for (int i = 0; i < t->nx; i++) {
    us[i] = fptr(cg, p[1], ci64(cg, i * t->M));
    ys[i] = fptr(cg, p[2], ci64(cg, i * t->nv));
  }
  matvec_t_block(cg, p[0], t->ld, t->M, t->nv, us, t->nx, ys);
}

static void test_matvec_blocks(void **state) {
  Jit *j = jit_or_fail(NULL);
  Rng r;
  rng_seed(&r, 4);
  static const int nxs[] = {1, 2, 4};
  static const long long nvs[] = {16, 48, 272}, Ms[] = {1, 5, 37};
  char what[96];
  for (size_t a = 0; a < ARRAY_LEN(nxs); a++)
    for (size_t b = 0; b < ARRAY_LEN(nvs); b++) {
      int nx = nxs[a];
      long long nv = nvs[b], ld = nv + 3;
      /* y = W x: 16 / nx rows of W for each of nx vectors, with the
       * accumulators of x86 (16 lanes) and of the other targets, and W
       * float or int8 rows with scales */
      static const int lanes[] = {16, 4, 2, 1};
      for (size_t l = 0; l < ARRAY_LEN(lanes); l++)
        for (int q8 = 0; q8 < 2; q8++) {
          MV t = {nx, nv, ld, 0, q8, 0};
          Fn *f = build(j, (Simd){.lanes = 8, .regs = 16, .mv_lanes = lanes[l]}, matvec_body, &t);
          float *W = xmalloc((size_t)(BLOCK * ld + BLOCK) * sizeof *W);
          float *X = xmalloc((size_t)(nx * nv) * sizeof *X), Y[BLOCK];
          int8_t *Q = (int8_t *)(W + BLOCK);
          fill(&r, X, (size_t)(nx * nv));
          if (q8) {
            fill(&r, W, BLOCK); /* the scales */
            for (long long k = 0; k < BLOCK * ld; k++)
              Q[k] = (int8_t)(rng_uniform(&r, -127.5, 127.5));
          } else {
            fill(&r, W, (size_t)(BLOCK * ld));
          }
          f(W, X, Y, 0, 0);
          snprintf(what, sizeof what, "matvec_block_n nx %d nv %lld lanes %d%s", nx, nv, lanes[l],
                   q8 ? " int8" : "");
          for (int i = 0; i < nx; i++)
            for (int row = 0; row < BLOCK / nx; row++) {
              double s = 0, m = 0;
              for (long long k = 0; k < nv; k++) {
                double p = (q8 ? Q[row * ld + k] * (double)W[row] : W[row * ld + k]) * X[i * nv + k];
                s += p, m += fabs(p);
              }
              /* int8: the sum scaled, one more rounding */
              check_sum(what, (size_t)(i * (BLOCK / nx) + row), Y[i * (BLOCK / nx) + row], s, m, nv + q8);
            }
          if (!q8) {
            /* the same rows in baked_blocked's layout (rnnc build's float
             * weights): the same sums, so the same bits */
            MV tb = {nx, nv, ld, 0, false, lanes[l]};
            Fn *fb = build(j, (Simd){.lanes = 8, .regs = 16, .mv_lanes = lanes[l]}, matvec_body, &tb);
            float *B = xmalloc((size_t)(BLOCK * nv) * sizeof *B), YB[BLOCK];
            long long V = lanes[l];
            for (long long row = 0; row < BLOCK; row++)
              for (long long k = 0; k < nv; k++)
                B[k / V * BLOCK * V + row * V + k % V] = W[row * ld + k];
            fb(B, X, YB, 0, 0);
            for (int i = 0; i < BLOCK; i++)
              if (memcmp(&YB[i], &Y[i], sizeof *Y))
                fail_msg("%s: blocked layout gives %a for result %d, rows give %a", what, YB[i], i, Y[i]);
            free(B);
          }
          free(W);
          free(X);
        }
      /* y = W^T u for M rows of W */
      for (size_t c = 0; c < ARRAY_LEN(Ms); c++) {
        long long M = Ms[c];
        MV tt = {nx, nv, ld, M, false, 0};
        Fn *ft = build(j, (Simd){.lanes = 8, .regs = 16}, matvec_t_body, &tt);
        float *Wt = xmalloc((size_t)(M * ld) * sizeof *Wt), *U = xmalloc((size_t)(nx * M) * sizeof *U);
        float *Yt = xmalloc((size_t)(nx * nv) * sizeof *Yt);
        fill(&r, Wt, (size_t)(M * ld));
        fill(&r, U, (size_t)(nx * M));
        ft(Wt, U, Yt, 0, 0);
        snprintf(what, sizeof what, "matvec_t_block nx %d n %lld M %lld", nx, nv, M);
        for (int i = 0; i < nx; i++)
          for (long long col = 0; col < nv; col++) {
            double s = 0, m = 0;
            for (long long row = 0; row < M; row++) {
              double p = (double)Wt[row * ld + col] * U[i * M + row];
              s += p, m += fabs(p);
            }
            check_sum(what, (size_t)(i * nv + col), Yt[i * nv + col], s, m, M);
          }
        free(Wt);
        free(U);
        free(Yt);
      }
    }
  jit_free(j);
}

typedef struct Outer {
  int R;
  long long nv, ld, M;
  bool with_u, first;
} Outer;

/* a = g (R rows from row 0, stride ld), b = u [T][M] (rows r0 = 0..R), c = v [T][nv] */
static void outer_body(Cg *cg, LLVMValueRef *p, const void *ctx) {
  const Outer *o = ctx;
  outer_seq_rows(cg, p[3], p[0], o->ld, o->with_u ? p[1] : NULL, o->M, ci64(cg, 0), o->R, p[2], o->nv,
                 o->first);
}

static void test_outer_seq_rows(void **state) {
  Jit *j = jit_or_fail(NULL);
  Rng r;
  rng_seed(&r, 5);
  static const Outer cases[] = {{1, 16, 16, 1, false, true}, {1, 48, 48, 1, false, false},
                                {8, 16, 21, 11, true, true},  {8, 48, 50, 9, true, false},
                                {3, 32, 40, 5, true, false}};
  char what[96];
  for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
    const Outer *o = &cases[c];
    Fn *f = build(j, (Simd){.lanes = 8, .regs = 16}, outer_body, o);
    for (int T = 1; T <= 9; T++) {
      size_t ng = (size_t)(o->R * o->ld);
      float *G0 = xmalloc(ng * sizeof *G0), *G = xmalloc(ng * sizeof *G);
      float *U = xmalloc((size_t)(T * o->M) * sizeof *U), *V = xmalloc((size_t)(T * o->nv) * sizeof *V);
      fill(&r, G0, ng);
      fill(&r, U, (size_t)(T * o->M));
      fill(&r, V, (size_t)(T * o->nv));
      memcpy(G, G0, ng * sizeof *G);
      f(G, U, V, T, 0);
      snprintf(what, sizeof what, "outer_seq_rows R %d nv %lld%s%s T %d", o->R, o->nv,
               o->with_u ? "" : " (bias)", o->first ? " first" : "", T);
      for (int row = 0; row < o->R; row++)
        for (long long k = 0; k < o->ld; k++) {
          size_t at = (size_t)(row * o->ld + k);
          if (k >= o->nv) { /* beyond the columns: untouched */
            assert_memory_equal(&G[at], &G0[at], sizeof *G);
            continue;
          }
          double s = o->first ? 0 : G0[at], m = fabs(s);
          for (int t = 0; t < T; t++) {
            double p = (o->with_u ? (double)U[t * o->M + row] : 1.0) * V[t * o->nv + k];
            s += p, m += fabs(p);
          }
          check_sum(what, at, G[at], s, m, T);
        }
      free(G0), free(G), free(U), free(V);
    }
  }
  jit_free(j);
}

/* Each step's tuple size added to out[t]: every step gets exactly one. */
static void visit(void *ctx, LLVMValueRef *ts, int nx) {
  Cg *cg = ctx;
  for (int q = 0; q < nx; q++) {
    LLVMValueRef p = fptr(cg, LLVMGetParam(cg->fn, 2), ts[q]);
    LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, p, ""), cf32(cg, nx)), p);
  }
}

static void steps_body(Cg *cg, LLVMValueRef *p, const void *ctx) { step_tuples(cg, p[3], visit, cg); }

static void test_step_tuples(void **state) {
  Jit *j = jit_or_fail(NULL);
  Fn *f = build(j, (Simd){.lanes = 8, .regs = 16}, steps_body, NULL);
  for (int T = 1; T <= 9; T++) {
    float out[10] = {0};
    f(NULL, NULL, out, T, 0);
    /* fours first, then a pair, then one */
    for (int t = 0; t < 10; t++) {
      int want = t >= T ? 0 : t < T / 4 * 4 ? 4 : t < T / 4 * 4 + (T % 4) / 2 * 2 ? 2 : 1;
      if (out[t] != want)
        fail_msg("step_tuples T %d: step %d in a tuple of %g, want %d", T, t, out[t], want);
    }
  }
  jit_free(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simd_of),       cmocka_unit_test(test_gemm_host),
      cmocka_unit_test(test_gemm_cpus),     cmocka_unit_test(test_transpose),
      cmocka_unit_test(test_matvec_blocks), cmocka_unit_test(test_outer_seq_rows),
      cmocka_unit_test(test_step_tuples),   cmocka_unit_test(test_no_estimates),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

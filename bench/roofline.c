/* roofline.c: this machine's limits on one core, for docs/benchmarks.md.
 *
 *   ./roofline [--quick] [--gemm [PREFIX]]   (--gemm: the FMA peak and the GEMMs
 *                                             only; PREFIX: those whose name
 *                                             starts with it, e.g. gemm_fwd or pack)
 *
 * bench/CMakeLists.txt builds it with -O3 -march=native -ffast-math and links
 * rnnc_core (for the generated GEMM). Measures, each
 * as the best of several timed trials of at least 50 ms (20 ms with --quick,
 * which also leaves out the GEMMs of 9 to 31 rows but multiples of 4):
 *
 *   fma_peak        independent FMA chains in registers: 12 accumulators of
 *                   8 floats (ymm) and of 16 floats (zmm) -> peak GFLOP/s
 *   matvec          y = W x, W row-major float M x N, for the models' shapes
 *                   (768x256: a GRU gate block; 256x256: the rnn's h part),
 *                   one matrix again and again (cache-resident: L2) and a
 *                   cycle over enough distinct matrices to leave L2 (the
 *                   GRU's six weight matrices are 2.6 MB; L2 here is 1 MB)
 *   matvec_t        x = W^T y (the backward of a matvec: the input's gradient)
 *   rank1           G += a b^T (the backward of a matvec: the weight's
 *                   gradient; reads and writes all of G)
 *   adam            one Adam step over n parameters in 4 arrays (value,
 *                   grad, m, v): reads 4, writes 3 (28 bytes a parameter),
 *                   for the rnn's 86,584 and the gru's 642,834 parameters
 *                   (rounded up to 16); exact sqrt and division, as PyTorch
 *   stream_adam     the same traffic as adam with trivial arithmetic: the
 *                   memory system's limit for it
 *   gru_forward     gru.nn's inference for a 7-character name, hand-written
 *                   with the matvec above, in rnnc's schedule and with the
 *                   layer-1 input products hoisted out of the scan (see
 *                   bench_gru)
 *   triad           a[i] = b[i] + s c[i] over 3 x 64 MB (main memory)
 *   gemm            the GEMM rnnc generates (compiler/kernels.c, JIT-compiled
 *                   for this machine) at the shapes of the batched kernels
 *                   (compiler/batch.c), and OpenBLAS's cblas_sgemm on the
 *                   same operands when libopenblas.so.0 can be loaded (one
 *                   thread; not a build dependency), each also as a share of
 *                   the FMA peak above. N: the rows of one step (the names
 *                   still running), or all packed rows of a chunk (a product
 *                   hoisted out of the scan); R: the packed rows a weight
 *                   gradient sums over (a chunk of 16 names: ~115).
 *                     gemm_fwd    Y [N][768] = X [N][256] W^T, W^T packed
 *                                 [256][768]: a gru product (a gate block)
 *                     gemm_wtu    D [N][256] = U [N][768] W, W [768][256]:
 *                                 the backward's W^T u
 *                     gemm_dw     dW [768][256] += U^T V, U [R][768], V
 *                                 [R][256]: a weight gradient
 *                     gemm_*_rnn  the same for rnn.nn's in2hidden, the h
 *                                 part: [256][256] in a [256][315] matrix
 *                   One JSON object a line: {"event":"gemm","name":...,
 *                   "impl":"rnnc"|"openblas","rows":N or R,"m":...,"k":...,
 *                   "n":...,"us":...,"gflops":...,"peak":...} (peak: the
 *                   share of fma_peak). And pack_768x256: the transposed
 *                   copy of a weight matrix a batched kernel's NAME_pack
 *                   makes, once per batch (kernels.c's transpose).
 *
 * Times are the thread's CPU time (other processes on the machine then
 * inflate them less). One JSON object a line on stdout: {"event":"roofline","name":...,
 * "gflops":...,"gbps":...,"us":...}. Single-threaded by construction. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "cg.h" /* rnnc's GEMM generator */

typedef float v8 __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static double min_trial = 0.05;
static int quick; /* --quick: shorter trials, fewer GEMM sizes */
static const char *only = ""; /* --gemm PREFIX: the measures whose names start with it */
static volatile float sink;

/* The thread's CPU time: on a machine shared with other work, time spent
 * descheduled does not count. */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *falloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n * sizeof(float)))
    abort();
  float *f = p;
  for (size_t i = 0; i < n; i++)
    f[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  return f;
}

static void report(const char *name, double seconds_per_call, double flops, double bytes) {
  printf("{\"event\":\"roofline\",\"name\":\"%s\",\"us\":%.3f,\"gflops\":%.2f,\"gbps\":%.2f}\n",
         name, 1e6 * seconds_per_call, flops / seconds_per_call * 1e-9,
         bytes / seconds_per_call * 1e-9);
  fflush(stdout);
}

/* Best seconds per call of fn(arg) over 5 trials of >= min_trial each. */
typedef void (*Bench)(void *arg);
static double best_time(Bench fn, void *arg) {
  fn(arg); /* warm the caches and the clocks */
  long calls = 1;
  for (;;) {
    double t = now();
    for (long i = 0; i < calls; i++)
      fn(arg);
    if (now() - t >= min_trial)
      break;
    calls *= 2;
  }
  double best = 1e30;
  for (int trial = 0; trial < 5; trial++) {
    double t = now();
    for (long i = 0; i < calls; i++)
      fn(arg);
    double dt = (now() - t) / calls;
    best = dt < best ? dt : best;
  }
  return best;
}

/* ---------------------------------------------------------------- FMA peak */
/* 12 independent chains (FMA latency 4 x 2 pipes needs 8), in named
 * variables so they stay in registers. */
enum { FMA_ITERS = 1 << 16, FMA_ACC = 12 };

#define FMA_KERNEL(NAME, V)                                                              \
  static void NAME(void *arg) {                                                          \
    V a = (V){0} + 0.999f, b = (V){0} + 1e-3f;                                           \
    V c0 = (V){0} + sink, c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5,  \
      c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11;   \
    for (int i = 0; i < FMA_ITERS; i++) {                                                \
      c0 = c0 * a + b, c1 = c1 * a + b, c2 = c2 * a + b, c3 = c3 * a + b;                \
      c4 = c4 * a + b, c5 = c5 * a + b, c6 = c6 * a + b, c7 = c7 * a + b;                \
      c8 = c8 * a + b, c9 = c9 * a + b, c10 = c10 * a + b, c11 = c11 * a + b;            \
    }                                                                                    \
    V s = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;                   \
    sink = s[0];                                                                         \
    (void)arg;                                                                           \
  }
FMA_KERNEL(fma8, v8)
FMA_KERNEL(fma16, v16)

/* ------------------------------------------------------------ matvec & co */
typedef struct MV {
  int M, N, nmat, cur;
  float **W, *x, *y;
} MV;

/* y = W x: 4 rows at a time, 16-wide partial sums, one horizontal sum a
 * row. N is a multiple of 16. */
static void matvec(void *arg) {
  MV *a = arg;
  const float *W = a->W[a->cur];
  a->cur = (a->cur + 1) % a->nmat;
  int M = a->M, N = a->N;
  const float *x = a->x;
  float *y = a->y;
  int i = 0;
  for (; i + 4 <= M; i += 4) {
    v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    const float *r0 = W + (size_t)i * N, *r1 = r0 + N, *r2 = r1 + N, *r3 = r2 + N;
    for (int j = 0; j < N; j += 16) {
      v16 xv;
      memcpy(&xv, x + j, sizeof xv);
      v16 w0, w1, w2, w3;
      memcpy(&w0, r0 + j, sizeof w0);
      memcpy(&w1, r1 + j, sizeof w1);
      memcpy(&w2, r2 + j, sizeof w2);
      memcpy(&w3, r3 + j, sizeof w3);
      s0 += w0 * xv, s1 += w1 * xv, s2 += w2 * xv, s3 += w3 * xv;
    }
    float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    for (int k = 0; k < 16; k++)
      t0 += s0[k], t1 += s1[k], t2 += s2[k], t3 += s3[k];
    y[i] = t0, y[i + 1] = t1, y[i + 2] = t2, y[i + 3] = t3;
  }
  for (; i < M; i++) {
    float t = 0;
    for (int j = 0; j < N; j++)
      t += W[(size_t)i * N + j] * x[j];
    y[i] = t;
  }
  sink = y[0];
}

/* x = W^T y: row by row, axpy into x (length N). */
static void matvec_t(void *arg) {
  MV *a = arg;
  const float *W = a->W[a->cur];
  a->cur = (a->cur + 1) % a->nmat;
  int M = a->M, N = a->N;
  float *x = a->x;
  const float *y = a->y;
  memset(x, 0, (size_t)N * sizeof *x);
  for (int i = 0; i < M; i++) {
    float yi = y[i] * 1e-3f;
    const float *r = W + (size_t)i * N;
    for (int j = 0; j < N; j++)
      x[j] += yi * r[j];
  }
  sink = x[0];
}

/* G += a b^T, with a = y (M) and b = x (N). */
static void rank1(void *arg) {
  MV *a = arg;
  float *G = a->W[a->cur];
  a->cur = (a->cur + 1) % a->nmat;
  int M = a->M, N = a->N;
  const float *x = a->x, *y = a->y;
  for (int i = 0; i < M; i++) {
    float yi = y[i] * 1e-9f;
    float *r = G + (size_t)i * N;
    for (int j = 0; j < N; j++)
      r[j] += yi * x[j];
  }
  sink = G[0];
}

static void bench_mv(const char *tag, int M, int N, int nmat) {
  MV a = {M, N, nmat, 0, malloc((size_t)nmat * sizeof(float *)), falloc((size_t)N),
          falloc((size_t)M)};
  for (int k = 0; k < nmat; k++)
    a.W[k] = falloc((size_t)M * N);
  double flops = 2.0 * M * N, wbytes = 4.0 * M * N;
  char name[96];
  snprintf(name, sizeof name, "matvec_%dx%d_%s", M, N, tag);
  report(name, best_time(matvec, &a), flops, wbytes);
  snprintf(name, sizeof name, "matvec_t_%dx%d_%s", M, N, tag);
  report(name, best_time(matvec_t, &a), flops, wbytes);
  snprintf(name, sizeof name, "rank1_%dx%d_%s", M, N, tag);
  report(name, best_time(rank1, &a), flops, 2 * wbytes);
  for (int k = 0; k < nmat; k++)
    free(a.W[k]);
  free(a.W);
  free(a.x);
  free(a.y);
}

/* ------------------------------------------------------------------- Adam */
typedef struct AD {
  size_t n; /* a multiple of 16 */
  float *p, *g, *m, *v;
  float step;
} AD;

/* One Adam step as PyTorch computes it (a real square root and division,
 * no approximations), 16 parameters at a time. */
static void adam(void *arg) {
  AD *a = arg;
  const float b1 = 0.9f, b2 = 0.999f, lr = 1e-3f, eps = 1e-8f;
  a->step += 1;
  float c1 = lr / (1 - powf(b1, a->step)), c2 = 1 / sqrtf(1 - powf(b2, a->step));
  float *restrict p = a->p, *restrict g = a->g, *restrict m = a->m, *restrict v = a->v;
  v16 vb1 = (v16){0} + b1, vb2 = (v16){0} + b2, va1 = (v16){0} + (1 - b1),
      va2 = (v16){0} + (1 - b2), vc1 = (v16){0} + c1, vc2 = (v16){0} + c2,
      veps = (v16){0} + eps;
  for (size_t i = 0; i < a->n; i += 16) {
    v16 gi, mi, vi, pi, d;
    memcpy(&gi, g + i, 64);
    memcpy(&mi, m + i, 64);
    memcpy(&vi, v + i, 64);
    memcpy(&pi, p + i, 64);
    mi = vb1 * mi + va1 * gi;
    vi = vb2 * vi + va2 * gi * gi;
#ifdef __AVX512F__
    d = (v16)_mm512_sqrt_ps((__m512)vi);
#else
    for (int k = 0; k < 16; k++)
      d[k] = sqrtf(vi[k]);
#endif
    pi -= vc1 * mi / (d * vc2 + veps);
    memcpy(m + i, &mi, 64);
    memcpy(v + i, &vi, 64);
    memcpy(p + i, &pi, 64);
  }
  sink = p[0];
}

/* The same traffic with trivial arithmetic: the memory system's limit for
 * Adam's access pattern (read p, g, m, v; write p, m, v). */
static void stream_adam(void *arg) {
  AD *a = arg;
  float *restrict p = a->p, *restrict g = a->g, *restrict m = a->m, *restrict v = a->v;
  for (size_t i = 0; i < a->n; i++) {
    float gi = g[i];
    m[i] += gi, v[i] += gi, p[i] += gi;
  }
  sink = p[0];
}

static void bench_adam(const char *tag, size_t n) {
  n = (n + 15) / 16 * 16;
  AD a = {n, falloc(n), falloc(n), falloc(n), falloc(n), 0};
  for (size_t i = 0; i < n; i++)
    a.v[i] = fabsf(a.v[i]), a.g[i] *= 1e-3f;
  char name[64];
  snprintf(name, sizeof name, "adam_%s_%zu", tag, n);
  report(name, best_time(adam, &a), 13.0 * n, 28.0 * n);
  snprintf(name, sizeof name, "stream_adam_%s_%zu", tag, n);
  report(name, best_time(stream_adam, &a), 3.0 * n, 28.0 * n);
  free(a.p), free(a.g), free(a.m), free(a.v);
}

/* ------------------------------------------- the GRU forward, two schedules
 * gru.nn's inference for a name of GRU_T characters, hand-written, the
 * matrix-vector products as in matvec above (4 rows at a time):
 *   gru_fwd_stepwise   rnnc's schedule today: the layer-0 scan, then the
 *                      layer-1 scan doing W_ih_l1 @ h0_t and W_hh_l1 @ h1
 *                      every step (two 768x256 matrices live: 1.5 MB > L2)
 *   gru_fwd_hoisted    the layer-1 input products for all steps first, as
 *                      one matrix-matrix product (W_ih_l1 read once), so
 *                      each scan streams one 768 KB matrix, which L2 holds
 * The difference is what hoisting a scan's carry-independent products out
 * of the scan is worth. */
enum { GH = 256, G3 = 768, GV = 59, GC = 18, GRU_T = 7 };

typedef struct GRU {
  float *wih0, *whh0, *bih0, *bhh0, *wih1, *whh1, *bih1, *bhh1, *fc, *fcb;
  float *gi, *gh, *h0, *h1, *H0, *GI1, logits[GC];
  int chars[GRU_T];
} GRU;

/* y = W x for M rows of length N (a multiple of 16), M a multiple of 4. */
static void mv_rows(const float *W, const float *x, float *y, int M, int N) {
  for (int i = 0; i < M; i += 4) {
    v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    const float *r0 = W + (size_t)i * N, *r1 = r0 + N, *r2 = r1 + N, *r3 = r2 + N;
    for (int j = 0; j < N; j += 16) {
      v16 xv, w0, w1, w2, w3;
      memcpy(&xv, x + j, sizeof xv);
      memcpy(&w0, r0 + j, sizeof w0);
      memcpy(&w1, r1 + j, sizeof w1);
      memcpy(&w2, r2 + j, sizeof w2);
      memcpy(&w3, r3 + j, sizeof w3);
      s0 += w0 * xv, s1 += w1 * xv, s2 += w2 * xv, s3 += w3 * xv;
    }
    float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    for (int k = 0; k < 16; k++)
      t0 += s0[k], t1 += s1[k], t2 += s2[k], t3 += s3[k];
    y[i] = t0, y[i + 1] = t1, y[i + 2] = t2, y[i + 3] = t3;
  }
}

/* Y[t] = W X[t] for t < T: each block of 4 rows is read from L2 or L3
 * once, then from L1 for every t after the first. (Blocking over t in
 * registers too does not help here: the horizontal sums and the loads of
 * X then bound it; a packed, transposed W would avoid both.) */
static void mm_rows(const float *W, const float *X, float *Y, int M, int N, int T) {
  for (int i = 0; i < M; i += 4)
    for (int t = 0; t < T; t++)
      mv_rows(W + (size_t)i * N, X + (size_t)t * N, Y + (size_t)t * M + i, 4, N);
}

static float sigm(float x) { return 1 / (1 + expf(-x)); }

/* h = GRU cell (gi = W_ih x + b_ih, gh = W_hh h + b_hh without b_hh yet). */
static void gru_gates(const float *gi, const float *gh, const float *bhh, float *h) {
  for (int j = 0; j < GH; j++) {
    float r = sigm(gi[j] + gh[j] + bhh[j]);
    float z = sigm(gi[GH + j] + gh[GH + j] + bhh[GH + j]);
    float n = tanhf(gi[2 * GH + j] + r * (gh[2 * GH + j] + bhh[2 * GH + j]));
    h[j] = (1 - z) * n + z * h[j];
  }
}

static void gru_layer0(GRU *g, int t) {
  for (int i = 0; i < G3; i++) /* one-hot input: a column of W_ih_l0 */
    g->gi[i] = g->wih0[(size_t)i * GV + g->chars[t]] + g->bih0[i];
  mv_rows(g->whh0, g->h0, g->gh, G3, GH);
  gru_gates(g->gi, g->gh, g->bhh0, g->h0);
}

static void gru_fwd_stepwise(void *arg) {
  GRU *g = arg;
  memset(g->h0, 0, GH * sizeof(float));
  memset(g->h1, 0, GH * sizeof(float));
  for (int t = 0; t < GRU_T; t++) {
    gru_layer0(g, t);
    memcpy(g->H0 + (size_t)t * GH, g->h0, GH * sizeof(float));
  }
  for (int t = 0; t < GRU_T; t++) {
    mv_rows(g->wih1, g->H0 + (size_t)t * GH, g->gi, G3, GH);
    for (int i = 0; i < G3; i++)
      g->gi[i] += g->bih1[i];
    mv_rows(g->whh1, g->h1, g->gh, G3, GH);
    gru_gates(g->gi, g->gh, g->bhh1, g->h1);
  }
  mv_rows(g->fc, g->h1, g->logits, 16, GH);
  sink = g->logits[0];
}

static void gru_fwd_hoisted(void *arg) {
  GRU *g = arg;
  memset(g->h0, 0, GH * sizeof(float));
  memset(g->h1, 0, GH * sizeof(float));
  for (int t = 0; t < GRU_T; t++) {
    gru_layer0(g, t);
    memcpy(g->H0 + (size_t)t * GH, g->h0, GH * sizeof(float));
  }
  mm_rows(g->wih1, g->H0, g->GI1, G3, GH, GRU_T);
  for (int t = 0; t < GRU_T; t++) {
    float *gi = g->GI1 + (size_t)t * G3;
    for (int i = 0; i < G3; i++)
      gi[i] += g->bih1[i];
    mv_rows(g->whh1, g->h1, g->gh, G3, GH);
    gru_gates(gi, g->gh, g->bhh1, g->h1);
  }
  mv_rows(g->fc, g->h1, g->logits, 16, GH);
  sink = g->logits[0];
}

static void bench_gru(void) {
  GRU g = {falloc(G3 * GV), falloc(G3 * GH), falloc(G3), falloc(G3), falloc(G3 * GH),
           falloc(G3 * GH), falloc(G3), falloc(G3), falloc(GC * GH), falloc(GC), falloc(G3),
           falloc(G3), falloc(GH), falloc(GH), falloc(GRU_T * GH), falloc(GRU_T * G3), {0},
           {7, 4, 19, 0, 13, 8, 11}};
  for (int i = 0; i < G3 * GH; i++) /* keep the state bounded */
    g.whh0[i] *= 0.05f, g.wih1[i] *= 0.05f, g.whh1[i] *= 0.05f;
  double flops = GRU_T * 3 * 2.0 * G3 * GH, bytes = GRU_T * 3 * 4.0 * G3 * GH;
  report("gru_forward_T7_stepwise", best_time(gru_fwd_stepwise, &g), flops, bytes);
  report("gru_forward_T7_hoisted", best_time(gru_fwd_hoisted, &g), flops, bytes);
  float *bufs[] = {g.wih0, g.whh0, g.bih0, g.bhh0, g.wih1, g.whh1, g.bih1, g.bhh1,
                   g.fc, g.fcb, g.gi, g.gh, g.h0, g.h1, g.H0, g.GI1};
  for (size_t i = 0; i < ARRAY_LEN(bufs); i++)
    free(bufs[i]);
}

/* ------------------------------------------------------------------ triad */
typedef struct TR {
  size_t n;
  float *a, *b, *c;
} TR;

static void triad(void *arg) {
  TR *t = arg;
  float *restrict a = t->a;
  const float *restrict b = t->b, *restrict c = t->c;
  for (size_t i = 0; i < t->n; i++)
    a[i] = b[i] + 0.5f * c[i];
  sink = a[t->n / 2];
}

/* ------------------------------------------------------------------- GEMM */
typedef void GemmFn(const float *a, const float *b, float *c, int64_t m, int64_t k);

/* cblas_sgemm, from libopenblas when it loads (row-major: order 101; no
 * transpose 111, transpose 112). */
typedef void SgemmFn(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                     int lda, const float *b, int ldb, float beta, float *c, int ldc);
static SgemmFn *sgemm;

static void load_openblas(void) {
  void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!h)
    h = dlopen("libopenblas.so", RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return;
  void (*threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
  if (threads)
    threads(1);
  sgemm = (SgemmFn *)dlsym(h, "cblas_sgemm");
}

/* A product of the batched kernels (compiler/batch.c): C [m][n] (= or +=)
 * A B over K, with the strides batch.c passes, at several sizes of the
 * dimension that the batch sets (m for the products, K for the weight
 * gradients). */
typedef struct GB {
  const char *name;
  long long m, k, n;               /* the fixed sizes (m or k: overridden by rows) */
  long long a_si, a_sk, ldb, ldc;
  long long b_off, c_off;          /* B and C start this many floats in (a column range) */
  bool accumulate;
  bool vary_k;                     /* rows sets K (a weight gradient), else m */
  const int *rows;                 /* the sizes measured, 0-terminated */
  int ta;                          /* OpenBLAS: A transposed (U^T) */
  GemmFn *fn;
  float *A, *B, *C;
  int64_t cur_m, cur_k;            /* this measurement's sizes */
} GB;

static void gemm_body_rnnc(Cg *cg, GB *g) {
  Gemm p = {LLVMGetParam(cg->fn, 0), LLVMGetParam(cg->fn, 1), LLVMGetParam(cg->fn, 2),
            LLVMGetParam(cg->fn, 3), LLVMGetParam(cg->fn, 4), g->n, g->a_si, g->a_sk, g->ldb,
            g->ldc, g->accumulate};
  gemm(cg, &p);
}

static void run_rnnc(void *arg) {
  GB *g = arg;
  g->fn(g->A, g->B + g->b_off, g->C + g->c_off, g->cur_m, g->cur_k);
  sink = g->C[0];
}

static void run_openblas(void *arg) {
  GB *g = arg;
  int lda = (int)(g->ta == 112 ? g->a_sk : g->a_si);
  sgemm(101, g->ta, 111, (int)g->cur_m, (int)g->n, (int)g->cur_k, 1, g->A, lda, g->B + g->b_off,
        (int)g->ldb, g->accumulate ? 1 : 0, g->C + g->c_off, (int)g->ldc);
  sink = g->C[0];
}

static void report_gemm(const GB *g, const char *impl, double seconds, double peak) {
  double gflops = 2.0 * g->cur_m * g->cur_k * g->n / seconds * 1e-9;
  printf("{\"event\":\"gemm\",\"name\":\"%s\",\"impl\":\"%s\",\"rows\":%lld,\"m\":%lld,"
         "\"k\":%lld,\"n\":%lld,\"us\":%.3f,\"gflops\":%.2f,\"peak\":%.3f}\n",
         g->name, impl, (long long)(g->vary_k ? g->cur_k : g->cur_m), (long long)g->cur_m,
         (long long)g->cur_k, g->n, 1e6 * seconds, gflops, gflops / peak);
  fflush(stdout);
}

/* The weight packing of a batched kernel's NAME_pack (batch.c's packed():
 * kernels.c's transpose of a [768][256] matrix), once per batch. */
typedef void PackFn(const float *src, float *dst);
typedef struct PK {
  PackFn *fn;
  float *src, *dst;
} PK;

static void run_pack(void *arg) {
  PK *p = arg;
  p->fn(p->src, p->dst);
  sink = p->dst[1];
}

static void bench_gemm(double peak) {
  /* rows: every batch of a step up to 32 names; the packed rows of a chunk of
   * 16 names (16 x 7.16 = 115) and of 32 (230); the larger chunks of
   * batched inference (4 x threads chunks of a block of 1024 names) */
  static const int steps_gru[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13,
                                  14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
                                  27, 28, 29, 30, 31, 32, 64, 115, 128, 230, 256, 0};
  static const int steps_rnn[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                  32, 64, 115, 128, 230, 256, 0};
  static const int chunk_rows[] = {115, 230, 0};
  /* gru.nn: 768 x 256 matrices (a layer's three gates). rnn.nn: the h part
   * of in2hidden [256][315], columns 59..314. */
  GB uses[] = {
      /* Y [N][768] = X [N][256] W^T, W^T packed [256][768] */
      {"gemm_fwd", 0, 256, 768, 256, 1, 768, 768, 0, 0, false, false, steps_gru, 111},
      /* D [N][256] = U [N][768] W, W [768][256] */
      {"gemm_wtu", 0, 768, 256, 768, 1, 256, 256, 0, 0, false, false, steps_gru, 111},
      /* dW [768][256] += U^T V over R rows, U [R][768], V [R][256] */
      {"gemm_dw", 768, 0, 256, 1, 768, 256, 256, 0, 0, true, true, chunk_rows, 112},
      {"gemm_fwd_rnn", 0, 256, 256, 256, 1, 256, 256, 0, 0, false, false, steps_rnn, 111},
      {"gemm_wtu_rnn", 0, 256, 256, 256, 1, 315, 256, 59, 0, false, false, steps_rnn, 111},
      {"gemm_dw_rnn", 256, 0, 256, 1, 256, 256, 315, 0, 59, true, true, chunk_rows, 112},
  };
  enum { PACK_M = 768, PACK_K = 256 };
  Err e;
  Jit *j = jit_new(NULL, &e);
  if (!j) {
    fprintf(stderr, "roofline: %s\n", e.msg);
    exit(1);
  }
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("gemm", ctx);
  Cg cg;
  cg_init(&cg, mod, jit_simd(j));
  for (size_t u = 0; u < ARRAY_LEN(uses); u++) {
    LLVMTypeRef params[5] = {cg.pty, cg.pty, cg.pty, cg.i64, cg.i64};
    cg.fn = LLVMAddFunction(mod, uses[u].name, LLVMFunctionType(LLVMVoidTypeInContext(cg.ctx), params, 5, 0));
    LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, cg.fn, "entry"));
    gemm_body_rnnc(&cg, &uses[u]);
    LLVMBuildRetVoid(cg.b);
  }
  {
    LLVMTypeRef params[2] = {cg.pty, cg.pty};
    cg.fn = LLVMAddFunction(mod, "pack", LLVMFunctionType(LLVMVoidTypeInContext(cg.ctx), params, 2, 0));
    LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, cg.fn, "entry"));
    transpose(&cg, LLVMGetParam(cg.fn, 1), PACK_M, LLVMGetParam(cg.fn, 0), PACK_K, PACK_M, ci64(&cg, PACK_K),
              false); /* one thread packs: through the caches, as the runtime's one part */
    LLVMBuildRetVoid(cg.b);
  }
  cg_dispose(&cg);
  Buf obj = {0};
  JitTimes jt = {0};
  if (jit_compile(j, mod, &obj, &jt, &e) || jit_add_object(j, obj.data, obj.len, &e)) {
    fprintf(stderr, "roofline: %s\n", e.msg);
    exit(1);
  }
  buf_free(&obj);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  load_openblas();
  if (!sgemm)
    fprintf(stderr, "roofline: libopenblas.so.0 not loaded: OpenBLAS's sgemm not measured\n");
  for (size_t u = 0; u < ARRAY_LEN(uses); u++) {
    GB *g = &uses[u];
    if (strncmp(g->name, only, strlen(only)))
      continue;
    g->fn = (GemmFn *)jit_lookup(j, g->name, &e);
    long long rmax = 0;
    for (const int *r = g->rows; *r; r++)
      rmax = *r > rmax ? *r : rmax;
    long long mmax = g->vary_k ? g->m : rmax, kmax = g->vary_k ? rmax : g->k;
    g->A = falloc((size_t)((mmax - 1) * g->a_si + (kmax - 1) * g->a_sk + 1));
    g->B = falloc((size_t)(kmax * g->ldb));
    g->C = falloc((size_t)(mmax * g->ldc));
    for (const int *r = g->rows; *r; r++) {
      if (quick && *r > 8 && *r < 32 && *r % 4) /* --quick: bench/report.py interpolates */
        continue;
      g->cur_m = g->vary_k ? g->m : *r;
      g->cur_k = g->vary_k ? *r : g->k;
      report_gemm(g, "rnnc", best_time(run_rnnc, g), peak);
      if (sgemm)
        report_gemm(g, "openblas", best_time(run_openblas, g), peak);
    }
    free(g->A), free(g->B), free(g->C);
  }
  if (!strncmp("pack_768x256", only, strlen(only))) {
    PK pk = {(PackFn *)jit_lookup(j, "pack", &e), falloc(PACK_M * PACK_K), falloc(PACK_M * PACK_K)};
    report("pack_768x256", best_time(run_pack, &pk), 0, 2.0 * 4 * PACK_M * PACK_K);
    free(pk.src), free(pk.dst);
  }
  jit_free(j);
}

int main(int argc, char **argv) {
  quick = argc > 1 && !strcmp(argv[1], "--quick");
  if (quick)
    min_trial = 0.02;
  double t8 = best_time(fma8, NULL), t16 = best_time(fma16, NULL);
  report("fma_peak_ymm", t8, 2.0 * FMA_ACC * 8 * FMA_ITERS, 0);
  report("fma_peak_zmm", t16, 2.0 * FMA_ACC * 16 * FMA_ITERS, 0);
  double peak = 2.0 * FMA_ACC * FMA_ITERS * fmax(8 / t8, 16 / t16) * 1e-9; /* GFLOP/s */
  int gemm_only = argc > 1 && !strcmp(argv[argc - 1], "--gemm");
  if (argc > 2 && !strcmp(argv[argc - 2], "--gemm")) {
    gemm_only = 1;
    only = argv[argc - 1];
  }
  if (gemm_only) { /* the GEMMs only */
    bench_gemm(peak);
    return 0;
  }
  bench_mv("L2", 768, 256, 1);
  bench_mv("L3", 768, 256, 6); /* 4.7 MB: the GRU's six matrices and more */
  bench_mv("L2", 256, 256, 1);
  bench_adam("rnn", 86584);
  bench_adam("gru", 642834);
  bench_gru();
  TR t = {(size_t)16 << 20, falloc((size_t)16 << 20), falloc((size_t)16 << 20),
          falloc((size_t)16 << 20)};
  report("triad_dram_64MB", best_time(triad, &t), 2.0 * t.n, 12.0 * t.n);
  free(t.a), free(t.b), free(t.c);
  bench_gemm(peak);
  return 0;
}

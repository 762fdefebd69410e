/* model.c: compiling a graph file into JIT kernels, the parameter buffers
 * the kernels work on, and the drivers that call them: one name at a time,
 * or a batch spread over threads. */
#include "model.h"

#include <assert.h>
#include <llvm-c/Core.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "pool.h"

static void *aligned(size_t floats) {
  void *p = xalloc_big((floats ? floats : 1) * sizeof(float));
  memset(p, 0, (floats ? floats : 1) * sizeof(float));
  return p;
}

static Cache *open_cache(const ModelOptions *opt) {
  char *dir = opt->no_cache || cache_disabled_by_env() ? NULL : cache_default_dir();
  if (!dir)
    return NULL;
  Err why;
  Cache *c = cache_open(dir, &why);
  if (!c)
    fprintf(stderr, "rnnc: warning: compiled kernels are not cached: %s\n", why.msg);
  free(dir);
  return c;
}

/* A kernel to compile, and what became of it. */
typedef struct Kernel {
  KernelKind kind;
  const Graph *g;
  KernelAbi *abi;
  void **fn;
  void **extra; /* kernel_extra_name's function, where the module has it (NULL: not wanted) */
  bool later;   /* LLVM's work on it may go on after model_compile returns */
  bool pending; /* codegen made a module for LLVM (not from the cache) */
  JitPending pend;
  Buf obj; /* the object file */
  JitTimes times;
  Err err;
  int begin_rc, rc; /* the cache or codegen's; and the whole compile's */
} Kernel;

enum { MAX_THREADS = 16, MAX_KERNELS = 5 };

typedef struct BuildTask {
  int kernel;
  bool begin, finish; /* jit_kernel_begin, jit_kernel_finish */
} BuildTask;

/* A compile's kernels, and the tasks its threads take from them in order:
 * each kernel that cannot wait compiled whole, the largest first; codegen
 * of each that can (jit_kernel_begin: whether it exists, and its ABI,
 * are known when model_compile returns); then LLVM's work on those
 * (jit_kernel_finish), which the threads go on with in the background
 * (model_wait). */
struct KernelBuild {
  const Jit *jit;
  Simd simd;
  Cache *cache;
  Kernel k[MAX_KERNELS];
  BuildTask task[2 * MAX_KERNELS];
  int ntasks, now;   /* model_compile waits for tasks [0, now) */
  atomic_int next;   /* the next task a thread takes */
  atomic_bool cancel; /* the finishes not yet started are dropped (model_free) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done; /* of tasks [0, now) */
  pthread_t threads[MAX_THREADS];
  int started;
};

/* The next task below limit, or -1 when none is left. */
static int take(KernelBuild *bd, int limit) {
  int t = atomic_load(&bd->next);
  while (t < limit && !atomic_compare_exchange_weak(&bd->next, &t, t + 1)) {
  }
  return t < limit ? t : -1;
}

/* jit_kernel in its halves, through the cache (the one place where
 * kernels are compiled). A finish starts when every begin is done: its
 * kernel's may have been on another thread. */
static void run_task(KernelBuild *bd, int t) {
  Kernel *k = &bd->k[bd->task[t].kernel];
  if (bd->task[t].begin) {
    k->begin_rc = jit_kernel_begin(bd->jit, k->kind, k->g, bd->simd, bd->cache, &k->obj, k->abi,
                                   &k->pend, &k->times, &k->err);
    k->rc = k->begin_rc;
    k->pending = k->pend.mod != NULL;
  }
  if (bd->task[t].finish) {
    pthread_mutex_lock(&bd->mu);
    while (bd->done < bd->now && t >= bd->now)
      pthread_cond_wait(&bd->cv, &bd->mu);
    pthread_mutex_unlock(&bd->mu);
    if (!k->begin_rc && !atomic_load(&bd->cancel))
      k->rc = jit_kernel_finish(bd->jit, bd->cache, &k->pend, &k->obj, k->abi, &k->times, &k->err);
    jit_kernel_drop(&k->pend);
  }
  if (t < bd->now) {
    pthread_mutex_lock(&bd->mu);
    bd->done++;
    pthread_cond_broadcast(&bd->cv);
    pthread_mutex_unlock(&bd->mu);
  }
}

static void *compile_kernels(void *arg) {
  KernelBuild *bd = arg;
  for (int t; (t = take(bd, bd->ntasks)) >= 0;)
    run_task(bd, t);
  return NULL;
}

/* The rest of the tasks on this thread (with cancel set: dropped), the
 * other threads joined, the cache closed. */
static void build_end(KernelBuild *bd) {
  compile_kernels(bd);
  for (int i = 0; i < bd->started; i++)
    pthread_join(bd->threads[i], NULL);
  bd->started = 0;
  cache_close(bd->cache);
  bd->cache = NULL;
}

static void build_free(KernelBuild *bd) {
  for (int i = 0; i < MAX_KERNELS; i++) {
    jit_kernel_drop(&bd->k[i].pend);
    buf_free(&bd->k[i].obj);
  }
  pthread_mutex_destroy(&bd->mu);
  pthread_cond_destroy(&bd->cv);
  free(bd);
}

/* What became of kernel k: its times summed into the model's; an error
 * (the first in rc) unless kernel_optional says the runtime can do
 * without it (m->unbatched keeps the reason; its fn stays NULL): when
 * it could not be made, or for a kernel compiled in the background when
 * codegen said no (after that, calls have relied on its existence); then,
 * with no error so far, linked and looked up. */
static int kernel_done(Model *m, Kernel *k, int rc, Err *e) {
  m->times.codegen += k->times.codegen;
  m->times.jit.cache += k->times.cache;
  m->times.jit.optimize += k->times.optimize;
  m->times.jit.machine_code += k->times.machine_code;
  m->times.jit.kernels += k->times.kernels;
  m->times.jit.cached += k->times.cached;
  *k->fn = NULL;
  if ((k->later ? k->begin_rc : k->rc) && kernel_optional(k->kind)) {
    if (!m->unbatched)
      m->unbatched = xstrdup(k->err.msg);
    return rc;
  }
  if (k->rc || rc)
    return rc ? rc : errf(e, "%s", k->err.msg);
  double t0 = thread_seconds();
  rc = jit_add_object(m->jit, k->obj.data, k->obj.len, e);
  *k->fn = rc ? NULL : jit_lookup(m->jit, kernel_name(k->kind), e); /* links it */
  rc = rc || !*k->fn ? -1 : 0;
  if (!rc && k->extra && k->abi->extra) {
    *k->extra = jit_lookup(m->jit, kernel_extra_name(k->kind), e);
    rc = *k->extra ? 0 : -1;
  }
  m->times.link += thread_seconds() - t0;
  buf_free(&k->obj);
  return rc;
}

/* Compiles k[0..n) at once, on as many threads as there are cores (LLVM
 * is most of a cold start, and each kernel is independent), then adds them
 * to the JIT in order and looks each up (kernel_done). Kernels marked
 * later are only generated (codegen, or the cache) before this returns
 * when LLVM has work on them: that goes on in the background, and
 * model_wait waits for it and links them. */
static int build_kernels(Model *m, const Kernel *k, int n, const ModelOptions *opt, Err *e) {
  assert(n <= MAX_KERNELS);
  KernelBuild *bd = xcalloc(1, sizeof *bd);
  *bd = (KernelBuild){.jit = m->jit, .simd = jit_simd(m->jit), .cache = open_cache(opt)};
  pthread_mutex_init(&bd->mu, NULL);
  pthread_cond_init(&bd->cv, NULL);
  atomic_init(&bd->next, 0);
  atomic_init(&bd->cancel, false);
  memcpy(bd->k, k, (size_t)n * sizeof *k);
  for (int i = 0; i < n; i++)
    if (!k[i].later)
      bd->task[bd->ntasks++] = (BuildTask){i, true, true};
  for (int i = 0; i < n; i++)
    if (k[i].later)
      bd->task[bd->ntasks++] = (BuildTask){i, true, false};
  bd->now = bd->ntasks;
  for (int i = 0; i < n; i++)
    if (k[i].later)
      bd->task[bd->ntasks++] = (BuildTask){i, false, true};
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int nthreads = (int)(cores < 1 ? 1 : cores < n ? cores : n);
  nthreads = nthreads < MAX_THREADS ? nthreads : MAX_THREADS;
  while (bd->started + 1 < nthreads &&
         !pthread_create(&bd->threads[bd->started], NULL, compile_kernels, bd))
    bd->started++;
  for (int t; (t = take(bd, bd->now)) >= 0;) /* this thread too; all of them if no thread starts */
    run_task(bd, t);
  pthread_mutex_lock(&bd->mu);
  while (bd->done < bd->now)
    pthread_cond_wait(&bd->cv, &bd->mu);
  pthread_mutex_unlock(&bd->mu);
  bool background = false; /* LLVM has work left on a kernel that can wait */
  for (int i = 0; i < n; i++)
    background |= bd->k[i].later && bd->k[i].pending;
  if (!background)
    build_end(bd); /* the rest: finishes with nothing to do */
  int rc = 0;
  for (int i = 0; i < n; i++) {
    Kernel *ki = &bd->k[i];
    if (!background || !ki->later || ki->begin_rc) /* else model_wait's */
      rc = kernel_done(m, ki, rc, e);
  }
  if (background && !rc) {
    assert(!m->later && "one build's kernels in the background");
    m->later = bd;
    return 0;
  }
  atomic_store(&bd->cancel, true);
  build_end(bd);
  build_free(bd);
  return rc;
}

/* The batched kernels' packs, for those linked that pack. */
static void alloc_packs(Model *m) {
  if (m->bstep_pack_fn && !m->bstep_packs)
    m->bstep_packs = aligned(m->bstep_abi.packed);
  if (m->bfwd_pack_fn && !m->bfwd_packs)
    m->bfwd_packs = aligned(m->bfwd_abi.packed);
}

int model_wait(Model *m, Err *e) {
  KernelBuild *bd = m->later;
  if (!bd)
    return m->later_err ? errf(e, "%s", m->later_err) : 0;
  m->later = NULL;
  build_end(bd);
  int rc = 0;
  for (int i = 0; i < MAX_KERNELS; i++) {
    Kernel *k = &bd->k[i];
    if (k->later && !k->begin_rc) {
      if (k->rc && !rc)
        rc = errf(e, "the %s kernel, compiled in the background: %s", kernel_name(k->kind),
                  k->err.msg);
      rc = kernel_done(m, k, rc, e);
    }
  }
  build_free(bd);
  if (rc)
    m->later_err = xstrdup(e->msg);
  else
    alloc_packs(m);
  return rc;
}

int model_background(const Model *m, Buf *names) {
  int n = 0;
  for (int i = 0; m->later && i < MAX_KERNELS; i++) {
    const Kernel *k = &m->later->k[i];
    if (k->later && !k->begin_rc) /* fixed since model_compile returned */
      buf_printf(names, "%s%s", n++ ? ", " : "", kernel_name(k->kind));
  }
  return n;
}

/* The kernels model_compile left to the background, ready (false: they
 * failed, and the call that needs them fails; model_wait says why). */
static bool ready(Model *m) {
  Err ignored;
  return (!m->later && !m->later_err) || !model_wait(m, &ignored);
}

/* The graph's training batch size, unless the options give one. */
static int batch_size(const char *path, const char *text, size_t len, const ModelOptions *opt,
                      Err *e) {
  if (opt->no_train)
    return 1;
  if (opt->batch > 0)
    return opt->batch;
  Graph *probe = compile_graph_data(path, text, len, &opt->sizes, e);
  if (!probe)
    return -1;
  int b = probe->train.batch;
  graph_free(probe);
  return b;
}

int model_compile(Model *m, const char *path, const ModelOptions *opt, Err *e) {
  memset(m, 0, sizeof *m);
  m->path = xstrdup(path);
  size_t len;
  char *text = read_graph(path, &len, e);
  if (!text)
    return -1;
  m->hash = fnv1a(FNV1A_INIT, text, len);
  double t0 = now_seconds();
  m->batch = batch_size(path, text, len, opt, e);
  if (m->batch < 0) {
    free(text);
    return -1;
  }
  bool batched = m->batch > 1 && !opt->no_batched;
  unsigned want = KERNEL_BIT(KERNEL_FORWARD);
  if (!opt->no_train)
    want |= m->batch > 1 ? KERNEL_BIT(KERNEL_STEP) | KERNEL_BIT(KERNEL_UPDATE) : KERNEL_BIT(KERNEL_TRAIN);
  if (opt->batched_forward && !opt->no_batched)
    want |= KERNEL_BIT(KERNEL_FORWARD_BATCH);
  Kernels ks;
  int rc = kernels_prepare(&ks, path, text, len, want, opt->lr, &opt->sizes, e);
  free(text);
  if (rc)
    return -1;
  m->fwd = ks.graph[KERNEL_FORWARD]; /* the model owns the graphs now */
  m->train = m->batch > 1 ? ks.graph[KERNEL_STEP] : ks.graph[KERNEL_TRAIN];
  m->update = ks.graph[KERNEL_UPDATE];
  m->fwd_batch = ks.graph[KERNEL_FORWARD_BATCH];
  m->times.front = ks.front;
  m->times.passes = ks.passes;
  m->nfloats = m->fwd->nfloats;
  if (!opt->no_kernels) {
    double c0 = thread_seconds();
    m->jit = jit_new(opt->cpu, e);
    m->times.link = thread_seconds() - c0;
    if (!m->jit)
      return -1;
    /* the largest first: it ends last. The step graph serves both step
     * kernels; the one-name step is made only if the batched one fails.
     * Training calls neither inference kernel: with opt->background they
     * can wait (model_wait). */
    bool later = opt->background && !opt->no_train;
    Kernel k[MAX_KERNELS];
    int n = 0;
    if (m->update) {
      k[n++] = (Kernel){.kind = batched ? KERNEL_STEP_BATCH : KERNEL_STEP, .g = m->train,
                        .abi = batched ? &m->bstep_abi : &m->step_abi,
                        .fn = batched ? (void **)&m->bstep_fn : (void **)&m->step_fn,
                        .extra = batched ? (void **)&m->bstep_pack_fn : NULL};
      k[n++] = (Kernel){.kind = KERNEL_UPDATE, .g = m->update, .abi = &m->update_abi,
                        .fn = (void **)&m->update_fn, .extra = (void **)&m->update_range_fn};
    } else if (m->train) {
      k[n++] = (Kernel){.kind = KERNEL_TRAIN, .g = m->train, .abi = &m->train_abi, .fn = (void **)&m->train_fn};
    }
    if (m->fwd_batch)
      k[n++] = (Kernel){.kind = KERNEL_FORWARD_BATCH, .g = m->fwd_batch, .abi = &m->bfwd_abi,
                        .fn = (void **)&m->bfwd_fn, .extra = (void **)&m->bfwd_pack_fn,
                        .later = later};
    k[n++] = (Kernel){.kind = KERNEL_FORWARD, .g = m->fwd, .abi = &m->fwd_abi,
                      .fn = (void **)&m->fwd_fn, .later = later};
    if (build_kernels(m, k, n, opt, e))
      return -1;
    if (batched && m->update && !m->bstep_fn) { /* no batched step: one name per call */
      Kernel one = {.kind = KERNEL_STEP, .g = m->train, .abi = &m->step_abi, .fn = (void **)&m->step_fn};
      if (build_kernels(m, &one, 1, opt, e))
        return -1;
    }
  }
  m->times.total = now_seconds() - t0;
  m->nslots = m->train ? SLOT_COUNT : 1; /* inference reads the values only */
  m->state = aligned(m->nslots * m->nfloats);
  alloc_packs(m);
  m->threads = opt->threads > 0 ? opt->threads : 1;
  m->pool = pool_new(m->threads);
  m->ws = xcalloc((size_t)m->threads, sizeof *m->ws);
  rng_seed(&m->rng, 0);
  model_reserve(m, 1);
  return 0;
}

void model_free(Model *m) {
  if (m->later) { /* the kernels no call needed: what LLVM has not started is dropped */
    atomic_store(&m->later->cancel, true);
    build_end(m->later);
    build_free(m->later);
  }
  free(m->later_err);
  pool_free(m->pool);
  jit_free(m->jit);
  graph_free(m->fwd);
  graph_free(m->train);
  graph_free(m->update);
  graph_free(m->fwd_batch);
  free(m->state);
  free(m->bstep_packs);
  free(m->bfwd_packs);
  for (int t = 0; m->ws && t < m->threads; t++) {
    Workspace *w = &m->ws[t];
    free(w->scratch);
    free(w->out);
    free(w->grad);
    Packed *pk = &w->pk;
    void *bufs[] = {pk->order, pk->lens, pk->targets, pk->bs, pk->off, pk->chars, pk->noise,
                    pk->scratch};
    for (size_t k = 0; k < ARRAY_LEN(bufs); k++)
      free(bufs[k]);
  }
  free(m->unbatched);
  free(m->ws);
  free(m->batch_noise);
  free(m->path);
  memset(m, 0, sizeof *m);
}

int model_classes(const Model *m) { return m->fwd->classes; }

/* N(0, std^2), Box-Muller on two uniform draws (one value per pair). Here,
 * not in util.c: the AOT example links util.c without libm. */
static float rng_normal(Rng *r, double std) {
  double u1 = 1.0 - (double)rng_uniform(r, 0, 1); /* (0, 1]: a finite log */
  double u2 = (double)rng_uniform(r, 0, 1);
  return (float)(std * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

void model_init_params(Model *m, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  const Graph *g = m->fwd;
  memset(m->state, 0, m->nslots * m->nfloats * sizeof(float));
  m->step = 0;
  for (int p = 0; p < g->nparams; p++) {
    const Param *pa = &g->params[p];
    double bound = 0;
    switch (pa->init) {
    case INIT_ZEROS:
      break;
    case INIT_UNIFORM:
      bound = pa->init_arg;
      break;
    case INIT_LINEAR:
      bound = 1 / sqrt(pa->init_arg);
      break;
    case INIT_KAIMING_UNIFORM:
      bound = sqrt(6 / pa->init_arg);
      break;
    case INIT_NORMAL:
      break;
    }
    float *w = m->state + pa->offset;
    for (size_t i = 0, n = type_numel(pa->type); i < n; i++)
      w[i] = pa->init == INIT_NORMAL ? rng_normal(&r, pa->init_arg)
             : bound                 ? rng_uniform(&r, (float)-bound, (float)bound)
                                     : 0;
  }
}

void model_seed_noise(Model *m, uint64_t seed) { rng_seed(&m->rng, seed); }

static size_t scratch_floats(const KernelAbi *a, int tmax) {
  return a->scratch_fixed + (size_t)tmax * a->scratch_per_t;
}

void model_reserve(Model *m, int tmax) {
  if (tmax <= m->tmax)
    return;
  m->tmax = tmax;
  size_t s = scratch_floats(&m->fwd_abi, tmax);
  const KernelAbi *abis[] = {&m->train_abi, &m->step_abi, &m->update_abi};
  for (size_t k = 0; k < ARRAY_LEN(abis); k++) {
    size_t sk = scratch_floats(abis[k], tmax);
    s = sk > s ? sk : s;
  }
  for (int t = 0; t < m->threads; t++) {
    Workspace *w = &m->ws[t];
    free(w->scratch);
    w->scratch = aligned(s);
    if (!w->out)
      w->out = aligned((size_t)m->fwd->classes + 2);
    if (m->update && !w->grad)
      w->grad = aligned(m->nfloats);
  }
}

void model_feed_noise(Model *m, const float *draws, size_t n) {
  m->fed_noise = draws;
  m->fed_count = n;
}

size_t model_noise_per_name(const Model *m) { return m->fwd_abi.noise; }

void model_skip_noise(Model *m, size_t n) {
  if (!ready(m))
    return; /* and model_forward_batch fails */
  size_t per_name = m->bfwd_fn ? m->bfwd_abi.noise : m->fwd_abi.noise; /* as forward_batch */
  for (size_t i = 0, k = n * per_name; i < k; i++)
    rng_uniform(&m->rng, -1, 1);
}

/* Room for n names' noise, drawn now in name order. */
static const float *draw_noise(Model *m, int n, size_t per_name) {
  size_t cnt = (size_t)n * per_name;
  if (m->fed_noise) {
    assert(m->fed_count == cnt && "model_feed_noise: as many draws as the call makes");
    const float *d = m->fed_noise;
    m->fed_noise = NULL;
    return d;
  }
  if (cnt > m->batch_noise_cap) {
    free(m->batch_noise);
    m->batch_noise = aligned(cnt);
    m->batch_noise_cap = cnt;
  }
  for (size_t i = 0; i < cnt; i++)
    m->batch_noise[i] = rng_uniform(&m->rng, -1, 1);
  return m->batch_noise;
}

static void reserve_for(Model *m, const int32_t *lens, int n) {
  int tmax = 1;
  for (int i = 0; i < n; i++)
    tmax = lens[i] > tmax ? lens[i] : tmax;
  model_reserve(m, tmax);
}

/* The kernels index with chars, T and target unchecked (llvm.c): T = 0
 * would read row -1, a character past the vocabulary a column past the
 * input matrix. So every call is checked here first, all of a batch before
 * any of it runs. */
static bool valid(const Model *m, const int32_t *const *chars, const int32_t *lens,
                  const int32_t *targets, int n) {
  for (int k = 0; k < n; k++) {
    int len = lens[k], target = targets ? targets[k] : 0;
    if (len < 1 || len > NAME_MAX_CHARS || target < 0 || target >= m->fwd->classes)
      return false;
    for (int i = 0; i < len; i++)
      if (chars[k][i] < 0 || chars[k][i] >= m->fwd->vocab)
        return false;
  }
  return true;
}

int model_train_step(Model *m, const int32_t *chars, int len, int target, float *loss,
                     float *grad_norm) {
  if (!valid(m, &chars, &len, &target, 1))
    return -1;
  model_reserve(m, len);
  Workspace *w = &m->ws[0];
  const float *noise = draw_noise(m, 1, m->train_abi.noise);
  m->step++;
  m->train_fn(m->state, chars, len, target, noise, w->scratch, m->tmax, (float)m->step, w->out);
  int c = m->fwd->classes;
  *loss = w->out[c];
  *grad_norm = w->out[c + 1];
  return 0;
}

int model_forward(Model *m, const int32_t *chars, int len, float *logits) {
  if (!ready(m) || !valid(m, &chars, &len, NULL, 1))
    return -1;
  model_reserve(m, len);
  Workspace *w = &m->ws[0];
  const float *noise = draw_noise(m, 1, m->fwd_abi.noise);
  m->fwd_fn(m->state, chars, len, 0, noise, w->scratch, m->tmax, 0, w->out);
  memcpy(logits, w->out, (size_t)m->fwd->classes * sizeof *logits);
  return 0;
}

/* ------------------------------------------------------------ batches */

enum { CHUNK_NAMES = 16 }; /* names per chunk of a training batch, at most */

int model_chunks(int n) {
  if (n <= 1)
    return 1;
  int k = (n + CHUNK_NAMES - 1) / CHUNK_NAMES;
  return k < 2 ? 2 : k;
}

typedef struct LenIdx {
  int32_t len, idx;
} LenIdx;

static int longest_first(const void *a, const void *b) {
  const LenIdx *x = a, *y = b;
  if (x->len != y->len)
    return x->len > y->len ? -1 : 1;
  return (x->idx > y->idx) - (x->idx < y->idx);
}

void model_chunk_names(const int32_t *lens, int n, int32_t *names, int32_t *start) {
  int K = model_chunks(n);
  LenIdx *li = xmalloc((size_t)n * sizeof *li);
  for (int i = 0; i < n; i++)
    li[i] = (LenIdx){lens[i], i};
  qsort(li, (size_t)n, sizeof *li, longest_first);
  /* dealt like cards, one round forward and the next back: chunk k gets
   * sorted places k, 2K - 1 - k, 2K + k, ... */
  for (int k = 0; k <= K; k++)
    start[k] = (int32_t)((int64_t)n * k / K);
  int *fill = xcalloc((size_t)K, sizeof *fill);
  for (int p = 0; p < n; p++) {
    int round = p / K, q = p % K, k = round % 2 ? K - 1 - q : q;
    while (start[k] + fill[k] == start[k + 1]) /* full (n not a multiple of K) */
      k = (k + 1) % K;
    names[start[k] + fill[k]++] = li[p].idx;
  }
  free(fill);
  free(li);
}

typedef struct Batch {
  Model *m;
  const int32_t *const *chars;
  const int32_t *lens, *targets;
  int n, nchunks, wave; /* chunks [wave * threads, ...) run now */
  const int32_t *names, *start; /* training: chunk k is names[start[k] .. start[k + 1]) */
  const float *noise;
  size_t per_name;
  float *losses, *logits;
  float scale;
  BatchPackFn pack_fn; /* pack_task: the kernel's packing, into packs */
  float *packs;
  float *norm_parts; /* update_part: each part's share of the gradient norm's sum */
  bool drop;         /* update_part: drop_other_copies first */
  const struct Fold *fold; /* update_part: the last wave's fold, done part by part first */
} Batch;

/* The last wave of a batch's chunks, its sums not yet added into the grad
 * slot (count 0: none pending): fold_strip adds them, in chunk order, and
 * multiplies by scale, range by range. */
typedef struct Fold {
  int first, count;
  float scale;
} Fold;

/* Makes room for need elements of size elem in each of the k buffers
 * ps[0..k) that share the capacity *cap (64-byte aligned; contents are not
 * kept). */
static void grow(void **ps, int k, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return;
  *cap = need + need / 2;
  for (int i = 0; i < k; i++) {
    free(ps[i]);
    ps[i] = aligned((*cap * elem + sizeof(float) - 1) / sizeof(float));
  }
}

/* Names names[0..n) of a batch (NULL: names lo, lo + 1, ...), packed
 * longest first for a batched kernel (see compiler/batch.c): order, lens,
 * targets, bs, off, chars, the noise rows in packed order, and out and
 * scratch sized. Returns T. */
static int pack(Packed *pk, const int32_t *const *chars, const int32_t *lens,
                const int32_t *targets, const int32_t *names, int lo, size_t n, const float *noise,
                size_t per_name, const KernelAbi *abi, int classes) {
  LenIdx *li = xmalloc(n * sizeof *li);
  for (size_t k = 0; k < n; k++) {
    int32_t i = names ? names[k] : lo + (int32_t)k;
    li[k] = (LenIdx){lens[i], i};
  }
  qsort(li, n, sizeof *li, longest_first);
  int T = li[0].len;
  void *per_n[] = {pk->order, pk->lens, pk->targets};
  grow(per_n, 3, &pk->cap_n, n, sizeof(int32_t));
  pk->order = per_n[0], pk->lens = per_n[1], pk->targets = per_n[2];
  void *per_t[] = {pk->bs, pk->off};
  grow(per_t, 2, &pk->cap_t, (size_t)T + 1, sizeof(int32_t));
  pk->bs = per_t[0], pk->off = per_t[1];
  for (size_t k = 0; k < n; k++) {
    pk->order[k] = li[k].idx;
    pk->lens[k] = li[k].len;
    pk->targets[k] = targets ? targets[li[k].idx] : 0;
  }
  free(li);
  size_t b = n;
  pk->off[0] = 0;
  for (int t = 0; t < T; t++) {
    while (b > 0 && pk->lens[b - 1] <= t)
      b--;
    pk->bs[t] = (int32_t)b;
    pk->off[t + 1] = pk->off[t] + (int32_t)b;
  }
  size_t total = (size_t)pk->off[T];
  void *pc = pk->chars;
  grow(&pc, 1, &pk->cap_chars, total, sizeof(int32_t));
  pk->chars = pc;
  for (int t = 0; t < T; t++)
    for (int32_t k = 0; k < pk->bs[t]; k++)
      pk->chars[pk->off[t] + k] = chars[pk->order[k]][t];
  void *pn = pk->noise;
  grow(&pn, 1, &pk->cap_noise, n * per_name + 1, sizeof(float));
  pk->noise = pn;
  for (size_t k = 0; per_name && k < n; k++)
    memcpy(pk->noise + k * per_name, noise + (size_t)pk->order[k] * per_name,
           per_name * sizeof(float));
  /* out (n * (classes + 1)) lives after the kernel's scratch */
  size_t s = abi->scratch_fixed + n * abi->scratch_per_b + total * abi->scratch_per_t;
  void *ps = pk->scratch;
  grow(&ps, 1, &pk->cap_scratch, s + n * (size_t)(classes + 1), sizeof(float));
  pk->scratch = ps;
  pk->out = pk->scratch + s;
  return T;
}

/* Thread task's share of the batched kernel's packed weights. */
static void pack_task(void *ctx, int task, int thread) {
  (void)thread;
  Batch *b = ctx;
  b->pack_fn(b->m->state, b->packs, task, b->m->threads);
}

/* The batched kernel's packs (fn: its NAME_pack, or NULL) from the values
 * as they are now, spread over the threads: once per batch, for all of
 * its chunks. */
static void pack_weights(Model *m, BatchPackFn fn, float *packs) {
  if (!fn)
    return;
  Batch b = {.m = m, .pack_fn = fn, .packs = packs};
  pool_run(m->pool, m->threads, pack_task, &b);
}

/* Where chunk k's gradients go: the first chunk's straight into the grad
 * slot, every other chunk's into its thread's buffer. A batched kernel
 * writes every float of it; the kernels of one name add to it, so then
 * the grad slot is zeroed here and a buffer is all zeros (fold_range
 * zeroes it after reading it). */
static float *chunk_grad(Model *m, int k, int thread) {
  if (k > 0)
    return m->ws[thread].grad;
  float *g = m->state + SLOT_GRAD * m->nfloats;
  if (!m->bstep_fn)
    memset(g, 0, m->nfloats * sizeof *g);
  return g;
}

/* One chunk's forward and backward passes, its gradients summed into
 * chunk_grad. */
static void step_chunk(void *ctx, int task, int thread) {
  Batch *b = ctx;
  Model *m = b->m;
  Workspace *w = &m->ws[thread];
  int k = b->wave * m->threads + task;
  const int32_t *names = b->names + b->start[k];
  int cn = b->start[k + 1] - b->start[k];
  float *grad = chunk_grad(m, k, thread);
  int c = m->fwd->classes;
  if (m->bstep_fn) {
    Packed *pk = &w->pk;
    int T = pack(pk, b->chars, b->lens, b->targets, names, 0, (size_t)cn, b->noise, b->per_name,
                 &m->bstep_abi, c);
    m->bstep_fn(m->state, m->bstep_packs, grad, pk->chars, pk->lens, pk->bs, pk->off, T, cn,
                pk->targets, pk->noise, pk->scratch, pk->out);
    for (int i = 0; i < cn; i++)
      b->losses[pk->order[i]] = pk->out[(size_t)i * (size_t)(c + 1) + (size_t)c];
    return;
  }
  for (int j = 0; j < cn; j++) {
    int i = names[j];
    m->step_fn(m->state, grad, b->chars[i], b->lens[i], b->targets[i],
               b->noise + (size_t)i * b->per_name, w->scratch, m->tmax, 0, w->out);
    b->losses[i] = w->out[c];
  }
}

/* The grad slot's floats [lo, hi) with f's chunk sums added in chunk
 * order (the batch's first chunk is already there), each thread's buffer
 * zeroed once read where the next chunk adds to it (chunk_grad), and with
 * f->scale the sum multiplied by it, as a pass of its own after the sums
 * would: in strips that stay in L1 between the passes. */
static void fold_strips(Model *m, const Fold *f, size_t lo, size_t hi) {
  float *g = m->state + SLOT_GRAD * m->nfloats;
  enum { STRIP = 1024 }; /* floats */
  for (size_t s = lo; s < hi; s += STRIP) {
    size_t e = hi - s < STRIP ? hi : s + STRIP;
    for (int j = f->first == 0; j < f->count; j++) {
      float *src = m->ws[j].grad;
      for (size_t i = s; i < e; i++)
        g[i] += src[i];
      if (!m->bstep_fn)
        memset(src + s, 0, (e - s) * sizeof *src);
    }
    if (f->scale)
      for (size_t i = s; i < e; i++)
        g[i] *= f->scale;
  }
}

/* Range task of the gradient slot, in one pass: the wave's chunk sums
 * added in chunk order (the batch's first chunk is already there), each
 * thread's buffer zeroed once read where the next chunk adds to it
 * (chunk_grad), and with b->scale (the last wave of model_train_batch)
 * the sum multiplied by it, as a pass of its own after the sums would. */
static void fold_range(void *ctx, int task, int thread) {
  (void)thread;
  Batch *b = ctx;
  Model *m = b->m;
  int T = m->threads;
  size_t lo = m->nfloats * (size_t)task / (size_t)T, hi = m->nfloats * (size_t)(task + 1) / (size_t)T;
  int first = b->wave * T, count = b->nchunks - first < T ? b->nchunks - first : T;
  fold_strips(m, &(Fold){first, count, b->scale}, lo, hi);
}

static void scale_range(void *ctx, int task, int thread) {
  (void)thread;
  Batch *b = ctx;
  Model *m = b->m;
  int T = m->threads;
  size_t lo = m->nfloats * (size_t)task / (size_t)T, hi = m->nfloats * (size_t)(task + 1) / (size_t)T;
  float *g = m->state + SLOT_GRAD * m->nfloats;
  for (size_t i = lo; i < hi; i++)
    g[i] *= b->scale;
}

/* model_batch_gradient; scale (not 0): the sum multiplied by it, as
 * model_batch_update would (in the last fold's pass). With defer (not
 * NULL), the last wave's fold is not done but left in *defer for the
 * update's parts to do on their ranges (defer->count 0: nothing left). */
static int batch_gradient(Model *m, const int32_t *const *chars, const int32_t *lens,
                          const int32_t *targets, int n, int first, int total, float *losses,
                          float scale, Fold *defer) {
  assert(m->update && "a model compiled for batches (batch > 1)");
  if (n < 0 || first < 0 || first > total - n || (n > 0 && !valid(m, chars, lens, targets, n)))
    return -1;
  size_t per_name = m->bstep_fn ? m->bstep_abi.noise : m->step_abi.noise;
  /* the whole batch's noise, name by name, as one process draws it */
  const float *noise = draw_noise(m, total, per_name) + (size_t)first * per_name;
  if (n == 0) {
    memset(m->state + SLOT_GRAD * m->nfloats, 0, m->nfloats * sizeof(float));
    return 0;
  }
  reserve_for(m, lens, n);
  pack_weights(m, m->bstep_fn ? m->bstep_pack_fn : NULL, m->bstep_packs);
  int nchunks = model_chunks(n);
  int32_t *plan = xmalloc((size_t)(n + nchunks + 1) * sizeof *plan);
  model_chunk_names(lens, n, plan, plan + n);
  Batch b = {.m = m, .chars = chars, .lens = lens, .targets = targets, .n = n,
             .nchunks = nchunks, .names = plan, .start = plan + n, .per_name = per_name,
             .losses = losses, .noise = noise};
  for (b.wave = 0; b.wave * m->threads < b.nchunks; b.wave++) {
    int count = b.nchunks - b.wave * m->threads;
    pool_run(m->pool, count < m->threads ? count : m->threads, step_chunk, &b);
    bool last = (b.wave + 1) * m->threads >= b.nchunks;
    b.scale = last ? scale : 0;
    if ((count > 1 || b.wave > 0) && last && defer) /* not the first chunk alone */
      *defer = (Fold){b.wave * m->threads, count < m->threads ? count : m->threads, b.scale};
    else if (count > 1 || b.wave > 0)
      pool_run(m->pool, m->threads, fold_range, &b);
    else if (last && scale) /* one chunk: no fold to scale in */
      pool_run(m->pool, m->threads, scale_range, &b);
  }
  free(plan);
  return 0;
}

int model_batch_gradient(Model *m, const int32_t *const *chars, const int32_t *lens,
                         const int32_t *targets, int n, int first, int total, float *losses) {
  return batch_gradient(m, chars, lens, targets, n, first, total, losses, 0, NULL);
}

/* The update on ranges of the slots (update_range): this many, whatever
 * the thread count, so that the norm's parts are the same sums, added in
 * the same order. */
enum { UPDATE_PARTS = 8 };

/* Part task's range of the slots: [lo, hi), 16-float aligned. */
static void update_part_range(size_t nfloats, int part, size_t *lo, size_t *hi) {
  *lo = nfloats * (size_t)part / UPDATE_PARTS & ~(size_t)15;
  *hi = part == UPDATE_PARTS - 1 ? nfloats : nfloats * (size_t)(part + 1) / UPDATE_PARTS & ~(size_t)15;
}

/* p[0..n) (16-byte aligned) written back unchanged with non-temporal
 * stores, which take its lines out of every core's cache.
 *
 * Why: on several threads every core reads all the values (each chunk's
 * backward reads the weights, the packing reads its columns of them), so
 * when the update writes its part of them, each line it writes is a copy
 * another core holds, and a plain store waits for the other core to drop
 * it. On the 2-vCPU Zen 5 this was measured on, a core writes such lines at
 * 7.5-9 GB/s, lines no other core holds at 90-100 GB/s, and with
 * non-temporal stores 21 GB/s; gru.nn's batch-32 update took 0.20 s an
 * epoch on 2 threads (0.14-0.16 s on one), of which 0.115 s a thread was
 * taking the values' lines back (docs/benchmarks.md). The bits are the
 * same (a move), so nothing computed changes. */
static void drop_other_copies(float *p, size_t n) {
#if defined(__SSE2__)
  for (size_t i = 0; i + 4 <= n; i += 4)
    _mm_stream_ps(p + i, _mm_load_ps(p + i));
  _mm_sfence(); /* stream stores are ordered only by fences and locked instructions */
#else
  (void)p, (void)n;
#endif
}

/* Whether this update runs drop_other_copies. It helps where a plain
 * store to a line another core holds waits for that core (the Zen 5: the
 * update 0.21 -> 0.12 s an epoch) and hurts where non-temporal stores
 * are the slow ones (the Xeon of docs/benchmarks.md: 0.25 -> 0.38 s), so
 * on several threads the updates after the first alternate, without and
 * with, DROP_TRIALS of each, and the rest take the way whose median time
 * was lower. */
static bool drop_now(const Model *m) {
  if (m->threads < 2)
    return false;
  if (m->drop_pick)
    return m->drop_pick == 1;
  return m->drop_calls > 0 && m->drop_calls % 2 == 0; /* updates 1, 3, ... without; 2, 4, ... with */
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *v, int n) {
  double s[DROP_TRIALS];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Records an update's time, seconds, run with drop_now() == drop. */
static void drop_timed(Model *m, bool drop, double seconds) {
  if (m->threads < 2 || m->drop_pick)
    return;
  int call = m->drop_calls++;
  if (call == 0)
    return;
  m->drop_secs[drop][(call - 1) / 2] = seconds;
  if (call == 2 * DROP_TRIALS)
    m->drop_pick = median(m->drop_secs[1], DROP_TRIALS) < median(m->drop_secs[0], DROP_TRIALS) ? 1 : 2;
}

/* Floats of the strips an update part folds and then updates (b->fold):
 * the grad slot's strip and the buffers' stay in L2 between the two. */
enum { UPDATE_STRIP = 16384 };

/* Update part `task` (with b->scale, the gradients scaled first; with
 * b->fold, the last wave's chunk sums folded in first, strip by strip),
 * its part of the grad_norm sum into b->norm_parts[task]. */
static void update_part(void *ctx, int task, int thread) {
  Batch *b = ctx;
  Model *m = b->m;
  size_t lo, hi;
  update_part_range(m->nfloats, task, &lo, &hi);
  b->norm_parts[task] = 0;
  if (hi <= lo)
    return;
  if (b->scale) {
    float *g = m->state + SLOT_GRAD * m->nfloats;
    for (size_t i = lo; i < hi; i++)
      g[i] *= b->scale;
  }
  if (b->drop)
    drop_other_copies(m->state + SLOT_VALUE * m->nfloats + lo, hi - lo);
  static const int32_t no_chars[1]; /* the update reads no input */
  Workspace *w = &m->ws[thread];
  if (!b->fold || !b->fold->count) {
    m->update_range_fn(m->state, no_chars, (int32_t)lo, (int32_t)hi, NULL, w->scratch, m->tmax,
                       (float)m->step, w->out);
    b->norm_parts[task] = w->out[m->fwd->classes + 1];
    return;
  }
  /* the norm's sum without clipping is +0 or NaN in any order of parts */
  float norm = 0;
  for (size_t s = lo; s < hi; s += UPDATE_STRIP) {
    size_t e = hi - s < UPDATE_STRIP ? hi : s + UPDATE_STRIP;
    fold_strips(m, b->fold, s, e);
    m->update_range_fn(m->state, no_chars, (int32_t)s, (int32_t)e, NULL, w->scratch, m->tmax,
                       (float)m->step, w->out);
    norm += w->out[m->fwd->classes + 1];
  }
  b->norm_parts[task] = norm;
}

/* model_batch_update; scaled: the grad slot is already the mean's (or
 * will be once fold, the batch's last fold left to the update, is done). */
static float batch_update(Model *m, long n, bool scaled, const Fold *fold) {
  Batch b = {.m = m, .scale = scaled ? 0 : 1.0f / (float)n, .fold = fold};
  m->step++;
  if (m->update_range_fn && m->nfloats <= INT32_MAX) {
    float parts[UPDATE_PARTS];
    b.norm_parts = parts;
    b.drop = drop_now(m);
    double t0 = now_seconds();
    pool_run(m->pool, UPDATE_PARTS, update_part, &b);
    drop_timed(m, b.drop, now_seconds() - t0);
    float norm = 0;
    for (int p = 0; p < UPDATE_PARTS; p++)
      norm += parts[p];
    return norm;
  }
  assert(!fold || !fold->count); /* deferred only where there are parts */
  if (!scaled)
    pool_run(m->pool, m->threads, scale_range, &b);
  Workspace *w = &m->ws[0];
  static const int32_t no_chars[1]; /* the update reads no input */
  m->update_fn(m->state, no_chars, 1, 0, NULL, w->scratch, m->tmax, (float)m->step, w->out);
  return w->out[m->fwd->classes + 1];
}

float model_batch_update(Model *m, long n) { return batch_update(m, n, false, NULL); }

int model_train_batch(Model *m, const int32_t *const *chars, const int32_t *lens,
                      const int32_t *targets, int n, float *losses, float *mean_loss,
                      float *grad_norm) {
  if (n < 1 || !valid(m, chars, lens, targets, n))
    return -1;
  float *own = losses ? NULL : xmalloc((size_t)n * sizeof *own);
  if (!losses)
    losses = own;
  double sum = 0;
  if (!m->update) { /* batch 1: the fused kernel, name by name */
    float gn = 0;
    for (int i = 0; i < n; i++) {
      model_train_step(m, chars[i], lens[i], targets[i], &losses[i], &gn);
      sum += losses[i];
    }
    *grad_norm = gn;
  } else {
    /* the last fold in the update's parts where there are parts */
    Fold fold = {0};
    bool defer = m->update_range_fn && m->nfloats <= INT32_MAX;
    batch_gradient(m, chars, lens, targets, n, 0, n, losses, 1.0f / (float)n,
                   defer ? &fold : NULL); /* valid: checked */
    *grad_norm = batch_update(m, n, true, &fold);
    for (int i = 0; i < n; i++)
      sum += losses[i];
  }
  *mean_loss = (float)(sum / n);
  free(own);
  return 0;
}

/* Names [lo, hi) of inference chunk k of n names in nchunks. */
static void chunk_range(int n, int nchunks, int k, int *lo, int *hi) {
  *lo = (int)((int64_t)n * k / nchunks);
  *hi = (int)((int64_t)n * (k + 1) / nchunks);
}

static void forward_chunk(void *ctx, int task, int thread) {
  Batch *b = ctx;
  Model *m = b->m;
  Workspace *w = &m->ws[thread];
  int lo, hi, c = m->fwd->classes;
  chunk_range(b->n, b->nchunks, task, &lo, &hi);
  if (m->bfwd_fn) {
    Packed *pk = &w->pk;
    int T = pack(pk, b->chars, b->lens, NULL, NULL, lo, (size_t)(hi - lo), b->noise, b->per_name,
                 &m->bfwd_abi, c);
    m->bfwd_fn(m->state, m->bfwd_packs, NULL, pk->chars, pk->lens, pk->bs, pk->off, T, hi - lo,
               pk->targets, pk->noise, pk->scratch, pk->out);
    for (int i = 0; i < hi - lo; i++)
      memcpy(b->logits + (size_t)pk->order[i] * (size_t)c, pk->out + (size_t)i * (size_t)(c + 1),
             (size_t)c * sizeof *b->logits);
    return;
  }
  for (int i = lo; i < hi; i++) {
    m->fwd_fn(m->state, b->chars[i], b->lens[i], 0, b->noise + (size_t)i * b->per_name, w->scratch,
              m->tmax, 0, w->out);
    memcpy(b->logits + (size_t)i * c, w->out, (size_t)c * sizeof *b->logits);
  }
}

int model_forward_batch(Model *m, const int32_t *const *chars, const int32_t *lens, int n,
                        float *logits) {
  if (!ready(m) || n < 1 || !valid(m, chars, lens, NULL, n))
    return -1;
  reserve_for(m, lens, n);
  Batch b = {.m = m, .chars = chars, .lens = lens, .n = n,
             .per_name = m->bfwd_fn ? m->bfwd_abi.noise : m->fwd_abi.noise, .logits = logits};
  b.nchunks = n < 4 * m->threads ? n : 4 * m->threads;
  b.noise = draw_noise(m, n, b.per_name);
  pack_weights(m, m->bfwd_fn ? m->bfwd_pack_fn : NULL, m->bfwd_packs);
  pool_run(m->pool, b.nchunks, forward_chunk, &b);
  return 0;
}

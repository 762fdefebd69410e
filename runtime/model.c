/* model.c: compiling a graph file into JIT kernels, and the parameter
 * buffers the kernels work on. */
#include "model.h"

#include <llvm-c/Core.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *aligned(size_t floats) {
  void *p = NULL;
  if (posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float)))
    abort();
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
  const char *name;
  const Graph *g;
  KernelAbi *abi;
  KernelFn *fn;
  Buf obj; /* the object file */
  double codegen;
  JitTimes times;
  Err err;
  int rc;
} Kernel;

typedef struct Kernels {
  const Jit *jit;
  Cache *cache;
  Kernel *k;
  int n;
  atomic_int next; /* the next kernel a thread takes */
} Kernels;

/* Takes kernels until none is left: codegen into a module in a context of
 * its own, then jit_compile (through the cache: the one place where
 * kernels are compiled). */
static void *compile_kernels(void *arg) {
  Kernels *ks = arg;
  for (int i; (i = atomic_fetch_add(&ks->next, 1)) < ks->n;) {
    Kernel *k = &ks->k[i];
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(k->name, ctx);
    double t0 = thread_seconds();
    k->rc = codegen(k->g, mod, k->name, NULL, k->abi, &k->err);
    k->codegen = thread_seconds() - t0;
    if (!k->rc)
      k->rc = jit_compile(ks->jit, mod, ks->cache, &k->obj, &k->times, &k->err);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
  }
  return NULL;
}

/* Compiles k[0..n) at once, on as many threads as there are cores (LLVM
 * is most of a cold start, and each kernel is independent), then adds them
 * to the JIT in order and looks each up. */
static int build_kernels(Model *m, Kernel *k, int n, const ModelOptions *opt, Err *e) {
  enum { MAX_THREADS = 16 };
  Kernels ks = {.jit = m->jit, .cache = open_cache(opt), .k = k, .n = n};
  atomic_init(&ks.next, 0);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int nthreads = (int)(cores < 1 ? 1 : cores < n ? cores : n);
  nthreads = nthreads < MAX_THREADS ? nthreads : MAX_THREADS;
  pthread_t threads[MAX_THREADS];
  int started = 0;
  while (started + 1 < nthreads && !pthread_create(&threads[started], NULL, compile_kernels, &ks))
    started++;
  compile_kernels(&ks); /* this thread too; and all of them if no thread starts */
  for (int i = 0; i < started; i++)
    pthread_join(threads[i], NULL);
  cache_close(ks.cache);
  int rc = 0;
  for (int i = 0; i < n; i++) {
    m->times.codegen += k[i].codegen;
    m->times.jit.cache += k[i].times.cache;
    m->times.jit.optimize += k[i].times.optimize;
    m->times.jit.machine_code += k[i].times.machine_code;
    m->times.jit.kernels += k[i].times.kernels;
    m->times.jit.cached += k[i].times.cached;
    if (k[i].rc && !rc)
      rc = errf(e, "%s", k[i].err.msg);
  }
  double t0 = thread_seconds();
  for (int i = 0; i < n && !rc; i++) {
    rc = jit_add_object(m->jit, k[i].obj.data, k[i].obj.len, e);
    *k[i].fn = rc ? NULL : (KernelFn)jit_lookup(m->jit, k[i].name, e); /* links it */
    rc = rc || !*k[i].fn ? -1 : 0;
  }
  m->times.link += thread_seconds() - t0;
  for (int i = 0; i < n; i++)
    buf_free(&k[i].obj);
  return rc;
}

int model_compile(Model *m, const char *path, const ModelOptions *opt, Err *e) {
  memset(m, 0, sizeof *m);
  m->path = xstrdup(path);
  size_t len;
  char *text = read_file(path, &len, e);
  if (!text)
    return -1;
  m->hash = fnv1a(FNV1A_INIT, text, len);
  double t0 = now_seconds(), c0 = thread_seconds();
  m->fwd = compile_graph(path, text, len, e);
  if (m->fwd && !opt->no_train)
    m->train = compile_graph(path, text, len, e);
  free(text);
  if (!m->fwd || (!opt->no_train && !m->train))
    return -1;
  if (opt->lr > 0)
    m->train->train.lr = opt->lr;
  double c1 = thread_seconds();
  m->times.front = c1 - c0;
  m->fwd->loss = -1; /* inference: the loss and what only it reads are dead */
  if (graph_passes(m->fwd, false, PASSES_ALL, e) ||
      (m->train && graph_passes(m->train, true, PASSES_ALL, e)))
    return -1;
  double c2 = thread_seconds();
  m->times.passes = c2 - c1;
  m->nfloats = m->fwd->nfloats;
  if (!opt->no_kernels) {
    m->jit = jit_new(opt->cpu, e);
    m->times.link = thread_seconds() - c2;
    Kernel k[] = {{.name = "train", .g = m->train, .abi = &m->train_abi, .fn = &m->train_fn},
                  {.name = "forward", .g = m->fwd, .abi = &m->fwd_abi, .fn = &m->fwd_fn}};
    int first = m->train ? 0 : 1; /* the largest first: it ends last */
    if (!m->jit || build_kernels(m, k + first, 2 - first, opt, e))
      return -1;
  }
  m->times.total = now_seconds() - t0;
  m->nslots = m->train ? SLOT_COUNT : 1; /* inference reads the values only */
  m->state = aligned(m->nslots * m->nfloats);
  m->out = aligned((size_t)m->fwd->classes + 2);
  rng_seed(&m->rng, 0);
  return 0;
}

void model_free(Model *m) {
  jit_free(m->jit);
  graph_free(m->fwd);
  graph_free(m->train);
  free(m->state);
  free(m->scratch);
  free(m->noise);
  free(m->out);
  free(m->chars);
  free(m->path);
  memset(m, 0, sizeof *m);
}

int model_classes(const Model *m) { return m->fwd->classes; }

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
    }
    float *w = m->state + pa->offset;
    for (size_t i = 0, n = type_numel(pa->type); i < n; i++)
      w[i] = bound ? rng_uniform(&r, (float)-bound, (float)bound) : 0;
  }
}

void model_seed_noise(Model *m, uint64_t seed) { rng_seed(&m->rng, seed); }

void model_reserve(Model *m, int tmax) {
  if (tmax <= m->tmax)
    return;
  m->tmax = tmax;
  const KernelAbi *a = &m->fwd_abi, *b = m->train ? &m->train_abi : &m->fwd_abi;
  size_t fa = a->scratch_fixed + (size_t)tmax * a->scratch_per_t;
  size_t fb = b->scratch_fixed + (size_t)tmax * b->scratch_per_t;
  free(m->scratch);
  m->scratch = aligned(fa > fb ? fa : fb);
  free(m->noise);
  m->noise = aligned(a->noise > b->noise ? a->noise : b->noise);
  free(m->chars);
  m->chars = xmalloc((size_t)tmax * sizeof *m->chars);
}

static void prepare(Model *m, const uint8_t *chars, int len, size_t nnoise) {
  model_reserve(m, len);
  for (int i = 0; i < len; i++)
    m->chars[i] = chars[i];
  for (size_t i = 0; i < nnoise; i++)
    m->noise[i] = rng_uniform(&m->rng, -1, 1);
}

void model_train_step(Model *m, const uint8_t *chars, int len, int target, float *loss,
                      float *grad_norm) {
  prepare(m, chars, len, m->train_abi.noise);
  m->step++;
  m->train_fn(m->state, m->chars, len, target, m->noise, m->scratch, m->tmax, (float)m->step,
              m->out);
  int c = m->fwd->classes;
  *loss = m->out[c];
  *grad_norm = m->out[c + 1];
}

void model_forward(Model *m, const uint8_t *chars, int len, float *logits) {
  prepare(m, chars, len, m->fwd_abi.noise);
  m->fwd_fn(m->state, m->chars, len, 0, m->noise, m->scratch, m->tmax, 0, m->out);
  memcpy(logits, m->out, (size_t)m->fwd->classes * sizeof *logits);
}

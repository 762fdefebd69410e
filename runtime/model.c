/* model.c: compiling a graph file into JIT kernels, and the parameter
 * buffers the kernels work on. */
#include "model.h"

#include <llvm-c/Core.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static void *aligned(size_t floats) {
  void *p = NULL;
  if (posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float)))
    abort();
  memset(p, 0, (floats ? floats : 1) * sizeof(float));
  return p;
}

/* One kernel: codegen into a module, optimize, hand it to the JIT. */
static KernelFn build(Model *m, KernelKind k, const Graph *g, KernelAbi *abi, Err *e) {
  const char *name = kernel_name(k);
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, jit_context(m->jit));
  double t0 = now_seconds();
  if (kernel_emit(k, g, mod, jit_target_machine(m->jit), abi, e)) {
    LLVMDisposeModule(mod);
    return NULL;
  }
  double t1 = now_seconds();
  if (optimize_module(mod, jit_target_machine(m->jit), e)) {
    LLVMDisposeModule(mod);
    return NULL;
  }
  double t2 = now_seconds();
  if (jit_add_module(m->jit, mod, e)) /* takes mod */
    return NULL;
  KernelFn fn = (KernelFn)jit_lookup(m->jit, name, e); /* machine code is made here */
  double t3 = now_seconds();
  m->times.codegen += t1 - t0;
  m->times.llvm_opt += t2 - t1;
  m->times.machine_code += t3 - t2;
  return fn;
}

int model_compile(Model *m, const char *path, const ModelOptions *opt, Err *e) {
  memset(m, 0, sizeof *m);
  m->path = xstrdup(path);
  size_t len;
  char *text = read_file(path, &len, e);
  if (!text)
    return -1;
  m->hash = fnv1a(text, len);
  Kernels ks;
  unsigned want = KERNEL_BIT(KERNEL_FORWARD) | (opt->no_train ? 0 : KERNEL_BIT(KERNEL_TRAIN));
  int rc = kernels_prepare(&ks, path, text, len, want, opt->lr, e);
  free(text);
  if (rc)
    return -1;
  m->fwd = ks.graph[KERNEL_FORWARD]; /* the model owns the graphs now */
  m->train = ks.graph[KERNEL_TRAIN];
  m->times.front = ks.front;
  m->times.passes = ks.passes;
  m->nfloats = m->fwd->nfloats;
  m->jit = jit_new(opt->cpu, e);
  if (!m->jit)
    return -1;
  m->fwd_fn = build(m, KERNEL_FORWARD, m->fwd, &m->fwd_abi, e);
  if (!m->fwd_fn)
    return -1;
  if (m->train) {
    m->train_fn = build(m, KERNEL_TRAIN, m->train, &m->train_abi, e);
    if (!m->train_fn)
      return -1;
  }
  m->state = aligned(SLOT_COUNT * m->nfloats);
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
  memset(m->state, 0, SLOT_COUNT * m->nfloats * sizeof(float));
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

/* model.h: a compiled model in the runtime: its graphs, its JIT-compiled
 * kernels, and one flat allocation for parameters, gradients and Adam's
 * moments. The runtime calls kernels; the model math is in the graph. */
#ifndef RNNC_MODEL_H
#define RNNC_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "rnnc.h"
#include "runtime.h"

/* The signature of every generated kernel (compiler/llvm.c). */
typedef void (*KernelFn)(float *state, const int32_t *chars, int32_t T, int32_t target,
                         const float *noise, float *scratch, int32_t tmax, float step,
                         float *out);

/* Compile-time overrides of the graph's training settings. */
typedef struct ModelOptions {
  double lr; /* > 0: replaces the graph's learning rate */
  bool no_train; /* compile the inference kernel only */
  const char *cpu; /* NULL: the host's CPU; else an LLVM CPU name (same code on every machine) */
  bool no_kernels; /* the graphs and parameters only, no JIT (rnnc build) */
  bool no_cache;   /* compile every kernel, and store none (see compiler/cache.c) */
} ModelOptions;

/* Times of a compile, in seconds: each stage's CPU time, summed over the
 * kernels (which compile at once on several cores), and the whole
 * compile's wall clock. */
typedef struct CompileTimes {
  double front, passes, codegen;
  JitTimes jit; /* the cache, LLVM */
  double link;  /* making the JIT, and its linking the objects */
  double total; /* wall clock, model_compile from the graph's text on */
} CompileTimes;

typedef struct Model {
  char *path;
  uint64_t hash;     /* FNV-1a of the graph file's bytes */
  Graph *fwd, *train; /* the same parameters, in the same layout */
  Jit *jit;
  KernelFn fwd_fn, train_fn;
  KernelAbi fwd_abi, train_abi;
  size_t nfloats;    /* one slot */
  size_t nslots;     /* SLOT_COUNT; 1 (the values) without a training kernel */
  float *state;      /* (nslots, nfloats): values, grads, m, v */
  int64_t step;      /* optimizer updates done */
  int epoch;         /* training epochs done */
  int tmax;          /* longest sequence the scratch fits */
  float *scratch, *noise, *out;
  int32_t *chars;    /* (tmax) */
  Rng rng;           /* noise draws */
  CompileTimes times;
} Model;

/* Compiles the graph file into its kernels, through the kernel cache
 * ($RNNC_CACHE_DIR, $XDG_CACHE_HOME/rnnc or ~/.cache/rnnc; off with
 * opt->no_cache or RNNC_NO_CACHE=1). */
int model_compile(Model *m, const char *path, const ModelOptions *opt, Err *e);
void model_free(Model *m);
/* Initializes parameters and buffers by their declared initializers. */
void model_init_params(Model *m, uint64_t seed);
/* Seeds the generator of the graph's noise (random initial states). */
void model_seed_noise(Model *m, uint64_t seed);
/* Makes scratch fit sequences of up to tmax characters. */
void model_reserve(Model *m, int tmax);
/* One training step on one name: forward, backward, update. Writes the
 * loss and the gradients' norm before clipping (0 when the graph does not
 * clip). */
void model_train_step(Model *m, const uint8_t *chars, int len, int target, float *loss,
                      float *grad_norm);
/* Inference: logits (classes) for one name. */
void model_forward(Model *m, const uint8_t *chars, int len, float *logits);
int model_classes(const Model *m);

#endif

/* model.h: a compiled model in the runtime: its graphs, its JIT-compiled
 * kernels, and one flat allocation for parameters, gradients and Adam's
 * moments. The runtime calls kernels; the model math is in the graph. */
#ifndef RNNC_MODEL_H
#define RNNC_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "rnnc.h"
#include "runtime.h"

/* The signature of the generated kernels (compiler/llvm.c). */
typedef void (*KernelFn)(float *state, const int32_t *chars, int32_t T, int32_t target,
                         const float *noise, float *scratch, int32_t tmax, float step,
                         float *out);
/* A batched kernel (compiler/batch.c): B packed sequences at once, its
 * GEMMs reading the weights packed (transposed) by its BatchPackFn. */
typedef void (*BatchKernelFn)(const float *state, const float *packs, float *grad,
                              const int32_t *chars, const int32_t *lens, const int32_t *bs,
                              const int32_t *off, int32_t T, int32_t B, const int32_t *targets,
                              const float *noise, float *scratch, float *out);
/* Packs share `part` of `parts` of the weights a batched kernel reads. */
typedef void (*BatchPackFn)(const float *state, float *packs, int32_t part, int32_t parts);
/* A minibatch's step kernel: one sequence's forward and backward pass,
 * its gradients added to grad (nfloats). */
typedef void (*StepKernelFn)(float *state, float *grad, const int32_t *chars, int32_t T,
                             int32_t target, const float *noise, float *scratch, int32_t tmax,
                             float step, float *out);

/* Compile-time overrides of the graph's training settings. */
typedef struct ModelOptions {
  double lr; /* > 0: replaces the graph's learning rate */
  bool no_train; /* compile the inference kernel only */
  const char *cpu; /* NULL: the host's CPU; else an LLVM CPU name (same code on every machine) */
  int batch;       /* > 0: replaces the graph's batch size */
  int threads;     /* threads for batches, evaluation and prediction (0: 1) */
  bool batched_forward; /* also a batched inference kernel (eval, predict --input) */
  bool no_batched;      /* never batched kernels: one name per kernel call */
  bool no_kernels; /* the graphs and parameters only, no JIT (rnnc build) */
  bool no_cache;   /* compile every kernel, and store none (see compiler/cache.c) */
  bool background; /* the inference kernels, which training does not call, compiled in the
                    * background when LLVM has work on them (model_wait) */
  DataSizes sizes; /* what data.vocab and data.classes are in the graph (0: no data) */
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

/* A chunk of names packed for a batched kernel, longest first. */
typedef struct Packed {
  int32_t *order;         /* (n) packed position -> index in the chunk */
  int32_t *lens, *targets; /* (n) */
  int32_t *bs, *off;      /* (T), (T + 1) */
  int32_t *chars;         /* (off[T]) */
  float *noise, *out, *scratch;
  size_t cap_n, cap_t, cap_chars, cap_noise, cap_scratch;
} Packed;

/* What one thread works in. */
typedef struct Workspace {
  float *scratch;  /* for any of the model's one-name kernels at tmax */
  float *out;      /* (classes + 2) */
  float *grad;     /* (nfloats) a chunk's gradients (batched training only) */
  Packed pk;       /* for the batched kernels */
} Workspace;

typedef struct Pool Pool;
typedef struct KernelBuild KernelBuild;

/* Where a training stopped inside an epoch (rnnc train interrupted): what
 * resuming there needs besides the parameters and Adam's moments. All
 * zero at an epoch's end. */
typedef struct TrainPosition {
  int64_t names;    /* names of epoch `epoch` (the one in progress) trained on */
  uint64_t seed;    /* the run's seed, which made the epoch's order */
  Rng rng;          /* the noise generator after those names */
  double loss_sum;  /* the epoch's losses so far, summed */
  double running;   /* the running loss */
} TrainPosition;

/* Updates timed each way before Model.drop_pick is made. */
enum { DROP_TRIALS = 8 };

typedef struct Model {
  char *path;
  uint64_t hash;     /* FNV-1a of the graph file's bytes */
  Graph *fwd, *train; /* the same parameters, in the same layout; train holds the
                       * training settings (batch > 1: the step phase) */
  Graph *update;      /* batch > 1: the update phase */
  Graph *fwd_batch;   /* the batched inference kernel's graph, or NULL */
  Jit *jit;
  KernelFn fwd_fn, train_fn, update_fn;
  KernelFn update_range_fn; /* update on a range of the slots (llvm.c), NULL where the graph clips */
  StepKernelFn step_fn;       /* batch > 1 without bstep_fn: one name at a time */
  BatchKernelFn bstep_fn, bfwd_fn; /* batched step and forward (NULL: not batchable) */
  BatchPackFn bstep_pack_fn, bfwd_pack_fn; /* NULL when the kernel packs nothing */
  float *bstep_packs, *bfwd_packs; /* (abi.packed) made from the values before a batch's chunks run */
  KernelAbi fwd_abi, train_abi, step_abi, update_abi, bstep_abi, bfwd_abi;
  char *unbatched;            /* why the graph has no batched kernels, or NULL */
  KernelBuild *later; /* kernels still compiling in the background (model_wait), or NULL */
  char *later_err;    /* why they failed, or NULL */
  int batch;          /* the batch size the training kernels are for */
  int threads;
  Pool *pool;
  Workspace *ws;      /* (threads) */
  float *batch_noise; /* a batch's noise draws, name by name */
  size_t batch_noise_cap;
  const float *fed_noise; /* model_feed_noise: the next call's draws */
  size_t fed_count;
  size_t nfloats;    /* one slot */
  size_t nslots;     /* SLOT_COUNT; 1 (the values) without a training kernel */
  float *state;      /* (nslots, nfloats): values, grads, m, v */
  int64_t step;      /* optimizer updates done */
  /* On several threads: whether update parts write their values back
   * non-temporally first (model.c's drop_other_copies), chosen by timing
   * the first batches' updates both ways; bits are the same either way. */
  int drop_pick;     /* 0: still timing; 1: write back; 2: do not */
  int drop_calls;    /* updates on several threads so far (the first is not timed) */
  double drop_secs[2][DROP_TRIALS]; /* the timed updates' seconds, without [0] and with [1] it */
  int epoch;         /* training epochs done */
  TrainPosition pos; /* and how far into the next one */
  int tmax;          /* longest sequence the scratch fits */
  Rng rng;           /* noise draws */
  CompileTimes times;
} Model;

/* Compiles the graph file into its kernels: inference, and for training
 * either the fused step of batch 1 or a minibatch's step and update;
 * through the kernel cache ($RNNC_CACHE_DIR, $XDG_CACHE_HOME/rnnc or
 * ~/.cache/rnnc; off with opt->no_cache or RNNC_NO_CACHE=1). */
int model_compile(Model *m, const char *path, const ModelOptions *opt, Err *e);
void model_free(Model *m);
/* With opt->background, model_compile returns once the training kernels
 * are linked and the inference kernels generated (whether the graph has a
 * batched one, which decides the noise draws, and their ABIs are known),
 * while LLVM compiles those on other threads. This waits for them and
 * links them (a no-op when nothing is left); model_forward,
 * model_forward_batch and model_skip_noise wait themselves, and fail when
 * they failed. Returns 0, or -1 (every call) with why. */
int model_wait(Model *m, Err *e);
/* How many kernels model_compile left to the background (0 after
 * model_wait); their names appended to names, ", " between. */
int model_background(const Model *m, Buf *names);
/* Initializes parameters and buffers by their declared initializers. */
void model_init_params(Model *m, uint64_t seed);
/* Seeds the generator of the graph's noise (random initial states). */
void model_seed_noise(Model *m, uint64_t seed);
/* The next training or inference call takes these n uniform draws (in
 * [-1, 1], name by name, as the generator would give them) instead of
 * drawing: for checks against tensors made elsewhere. n must be what the
 * call draws (model_noise_per_name times its names). */
void model_feed_noise(Model *m, const float *draws, size_t n);
/* Advances the noise generator past what n names' inference draws. */
void model_skip_noise(Model *m, size_t n);
/* Noise draws per name (0 for graphs without noise). */
size_t model_noise_per_name(const Model *m);
/* Makes scratch fit sequences of up to tmax characters. */
void model_reserve(Model *m, int tmax);
/* One training step on one name: forward, backward, update. Writes the
 * loss and the gradients' norm before clipping (when the graph does not
 * clip: 0, or NaN when a gradient is NaN or infinite). Returns 0, or -1
 * without running anything when the input is out of range: len outside
 * [1, NAME_MAX_CHARS], a character outside the graph's input, target
 * outside [0, classes). */
int model_train_step(Model *m, const int32_t *chars, int len, int target, float *loss,
                     float *grad_norm);
/* Inference: logits (classes) for one name. Returns 0, or -1 for input out
 * of range (as model_train_step). */
int model_forward(Model *m, const int32_t *chars, int len, float *logits);

/* One optimizer step on a batch of n names (1 <= n): the gradient of the
 * mean of their losses, then clipping and the update as the graph says.
 * The batch is cut into chunks (model_chunk_names); each chunk's gradients
 * are summed on one thread, and the chunks' sums are added in chunk order,
 * so the result is the same for every thread count.
 * A model compiled for batch 1 takes n = 1 through the fused kernel.
 * Writes each name's loss (losses, n; may be NULL), the mean loss and the
 * gradients' norm before clipping (as model_train_step). Returns 0, or -1
 * without running anything when n < 1 or any name's input is out of range
 * (as model_train_step). */
int model_train_batch(Model *m, const int32_t *const *chars, const int32_t *lens,
                      const int32_t *targets, int n, float *losses, float *mean_loss,
                      float *grad_norm);
/* The two halves of model_train_batch, for a batch spread over processes
 * (MPI): the sum over names [first, first + n) of a batch of total names
 * (n >= 0) of the gradients of their losses into the grad slot, each
 * name's loss in losses (the noise is drawn for the whole batch, so a name
 * gets the draws it gets in one process); then one optimizer step on the
 * grad slot as the gradient of the mean over total names (scaled by 1/total
 * first; on the model's threads where the graph has update_range, on one
 * where it clips). model_batch_update returns the gradient norm before
 * clipping (0 when the graph does not clip). Batch > 1 models. model_batch_gradient
 * returns 0, or -1 (nothing run) when n < 0, [first, first + n) is not in
 * [0, total), or a name's input is out of range. */
int model_batch_gradient(Model *m, const int32_t *const *chars, const int32_t *lens,
                         const int32_t *targets, int n, int first, int total, float *losses);
float model_batch_update(Model *m, long total);
/* Chunks a batch of n names is cut into: depends on n only. */
int model_chunks(int n);
/* The names of each chunk of a batch of n names (lens: their lengths),
 * which depend on the lengths only: the names sorted longest first (ties
 * by place in the batch) and dealt to the model_chunks(n) chunks forward
 * then backward (0, 1, ..., K - 1, K - 1, ..., 0, 0, 1, ...), so that the
 * chunks have about the same longest name and total length, whatever the
 * order of the batch (the threads that run them finish together).
 * Chunk k is names[start[k] .. start[k + 1]) (start: K + 1 entries;
 * names: n), longest first; chunk sizes floor or ceiling of n / K. */
void model_chunk_names(const int32_t *lens, int n, int32_t *names, int32_t *start);
/* Inference on n names, spread over the model's threads: logits (n *
 * classes). Noise is drawn name by name in order, as n model_forward
 * calls would. Returns 0, or -1 (nothing run) as model_train_batch. */
int model_forward_batch(Model *m, const int32_t *const *chars, const int32_t *lens, int n,
                        float *logits);
int model_classes(const Model *m);

#endif

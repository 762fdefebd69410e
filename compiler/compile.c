/* compile.c: the drivers. One place fixes the stage order: the front end
 * (tokenize, parse, lower, verify), the middle end's passes, and which
 * kernels a graph file compiles into, each prepared and emitted the same
 * way for the JIT (runtime/model.c) and for `rnnc compile --emit`. */
#include <llvm-c/Core.h>
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

/* A safetensors file: a little-endian header length, then '{' (a
 * checkpoint given where the graph goes). */
static bool looks_like_safetensors(const char *text, size_t len) {
  if (len < 9 || text[8] != '{')
    return false;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | (unsigned char)text[i];
  return n >= 2 && n <= len - 8;
}

int graph_file_check(const char *path, Err *e) {
  size_t len;
  char *text = read_graph(path, &len, e);
  if (!text)
    return -1;
  int rc = 0;
  if (looks_like_safetensors(text, len))
    rc = errf(e, "%s: error: this is a safetensors file (a checkpoint), not a graph file; GRAPH "
                 "comes first, CKPT second",
              path);
  free(text);
  return rc;
}

Graph *compile_graph(const char *path, const char *text, size_t len, Err *e) {
  return compile_graph_data(path, text, len, NULL, e);
}

Graph *compile_graph_data(const char *path, const char *text, size_t len, const DataSizes *sizes,
                          Err *e) {
  if (looks_like_safetensors(text, len)) {
    errf(e, "%s: error: this is a safetensors file (a checkpoint), not a graph file; GRAPH comes "
            "first, CKPT second",
         path);
    return NULL;
  }
  /* A UTF-8 byte order mark, as some editors write, is not the graph's
   * (data files accept it too). */
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
    return compile_graph_data(path, text + 3, len - 3, sizes, e);
  Src *src = xcalloc(1, sizeof *src);
  src->path = xstrdup(path);
  src->text = xstrndup(text, len);
  src->len = len;
  if (memchr(text, '\0', len)) {
    /* Report the NUL at its position; the lexer sees only the text before it. */
    src->len = strlen(src->text);
  }
  Arena arena = {0};
  Diag d = {.err = e, .src = src};
  Graph *volatile g = NULL;
  if (setjmp(d.jb)) {
    arena_free(&arena);
    free(src->path);
    free(src->text);
    free(src);
    return NULL;
  }
  if (src->len != len) {
    int line = 1, col = 1;
    for (size_t i = 0; i < src->len; i++, col++)
      if (src->text[i] == '\n')
        line++, col = 0;
    error_at(&d, (Pos){line, col}, "NUL byte in graph file");
  }
  Token *toks = tokenize(src, &d, &arena);
  Program *prog = parse(toks, &d, &arena);
  g = lower(prog, src, sizes, &d);
  arena_free(&arena);
  g->src = src;
  if (graph_verify(g, e)) {
    graph_free(g);
    return NULL;
  }
  return g;
}

char *read_graph(const char *path, size_t *len, Err *e) {
  return read_file_max(path, GRAPH_MAX_BYTES, "a graph file", len, e);
}

Graph *compile_graph_file(const char *path, Err *e) {
  size_t len;
  char *text = read_graph(path, &len, e);
  if (!text)
    return NULL;
  Graph *g = compile_graph(path, text, len, e);
  free(text);
  return g;
}

/* The middle end, in one place: simplify the forward graph, differentiate
 * it (for training), simplify again. The verifier runs after each pass.
 * stop: PASSES_GRAD stops after grad (what --emit grad shows). */
int graph_passes(Graph *g, bool train, PassStop stop, Err *e) {
  if (stop == PASSES_FRONT)
    return 0;
  if (!train)
    graph_inference(g);
  if (graph_optimize(g, false, e))
    return -1;
  if (train && grad(g, e))
    return -1;
  if (stop == PASSES_GRAD)
    return 0;
  return graph_optimize(g, true, e);
}

/* Dropping the loss before the passes: what only the loss reads is dead
 * (rnnc predict needs no target). */
static void drop_loss(Graph *g) { g->loss = -1; }
/* A minibatch's two phases (graph_keep_phase). */
static void keep_step(Graph *g) { graph_keep_phase(g, PHASE_STEP); }
static void keep_update(Graph *g) { graph_keep_phase(g, PHASE_UPDATE); }

/* Every kernel kind: its function's name, how its graph is prepared (the
 * passes with or without grad, a change to the graph before them and one
 * after), and the codegen entry that emits it. */
static const struct {
  const char *name;
  bool train;              /* graph_passes(g, train, ...): with the backward and update */
  void (*prepare)(Graph *); /* before the passes; NULL: none */
  void (*finish)(Graph *);  /* after the passes; NULL: none */
  bool accumulate;          /* CodegenOptions.accumulate */
  int (*emit)(const Graph *, LLVMModuleRef, const char *, const CodegenOptions *, KernelAbi *,
              Err *);
  bool optional; /* a graph may have none: the runtime then runs the one-name kernels */
  const char *extra; /* the second function its module may hold (kernel_extra_name) */
} kinds[] = {
    [KERNEL_TRAIN] = {"train", true, NULL, NULL, false, codegen, false, NULL},
    [KERNEL_FORWARD] = {"forward", false, drop_loss, NULL, false, codegen, false, NULL},
    [KERNEL_STEP] = {"step", true, NULL, keep_step, true, codegen, false, NULL},
    [KERNEL_UPDATE] = {"update", true, NULL, keep_update, false, codegen, false, "update_range"},
    /* batch.c names a batched kernel's packing NAME_pack */
    [KERNEL_STEP_BATCH] = {"step_batch", true, NULL, keep_step, false, codegen_batch, true,
                           "step_batch_pack"},
    [KERNEL_FORWARD_BATCH] = {"forward_batch", false, drop_loss, NULL, false, codegen_batch, true,
                              "forward_batch_pack"},
};
_Static_assert(ARRAY_LEN(kinds) == KERNEL_KINDS, "a table row for every KernelKind");

const char *kernel_name(KernelKind k) { return kinds[k].name; }
const char *kernel_extra_name(KernelKind k) { return kinds[k].extra; }
bool kernel_optional(KernelKind k) { return kinds[k].optional; }

int kernels_prepare(Kernels *ks, const char *path, const char *text, size_t len, unsigned want,
                    double lr, const DataSizes *sizes, Err *e) {
  memset(ks, 0, sizeof *ks);
  for (int k = 0; k < KERNEL_KINDS; k++) {
    if (!(want & KERNEL_BIT(k)))
      continue;
    double t0 = now_seconds();
    Graph *g = ks->graph[k] = compile_graph_data(path, text, len, sizes, e);
    double t1 = now_seconds();
    ks->front += t1 - t0;
    if (!g)
      goto fail;
    if (g->nodes[g->input].type.kind == TY_F32) {
      errf(e, "%s: the graph's input is float vectors (f32[T, %d]): only the reference "
              "interpreter runs such a graph; rnnc's kernels (train, eval, predict, build) take "
              "characters (input x : onehot[T, V]; rnnc import --onehot)",
           path, g->vocab);
      goto fail;
    }
    if (kinds[k].train && lr > 0)
      g->train.lr = lr;
    if (kinds[k].prepare)
      kinds[k].prepare(g);
    if (graph_passes(g, kinds[k].train, PASSES_ALL, e))
      goto fail;
    if (kinds[k].finish)
      kinds[k].finish(g);
    ks->passes += now_seconds() - t1;
  }
  return 0;
fail:
  kernels_free(ks);
  return -1;
}

void kernels_free(Kernels *ks) {
  for (int k = 0; k < KERNEL_KINDS; k++)
    graph_free(ks->graph[k]);
  memset(ks, 0, sizeof *ks);
}

int kernel_emit(KernelKind k, const Graph *g, LLVMModuleRef m, LLVMTargetMachineRef tm,
                KernelAbi *abi, Err *e) {
  return kernel_emit_simd(k, g, m, simd_of(tm), abi, e);
}

int kernel_emit_simd(KernelKind k, const Graph *g, LLVMModuleRef m, Simd simd, KernelAbi *abi,
                     Err *e) {
  /* in two parts, for the JIT to compile at once: every kernel but the
   * small update and step_batch (cut, its GEMM tiles are compiled for each
   * part on its own and come out otherwise: gru.nn's batch-32 epochs were
   * 2% slower, 8,537 vs 8,710 names/s over 8 interleaved pairs, and the
   * training kernels' speed is what batches are for) */
  int parts = k != KERNEL_UPDATE && k != KERNEL_STEP_BATCH ? 2 : 0;
  CodegenOptions co = {.simd = simd, .accumulate = kinds[k].accumulate, .parts = parts};
  int rc = kinds[k].emit(g, m, kinds[k].name, &co, abi, e);
  if (!rc && k == KERNEL_UPDATE) {
    /* and update_range beside it, where the update can run on ranges of
     * the slots (not when it clips: the runtime runs update then) */
    CodegenOptions cr = {.simd = simd, .range = true};
    KernelAbi ra;
    Err ignored;
    if (!codegen(g, m, kinds[k].extra, &cr, &ra, &ignored)) {
      assert(ra.scratch_fixed == abi->scratch_fixed && ra.scratch_per_t == abi->scratch_per_t);
      abi->extra = true;
    }
  } else if (!rc && kinds[k].extra) { /* a batched kernel's packing, where it has packs */
    abi->extra = LLVMGetNamedFunction(m, kinds[k].extra) != NULL;
  }
  return rc;
}

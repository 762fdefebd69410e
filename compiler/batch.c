/* batch.c: IR -> LLVM IR for a batch of sequences at once: minibatch
 * training steps and batched inference. One function per graph:
 *
 *   void NAME(const float *state, const float *packs, float *grad,
 *             const int32_t *chars, const int32_t *lens, const int32_t *bs,
 *             const int32_t *off, int32_t T, int32_t B,
 *             const int32_t *targets, const float *noise, float *scratch,
 *             float *out)
 *   void NAME_pack(const float *state, float *packs, int32_t part,
 *                  int32_t parts)     (when abi.packed > 0)
 *
 * The batch is B sequences sorted by length, longest first (lens, B
 * entries, non-increasing, T = lens[0] >= 1), packed as PyTorch's
 * PackedSequence packs them: bs[t] (t < T) sequences are still running at
 * step t, always the first bs[t]; off[t] = bs[0] + ... + bs[t-1] (T + 1
 * entries; off[T] = the packed rows); sequence b's character t is
 * chars[off[t] + b]. No arithmetic is spent on padding: step t computes
 * bs[t] rows, and sequence b's last state is row b of step lens[b] - 1.
 *
 * state:   the parameter values (slot 0 of the flat buffer); unused when
 *          CodegenOptions.baked_values makes them constants (rnnc build).
 * packs:   (abi.packed) the weights the GEMMs read transposed, as NAME_pack
 *          made them from these values: the caller packs once for any
 *          number of calls (chunks of a batch, on any thread) while the
 *          values stay the same. NAME_pack's call `part` of `parts` packs
 *          a share of the columns: calls 0 .. parts-1 (in any order, at
 *          once on several threads) together pack everything. Without
 *          packs (abi.packed = 0, e.g. rnnc build, whose packs are
 *          constants of the module) there is no NAME_pack and packs is
 *          unused.
 * grad:    (g->nfloats) the gradients of the sum of the B losses are
 *          written here, every float of it (a training step: what grad held
 *          before is never read; plan_grad); unused by an inference kernel.
 * targets: (B) classes. noise: (B * abi.noise) uniform draws in [-1, 1],
 *          sequence b's from b * abi.noise.
 * scratch: abi.scratch_fixed + B * abi.scratch_per_b + off[T] *
 *          abi.scratch_per_t floats.
 * out:     (B * (classes + 1)) sequence b's logits, then its loss.
 *
 * Every value of the graph is one of three kinds. SHARED: the same for
 * every sequence (parameters, constants), computed once. ROWS: one row per
 * sequence, [B][ld] (inside a scan's body, the first bs[t] rows). SEQ: a
 * per-step value of every sequence, packed like chars: [off[T]][ld], row
 * off[t] + b. Products with a batched operand are GEMMs over the rows (the
 * weights read once per step for the whole batch, and once for a whole
 * sequence where opt.c hoisted a product out of the recurrence); weight
 * gradients are GEMMs over the packed rows. Elementwise nodes of the same
 * kind and width fuse into one loop over rows and columns, as in llvm.c.
 *
 * require: a verified graph after graph_passes (and graph_keep_phase
 * PHASE_STEP for training). What this cannot batch (a value of one
 * sequence that another sequence's value depends on, noise inside a scan,
 * a stored parameter) is an error: the runtime then runs the batch one
 * sequence at a time with llvm.c's kernels. */
#include <assert.h>
#include <llvm-c/Core.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "rnnc.h"

typedef enum Kind { K_NONE, K_SHARED, K_ROWS, K_SEQ } Kind;

/* A weight matrix's columns [k0, k0 + n) stored transposed ([n][M]), for
 * the products that read them with a batched operand: at packs + at (or a
 * constant of the module, baked). */
typedef struct Pack {
  int param, k0, n;
  size_t at;
  LLVMValueRef ptr;
} Pack;

/* A region of the SEQ scratch ([total][sz] floats from total * o), for
 * one stack or sequence value and the views of it, and later (freed) for
 * another: see seq_free. */
typedef struct SeqRegion {
  size_t o, sz;
  int last;   /* the last position of block 0 that reads it */
  bool freed;
} SeqRegion;

typedef struct BC {
  Cg cg;
  const Graph *g;
  const CodegenOptions *opt;
  Err *e;
  bool failed;
  LLVMValueRef state, packs, grad, chars, lens, bs, off, T, B, targets, noise, scratch, out;
  LLVMValueRef T64, B64, total;
  LLVMValueRef base_b, base_r;     /* the ROWS and SEQ regions of scratch */
  LLVMValueRef fixed_g, per_b_g;   /* their offsets, known at the end: constant globals */
  size_t fixed, per_b, per_r, nnoise;
  Kind *kind;
  bool *isint;       /* node -> an i32 index per row (one-hot, class) */
  long long *ld;     /* node -> row stride in floats (ROWS, SEQ) */
  LLVMValueRef *ptr; /* node -> buffer or view */
  LLVMValueRef *sval;/* node -> SHARED scalar */
  LLVMValueRef *dest;/* node -> where its buffer must be (a scan's stack row), or NULL */
  LLVMValueRef *cur; /* node -> value at the current group index */
  int *in_group;
  int group_serial;
  size_t *noise_off;
  int *nusers, **users;
  LLVMValueRef rows; /* rows of a ROWS value here: B, or bs[t] in a scan body */
  LLVMValueRef t0;   /* in a scan's body: i1, the step is t = 0; else NULL */
  bool *zero0;       /* node -> its rows of step 0 are zeros (see zero rows) */
  bool *skip0;       /* node -> a product a reverse scan need not compute at t = 0 */
  bool *overwrite;   /* node -> a weight gradient's GEMM that writes its param's
                      * gradient instead of adding to it (plan_grad) */
  Pack *pk;
  int npacks;
  size_t npacked; /* floats of packs */
  Baked bk; /* AOT (opt->baked_values): the weights and their packs are
             * constants of the module, and state is unused */
  const char *name; /* the kernel's function's */
  LLVMValueRef fns[MAX_KERNEL_PARTS]; /* the kernel's function and its parts (CodegenOptions.parts) */
  int *part_at; /* block 0's node index where each part after the first begins (plan_parts) */
  int part;     /* the part being emitted */
  int *last_use;   /* node -> the last position in block 0 that reads it (seq_lifetimes) */
  int *region;     /* node -> the SEQ region its values are in, or -1 */
  SeqRegion *sr;   /* every SEQ region made, in order */
  int nsr;
  int pos;         /* the position in block 0 being emitted */
} BC;

static const Node *N(BC *c, int id) { return &c->g->nodes[id]; }

static void fail(BC *c, int id, const char *what) {
  if (c->failed)
    return;
  c->failed = true;
  const Node *n = N(c, id);
  errf(c->e, "batched codegen: %s (node %%%d, %s, at %d:%d)", what, id, op_names[n->op],
       n->pos.line, n->pos.col);
}

static long long round16(size_t n) { return (long long)((n + 15) & ~(size_t)15); }

static bool is_shared_scalar(BC *c, int id) {
  Type t = N(c, id)->type;
  return c->kind[id] == K_SHARED && t.kind == TY_F32 && t.rank == 0;
}

/* Elements per row (one index for one-hot values and classes). */
static size_t width(BC *c, int id) { return type_row_numel(N(c, id)->type); }

/* ------------------------------------------------------------- kinds */

static Kind max_kind(Kind a, Kind b) { return a > b ? a : b; }

static void infer_block(BC *c, int blk);

static void infer_node(BC *c, int id) {
  const Node *n = N(c, id);
  Kind k = K_SHARED;
  for (int i = 0; i < n->nin; i++)
    k = max_kind(k, c->kind[n->in[i]]);
  switch (n->op) {
  case OP_LOAD:
  case OP_CONST:
  case OP_ZEROS:
  case OP_STEP:
    k = K_SHARED;
    break;
  case OP_INPUT:
    k = K_SEQ;
    c->isint[id] = true;
    break;
  case OP_TARGET:
    k = K_ROWS;
    c->isint[id] = true;
    break;
  case OP_NOISE:
    k = K_ROWS;
    if (n->block != 0)
      fail(c, id, "noise inside a scan's cell");
    break;
  case OP_ARG:
    return; /* set by the scan */
  case OP_SCAN: {
    const Block *body = &c->g->blocks[n->region];
    for (int i = 0; i < body->nargs; i++) {
      c->kind[body->args[i]] = K_ROWS;
      if (i < n->a && c->isint[n->in[i]])
        c->isint[body->args[i]] = true;
      if (i < n->a && c->kind[n->in[i]] != K_SEQ)
        fail(c, id, "a scanned sequence that is the same for every sequence");
    }
    infer_block(c, n->region);
    k = K_SEQ;
    break;
  }
  case OP_PROJ:
    k = K_SEQ;
    c->isint[id] = c->isint[c->g->blocks[N(c, n->in[0])->region].yields[n->a]];
    break;
  case OP_LAST:
  case OP_FIRST:
    c->isint[id] = c->isint[n->in[0]];
    if (k == K_SEQ)
      k = K_ROWS;
    break;
  case OP_PUT_LAST:
  case OP_PUT_FIRST:
    if (k == K_ROWS)
      k = K_SEQ;
    break;
  case OP_SUM:
    if (k == K_SEQ)
      k = K_ROWS;
    break;
  case OP_MATVEC:
  case OP_MATVEC_T:
    if (c->kind[n->in[0]] != K_SHARED || N(c, n->in[0])->op != OP_LOAD)
      fail(c, id, "a product whose matrix is not a parameter");
    break;
  case OP_STORE:
    fail(c, id, "a parameter store (the update runs once per batch, not per sequence)");
    break;
  default:
    break;
  }
  if (n->block != 0 && k == K_SEQ && n->op != OP_SCAN)
    fail(c, id, "a whole sequence inside a scan's cell");
  /* Operands of one elementwise node: SEQ and ROWS do not mix. */
  if ((op_flags[n->op] & F_ELEM) || n->op == OP_CONCAT) {
    bool seq = false, rows = false;
    for (int i = 0; i < n->nin; i++) {
      seq |= c->kind[n->in[i]] == K_SEQ;
      rows |= c->kind[n->in[i]] == K_ROWS;
    }
    if (seq && rows)
      fail(c, id, "a sequence combined with a per-sequence value");
  }
  c->kind[id] = k;
}

static void infer_block(BC *c, int blk) {
  const Block *b = &c->g->blocks[blk];
  for (int i = 0; i < b->n; i++)
    infer_node(c, b->nodes[i]);
}

/* ----------------------------------------------- SEQ regions by lifetime
 *
 * A sequence value takes total * ld floats of scratch, and gru.nn's
 * step_batch has 8,448 floats of them a packed row: the stacks of both
 * layers' forward and backward scans. Not all at once: the backward's
 * stacks of the top layer are dead before the bottom layer's are written.
 * So a region of the SEQ scratch is freed after the last node of block 0
 * that reads it (a read inside a scan's body counts at the scan), with
 * every view of it (slices, first(), a scan's results), and a later SEQ
 * value may take it: first fit, the rest left free. Regions are freed only
 * between groups of fused elementwise nodes, when every node before the
 * position has been emitted. */

/* c->last_use from block 0's order. */
static void seq_lifetimes(BC *c) {
  const Graph *g = c->g;
  int nn = g->nnodes;
  c->last_use = xmalloc((size_t)nn * sizeof *c->last_use);
  c->region = xmalloc((size_t)nn * sizeof *c->region);
  for (int i = 0; i < nn; i++)
    c->last_use[i] = -1, c->region[i] = -1;
  int nb = g->nblocks, *at = xmalloc((size_t)nb * sizeof *at); /* block -> position of its scan in block 0 */
  for (int b = 0; b < nb; b++)
    at[b] = -1;
  const Block *b0 = &g->blocks[0];
  int *pos = xmalloc((size_t)nn * sizeof *pos); /* block 0's nodes: their position */
  for (int i = 0; i < b0->n; i++) {
    pos[b0->nodes[i]] = i;
    if (N(c, b0->nodes[i])->op == OP_SCAN)
      at[N(c, b0->nodes[i])->region] = i;
  }
  for (int b = 0; b < nb; b++) { /* nested regions: their outermost scan's position */
    int top = b;
    while (top > 0 && g->blocks[top].parent > 0)
      top = g->blocks[top].parent;
    if (top > 0)
      at[b] = at[top];
  }
  for (int y = 0; y < nn; y++) {
    const Node *n = N(c, y);
    int p = n->block == 0 ? pos[y] : at[n->block];
    if (p < 0) /* unreachable: keep its inputs to the end */
      p = INT_MAX;
    for (int k = 0; k < n->nin; k++)
      if (n->in[k] >= 0 && c->last_use[n->in[k]] < p)
        c->last_use[n->in[k]] = p;
  }
  if (g->output >= 0)
    c->last_use[g->output] = INT_MAX;
  if (g->loss >= 0)
    c->last_use[g->loss] = INT_MAX;
  free(at);
  free(pos);
}

/* A region of sz floats a row: a freed one that fits, or a new one.
 * Returns its offset, in units of total floats; c->nsr - 1 is it. */
static size_t seq_region(BC *c, size_t sz) {
  size_t o = c->per_r;
  bool found = false;
  for (int r = 0; r < c->nsr && !found; r++) {
    SeqRegion *f = &c->sr[r];
    if (f->freed && f->sz >= sz) {
      o = f->o;
      f->o += sz; /* the rest stays free */
      f->sz -= sz;
      found = true;
    }
  }
  if (!found)
    c->per_r += sz;
  c->sr = xrealloc(c->sr, (size_t)(c->nsr + 1) * sizeof *c->sr);
  c->sr[c->nsr++] = (SeqRegion){o, sz, c->pos, false};
  return o;
}

/* Node id's values are in region r (-1: none), which lives as long as id is read. */
static void seq_map(BC *c, int id, int r) {
  c->region[id] = r;
  if (r >= 0 && c->sr[r].last < c->last_use[id])
    c->sr[r].last = c->last_use[id];
}

/* Frees the regions last read before position pos (every node before it
 * emitted). */
static void seq_free(BC *c, int pos) {
  for (int r = 0; r < c->nsr; r++)
    if (!c->sr[r].freed && c->sr[r].last < pos)
      c->sr[r].freed = true;
  for (bool merged = true; merged;) { /* free neighbours become one */
    merged = false;
    for (int a = 0; a < c->nsr; a++)
      for (int b = 0; b < c->nsr; b++) {
        SeqRegion *x = &c->sr[a], *y = &c->sr[b];
        if (a != b && x->freed && y->freed && x->sz && y->sz && x->o + x->sz == y->o) {
          x->sz += y->sz;
          y->sz = 0;
          merged = true;
        }
      }
  }
}

/* ------------------------------------------------------------ memory */

/* A buffer of kind k with rows of ld floats. */
static LLVMValueRef buffer(BC *c, Kind k, long long ld) {
  Cg *cg = &c->cg;
  long long sz = round16((size_t)ld); /* regions stay 64-byte aligned */
  switch (k) {
  case K_SHARED: {
    size_t o = c->fixed;
    c->fixed += (size_t)sz;
    return fptr(cg, c->scratch, ci64(cg, (long long)o));
  }
  case K_ROWS: {
    size_t o = c->per_b;
    c->per_b += (size_t)sz;
    return fptr(cg, c->base_b, LLVMBuildMul(cg->b, c->B64, ci64(cg, (long long)o), ""));
  }
  case K_SEQ:
    return fptr(cg, c->base_r, LLVMBuildMul(cg->b, c->total, ci64(cg, (long long)seq_region(c, (size_t)sz)), ""));
  default:
    abort();
  }
}

static LLVMValueRef node_buffer(BC *c, int id) {
  long long w = (long long)width(c, id);
  bool shared = c->kind[id] == K_SHARED;
  c->ld[id] = shared ? 0 : (w == 1 ? 1 : round16((size_t)w));
  if (c->dest[id]) /* a yield: computed in its stack's rows, not copied there */
    return c->ptr[id] = c->dest[id];
  /* a shared value's row stride is 0 (every row reads the one row), its
   * room is its width (tests/graphs/shared_buffers.nn) */
  c->ptr[id] = buffer(c, c->kind[id], shared ? w : c->ld[id]);
  if (c->kind[id] == K_SEQ)
    seq_map(c, id, c->nsr - 1);
  return c->ptr[id];
}

/* Rows a value of node id's kind has here. */
static LLVMValueRef rows_of(BC *c, int id) {
  return c->kind[id] == K_SEQ ? c->total : c->rows;
}

static LLVMValueRef row_ptr(BC *c, int id, LLVMValueRef r) {
  Cg *cg = &c->cg;
  if (c->isint[id])
    return gep(cg, cg->i32, c->ptr[id], r);
  return fptr(cg, c->ptr[id], LLVMBuildMul(cg->b, r, ci64(cg, c->ld[id]), ""));
}

static LLVMValueRef load_i64(BC *c, LLVMValueRef base, LLVMValueRef i) {
  Cg *cg = &c->cg;
  return LLVMBuildSExt(cg->b, LLVMBuildLoad2(cg->b, cg->i32, gep(cg, cg->i32, base, i), ""), cg->i64, "");
}

/* Copies n floats per row for rows [0, count) (row strides may differ). */
static void copy_rows(BC *c, LLVMValueRef dst, long long ldd, LLVMValueRef src, long long lds,
                      LLVMValueRef count, long long n) {
  Cg *cg = &c->cg;
  if (ldd == lds && ldd == n) {
    memcpy_f32(cg, dst, src, LLVMBuildMul(cg->b, count, ci64(cg, n), ""));
    return;
  }
  Loop r = for_begin(cg, count);
  memcpy_f32(cg, fptr(cg, dst, LLVMBuildMul(cg->b, r.i, ci64(cg, ldd), "")),
             fptr(cg, src, LLVMBuildMul(cg->b, r.i, ci64(cg, lds), "")), ci64(cg, n));
  for_end(cg, &r);
}

/* --------------------------------------------------------------- GEMM */

/* C[i*ldc + j] (= or +=) sum over k < K of A[i*a_si + k*a_sk] * B[k*ldb + j],
 * for i < m, j < n: the register-blocked micro-kernel of kernels.c. */
static void bgemm(BC *c, LLVMValueRef A, long long a_si, long long a_sk, LLVMValueRef Bm,
                  long long ldb, LLVMValueRef C, long long ldc, LLVMValueRef m, LLVMValueRef K,
                  long long n, bool accumulate) {
  Gemm p = {.a = A, .b = Bm, .c = C, .m = m, .k = K, .n = n, .a_si = a_si, .a_sk = a_sk,
            .ldb = ldb, .ldc = ldc, .accumulate = accumulate};
  gemm(&c->cg, &p);
}

/* ----------------------------------------------------------- products */

/* W's columns [k0, k0 + n) transposed: in packs (NAME_pack fills them),
 * or baked. */
static LLVMValueRef packed(BC *c, int w, int k0, int n) {
  const Node *wn = N(c, w);
  for (int i = 0; i < c->npacks; i++)
    if (c->pk[i].param == wn->a && c->pk[i].k0 == k0 && c->pk[i].n == n)
      return c->pk[i].ptr;
  Cg *cg = &c->cg;
  long long M = wn->type.dim[0];
  LLVMValueRef dst, scale;
  size_t at = c->npacked;
  if (c->bk.values) {
    dst = baked_columns(cg, &c->bk, wn->a, k0, n, &scale); /* the same [n][M], made once */
  } else {
    dst = fptr(cg, c->packs, ci64(cg, (long long)at));
    c->npacked += (size_t)round16((size_t)n * (size_t)M); /* 64-byte aligned */
  }
  c->pk = xrealloc(c->pk, (size_t)(c->npacks + 1) * sizeof *c->pk);
  c->pk[c->npacks++] = (Pack){wn->a, k0, n, at, dst};
  return dst;
}

/* Part `part` of `parts` of every pack's columns, dst[k][m] = W[m][k0 + k]
 * for k in [n * part / parts, n * (part + 1) / parts). */
static void emit_packs(BC *c, LLVMValueRef state, LLVMValueRef packs, LLVMValueRef part,
                       LLVMValueRef parts, bool nontemporal) {
  Cg *cg = &c->cg;
  for (int i = 0; i < c->npacks; i++) {
    const Pack *pk = &c->pk[i];
    const Param *pa = &c->g->params[pk->param];
    long long M = pa->type.dim[0], ldw = pa->type.dim[1];
    LLVMValueRef n = ci64(cg, pk->n);
    LLVMValueRef lo = LLVMBuildSDiv(cg->b, LLVMBuildMul(cg->b, n, part, ""), parts, "");
    LLVMValueRef hi = LLVMBuildSDiv(cg->b, LLVMBuildMul(cg->b, n, LLVMBuildAdd(cg->b, part, ci64(cg, 1), ""), ""), parts, "");
    LLVMValueRef cols = LLVMBuildSub(cg->b, hi, lo, "");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "pack");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "packed");
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGT, cols, ci64(cg, 0), ""), body, next);
    LLVMPositionBuilderAtEnd(cg->b, body);
    LLVMValueRef dst = fptr(cg, packs, LLVMBuildAdd(cg->b, ci64(cg, (long long)pk->at),
                                                    LLVMBuildMul(cg->b, lo, ci64(cg, M), ""), ""));
    LLVMValueRef src = fptr(cg, state, LLVMBuildAdd(cg->b, ci64(cg, (long long)(pa->offset + (size_t)pk->k0)), lo, ""));
    /* dst: packs + at (a multiple of 16) + lo * M, 64-byte aligned where
     * packs is and M is a multiple of 16 (transpose asks no more) */
    transpose(cg, dst, M, src, ldw, M, cols, nontemporal);
    LLVMBuildBr(cg->b, next);
    LLVMPositionBuilderAtEnd(cg->b, next);
  }
}

/* NAME_pack(state, packs, part, parts): part's share of every pack's
 * columns (emit_packs). Called in parts, each part on its own thread,
 * every thread then reads every pack, so each line a part writes is held
 * by the other threads' caches from the last batch, and a plain store
 * waits for them to drop it: with parts > 1 and packs 64-byte aligned the
 * 16 x 16 blocks are stored non-temporally (gru.nn at batch 32 on the 2
 * cores of the Zen 5: packing 0.064-0.086 s an epoch against 0.111-0.135
 * s, docs/benchmarks.md), and one part writes as before, through the
 * caches the kernel then reads them from. */
static void emit_pack_fn(BC *c, const char *name) {
  Cg *cg = &c->cg;
  char fname[256];
  snprintf(fname, sizeof fname, "%s_pack", name);
  LLVMTypeRef p = cg->pty, i32 = cg->i32;
  LLVMTypeRef params[4] = {p, p, i32, i32};
  cg->fn = LLVMAddFunction(cg->mod, fname, LLVMFunctionType(LLVMVoidTypeInContext(cg->ctx), params, 4, 0));
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (unsigned i = 1; i <= 2; i++)
    LLVMAddAttributeAtIndex(cg->fn, i, LLVMCreateEnumAttribute(cg->ctx, noalias, 0));
  LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "entry"));
  LLVMValueRef state = LLVMGetParam(cg->fn, 0), packs = LLVMGetParam(cg->fn, 1);
  LLVMValueRef part = LLVMBuildSExt(cg->b, LLVMGetParam(cg->fn, 2), cg->i64, "");
  LLVMValueRef parts = LLVMBuildSExt(cg->b, LLVMGetParam(cg->fn, 3), cg->i64, "");
  LLVMValueRef addr = LLVMBuildPtrToInt(cg->b, packs, cg->i64, "");
  LLVMValueRef aligned = LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildAnd(cg->b, addr, ci64(cg, 63), ""),
                                       ci64(cg, 0), "");
  LLVMValueRef shared = LLVMBuildAnd(cg->b, aligned, LLVMBuildICmp(cg->b, LLVMIntSGT, parts, ci64(cg, 1), ""), "");
  LLVMBasicBlockRef nt = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "nontemporal");
  LLVMBasicBlockRef plain = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "plain");
  LLVMBuildCondBr(cg->b, shared, nt, plain);
  LLVMPositionBuilderAtEnd(cg->b, nt);
  emit_packs(c, state, packs, part, parts, true);
  LLVMBuildFence(cg->b, LLVMAtomicOrderingSequentiallyConsistent, 0, ""); /* orders the streams */
  LLVMBuildRetVoid(cg->b);
  LLVMPositionBuilderAtEnd(cg->b, plain);
  emit_packs(c, state, packs, part, parts, false);
  LLVMBuildRetVoid(cg->b);
}

/* Every product with a batched operand gets its pack's pointer at entry
 * (a first use inside a scan would define it in the loop's body). */
static void plan_packs(BC *c) {
  const Graph *g = c->g;
  for (int id = 0; id < g->nnodes; id++) {
    const Node *n = N(c, id);
    if (n->op != OP_MATVEC || c->kind[n->in[1]] == K_SHARED)
      continue;
    Type tv = N(c, n->in[1])->type;
    int cols = tv.kind == TY_ONEHOT ? tv.dim[tv.rank - 1] : (int)type_row_numel(tv);
    packed(c, n->in[0], n->a, cols);
  }
}

/* ----------------------------------------------------- zero rows
 *
 * A carry that starts from zeros makes some products' work zeros, for any
 * graph (gru.nn: 2 of the 6 step products of a name's first character, as
 * many of its weight gradients' rows, and the backward's products at the
 * last step):
 *
 * zero0: a forward scan's carry argument whose initial value is zeros is
 *   +0 in every row at step 0, and so are the first off[1] rows of the
 *   stack of that argument (the states a step starts from, which the
 *   weight gradients read). A product of such a value writes zeros there
 *   instead of computing them, and a weight gradient's sum over the packed
 *   rows starts at off[1].
 * skip0: a product in a reverse scan's cell whose value reaches only
 *   carries that nothing reads after the scan: at the scan's last step
 *   (t = 0) its value goes nowhere, and it is written as zeros.
 *
 * With finite weights these are the same bits the products would give
 * (each sum is +0 plus terms w * 0 = +-0, and adding +-0 to a sum changes
 * nothing but the sign of a zero sum); an infinite or NaN weight, which
 * makes the whole step NaN anyway, would give NaN there instead. */

/* skip0 for reverse scan id's cell. */
static void plan_skip0(BC *c, int id) {
  const Node *n = N(c, id);
  const Block *body = &c->g->blocks[n->region];
  bool *live = xcalloc((size_t)body->nyields + 1, sizeof *live);
  for (int k = n->b; k < body->nyields; k++) /* a stacked value's every row is read */
    live[k] = true;
  for (int u = 0; u < c->nusers[id]; u++) {
    const Node *p = N(c, c->users[id][u]);
    if (p->op == OP_PROJ && c->nusers[c->users[id][u]] > 0 && p->a < body->nyields)
      live[p->a] = true;
  }
  bool *reach = xcalloc((size_t)c->g->nnodes, sizeof *reach);
  for (int i = 0; i < body->n; i++) {
    int p = body->nodes[i];
    const Node *pn = N(c, p);
    if ((pn->op != OP_MATVEC && pn->op != OP_MATVEC_T) || c->kind[p] != K_ROWS)
      continue;
    memset(reach, 0, (size_t)c->g->nnodes * sizeof *reach);
    reach[p] = true;
    bool ok = true;
    for (int j = i + 1; j < body->n && ok; j++) {
      int q = body->nodes[j];
      const Node *qn = N(c, q);
      for (int k = 0; k < qn->nin; k++)
        reach[q] |= reach[qn->in[k]];
      if (reach[q] && ((op_flags[qn->op] & F_EFFECT) || qn->op == OP_SCAN))
        ok = false;
    }
    for (int k = 0; k < body->nyields && ok; k++)
      if (reach[body->yields[k]] && live[k])
        ok = false;
    c->skip0[p] = ok;
  }
  free(reach);
  free(live);
}

/* Branches on cond (i1): where it holds, zeros in rows rows of product
 * id; else the builder is left where the caller emits the product, and
 * zero_rows_end joins the two. */
static LLVMBasicBlockRef zero_rows_begin(BC *c, int id, LLVMValueRef cond, LLVMValueRef rows) {
  Cg *cg = &c->cg;
  LLVMBasicBlockRef zero = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "zero_rows");
  LLVMBasicBlockRef product = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "product");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "product_done");
  LLVMBuildCondBr(cg->b, cond, zero, product);
  LLVMPositionBuilderAtEnd(cg->b, zero);
  memset_f32(cg, c->ptr[id], LLVMBuildMul(cg->b, rows, ci64(cg, c->ld[id]), ""));
  LLVMBuildBr(cg->b, join);
  LLVMPositionBuilderAtEnd(cg->b, product);
  return join;
}

static void zero_rows_end(BC *c, LLVMBasicBlockRef join) {
  if (!join)
    return;
  LLVMBuildBr(c->cg.b, join);
  LLVMPositionBuilderAtEnd(c->cg.b, join);
}

/* The rows of step 0: off[1]. */
static LLVMValueRef step0_rows(BC *c) { return load_i64(c, c->off, ci64(&c->cg, 1)); }

/* Product id of operand x (the batched one): the rows it must compute
 * start at *first (0, or off[1] where x's step-0 rows are zeros, whose
 * rows of id are then zeroed here); returns the join block of a branch
 * that writes zeros at t = 0 (zero0 in a scan's cell, or skip0), or NULL. */
static LLVMBasicBlockRef zero_rows(BC *c, int id, int x, LLVMValueRef *first) {
  *first = NULL;
  if (c->kind[x] == K_SEQ && c->zero0[x]) {
    *first = step0_rows(c);
    memset_f32(&c->cg, c->ptr[id], LLVMBuildMul(c->cg.b, *first, ci64(&c->cg, c->ld[id]), ""));
    return NULL;
  }
  if (c->t0 && c->kind[id] == K_ROWS && (c->zero0[x] || c->skip0[id]))
    return zero_rows_begin(c, id, c->t0, c->rows);
  return NULL;
}

/* Node id's rows from first on (zero_rows): the pointer to row first, and
 * the count left of rows; unchanged without first. */
static LLVMValueRef from_row(BC *c, int id, LLVMValueRef first) {
  return first ? row_ptr(c, id, first) : c->ptr[id];
}

static LLVMValueRef rows_from(BC *c, LLVMValueRef rows, LLVMValueRef first) {
  return first ? LLVMBuildSub(c->cg.b, rows, first, "") : rows;
}

static void emit_matvec(BC *c, int id) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  int w = n->in[0], v = n->in[1];
  Type tw = N(c, w)->type, tv = N(c, v)->type;
  long long M = tw.dim[0];
  node_buffer(c, id);
  LLVMValueRef rows = rows_of(c, id);
  if (c->kind[v] == K_SHARED) {
    fail(c, id, "a product of shared values");
    return;
  }
  if (tv.kind == TY_ONEHOT) {
    LLVMValueRef wt = packed(c, w, n->a, tv.dim[tv.rank - 1]);
    Loop r = for_begin(cg, rows);
    LLVMValueRef idx = load_i64(c, c->ptr[v], r.i);
    memcpy_f32(cg, row_ptr(c, id, r.i), fptr(cg, wt, LLVMBuildMul(cg->b, idx, ci64(cg, M), "")),
               ci64(cg, M));
    for_end(cg, &r);
    return;
  }
  int K = (int)width(c, v);
  LLVMValueRef wt = packed(c, w, n->a, K), first;
  LLVMBasicBlockRef join = zero_rows(c, id, v, &first);
  bgemm(c, from_row(c, v, first), c->ld[v], 1, wt, M, from_row(c, id, first), c->ld[id],
        rows_from(c, rows, first), ci64(cg, K), M, false);
  zero_rows_end(c, join);
}

static void emit_matvec_t(BC *c, int id) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  int w = n->in[0], u = n->in[1];
  Type tw = N(c, w)->type;
  if (c->kind[u] == K_SHARED) {
    fail(c, id, "a product of shared values");
    return;
  }
  node_buffer(c, id);
  if (c->isint[u]) { /* a one-hot u: each row is row u of W (an embedding) */
    Loop r = for_begin(cg, rows_of(c, id));
    LLVMValueRef idx = load_i64(c, c->ptr[u], r.i);
    LLVMValueRef at = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, idx, ci64(cg, tw.dim[1]), ""), ci64(cg, n->a), "");
    LLVMValueRef src = fptr(cg, c->ptr[w], at);
    memcpy_f32(cg, row_ptr(c, id, r.i), src, ci64(cg, n->b));
    for_end(cg, &r);
    return;
  }
  LLVMValueRef first;
  LLVMBasicBlockRef join = zero_rows(c, id, u, &first);
  bgemm(c, from_row(c, u, first), c->ld[u], 1, fptr(cg, c->ptr[w], ci64(cg, n->a)), tw.dim[1],
        from_row(c, id, first), c->ld[id], rows_from(c, rows_of(c, id), first),
        ci64(cg, tw.dim[0]), n->b, false);
  zero_rows_end(c, join);
}

static LLVMValueRef grad_ptr(BC *c, int param) {
  return fptr(&c->cg, c->grad, ci64(&c->cg, (long long)c->g->params[param].offset));
}

static void emit_acc(BC *c, int id) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  int u = n->in[0];
  if (c->kind[u] == K_SHARED) {
    fail(c, id, "a gradient that is the same for every sequence");
    return;
  }
  const Param *p = &c->g->params[n->a];
  LLVMValueRef gp = grad_ptr(c, n->a);
  if (n->op == OP_ACC) {
    long long cnt = (long long)type_numel(p->type);
    Loop r = for_begin(cg, rows_of(c, u));
    LLVMValueRef urow = row_ptr(c, u, r.i);
    Loop i = loop_begin(cg, ci64(cg, cnt));
    store(cg, fadd(cg, load(cg, gp, i.i), load(cg, urow, i.i)), gp, i.i);
    loop_end(cg, &i);
    for_end(cg, &r);
    return;
  }
  int v = n->in[1];
  long long M = p->type.dim[0], ldw = p->type.dim[1], k0 = n->b;
  if (c->kind[v] != c->kind[u]) {
    fail(c, id, "an outer product of a sequence with a per-sequence value");
    return;
  }
  LLVMValueRef g0 = fptr(cg, gp, ci64(cg, k0));
  if (c->isint[u]) { /* a one-hot u: row u[r] of the gradient gets v[r] */
    long long nv = (long long)width(c, v);
    Loop r = for_begin(cg, rows_of(c, u));
    LLVMValueRef idx = load_i64(c, c->ptr[u], r.i);
    LLVMValueRef grow = fptr(cg, g0, LLVMBuildMul(cg->b, idx, ci64(cg, ldw), ""));
    LLVMValueRef vrow = row_ptr(c, v, r.i);
    Loop k = loop_begin(cg, ci64(cg, nv));
    store(cg, fadd(cg, load(cg, grow, k.i), load(cg, vrow, k.i)), grow, k.i);
    loop_end(cg, &k);
    for_end(cg, &r);
    return;
  }
  if (c->isint[v]) { /* a one-hot v: column v[r] of the gradient gets u[r] */
    Loop r = for_begin(cg, rows_of(c, u));
    LLVMValueRef idx = load_i64(c, c->ptr[v], r.i);
    LLVMValueRef urow = row_ptr(c, u, r.i);
    LLVMValueRef col = fptr(cg, g0, idx);
    Loop m = loop_begin(cg, ci64(cg, M));
    LLVMValueRef at = LLVMBuildMul(cg->b, m.i, ci64(cg, ldw), "");
    store(cg, fadd(cg, load(cg, col, at), load(cg, urow, m.i)), col, at);
    loop_end(cg, &m);
    for_end(cg, &r);
    return;
  }
  /* rows that are zeros in u or v add nothing (zero rows) */
  LLVMValueRef first = c->kind[u] == K_SEQ && (c->zero0[u] || c->zero0[v]) ? step0_rows(c) : NULL;
  bgemm(c, from_row(c, u, first), 1, c->ld[u], from_row(c, v, first), c->ld[v], g0, ldw,
        ci64(cg, M), rows_from(c, rows_of(c, u), first), (long long)width(c, v),
        !c->overwrite[id]);
}

/* grad is written, not added to: a parameter whose first gradient (in
 * block 0, none in a scan's cell) is an outer product over the rows that
 * covers all of it gets it written by that GEMM (which then reads no C),
 * and every other float of grad (the other parameters, the gaps between
 * them) is zeroed at entry for the adds that follow. The runtime then
 * neither zeroes a chunk's gradient buffer before the call nor after
 * folding it. Nothing is done for a kernel without gradients. */
static void plan_grad(BC *c) {
  const Graph *g = c->g;
  int np = g->nparams, nacc = 0;
  int *first = xmalloc((size_t)(np + 1) * sizeof *first);
  bool *nested = xcalloc((size_t)np + 1, sizeof *nested);
  for (int p = 0; p < np; p++)
    first[p] = -1;
  for (int id = 0; id < g->nnodes; id++) {
    const Node *n = N(c, id);
    if (n->op != OP_ACC && n->op != OP_ACC_OUTER)
      continue;
    nacc++;
    if (n->block != 0)
      nested[n->a] = true;
  }
  if (!nacc) { /* an inference kernel: grad is unused */
    free(first);
    free(nested);
    return;
  }
  /* first in the order block 0 runs them, not in id order: opt.c makes the
   * accs it hoists out of a backward scan after grad.c made the others,
   * and puts them right after that scan, before the gradients of what ran
   * before it (tests/graphs/tied_init.nn) */
  const Block *b0 = &g->blocks[0];
  for (int i = 0; i < b0->n; i++) {
    const Node *n = N(c, b0->nodes[i]);
    if ((n->op == OP_ACC || n->op == OP_ACC_OUTER) && first[n->a] < 0)
      first[n->a] = b0->nodes[i];
  }
  bool *written = xcalloc((size_t)np + 1, sizeof *written);
  for (int p = 0; p < np; p++) {
    int id = first[p];
    if (id < 0 || nested[p] || N(c, id)->op != OP_ACC_OUTER)
      continue;
    const Node *n = N(c, id);
    int u = n->in[0], v = n->in[1];
    const Param *pa = &g->params[p];
    if (c->isint[u] || c->isint[v] || c->kind[u] != c->kind[v] || c->kind[u] == K_SHARED ||
        n->b != 0 || (long long)width(c, v) != pa->type.dim[1])
      continue;
    c->overwrite[id] = written[p] = true;
  }
  /* zeros everywhere else, in offset order */
  size_t at = 0;
  while (at < g->nfloats) {
    size_t next = g->nfloats, end = g->nfloats; /* the next written parameter at or after at */
    for (int p = 0; p < np; p++)
      if (written[p] && g->params[p].offset >= at && g->params[p].offset < next) {
        next = g->params[p].offset;
        end = next + type_numel(g->params[p].type);
      }
    if (next > at)
      memset_f32(&c->cg, fptr(&c->cg, c->grad, ci64(&c->cg, (long long)at)),
                 ci64(&c->cg, (long long)(next - at)));
    at = end;
  }
  free(first);
  free(nested);
  free(written);
}

/* --------------------------------------------------- elementwise groups */

typedef struct Group {
  int *m, n, cap;
  Kind kind;
  size_t numel;
} Group;

static bool groupable(BC *c, int id) {
  const Node *n = N(c, id);
  return (op_flags[n->op] & F_ELEM) && c->kind[id] != K_SHARED;
}

static bool needed_outside(BC *c, int id) {
  const Graph *g = c->g;
  for (int u = 0; u < c->nusers[id]; u++)
    if (c->in_group[c->users[id][u]] != c->group_serial)
      return true;
  if (id == g->output || id == g->loss)
    return true;
  const Block *b = &g->blocks[N(c, id)->block];
  for (int k = 0; k < b->nyields; k++)
    if (b->yields[k] == id)
      return true;
  return false;
}

/* Operand o at row r, column i. */
static LLVMValueRef value_at(BC *c, int o, LLVMValueRef r, LLVMValueRef i) {
  Cg *cg = &c->cg;
  if (c->in_group[o] == c->group_serial && c->cur[o])
    return c->cur[o];
  const Node *n = N(c, o);
  if (n->op == OP_CONST)
    return cf32(cg, n->f);
  if (c->kind[o] == K_SHARED)
    return is_shared_scalar(c, o) ? c->sval[o] : load(cg, c->ptr[o], i);
  if (width(c, o) == 1) /* one float a row, the same at every column; rows ld[o] apart (a
                          * slice of a wider row is a view at its parent's stride) */
    return load(cg, c->ptr[o], c->ld[o] == 1 ? r : LLVMBuildMul(cg->b, r, ci64(cg, c->ld[o]), ""));
  return load(cg, c->ptr[o], LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r, ci64(cg, c->ld[o]), ""), i, ""));
}

static void close_group(BC *c, Group *gr) {
  if (!gr->n)
    return;
  Cg *cg = &c->cg;
  bool *stored = xcalloc((size_t)gr->n, sizeof *stored);
  for (int j = 0; j < gr->n; j++)
    if (needed_outside(c, gr->m[j])) {
      stored[j] = true;
      node_buffer(c, gr->m[j]);
    }
  LLVMValueRef rows = gr->kind == K_SEQ ? c->total : c->rows;
  Loop r = loop_begin(cg, rows);
  Loop i = {0};
  LLVMValueRef col = ci64(cg, 0);
  if (gr->numel > 1) {
    i = loop_begin(cg, ci64(cg, (long long)gr->numel));
    col = i.i;
  }
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    const Node *n = N(c, id);
    LLVMValueRef a = value_at(c, n->in[0], r.i, col);
    LLVMValueRef b = n->nin > 1 ? value_at(c, n->in[1], r.i, col) : NULL;
    c->cur[id] = cg_elem(cg, n->op, n->f, a, b);
    if (stored[j])
      store(cg, c->cur[id], c->ptr[id],
            gr->numel > 1 ? LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r.i, ci64(cg, c->ld[id]), ""), col, "")
                          : r.i);
  }
  if (gr->numel > 1)
    loop_end(cg, &i);
  loop_end(cg, &r);
  for (int j = 0; j < gr->n; j++)
    c->cur[gr->m[j]] = NULL;
  free(stored);
  gr->n = 0;
  c->group_serial++;
}

static bool can_join(BC *c, Group *gr, int id) {
  return groupable(c, id) && c->kind[id] == gr->kind && width(c, id) == gr->numel;
}

static void group_add(BC *c, Group *gr, int id) {
  if (gr->n == gr->cap) {
    gr->cap = gr->cap ? 2 * gr->cap : 16;
    gr->m = xrealloc(gr->m, (size_t)gr->cap * sizeof *gr->m);
  }
  if (!gr->n) {
    gr->kind = c->kind[id];
    gr->numel = width(c, id);
  }
  gr->m[gr->n++] = id;
  c->in_group[id] = c->group_serial;
}

static bool depends_on_group(BC *c, int id) {
  const Node *n = N(c, id);
  for (int k = 0; k < n->nin; k++)
    if (c->in_group[n->in[k]] == c->group_serial)
      return true;
  return false;
}

static bool is_view(Op op) {
  return op == OP_LOAD || op == OP_INPUT || op == OP_TARGET || op == OP_SLICE || op == OP_FIRST ||
         op == OP_PROJ || op == OP_ARG || op == OP_CONST;
}

/* ------------------------------------------------------------- scans */

static void emit_block(BC *c, int blk);

static void emit_scan(BC *c, int id) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  const Node *n = N(c, id);
  const Block *body = &g->blocks[n->region];
  int nseq = n->a, ncarry = n->b;
  bool reverse = n->c;
  int ny = body->nyields;
  LLVMValueRef *stacks = xmalloc((size_t)ny * sizeof *stacks);
  long long *sld = xmalloc((size_t)ny * sizeof *sld);
  int *stack_region = xmalloc((size_t)(ny > 0 ? ny : 1) * sizeof *stack_region);
  for (int k = 0; k < ny; k++) {
    int y = body->yields[k];
    if (c->isint[y]) {
      fail(c, id, "a scan that stacks one-hot values");
      free(stacks);
      free(sld);
      free(stack_region);
      return;
    }
    size_t w = width(c, y);
    sld[k] = w == 1 ? 1 : round16(w);
    stacks[k] = buffer(c, K_SEQ, sld[k]);
    stack_region[k] = c->nsr - 1;
  }
  /* Each carry's initial rows, at the stack's row stride; a reverse scan
   * also needs a buffer to assemble each step's carries in. */
  LLVMValueRef *init = xmalloc((size_t)ncarry * sizeof *init);
  LLVMValueRef *cin = xmalloc((size_t)ncarry * sizeof *cin);
  for (int j = 0; j < ncarry; j++) {
    int from = n->in[nseq + j];
    long long w = (long long)width(c, body->yields[j]);
    init[j] = buffer(c, K_ROWS, sld[j]);
    if (c->kind[from] == K_SHARED) {
      Loop b = loop_begin(cg, c->B64);
      LLVMValueRef dst = fptr(cg, init[j], LLVMBuildMul(cg->b, b.i, ci64(cg, sld[j]), ""));
      if (is_shared_scalar(c, from))
        store(cg, c->sval[from], dst, ci64(cg, 0));
      else
        memcpy_f32(cg, dst, c->ptr[from], ci64(cg, w));
      loop_end(cg, &b);
    } else {
      copy_rows(c, init[j], sld[j], c->ptr[from], c->ld[from], c->B64, w);
    }
    cin[j] = reverse ? buffer(c, K_ROWS, sld[j]) : NULL;
  }
  /* zero rows: the carries from zeros, the products a reverse scan's
   * last step need not compute */
  for (int j = 0; j < ncarry && !reverse; j++)
    c->zero0[body->args[nseq + j]] = N(c, n->in[nseq + j])->op == OP_ZEROS;
  if (reverse)
    plan_skip0(c, id);
  LLVMValueRef saved_rows = c->rows, saved_t0 = c->t0;
  Loop s = loop_begin(cg, c->T64);
  LLVMValueRef last = LLVMBuildSub(cg->b, c->T64, ci64(cg, 1), "");
  LLVMValueRef t = reverse ? LLVMBuildSub(cg->b, last, s.i, "") : s.i;
  LLVMValueRef nt = load_i64(c, c->bs, t);
  LLVMValueRef offt = load_i64(c, c->off, t);
  c->rows = nt;
  c->t0 = LLVMBuildICmp(cg->b, LLVMIntEQ, t, ci64(cg, 0), "t0");
  for (int i = 0; i < nseq; i++) {
    int arg = body->args[i], seq = n->in[i];
    c->ptr[arg] = row_ptr(c, seq, offt);
    c->ld[arg] = c->ld[seq];
  }
  if (!reverse) {
    /* step t > 0 reads the carries from step t - 1's rows of the stacks */
    LLVMValueRef first = c->t0; /* t = s.i */
    LLVMValueRef prev = LLVMBuildSelect(cg->b, first, ci64(cg, 0), LLVMBuildSub(cg->b, t, ci64(cg, 1), ""), "");
    LLVMValueRef offp = load_i64(c, c->off, prev);
    for (int j = 0; j < ncarry; j++) {
      int arg = body->args[nseq + j];
      LLVMValueRef rowp = fptr(cg, stacks[j], LLVMBuildMul(cg->b, offp, ci64(cg, sld[j]), ""));
      c->ptr[arg] = LLVMBuildSelect(cg->b, first, init[j], rowp, "");
      c->ld[arg] = sld[j];
    }
  } else {
    /* rows that ran at step t + 1 carry from there; the sequences whose
     * last step is t start from their initial rows */
    LLVMValueRef has_next = LLVMBuildICmp(cg->b, LLVMIntSLT, t, last, "");
    LLVMValueRef nxt = LLVMBuildSelect(cg->b, has_next, LLVMBuildAdd(cg->b, t, ci64(cg, 1), ""), t, "");
    LLVMValueRef nnext = LLVMBuildSelect(cg->b, has_next, load_i64(c, c->bs, nxt), ci64(cg, 0), "");
    LLVMValueRef offn = load_i64(c, c->off, nxt);
    for (int j = 0; j < ncarry; j++) {
      int arg = body->args[nseq + j];
      LLVMValueRef k = ci64(cg, sld[j]);
      memcpy_f32(cg, cin[j], fptr(cg, stacks[j], LLVMBuildMul(cg->b, offn, k, "")),
                 LLVMBuildMul(cg->b, nnext, k, ""));
      LLVMValueRef at = LLVMBuildMul(cg->b, nnext, k, "");
      memcpy_f32(cg, fptr(cg, cin[j], at), fptr(cg, init[j], at),
                 LLVMBuildMul(cg->b, LLVMBuildSub(cg->b, nt, nnext, ""), k, ""));
      c->ptr[arg] = cin[j];
      c->ld[arg] = sld[j];
    }
  }
  /* A yield the body computes into a buffer of its own is computed in its
   * stack's rows of step t instead (once, if yielded twice). */
  LLVMValueRef *dst = xmalloc((size_t)ny * sizeof *dst);
  for (int k = 0; k < ny; k++) {
    int y = body->yields[k];
    dst[k] = fptr(cg, stacks[k], LLVMBuildMul(cg->b, offt, ci64(cg, sld[k]), ""));
    if (N(c, y)->block == n->region && !is_view(N(c, y)->op) && c->kind[y] == K_ROWS &&
        !c->isint[y] && !c->dest[y])
      c->dest[y] = dst[k];
  }
  emit_block(c, n->region);
  for (int k = 0; k < ny; k++) {
    int y = body->yields[k];
    long long w = (long long)width(c, y);
    if (c->ptr[y] == dst[k]) /* computed in place */
      continue;
    if (c->kind[y] == K_SHARED) {
      Loop b = loop_begin(cg, nt);
      LLVMValueRef row = fptr(cg, dst[k], LLVMBuildMul(cg->b, b.i, ci64(cg, sld[k]), ""));
      if (is_shared_scalar(c, y) || N(c, y)->op == OP_CONST)
        store(cg, is_shared_scalar(c, y) ? c->sval[y] : cf32(cg, N(c, y)->f), row, ci64(cg, 0));
      else
        memcpy_f32(cg, row, c->ptr[y], ci64(cg, w));
      loop_end(cg, &b);
    } else {
      copy_rows(c, dst[k], sld[k], c->ptr[y], c->ld[y], nt, w);
    }
  }
  for (int k = 0; k < ny; k++)
    c->dest[body->yields[k]] = NULL;
  free(dst);
  loop_end(cg, &s);
  c->rows = saved_rows;
  c->t0 = saved_t0;
  for (int u = 0; u < c->nusers[id]; u++) {
    int p = c->users[id][u];
    if (N(c, p)->op == OP_PROJ) {
      c->ptr[p] = stacks[N(c, p)->a];
      c->ld[p] = sld[N(c, p)->a];
      seq_map(c, p, stack_region[N(c, p)->a]);
      /* the stack of a carry from zeros: its step-0 rows are zeros */
      int y = body->yields[N(c, p)->a];
      for (int j = 0; j < ncarry && !reverse; j++)
        if (y == body->args[nseq + j] && c->zero0[y])
          c->zero0[p] = true;
    }
  }
  free(stacks);
  free(sld);
  free(stack_region);
  free(init);
  free(cin);
}

/* ---------------------------------------------------- standalone nodes */

/* Sequence b's row at its last step in SEQ value seq. */
static LLVMValueRef last_row(BC *c, int seq, LLVMValueRef b) {
  Cg *cg = &c->cg;
  LLVMValueRef t = LLVMBuildSub(cg->b, load_i64(c, c->lens, b), ci64(cg, 1), "");
  return LLVMBuildAdd(cg->b, load_i64(c, c->off, t), b, "");
}

static void emit_standalone(BC *c, int id) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  const Node *n = N(c, id);
  int a = n->nin > 0 ? n->in[0] : -1, b = n->nin > 1 ? n->in[1] : -1;
  switch (n->op) {
  case OP_LOAD:
    if (n->b != SLOT_VALUE) {
      fail(c, id, "a load of a slot other than the values");
      return;
    }
    c->ptr[id] = c->bk.values ? baked_param(cg, &c->bk, n->a)
                              : fptr(cg, c->state, ci64(cg, (long long)param_offset(g, n->a)));
    return;
  case OP_INPUT:
    c->ptr[id] = c->chars;
    c->ld[id] = 1;
    return;
  case OP_TARGET:
    c->ptr[id] = c->targets;
    c->ld[id] = 1;
    return;
  case OP_CONST:
    c->sval[id] = cf32(cg, n->f);
    return;
  case OP_ZEROS:
    if (is_shared_scalar(c, id)) {
      c->sval[id] = cf32(cg, 0);
      return;
    }
    node_buffer(c, id);
    memset_f32(cg, c->ptr[id], ci64(cg, (long long)width(c, id)));
    return;
  case OP_NOISE: {
    long long w = (long long)width(c, id);
    node_buffer(c, id);
    Loop r = loop_begin(cg, c->B64);
    LLVMValueRef src = fptr(cg, c->noise, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r.i, ci64(cg, (long long)c->nnoise), ""),
                                                      ci64(cg, (long long)c->noise_off[id]), ""));
    LLVMValueRef dst = row_ptr(c, id, r.i);
    Loop i = loop_begin(cg, ci64(cg, w));
    store(cg, fmul(cg, load(cg, src, i.i), cf32(cg, n->f)), dst, i.i);
    loop_end(cg, &i);
    loop_end(cg, &r);
    return;
  }
  case OP_SLICE:
    c->ptr[id] = fptr(cg, c->ptr[a], ci64(cg, n->a));
    c->ld[id] = c->ld[a];
    return;
  case OP_FIRST: /* step 0's rows are rows 0..B of the packed value */
    c->ptr[id] = c->ptr[a];
    c->ld[id] = c->ld[a];
    return;
  case OP_PROJ:
    return; /* set by the scan */
  case OP_LAST: {
    if (c->kind[a] != K_SEQ) {
      fail(c, id, "last() of a value that is not a sequence");
      return;
    }
    if (c->isint[id]) {
      c->ld[id] = 1;
      c->ptr[id] = buffer(c, K_ROWS, 1);
      Loop r = loop_begin(cg, c->B64);
      LLVMValueRef v = LLVMBuildLoad2(cg->b, cg->i32, gep(cg, cg->i32, c->ptr[a], last_row(c, a, r.i)), "");
      LLVMBuildStore(cg->b, v, gep(cg, cg->i32, c->ptr[id], r.i));
      loop_end(cg, &r);
      return;
    }
    node_buffer(c, id);
    Loop r = loop_begin(cg, c->B64);
    memcpy_f32(cg, row_ptr(c, id, r.i), row_ptr(c, a, last_row(c, a, r.i)), ci64(cg, (long long)width(c, id)));
    loop_end(cg, &r);
    return;
  }
  case OP_PUT_LAST:
  case OP_PUT_FIRST: {
    if (c->kind[a] != K_ROWS) {
      fail(c, id, "put_last() or put_first() of a value that is not per sequence");
      return;
    }
    node_buffer(c, id);
    memset_f32(cg, c->ptr[id], LLVMBuildMul(cg->b, c->total, ci64(cg, c->ld[id]), ""));
    /* step 0's rows are the first B packed rows */
    Loop r = loop_begin(cg, c->B64);
    LLVMValueRef row = n->op == OP_PUT_FIRST ? r.i : last_row(c, id, r.i);
    memcpy_f32(cg, row_ptr(c, id, row), row_ptr(c, a, r.i), ci64(cg, (long long)width(c, a)));
    loop_end(cg, &r);
    return;
  }
  case OP_SCAN:
    emit_scan(c, id);
    return;
  case OP_MATVEC:
    emit_matvec(c, id);
    return;
  case OP_MATVEC_T:
    emit_matvec_t(c, id);
    return;
  case OP_ACC:
  case OP_ACC_OUTER:
    emit_acc(c, id);
    return;
  default:
    break;
  }
  if (c->kind[id] == K_SHARED) {
    if (is_shared_scalar(c, id) && (op_flags[n->op] & F_ELEM)) {
      LLVMValueRef x = is_shared_scalar(c, a) ? c->sval[a] : NULL;
      LLVMValueRef y = b >= 0 ? (is_shared_scalar(c, b) ? c->sval[b] : NULL) : NULL;
      if (x && (b < 0 || y)) {
        c->sval[id] = cg_elem(cg, n->op, n->f, x, y);
        return;
      }
    }
    fail(c, id, "a computation on shared values that batched codegen does not do");
    return;
  }
  /* per-row work on a batched value */
  node_buffer(c, id);
  LLVMValueRef rows = rows_of(c, id);
  switch (n->op) {
  case OP_CONCAT: {
    long long na = (long long)width(c, a), nb = (long long)width(c, b);
    Loop r = loop_begin(cg, rows);
    LLVMValueRef dst = row_ptr(c, id, r.i);
    memcpy_f32(cg, dst, c->kind[a] == K_SHARED ? c->ptr[a] : row_ptr(c, a, r.i), ci64(cg, na));
    memcpy_f32(cg, fptr(cg, dst, ci64(cg, na)), c->kind[b] == K_SHARED ? c->ptr[b] : row_ptr(c, b, r.i),
               ci64(cg, nb));
    loop_end(cg, &r);
    return;
  }
  case OP_PAD: {
    Loop r = loop_begin(cg, rows);
    LLVMValueRef dst = row_ptr(c, id, r.i);
    memset_f32(cg, dst, ci64(cg, n->b));
    memcpy_f32(cg, fptr(cg, dst, ci64(cg, n->a)), row_ptr(c, a, r.i), ci64(cg, (long long)width(c, a)));
    loop_end(cg, &r);
    return;
  }
  case OP_DENSE: {
    Loop r = loop_begin(cg, rows);
    LLVMValueRef dst = row_ptr(c, id, r.i);
    memset_f32(cg, dst, ci64(cg, (long long)width(c, id)));
    store(cg, cf32(cg, 1), dst, load_i64(c, c->ptr[a], r.i));
    loop_end(cg, &r);
    return;
  }
  case OP_SCATTER: {
    Loop r = loop_begin(cg, rows);
    LLVMValueRef dst = row_ptr(c, id, r.i);
    memset_f32(cg, dst, ci64(cg, (long long)width(c, id)));
    LLVMValueRef v = is_shared_scalar(c, a) ? c->sval[a] : load(cg, c->ptr[a], r.i);
    store(cg, v, dst, load_i64(c, c->ptr[b], r.i));
    loop_end(cg, &r);
    return;
  }
  case OP_PICK: {
    Loop r = loop_begin(cg, rows);
    LLVMValueRef src = c->kind[a] == K_SHARED ? c->ptr[a] : row_ptr(c, a, r.i);
    store(cg, load(cg, src, load_i64(c, c->ptr[b], r.i)), c->ptr[id], r.i);
    loop_end(cg, &r);
    return;
  }
  case OP_SUM: {
    long long w = (long long)width(c, a);
    if (c->kind[a] == K_SEQ) { /* over each sequence's steps */
      memset_f32(cg, c->ptr[id], c->B64);
      Loop t = loop_begin(cg, c->T64);
      LLVMValueRef offt = load_i64(c, c->off, t.i);
      Loop r = loop_begin(cg, load_i64(c, c->bs, t.i));
      LLVMValueRef src = row_ptr(c, a, LLVMBuildAdd(cg->b, offt, r.i, ""));
      LLVMValueRef acc = acc_new(cg, load(cg, c->ptr[id], r.i));
      Loop i = loop_begin(cg, ci64(cg, w));
      LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, acc, ""), load(cg, src, i.i)), acc);
      loop_end(cg, &i);
      store(cg, LLVMBuildLoad2(cg->b, cg->f32, acc, ""), c->ptr[id], r.i);
      loop_end(cg, &r);
      loop_end(cg, &t);
      return;
    }
    Loop r = loop_begin(cg, rows);
    LLVMValueRef src = row_ptr(c, a, r.i);
    LLVMValueRef acc = acc_new(cg, cf32(cg, 0));
    Loop i = loop_begin(cg, ci64(cg, w));
    LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, acc, ""), load(cg, src, i.i)), acc);
    loop_end(cg, &i);
    store(cg, LLVMBuildLoad2(cg->b, cg->f32, acc, ""), c->ptr[id], r.i);
    loop_end(cg, &r);
    return;
  }
  case OP_LOG_SOFTMAX: {
    /* y = x - (max + log(sum(exp(x - max)))), row by row */
    long long w = (long long)width(c, id);
    Loop r = loop_begin(cg, rows);
    LLVMValueRef x = row_ptr(c, a, r.i), y = row_ptr(c, id, r.i);
    LLVMValueRef mx = acc_new(cg, load(cg, x, ci64(cg, 0)));
    Loop l1 = loop_begin(cg, ci64(cg, w));
    LLVMValueRef args[2] = {LLVMBuildLoad2(cg->b, cg->f32, mx, ""), load(cg, x, l1.i)};
    LLVMBuildStore(cg->b, intrinsic(cg, "llvm.maxnum", args, 2), mx);
    loop_end(cg, &l1);
    LLVMValueRef m = LLVMBuildLoad2(cg->b, cg->f32, mx, "");
    LLVMValueRef sum = acc_new(cg, cf32(cg, 0));
    Loop l2 = loop_begin(cg, ci64(cg, w));
    LLVMValueRef ex = cg_elem(cg, OP_EXP, 0, fsub(cg, load(cg, x, l2.i), m), NULL);
    LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, sum, ""), ex), sum);
    loop_end(cg, &l2);
    LLVMValueRef lse = fadd(cg, m, cg_elem(cg, OP_LOG, 0, LLVMBuildLoad2(cg->b, cg->f32, sum, ""), NULL));
    Loop l3 = loop_begin(cg, ci64(cg, w));
    store(cg, fsub(cg, load(cg, x, l3.i), lse), y, l3.i);
    loop_end(cg, &l3);
    loop_end(cg, &r);
    return;
  }
  default:
    fail(c, id, "an op batched codegen does not support");
  }
}

/* ------------------------------------------------------------ parts */

/* The kernel's function (or part `c->part` of it, NAME.partK: see
 * CodegenOptions.parts and carry in kernels.c) named name, its noalias
 * parameters said so, positioned at its entry with its arguments bound. */
static void kernel_fn(BC *c, const char *name) {
  Cg *cg = &c->cg;
  LLVMTypeRef p = cg->pty, i32 = cg->i32;
  LLVMTypeRef params[13] = {p, p, p, p, p, p, p, i32, i32, p, p, p, p};
  LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(cg->ctx), params, 13, 0);
  cg->fn = c->fns[c->part] = LLVMAddFunction(cg->mod, name, fty);
  prefer_vector_width(cg, cg->fn, c->opt ? c->opt->vector_width : NULL);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  static const unsigned ptr_args[] = {0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 12};
  for (size_t i = 0; i < ARRAY_LEN(ptr_args); i++)
    LLVMAddAttributeAtIndex(cg->fn, ptr_args[i] + 1, LLVMCreateEnumAttribute(cg->ctx, noalias, 0));
  LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "entry"));
  LLVMValueRef *args[13] = {&c->state, &c->packs, &c->grad, &c->chars, &c->lens, &c->bs, &c->off,
                            &c->T, &c->B, &c->targets, &c->noise, &c->scratch, &c->out};
  for (int i = 0; i < 13; i++)
    *args[i] = LLVMGetParam(cg->fn, (unsigned)i);
  c->T64 = LLVMBuildSExt(cg->b, c->T, cg->i64, "T");
  c->B64 = LLVMBuildSExt(cg->b, c->B, cg->i64, "B");
  c->total = load_i64(c, c->off, c->T64);
  c->rows = c->B64;
  c->base_b = fptr(cg, c->scratch, LLVMBuildLoad2(cg->b, cg->i64, c->fixed_g, ""));
  c->base_r = fptr(cg, c->base_b,
                   LLVMBuildMul(cg->b, c->B64, LLVMBuildLoad2(cg->b, cg->i64, c->per_b_g, ""), ""));
}

static void make_part(void *ctx, const char *name) { kernel_fn(ctx, name); }

/* Ends the part being emitted with a call of the next one, which is made,
 * and carries block 0's values and the packs' pointers into it. */
static void next_part(BC *c) {
  Carry k = carry_next(&c->cg, c->name, ++c->part, make_part, c, 11, &c->fixed);
  LLVMValueRef *const vals[] = {c->ptr, c->sval, c->dest};
  carry_block0(&k, c->g, vals, 3, c->cur);
  for (int i = 0; i < c->npacks; i++)
    c->pk[i].ptr = carry(&k, c->pk[i].ptr);
  carry_end(&k);
}

static void emit_block(BC *c, int blk) {
  const Block *b = &c->g->blocks[blk];
  Group gr = {0};
  for (int i = 0; i < b->n && !c->failed; i++) {
    int id = b->nodes[i];
    if (blk == 0) {
      c->pos = i;
      if (!gr.n) /* every node before i emitted */
        seq_free(c, i);
    }
    if (N(c, id)->op == OP_ARG)
      continue;
    if (blk == 0 && c->part_at && i == c->part_at[c->part]) {
      close_group(c, &gr);
      next_part(c);
    }
    if (gr.n && can_join(c, &gr, id)) {
      group_add(c, &gr, id);
      continue;
    }
    if (gr.n && depends_on_group(c, id))
      close_group(c, &gr);
    if (groupable(c, id)) {
      close_group(c, &gr);
      group_add(c, &gr, id);
      continue;
    }
    if (gr.n && !is_view(N(c, id)->op) && !is_shared_scalar(c, id))
      close_group(c, &gr);
    emit_standalone(c, id);
    const Node *n = N(c, id);
    if (is_view(n->op) && n->nin > 0 && c->region[n->in[0]] >= 0) /* a view of a SEQ region */
      seq_map(c, id, c->region[n->in[0]]);
  }
  close_group(c, &gr);
  free(gr.m);
}

/* ------------------------------------------------------------ entry point */

int codegen_batch(const Graph *g, LLVMModuleRef mod, const char *name, const CodegenOptions *opt,
                  KernelAbi *abi, Err *e) {
  BC c = {.g = g, .opt = opt, .e = e, .group_serial = 1};
  Cg *cg = &c.cg;
  assert(opt && opt->simd.lanes >= 1 && "kernel_emit gives the target's vectors");
  c.bk = (Baked){g, opt->baked_values, false};
  if (opt->quantize) /* int8 weights would need a GEMM of int8 columns */
    return errf(e, "batched codegen: no batched kernel for int8 weights");
  cg_init(cg, mod, opt->simd);
  size_t nn = (size_t)g->nnodes;
  c.kind = xcalloc(nn, sizeof *c.kind);
  c.isint = xcalloc(nn, sizeof *c.isint);
  c.ld = xcalloc(nn, sizeof *c.ld);
  c.ptr = xcalloc(nn, sizeof *c.ptr);
  c.sval = xcalloc(nn, sizeof *c.sval);
  c.dest = xcalloc(nn, sizeof *c.dest);
  c.cur = xcalloc(nn, sizeof *c.cur);
  c.in_group = xcalloc(nn, sizeof *c.in_group);
  c.noise_off = xcalloc(nn, sizeof *c.noise_off);
  c.zero0 = xcalloc(nn, sizeof *c.zero0);
  c.skip0 = xcalloc(nn, sizeof *c.skip0);
  c.overwrite = xcalloc(nn, sizeof *c.overwrite);
  seq_lifetimes(&c);
  c.nusers = xcalloc(nn, sizeof *c.nusers);
  c.users = xcalloc(nn, sizeof *c.users);
  for (int id = 0; id < g->nnodes; id++)
    for (int k = 0; k < g->nodes[id].nin; k++)
      c.nusers[g->nodes[id].in[k]]++;
  for (int id = 0; id < g->nnodes; id++)
    c.users[id] = xmalloc((size_t)(c.nusers[id] + 1) * sizeof(int));
  int *fill = xcalloc(nn + 1, sizeof *fill);
  for (int id = 0; id < g->nnodes; id++)
    for (int k = 0; k < g->nodes[id].nin; k++) {
      int o = g->nodes[id].in[k];
      c.users[o][fill[o]++] = id;
    }
  free(fill);
  for (int id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == OP_NOISE) {
      c.noise_off[id] = c.nnoise;
      c.nnoise += type_numel(g->nodes[id].type);
    }
  infer_block(&c, 0);
  if (!c.failed && (g->output < 0 || c.kind[g->output] != K_ROWS))
    errf(e, "batched codegen: the output is not per sequence"), c.failed = true;
  if (!c.failed && g->loss >= 0 && c.kind[g->loss] != K_ROWS)
    errf(e, "batched codegen: the loss is not per sequence"), c.failed = true;
  int rc = -1;
  if (c.failed)
    goto done;

  c.name = name;
  char gname[256];
  snprintf(gname, sizeof gname, "%s_scratch_fixed", name);
  c.fixed_g = LLVMAddGlobal(mod, cg->i64, gname);
  snprintf(gname, sizeof gname, "%s_scratch_per_b", name);
  c.per_b_g = LLVMAddGlobal(mod, cg->i64, gname);
  LLVMValueRef gs[2] = {c.fixed_g, c.per_b_g};
  for (int i = 0; i < 2; i++) {
    LLVMSetGlobalConstant(gs[i], 1);
    LLVMSetLinkage(gs[i], LLVMPrivateLinkage);
  }
  kernel_fn(&c, name);
  if (opt->parts > 1)
    c.part_at = plan_parts(g, opt->parts);
  /* the loads of parameters first (the baked packs' matrices) */
  for (int id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == OP_LOAD && g->nodes[id].block == 0)
      emit_standalone(&c, id);
  plan_packs(&c);
  plan_grad(&c);
  emit_block(&c, 0);
  if (c.failed)
    goto done;
  /* out[b] = logits, loss */
  int C = g->classes;
  Loop r = loop_begin(cg, c.B64);
  LLVMValueRef dst = fptr(cg, c.out, LLVMBuildMul(cg->b, r.i, ci64(cg, C + 1), ""));
  memcpy_f32(cg, dst, row_ptr(&c, g->output, r.i), ci64(cg, C));
  store(cg, g->loss >= 0 ? load(cg, c.ptr[g->loss], r.i) : cf32(cg, 0), dst, ci64(cg, C));
  loop_end(cg, &r);
  LLVMBuildRetVoid(cg->b);
  LLVMValueRef kernel = cg->fn;
  if (c.npacked)
    emit_pack_fn(&c, name);
  cg->fn = kernel;
  LLVMSetInitializer(c.fixed_g, ci64(cg, round16(c.fixed)));
  LLVMSetInitializer(c.per_b_g, ci64(cg, (long long)c.per_b));
  abi->scratch_fixed = (size_t)round16(c.fixed);
  abi->scratch_per_b = c.per_b;
  abi->scratch_per_t = c.per_r;
  abi->noise = c.nnoise;
  abi->packed = c.npacked;
  rc = 0;
done:
  if (c.failed && c.fns[0]) {
    for (int i = 0; i <= c.part; i++) /* each part's caller first */
      LLVMDeleteFunction(c.fns[i]);
    if (c.fixed_g)
      LLVMDeleteGlobal(c.fixed_g);
    if (c.per_b_g)
      LLVMDeleteGlobal(c.per_b_g);
  }
  for (size_t i = 0; i < nn; i++)
    free(c.users[i]);
  free(c.users);
  free(c.nusers);
  free(c.kind);
  free(c.isint);
  free(c.ld);
  free(c.ptr);
  free(c.sval);
  free(c.dest);
  free(c.cur);
  free(c.in_group);
  free(c.noise_off);
  free(c.zero0);
  free(c.skip0);
  free(c.overwrite);
  free(c.last_use);
  free(c.region);
  free(c.sr);
  free(c.pk);
  free(c.part_at);
  cg_dispose(cg);
  return rc;
}

/* llvm.c: IR -> LLVM IR. One function per graph:
 *
 *   void NAME(float *state, const int32_t *chars, int32_t T, int32_t target,
 *             const float *noise, float *scratch, int32_t tmax, float step,
 *             float *out)
 *
 * state:   the flat parameter buffer, SLOT_COUNT slots of g->nfloats floats
 *          (value, grad, m, v); a forward kernel reads only the values.
 * chars:   (T) character indices, 1 <= T <= tmax; target a class index.
 * noise:   (abi.noise) uniform draws the runtime makes for noise nodes.
 * scratch: (abi.scratch_fixed + tmax * abi.scratch_per_t) floats.
 * out:     (classes + 2) logits, then the loss, then grad_norm: the
 *          gradients' norm before clipping (without clipping, 0 or NaN:
 *          whether a gradient is not finite).
 *
 * With CodegenOptions.accumulate (the step of a minibatch, one call per
 * sequence), a second argument `float *grad` (g->nfloats) follows state:
 * the gradients add to it; the grad slot of state is not used.
 *
 * With CodegenOptions.range (a minibatch's update split over threads), T
 * and target are a range [T, target) of the slots (0 <= T < target <=
 * g->nfloats): every loop over whole slots runs over that range alone, and
 * out[classes + 1] is the range's part of the grad_norm sum. Only a graph
 * whose vectors are all whole slots and whose one sum is grad_norm itself
 * (an update that does not clip) has such a kernel (range_ok): a norm
 * that clips needs every range's sum before any range's update.
 *
 * require: a verified graph; the runtime checks chars, T and target.
 *
 * Codegen walks each block in order and packs consecutive nodes into loop
 * groups: nodes with the same number of elements whose operands are
 * either computed before the group or read at the same index. A group is
 * one loop; a member's value stays in a register unless something outside
 * the group reads it. A matrix-vector product can head a group, so its
 * epilogue (bias, activation) runs in the same loop over rows; a reduction
 * (sum) can end one. Views (parameter slots, slices, rows of a stack,
 * scan results) are pointers, never copies. A scan is a loop over t whose
 * carried states are the previous row of their own stacks. Products with
 * shapes that allow it run as micro-kernels (kernels.c). */
#include <assert.h>
#include <llvm-c/Core.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "mathfn.h"
#include "rnnc.h"

typedef struct CG {
  const Graph *g;
  const CodegenOptions *opt;
  Cg cg; /* the builder, the types, the kernel function */
  LLVMValueRef state, chars, T, target, noise, scratch, tmax, step, out;
  LLVMValueRef grad; /* the gradients: the grad slot, or the accumulating kernel's own argument */
  LLVMValueRef T64, scratch_t; /* T as i64; start of the T-sized region */
  LLVMValueRef lo, hi;         /* CodegenOptions.range: the slots' range, else NULL */
  const Baked *bk;             /* AOT: the parameter values as constants; NULL: the state */
  LLVMValueRef *ptr;           /* node -> buffer or view base pointer */
  LLVMValueRef *sval;          /* node -> scalar value (f32, or i32 index) */
  LLVMValueRef *cur;           /* node -> value at the current group index */
  size_t *off;                 /* node -> scratch offset (floats) */
  bool *per_t;                 /* node -> buffer of T rows (offset scaled by tmax) */
  bool *has_buf;               /* node -> has a fixed-size buffer */
  LLVMValueRef fixed_size;     /* constant global: the fixed part's size */
  size_t *noise_off;
  int *nusers;
  int **users;
  int *in_group; /* node -> group serial, or 0 */
  int group_serial;
  size_t fixed, per_t_total, nnoise;
  LLVMValueRef *scan_stack; /* (per yield) stack bases while a scan is emitted */
  int scan_id;              /* the scan being emitted (-1: none) */
  LLVMValueRef scan_first;  /* and whether its step is the first (an i1) */
  bool *first_acc;          /* node -> the accumulation that initializes its gradient */
  LLVMValueRef *qin;        /* product node -> its input quantized (quantized_input), or NULL */
  long long *qin_ld;        /* and that buffer's row stride, in floats */
  const char *name;         /* the kernel's function's */
  LLVMTypeRef fty;          /* its type, every part's */
  int *part_at;             /* CodegenOptions.parts: block 0's node index where each part after
                             * the first begins, ascending; -1 past the last */
  int part;                 /* the part being emitted (0: the kernel's own function) */
} CG;

/* -------------------------------------------------------------- helpers */

static const Node *N(CG *c, int id) { return &c->g->nodes[id]; }

static bool is_seq_type(Type t) { return type_is_seq(t); }
static size_t row_numel(Type t) { return type_row_numel(t); }

static bool is_scalar(CG *c, int id) {
  Type t = N(c, id)->type;
  return (t.kind == TY_F32 && t.rank == 0) || t.kind == TY_CLASS ||
         (t.kind == TY_ONEHOT && t.rank == 1);
}

/* ----------------------------------------------------------- memory plan */

static bool is_view(Op op) {
  switch (op) {
  case OP_LOAD:
  case OP_INPUT:
  case OP_SLICE:
  case OP_LAST:
  case OP_FIRST:
  case OP_PROJ:
  case OP_ARG:
    return true;
  default:
    return false;
  }
}

static void plan(CG *c) {
  const Graph *g = c->g;
  for (int id = 0; id < g->nnodes; id++) {
    const Node *n = &g->nodes[id];
    if (n->op == OP_NOISE) {
      c->noise_off[id] = c->nnoise;
      c->nnoise += type_numel(n->type);
    }
  }
  for (int id = 0; id < g->nnodes; id++)
    for (int k = 0; k < g->nodes[id].nin; k++)
      c->nusers[g->nodes[id].in[k]]++;
  for (int id = 0; id < g->nnodes; id++)
    c->users[id] = xmalloc((size_t)(c->nusers[id] + 1) * sizeof(int));
  int *fill = xcalloc((size_t)g->nnodes, sizeof *fill);
  for (int id = 0; id < g->nnodes; id++)
    for (int k = 0; k < g->nodes[id].nin; k++) {
      int o = g->nodes[id].in[k];
      c->users[o][fill[o]++] = id;
    }
  free(fill);
}

/* The buffer of a node, placed in scratch when first asked for (a fused
 * value that never leaves registers gets none). The fixed-size part comes
 * first; its size is known only at the end, so the T-sized region's start
 * is read from a constant global that is filled in then (and folded). */
static LLVMValueRef buffer(CG *c, int id) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  size_t numel = (row_numel(n->type) + 15) & ~(size_t)15; /* 64-byte aligned */
  if (is_seq_type(n->type)) {
    if (!c->per_t[id]) {
      c->per_t[id] = true;
      c->off[id] = c->per_t_total;
      c->per_t_total += numel;
    }
    return fptr(cg, c->scratch_t, LLVMBuildMul(cg->b, c->tmax, ci64(cg, (long long)c->off[id]), ""));
  }
  if (!c->has_buf[id]) {
    c->has_buf[id] = true;
    c->off[id] = c->fixed;
    c->fixed += numel;
  }
  return fptr(cg, c->scratch, ci64(cg, (long long)c->off[id]));
}

/* ----------------------------------------------------- values at an index */

/* Operand o of a group member at index i (i64). */
static LLVMValueRef value_at(CG *c, int o, LLVMValueRef i) {
  Cg *cg = &c->cg;
  if (c->in_group[o] == c->group_serial && c->cur[o])
    return c->cur[o];
  const Node *n = N(c, o);
  if (n->op == OP_CONST)
    return cf32(cg, n->f);
  if (is_scalar(c, o))
    return c->sval[o];
  return load(cg, c->ptr[o], i);
}


/* ------------------------------------------------------------ loop groups */

typedef struct Group {
  int *m, n, cap;
  size_t numel;
} Group;

static size_t group_numel(CG *c, int id) {
  const Node *n = N(c, id);
  if (n->op == OP_ACC || n->op == OP_STORE || n->op == OP_SUM)
    return row_numel(N(c, n->in[0])->type);
  return row_numel(n->type);
}

static bool blocked_matvec(CG *c, int id);

static bool groupable(CG *c, int id) {
  const Node *n = N(c, id);
  if (is_seq_type(n->type) || (n->op == OP_ACC && is_seq_type(N(c, n->in[0])->type)))
    return false;
  switch (n->op) {
  case OP_MATVEC:
    return !blocked_matvec(c, id);
  case OP_ACC:
  case OP_STORE:
  case OP_SUM:
    return true;
  default:
    return (op_flags[n->op] & F_ELEM) && !is_scalar(c, id);
  }
}

static bool uses_elementwise(const Node *n) {
  return (op_flags[n->op] & F_ELEM) || n->op == OP_ACC || n->op == OP_STORE || n->op == OP_SUM;
}

static bool can_join(CG *c, Group *gr, int id) {
  if (!groupable(c, id) || group_numel(c, id) != gr->numel)
    return false;
  const Node *n = N(c, id);
  for (int k = 0; k < n->nin; k++) {
    int o = n->in[k];
    if (c->in_group[o] != c->group_serial)
      continue;
    if (!uses_elementwise(n) || N(c, o)->op == OP_SUM)
      return false;
  }
  return true;
}

static bool depends_on_group(CG *c, int id) {
  const Node *n = N(c, id);
  for (int k = 0; k < n->nin; k++)
    if (c->in_group[n->in[k]] == c->group_serial)
      return true;
  return false;
}

/* A member must be written to memory when anything outside the group reads it. */
static bool needed_outside(CG *c, int id, int blk_yields_owner) {
  const Graph *g = c->g;
  for (int u = 0; u < c->nusers[id]; u++)
    if (c->in_group[c->users[id][u]] != c->group_serial)
      return true;
  if (id == g->output || id == g->loss || id == g->grad_norm)
    return true;
  const Block *b = &g->blocks[N(c, id)->block];
  for (int k = 0; k < b->nyields; k++)
    if (b->yields[k] == id)
      return true;
  (void)blk_yields_owner;
  return false;
}

/* Products whose rows and input are multiples of 16 run blocked: 16 rows
 * at a time (matvec_block_n), or 16 / n rows of n steps of a sequence. */
static bool blocked_matvec(CG *c, int id) {
  const Node *n = N(c, id);
  if (n->op != OP_MATVEC)
    return false;
  Type tw = N(c, n->in[0])->type, tv = N(c, n->in[1])->type;
  if (tv.kind != TY_F32)
    return false;
  int nv = is_seq_type(tv) ? tv.dim[1] : tv.dim[0];
  return tw.dim[0] % BLOCK == 0 && nv % BLOCK == 0;
}

/* AOT: the baked matrix a product reads (NULL: none, it reads the state). */
static const Baked *baked_matrix(CG *c, int id) {
  const Node *w = N(c, N(c, id)->in[0]);
  return c->bk && w->op == OP_LOAD && w->b == SLOT_VALUE ? c->bk : NULL;
}

/* AOT: whether product id reads its float matrix in baked_blocked's
 * layout (matvec_block_n with ks = 16 V): every blocked product of a
 * baked float matrix does. */
static bool blocked_layout(CG *c, int id) {
  const Baked *bk = baked_matrix(c, id);
  return bk && !bk->quantize && blocked_matvec(c, id);
}

/* Product node id's W[r, k0] and the row stride *ld: a float pointer, or
 * with --quantize int8 an int8 pointer with *scale the matrix's row
 * scales (row r's at scale[r]; else *scale is NULL). */
static LLVMValueRef weight_row(CG *c, int id, LLVMValueRef r, LLVMValueRef *scale, long long *ld) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id), *w = N(c, n->in[0]), *v = N(c, n->in[1]);
  const Baked *bk = baked_matrix(c, id);
  *scale = NULL;
  if (blocked_layout(c, id)) { /* r: a block's first row; *ld = V */
    long long nv = is_seq_type(v->type) ? v->type.dim[1] : v->type.dim[0];
    *ld = mv_lanes(cg);
    return fptr(cg, baked_blocked(cg, bk, w->a, n->a, (int)nv), LLVMBuildMul(cg->b, r, ci64(cg, nv), ""));
  }
  if (bk && bk->quantize) { /* the int8 rows of the product's columns alone */
    *ld = is_seq_type(v->type) ? v->type.dim[1] : v->type.dim[0];
    LLVMValueRef q = baked_q8(cg, bk, w->a, n->a, (int)*ld, scale);
    return gep(cg, cg->i8, q, LLVMBuildMul(cg->b, r, ci64(cg, *ld), ""));
  }
  *ld = w->type.dim[1];
  LLVMValueRef at = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r, ci64(cg, *ld), ""), ci64(cg, n->a), "");
  return fptr(cg, c->ptr[n->in[0]], at);
}

/* Element k of a row from weight_row, as a float. */
static LLVMValueRef weight_at(Cg *cg, LLVMValueRef row, LLVMValueRef k, LLVMValueRef scale) {
  if (!scale)
    return load(cg, row, k);
  return LLVMBuildSIToFP(cg->b, LLVMBuildLoad2(cg->b, cg->i8, gep(cg, cg->i8, row, k), ""), cg->f32, "");
}

static LLVMValueRef seq_row(CG *c, int seq, LLVMValueRef t);

/* AOT with --quantize int8 on a CPU with sdot or vpdpbusd (CodegenOptions.int8_dot):
 * whether product id sums int8 x int8, its input a float vector (or
 * sequence of them) quantized as its matrix's rows are. */
static bool int8_product(CG *c, int id) {
  const Baked *bk = baked_matrix(c, id);
  return bk && bk->quantize && c->opt->int8_dot && N(c, N(c, id)->in[1])->type.kind == TY_F32;
}

/* With vpdpbusd (whose input is the quantized input plus 128): int8
 * product id's row offsets (baked_q8_offsets), else NULL. */
static LLVMValueRef weight_offsets(CG *c, int id) {
  if (c->cg.dot != INT8_DOT_VNNI256 && c->cg.dot != INT8_DOT_VNNI512)
    return NULL;
  const Node *n = N(c, id), *w = N(c, n->in[0]), *v = N(c, n->in[1]);
  long long ld = is_seq_type(v->type) ? v->type.dim[1] : v->type.dim[0];
  return baked_q8_offsets(&c->cg, c->bk, w->a, n->a, (int)ld);
}

/* Product id's input quantized (quantize_vec), each of its rows (T of a
 * sequence, else one) in a scratch row of *ld floats: the scale in its
 * first float, the int8 values from byte 64 (see input_q8). */
static LLVMValueRef quantized_input(CG *c, int id, long long *ld) {
  Cg *cg = &c->cg;
  int b = N(c, id)->in[1];
  Type tx = N(c, b)->type;
  bool seq = is_seq_type(tx);
  long long nv = seq ? tx.dim[1] : tx.dim[0];
  size_t row = 16 + ((size_t)nv + 63) / 64 * 16; /* floats: 64-byte aligned rows */
  LLVMValueRef base;
  if (seq) {
    base = fptr(cg, c->scratch_t, LLVMBuildMul(cg->b, c->tmax, ci64(cg, (long long)c->per_t_total), ""));
    c->per_t_total += row;
  } else {
    base = fptr(cg, c->scratch, ci64(cg, (long long)c->fixed));
    c->fixed += row;
  }
  Loop t = {0};
  if (seq)
    t = loop_begin(cg, c->T64);
  LLVMValueRef r = seq ? LLVMBuildMul(cg->b, t.i, ci64(cg, (long long)row), "") : ci64(cg, 0);
  LLVMValueRef x = seq ? seq_row(c, b, t.i) : c->ptr[b];
  store(cg, quantize_vec(cg, x, nv, gep(cg, cg->i8, fptr(cg, base, r), ci64(cg, 64))), base, r);
  if (seq)
    loop_end(cg, &t);
  *ld = (long long)row;
  return base;
}

/* Row t of a quantized_input buffer q (row stride ld floats): its int8
 * values, and *scale its scale. */
static LLVMValueRef input_q8(Cg *cg, LLVMValueRef q, long long ld, LLVMValueRef t, LLVMValueRef *scale) {
  LLVMValueRef row = fptr(cg, q, LLVMBuildMul(cg->b, t, ci64(cg, ld), ""));
  *scale = load(cg, row, ci64(cg, 0));
  return gep(cg, cg->i8, row, ci64(cg, 64));
}

/* y[r] = W[r, k0:k0+n] v, a one-hot v reading one column. With baked
 * weights the object also holds the columns transposed (column j's M
 * values contiguous, baked_columns), so the loop over rows reads them
 * without a strided gather. Quantized, the row's sum is in float and then
 * scaled. */
static void emit_matvec_row(CG *c, int id, LLVMValueRef r) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  Type tw = N(c, n->in[0])->type, tv = N(c, n->in[1])->type;
  LLVMValueRef scale;
  if (tv.kind == TY_ONEHOT) {
    LLVMValueRef idx = LLVMBuildSExt(cg->b, c->sval[n->in[1]], cg->i64, "");
    const Baked *bk = baked_matrix(c, id);
    if (!bk) {
      long long ld;
      c->cur[id] = load(cg, weight_row(c, id, r, &scale, &ld), idx);
      return;
    }
    LLVMValueRef wt = baked_columns(cg, bk, N(c, n->in[0])->a, n->a, tv.dim[0], &scale);
    LLVMValueRef at = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, idx, ci64(cg, tw.dim[0]), ""), r, "");
    c->cur[id] = weight_at(cg, wt, at, scale);
    if (scale)
      c->cur[id] = fmul(cg, c->cur[id], load(cg, scale, r));
    return;
  }
  long long ld;
  LLVMValueRef w = weight_row(c, id, r, &scale, &ld);
  if (c->qin[id]) { /* int8 x int8 (int8_product) */
    LLVMValueRef sx, q = input_q8(cg, c->qin[id], c->qin_ld[id], ci64(cg, 0), &sx);
    LLVMValueRef offsets = weight_offsets(c, id);
    LLVMValueRef corr = offsets ? LLVMBuildLoad2(cg->b, cg->i32, gep(cg, cg->i32, offsets, r), "") : NULL;
    c->cur[id] = int8_result(cg, idot(cg, w, q, tv.dim[0], corr), load(cg, scale, r), sx);
    return;
  }
  LLVMValueRef acc = acc_new(cg, cf32(cg, 0));
  Loop k = loop_begin(cg, ci64(cg, tv.dim[0]));
  LLVMValueRef s = fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, acc, ""),
                        fmul(cg, weight_at(cg, w, k.i, scale), load(cg, c->ptr[n->in[1]], k.i)));
  LLVMBuildStore(cg->b, s, acc);
  loop_end(cg, &k);
  c->cur[id] = LLVMBuildLoad2(cg->b, cg->f32, acc, "");
  if (scale)
    c->cur[id] = fmul(cg, c->cur[id], load(cg, scale, r));
}

/* The members of group gr at element `at` (into the slots): close_group's
 * loop body. */
static void group_body(CG *c, Group *gr, const bool *stored, LLVMValueRef *accs, LLVMValueRef at) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    const Node *n = N(c, id);
    switch (n->op) {
    case OP_MATVEC:
      emit_matvec_row(c, id, at);
      break;
    case OP_SUM: {
      LLVMValueRef v = value_at(c, n->in[0], at);
      LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, accs[j], ""), v), accs[j]);
      break;
    }
    case OP_ACC: {
      LLVMValueRef gp = fptr(cg, c->grad, ci64(cg, (long long)g->params[n->a].offset));
      LLVMValueRef v = value_at(c, n->in[0], at);
      store(cg, c->first_acc[id] ? v : fadd(cg, load(cg, gp, at), v), gp, at);
      break;
    }
    case OP_STORE: {
      LLVMValueRef sp = fptr(cg, c->state, ci64(cg, (long long)(n->b * g->nfloats +
                                                               param_offset(g, n->a))));
      store(cg, value_at(c, n->in[0], at), sp, at);
      break;
    }
    default: {
      LLVMValueRef a = value_at(c, n->in[0], at);
      LLVMValueRef b = n->nin > 1 ? value_at(c, n->in[1], at) : NULL;
      c->cur[id] = cg_elem(&c->cg, n->op, n->f, a, b);
    }
    }
    if (stored[j])
      store(cg, c->cur[id], c->ptr[id], at);
  }
}

/* A ranged update's loop (ranged_loop): how many floats ahead it asks for
 * the lines it will store, and the floats of its blocks (4 lines). */
enum { UPDATE_AHEAD = 512, UPDATE_BLOCK = 64 };

/* The loop of a group over a range of the slots [lo, hi) that stores into
 * them (update_range, a minibatch's update on one thread's part): blocks
 * of UPDATE_BLOCK floats, each first asking with a write prefetch for the
 * lines UPDATE_AHEAD floats ahead in every slot the group stores to, then
 * the floats the blocks leave over one by one. The same arithmetic.
 *
 * Why: on several threads every core reads the values (the packing, the
 * backward's products), so a line the update stores is a copy another
 * core holds, and the store waits for that core to drop it; the stores
 * wait one after another, a prefetch for writing starts the wait early
 * and many at once. On the 2-vCPU Xeon of docs/benchmarks.md: Adam over
 * gru.nn's 642,848 values on one core 380 us, 525-622 us once the other
 * core had read them, 436-460 us so with the prefetches; gru.nn's batch-32
 * update on 2 threads 0.23 -> 0.105 s an epoch. */
static void ranged_loop(CG *c, Group *gr, const bool *stored, LLVMValueRef *accs) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  LLVMValueRef n = LLVMBuildSub(cg->b, c->hi, c->lo, "");
  LLVMValueRef blocks = LLVMBuildSDiv(cg->b, n, ci64(cg, UPDATE_BLOCK), "");
  Loop bl = for_begin(cg, blocks);
  LLVMValueRef at0 = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, bl.i, ci64(cg, UPDATE_BLOCK), ""), c->lo, "");
  for (int j = 0; j < gr->n; j++) {
    const Node *nd = N(c, gr->m[j]);
    if (nd->op != OP_STORE)
      continue;
    long long slot = (long long)(nd->b * g->nfloats + param_offset(g, nd->a));
    for (int line = 0; line < UPDATE_BLOCK; line += 16) {
      /* not inbounds: ahead of the range's end it may be past the slots */
      LLVMValueRef at = LLVMBuildAdd(cg->b, at0, ci64(cg, slot + UPDATE_AHEAD + line), "");
      prefetch(cg, LLVMBuildGEP2(cg->b, cg->f32, c->state, &at, 1, ""), true);
    }
  }
  Loop in = loop_begin(cg, ci64(cg, UPDATE_BLOCK));
  group_body(c, gr, stored, accs, LLVMBuildAdd(cg->b, at0, in.i, ""));
  loop_end(cg, &in);
  for_end(cg, &bl);
  LLVMValueRef done = LLVMBuildMul(cg->b, blocks, ci64(cg, UPDATE_BLOCK), "");
  Loop rest = for_begin(cg, LLVMBuildSub(cg->b, n, done, ""));
  group_body(c, gr, stored, accs, LLVMBuildAdd(cg->b, LLVMBuildAdd(cg->b, rest.i, done, ""), c->lo, ""));
  for_end(cg, &rest);
}

static void close_group(CG *c, Group *gr) {
  Cg *cg = &c->cg;
  if (!gr->n)
    return;
  const Graph *g = c->g;
  /* Buffers of members read outside, and the sums' accumulators. */
  bool *stored = xcalloc((size_t)gr->n, sizeof *stored);
  LLVMValueRef *accs = xcalloc((size_t)gr->n, sizeof *accs);
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    const Node *n = N(c, id);
    if (n->op == OP_MATVEC && int8_product(c, id)) /* its input quantized before the loop */
      c->qin[id] = quantized_input(c, id, &c->qin_ld[id]);
    if (n->op == OP_SUM)
      accs[j] = acc_new(cg, cf32(cg, 0));
    else if (n->type.kind != TY_NONE && needed_outside(c, id, -1)) {
      stored[j] = true;
      c->ptr[id] = buffer(c, id);
    }
  }
  bool ranged = c->lo && gr->numel == g->nfloats; /* range_ok: every group */
  bool stores = false;
  for (int j = 0; j < gr->n; j++)
    stores |= N(c, gr->m[j])->op == OP_STORE;
  if (ranged && stores) {
    ranged_loop(c, gr, stored, accs);
  } else {
    Loop l = loop_begin(cg, ranged ? LLVMBuildSub(cg->b, c->hi, c->lo, "") : ci64(cg, (long long)gr->numel));
    group_body(c, gr, stored, accs, ranged ? LLVMBuildAdd(cg->b, l.i, c->lo, "") : l.i);
    loop_end(cg, &l);
  }
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    c->cur[id] = NULL;
    if (N(c, id)->op == OP_SUM)
      c->sval[id] = LLVMBuildLoad2(cg->b, cg->f32, accs[j], "");
  }
  free(stored);
  free(accs);
  gr->n = 0;
  c->group_serial++;
}

static void group_add(CG *c, Group *gr, int id) {
  if (gr->n == gr->cap) {
    gr->cap = gr->cap ? 2 * gr->cap : 16;
    gr->m = xrealloc(gr->m, (size_t)gr->cap * sizeof *gr->m);
  }
  if (!gr->n)
    gr->numel = group_numel(c, id);
  gr->m[gr->n++] = id;
  c->in_group[id] = c->group_serial;
}

/* ---------------------------------------------------- standalone nodes */

static void emit_block(CG *c, int blk);

static LLVMValueRef seq_row(CG *c, int seq, LLVMValueRef t) {
  Cg *cg = &c->cg;
  size_t n = row_numel(N(c, seq)->type);
  return fptr(cg, c->ptr[seq], LLVMBuildMul(cg->b, t, ci64(cg, (long long)n), ""));
}

static void emit_scan(CG *c, int id) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  const Node *n = N(c, id);
  const Block *body = &g->blocks[n->region];
  int nseq = n->a, ncarry = n->b;
  bool reverse = n->c;
  /* Stacks: one per yield, T rows each. */
  c->off[id] = c->per_t_total;
  LLVMValueRef base =
      fptr(cg, c->scratch_t, LLVMBuildMul(cg->b, c->tmax, ci64(cg, (long long)c->off[id]), ""));
  LLVMValueRef *stacks = xmalloc((size_t)body->nyields * sizeof *stacks);
  size_t off = 0;
  for (int k = 0; k < body->nyields; k++) {
    stacks[k] = fptr(cg, base, LLVMBuildMul(cg->b, c->tmax, ci64(cg, (long long)off), ""));
    off += (row_numel(g->nodes[body->yields[k]].type) + 15) & ~(size_t)15;
  }
  c->per_t_total += off;
  LLVMValueRef *saved = c->scan_stack, saved_first = c->scan_first;
  int saved_id = c->scan_id;
  c->scan_stack = stacks;
  Loop s = loop_begin(cg, c->T64);
  LLVMValueRef t = reverse ? LLVMBuildSub(cg->b, LLVMBuildSub(cg->b, c->T64, ci64(cg, 1), ""), s.i, "")
                           : s.i;
  LLVMValueRef first = LLVMBuildICmp(cg->b, LLVMIntEQ, s.i, ci64(cg, 0), "");
  c->scan_id = id;
  c->scan_first = first;
  LLVMValueRef prev =
      reverse ? LLVMBuildAdd(cg->b, t, ci64(cg, 1), "") : LLVMBuildSub(cg->b, t, ci64(cg, 1), "");
  for (int i = 0; i < nseq; i++) {
    int arg = body->args[i], seq = n->in[i];
    if (N(c, seq)->type.kind == TY_ONEHOT)
      c->sval[arg] = LLVMBuildLoad2(cg->b, cg->i32, gep(cg, cg->i32, c->chars, t), "");
    else
      c->ptr[arg] = seq_row(c, seq, t);
  }
  for (int j = 0; j < ncarry; j++) {
    int arg = body->args[nseq + j];
    size_t rn = row_numel(N(c, arg)->type);
    /* prev is out of range at the first step, where the select picks the
     * initial value, so compute the row address without inbounds. */
    LLVMValueRef idx = LLVMBuildMul(cg->b, prev, ci64(cg, (long long)rn), "");
    LLVMValueRef rowp = LLVMBuildGEP2(cg->b, cg->f32, stacks[j], &idx, 1, "");
    c->ptr[arg] = LLVMBuildSelect(cg->b, first, c->ptr[n->in[nseq + j]], rowp, "");
  }
  emit_block(c, n->region);
  for (int k = 0; k < body->nyields; k++) {
    int y = body->yields[k];
    size_t rn = row_numel(N(c, y)->type);
    LLVMValueRef dst = fptr(cg, stacks[k], LLVMBuildMul(cg->b, t, ci64(cg, (long long)rn), ""));
    if (is_scalar(c, y))
      LLVMBuildStore(cg->b, value_at(c, y, ci64(cg, 0)), dst);
    else
      memcpy_f32(cg, dst, c->ptr[y], ci64(cg, (long long)rn));
  }
  loop_end(cg, &s);
  c->scan_stack = saved;
  c->scan_id = saved_id;
  c->scan_first = saved_first;
  c->ptr[id] = base;
  /* Projections point at the stacks. */
  for (int u = 0; u < c->nusers[id]; u++) {
    int p = c->users[id][u];
    if (N(c, p)->op == OP_PROJ)
      c->ptr[p] = stacks[N(c, p)->a];
  }
  free(stacks);
}

/* ------------------------------------------------- gradient accumulation */

/* What step_tuples' callbacks below work on: product node id, and for
 * matvec_steps rows [r0, r0 + 16) of W, from its column k0. */
typedef struct Steps {
  CG *c;
  int id;
  LLVMValueRef w, r0, scale; /* scale: the block's row scales (int8 w), or NULL */
  long long ld, ks;          /* w's row stride, and its chunks' (matvec_block_n) */
  LLVMValueRef q;            /* int8_product: the input quantized (quantized_input), or NULL */
  long long qld;             /* its row stride */
  LLVMValueRef corr;         /* with vpdpbusd: the block's row offsets (weight_offsets) */
} Steps;

static void matvec_t_steps(void *ctx, LLVMValueRef *ts, int nx) {
  const Steps *m = ctx;
  CG *c = m->c;
  Cg *cg = &c->cg;
  int id = m->id;
  const Node *n = N(c, id);
  Type tw = N(c, n->in[0])->type;
  LLVMValueRef us[4], ys[4];
  for (int q = 0; q < nx; q++) {
    us[q] = seq_row(c, n->in[1], ts[q]);
    ys[q] = seq_row(c, id, ts[q]);
  }
  matvec_t_block(cg, fptr(cg, c->ptr[n->in[0]], ci64(cg, n->a)), tw.dim[1], tw.dim[0], n->b, us, nx, ys);
}

/* acc grad[p] u and acc_outer grad[p] u, v (ops.h). A sequence operand
 * sums over t. The node that initializes its gradient (c->first_acc, see
 * plan_grad_init) writes it instead of adding to it: with the vector path,
 * by storing its sums and zeros beside its columns; otherwise by zeroing
 * the gradient first. */
/* Row idx (an i32: a one-hot value's index) of the matrix at w, ld floats
 * a row, from column k0: an embedding's row. */
static LLVMValueRef table_row(Cg *cg, LLVMValueRef w, LLVMValueRef idx, long long ld, long long k0) {
  idx = LLVMBuildSExt(cg->b, idx, cg->i64, "");
  return fptr(cg, w, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, idx, ci64(cg, ld), ""), ci64(cg, k0), ""));
}

/* The index of one-hot sequence id at step t. */
static LLVMValueRef char_at(CG *c, int id, LLVMValueRef t) {
  return LLVMBuildLoad2(c->cg.b, c->cg.i32, gep(&c->cg, c->cg.i32, c->ptr[id], t), "");
}

static void emit_acc(CG *c, int id) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  const Node *n = N(c, id);
  int a = n->in[0], b = n->nin > 1 ? n->in[1] : -1;
  const Param *p = &g->params[n->a];
  LLVMValueRef gp = fptr(cg, c->grad, ci64(cg, (long long)p->offset));
  size_t cnt = type_numel(p->type);
  bool first = c->first_acc[id], seqs = is_seq_type(N(c, a)->type);
  assert(n->op == OP_ACC_OUTER || seqs);
  if (n->op == OP_ACC) { /* a sequence (a single row is a loop group) */
    if (cnt % BLOCK == 0) {
      outer_seq_rows(cg, c->T64, gp, 0, NULL, 1, ci64(cg, 0), 1, c->ptr[a], (long long)cnt, first);
      return;
    }
    if (first)
      memset_f32(cg, gp, ci64(cg, (long long)cnt));
    Loop t = loop_begin(cg, c->T64);
    LLVMValueRef u = seq_row(c, a, t.i);
    Loop i = loop_begin(cg, ci64(cg, (long long)cnt));
    store(cg, fadd(cg, load(cg, gp, i.i), load(cg, u, i.i)), gp, i.i);
    loop_end(cg, &i);
    loop_end(cg, &t);
    return;
  }
  /* grad[r, k0 + k] += u[r] v[k]; a one-hot v adds u to one column. */
  Type tv = N(c, b)->type;
  long long M = p->type.dim[0], ld = p->type.dim[1], k0 = n->b;
  long long nv = seqs ? (tv.kind == TY_ONEHOT ? 1 : tv.dim[1]) : tv.dim[0];
  if (N(c, a)->type.kind == TY_ONEHOT) {
    /* grad[u, k0 + k] += v[k]: an embedding's rows, a scatter-add (rows
     * may repeat: it adds, and the first accumulation zeroes first) */
    if (first)
      memset_f32(cg, gp, ci64(cg, (long long)cnt));
    Loop t = {0};
    if (seqs)
      t = loop_begin(cg, c->T64);
    LLVMValueRef row = table_row(cg, gp, seqs ? char_at(c, a, t.i) : c->sval[a], ld, k0);
    LLVMValueRef v = seqs ? seq_row(c, b, t.i) : c->ptr[b];
    Loop k = loop_begin(cg, ci64(cg, nv));
    store(cg, fadd(cg, load(cg, row, k.i), load(cg, v, k.i)), row, k.i);
    loop_end(cg, &k);
    if (seqs)
      loop_end(cg, &t);
    return;
  }
  if (seqs && tv.kind == TY_F32 && nv % BLOCK == 0) {
    if (first && nv < ld) { /* the columns this product does not write */
      Loop r = loop_begin(cg, ci64(cg, M));
      LLVMValueRef row = fptr(cg, gp, LLVMBuildMul(cg->b, r.i, ci64(cg, ld), ""));
      if (k0 > 0)
        memset_f32(cg, row, ci64(cg, k0));
      if (k0 + nv < ld)
        memset_f32(cg, fptr(cg, row, ci64(cg, k0 + nv)), ci64(cg, ld - k0 - nv));
      loop_end(cg, &r);
    }
    LLVMValueRef g0 = fptr(cg, gp, ci64(cg, k0));
    if (M >= ACC_ROWS) {
      Loop r = loop_begin(cg, ci64(cg, M / ACC_ROWS));
      outer_seq_rows(cg, c->T64, g0, ld, c->ptr[a], M, LLVMBuildMul(cg->b, r.i, ci64(cg, ACC_ROWS), ""),
                     ACC_ROWS, c->ptr[b], nv, first);
      loop_end(cg, &r);
    }
    for (long long r = M - M % ACC_ROWS; r < M; r++)
      outer_seq_rows(cg, c->T64, g0, ld, c->ptr[a], M, ci64(cg, r), 1, c->ptr[b], nv, first);
    return;
  }
  if (first)
    memset_f32(cg, gp, ci64(cg, (long long)cnt));
  Loop r = loop_begin(cg, ci64(cg, M));
  LLVMValueRef row =
      fptr(cg, gp, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r.i, ci64(cg, ld), ""), ci64(cg, k0), ""));
  Loop t = {0};
  LLVMValueRef ur, vbase, idx = NULL;
  if (seqs) {
    t = loop_begin(cg, c->T64);
    ur = load(cg, c->ptr[a], LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, t.i, ci64(cg, M), ""), r.i, ""));
    if (tv.kind == TY_ONEHOT)
      idx = LLVMBuildSExt(cg->b, LLVMBuildLoad2(cg->b, cg->i32, gep(cg, cg->i32, c->ptr[b], t.i), ""),
                          cg->i64, "");
    vbase = tv.kind == TY_ONEHOT ? NULL : seq_row(c, b, t.i);
  } else {
    ur = load(cg, c->ptr[a], r.i);
    if (tv.kind == TY_ONEHOT)
      idx = LLVMBuildSExt(cg->b, c->sval[b], cg->i64, "");
    vbase = c->ptr[b];
  }
  if (tv.kind == TY_ONEHOT) {
    store(cg, fadd(cg, load(cg, row, idx), ur), row, idx);
  } else {
    Loop k = loop_begin(cg, ci64(cg, nv));
    store(cg, fadd(cg, load(cg, row, k.i), fmul(cg, ur, load(cg, vbase, k.i))), row, k.i);
    loop_end(cg, &k);
  }
  if (seqs)
    loop_end(cg, &t);
  loop_end(cg, &r);
}

/* Where each gradient starts. Batch 1: every call computes the gradients
 * afresh, from zero (with CodegenOptions.accumulate, every accumulation
 * adds to the slot instead, and nothing is zeroed). The first accumulation into a parameter, in the order
 * codegen emits them, initializes it when it runs once (at the top level,
 * not in a scan body); every other float of the gradient slot (parameters
 * without such a first accumulation, alignment gaps) is zeroed at entry. */
static void plan_grad_init(CG *c, int blk, bool *seen) {
  const Block *b = &c->g->blocks[blk];
  for (int i = 0; i < b->n; i++) {
    const Node *n = N(c, b->nodes[i]);
    if (n->op == OP_SCAN)
      plan_grad_init(c, n->region, seen);
    if ((n->op != OP_ACC && n->op != OP_ACC_OUTER) || seen[n->a])
      continue;
    seen[n->a] = true;
    c->first_acc[b->nodes[i]] = blk == 0;
  }
}

static void zero_gradients(CG *c) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  bool *covered = xcalloc(g->nfloats ? g->nfloats : 1, sizeof *covered);
  for (int id = 0; id < g->nnodes; id++) {
    if (!c->first_acc[id])
      continue;
    const Param *p = &g->params[N(c, id)->a];
    memset(covered + p->offset, 1, type_numel(p->type));
  }
  LLVMValueRef base = fptr(cg, c->state, ci64(cg, (long long)(SLOT_GRAD * g->nfloats)));
  for (size_t i = 0; i < g->nfloats;) {
    size_t j = i;
    while (j < g->nfloats && !covered[j])
      j++;
    if (j > i)
      memset_f32(cg, fptr(cg, base, ci64(cg, (long long)i)), ci64(cg, (long long)(j - i)));
    while (j < g->nfloats && covered[j])
      j++;
    i = j;
  }
  free(covered);
}

static void matvec_steps(void *ctx, LLVMValueRef *ts, int nx) {
  const Steps *m = ctx;
  CG *c = m->c;
  Cg *cg = &c->cg;
  const Node *n = N(c, m->id);
  long long M = N(c, n->in[0])->type.dim[0], nv = N(c, n->in[1])->type.dim[1];
  LLVMValueRef xs[4];
  for (int q = 0; q < nx; q++)
    xs[q] = seq_row(c, n->in[1], ts[q]);
  for (int h = 0; h < nx; h++) {
    LLVMValueRef rh = LLVMBuildAdd(cg->b, m->r0, ci64(cg, h * BLOCK / nx), "");
    LLVMValueRef ys[4];
    for (int q = 0; q < nx; q++)
      ys[q] =
          fptr(cg, c->ptr[m->id], LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, ts[q], ci64(cg, M), ""), rh, ""));
    LLVMValueRef at = ci64(cg, h * BLOCK / nx * m->ld);
    if (m->q) {
      LLVMValueRef qs[4], sxs[4];
      for (int q = 0; q < nx; q++)
        qs[q] = input_q8(cg, m->q, m->qld, ts[q], &sxs[q]);
      matvec_block_q8(cg, gep(cg, cg->i8, m->w, at), m->ld, qs, sxs, nx, nv, ys,
                      fptr(cg, m->scale, ci64(cg, h * BLOCK / nx)),
                      m->corr ? gep(cg, cg->i32, m->corr, ci64(cg, h * BLOCK / nx)) : NULL);
      continue;
    }
    matvec_block_n(cg, m->scale ? gep(cg, cg->i8, m->w, at) : fptr(cg, m->w, at), m->ld, m->ks, xs, nx, nv, ys,
                   m->scale ? fptr(cg, m->scale, ci64(cg, h * BLOCK / nx)) : NULL);
  }
}

/* Whether anything but a product's matrix operand reads load node id. */
static bool read_as_float(CG *c, int id) {
  for (int u = 0; u < c->nusers[id]; u++) {
    const Node *n = N(c, c->users[id][u]);
    if (n->op != OP_MATVEC || n->in[0] != id || n->in[1] == id)
      return true;
  }
  return false;
}

/* concat, pad and a sequence's slice: one row (a vector), or each of the
 * T rows of a sequence. */
static void emit_rows(CG *c, int id) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  int a = n->in[0];
  bool seq = is_seq_type(n->type);
  long long wy = (long long)row_numel(n->type), wa = (long long)row_numel(N(c, a)->type);
  c->ptr[id] = buffer(c, id);
  Loop t = {0};
  if (seq)
    t = loop_begin(cg, c->T64);
  LLVMValueRef r = seq ? t.i : ci64(cg, 0);
  LLVMValueRef y = fptr(cg, c->ptr[id], LLVMBuildMul(cg->b, r, ci64(cg, wy), ""));
  LLVMValueRef x = fptr(cg, c->ptr[a], LLVMBuildMul(cg->b, r, ci64(cg, wa), ""));
  switch (n->op) {
  case OP_SLICE:
    memcpy_f32(cg, y, fptr(cg, x, ci64(cg, n->a)), ci64(cg, wy));
    break;
  case OP_PAD:
    memset_f32(cg, y, ci64(cg, wy));
    memcpy_f32(cg, fptr(cg, y, ci64(cg, n->a)), x, ci64(cg, wa));
    break;
  default: /* concat */
    memcpy_f32(cg, y, x, ci64(cg, wa));
    memcpy_f32(cg, fptr(cg, y, ci64(cg, wa)),
               fptr(cg, c->ptr[n->in[1]], LLVMBuildMul(cg->b, r, ci64(cg, wy - wa), "")),
               ci64(cg, wy - wa));
  }
  if (seq)
    loop_end(cg, &t);
}

/* AOT: whether product id's input is the state its scan carries, that
 * state starts as zeros, and the baked float matrix is finite. At the
 * scan's first step the product is then exactly +0 in every row (each
 * sum is +0 plus terms w * 0 = +-0, and +0 + -0 = +0), so emit_matvec
 * writes zeros there instead of computing them: the same bits, without
 * reading the matrix (2 of gru.nn's 14 products of a 7-character name).
 * An infinite or NaN weight would make the product NaN instead; rnnc
 * build refuses such checkpoints (checkpoint.c), and this checks again
 * for any other caller of codegen with baked values. */
static bool zero_at_first_step(CG *c, int id) {
  const Node *n = N(c, id);
  if (c->scan_id < 0 || !baked_matrix(c, id) || c->bk->quantize || is_seq_type(N(c, n->in[1])->type))
    return false;
  const Node *s = N(c, c->scan_id);
  const Block *body = &c->g->blocks[s->region];
  int carry = -1;
  for (int j = 0; j < s->b; j++)
    if (body->args[s->a + j] == n->in[1])
      carry = s->a + j;
  if (carry < 0 || N(c, s->in[carry])->op != OP_ZEROS)
    return false;
  const Node *w = N(c, n->in[0]);
  const float *v = c->bk->values + param_offset(c->g, w->a);
  for (size_t i = 0, cnt = type_numel(w->type); i < cnt; i++)
    if (!isfinite(v[i]))
      return false;
  return true;
}

static void emit_product(CG *c, int id); /* into c->ptr[id] */

/* Product id, or zeros at its scan's first step (zero_at_first_step). */
static void emit_matvec(CG *c, int id) {
  Cg *cg = &c->cg;
  c->ptr[id] = buffer(c, id);
  if (!zero_at_first_step(c, id)) {
    emit_product(c, id);
    return;
  }
  LLVMBasicBlockRef zero = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "zero_state");
  LLVMBasicBlockRef product = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "product");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "product_done");
  LLVMBuildCondBr(cg->b, c->scan_first, zero, product);
  LLVMPositionBuilderAtEnd(cg->b, product);
  emit_product(c, id);
  LLVMBuildBr(cg->b, join);
  LLVMPositionBuilderAtEnd(cg->b, zero);
  memset_f32(cg, c->ptr[id], ci64(cg, (long long)row_numel(N(c, id)->type)));
  LLVMBuildBr(cg->b, join);
  LLVMPositionBuilderAtEnd(cg->b, join);
}

/* Product id: blocked (see matvec_block_n), and the sequence form:
 * Y[t] = W[:, k0:k0+n] X[t] for every t, rows outside, so each row of
 * W is read once for the whole sequence while X stays in L1. */
static void emit_product(CG *c, int id) {
  Cg *cg = &c->cg;
  const Node *n = N(c, id);
  int a = n->in[0], b = n->in[1];
  Type tw = N(c, a)->type, tx = N(c, b)->type;
  bool seq = is_seq_type(tx);
  long long M = tw.dim[0], nv = seq ? tx.dim[1] : tx.dim[0];
  LLVMValueRef scale;
  long long ld, qld = 0;
  LLVMValueRef q = int8_product(c, id) ? quantized_input(c, id, &qld) : NULL;
  LLVMValueRef offsets = q ? weight_offsets(c, id) : NULL;
  if (blocked_matvec(c, id)) {
    Loop r = loop_begin(cg, ci64(cg, M / BLOCK));
    LLVMValueRef r0 = LLVMBuildMul(cg->b, r.i, ci64(cg, BLOCK), "");
    LLVMValueRef w = weight_row(c, id, r0, &scale, &ld);
    long long ks = blocked_layout(c, id) ? BLOCK * mv_lanes(cg) : 0;
    if (scale)
      scale = fptr(cg, scale, r0);
    LLVMValueRef corr = offsets ? gep(cg, cg->i32, offsets, r0) : NULL;
    if (seq) {
      /* several steps at a time, 16 / n rows each, so a load of W
       * serves n products */
      Steps ms = {c, id, w, r0, scale, ld, ks, q, qld, corr};
      step_tuples(cg, c->T64, matvec_steps, &ms);
    } else if (q) {
      LLVMValueRef sx, qx = input_q8(cg, q, qld, ci64(cg, 0), &sx), y = fptr(cg, c->ptr[id], r0);
      matvec_block_q8(cg, w, ld, &qx, &sx, 1, nv, &y, scale, corr);
    } else {
      LLVMValueRef x = c->ptr[b], y = fptr(cg, c->ptr[id], r0);
      matvec_block_n(cg, w, ld, ks, &x, 1, nv, &y, scale);
    }
    loop_end(cg, &r);
    return;
  }
  Loop r = loop_begin(cg, ci64(cg, M));
  LLVMValueRef w = weight_row(c, id, r.i, &scale, &ld);
  Loop t = loop_begin(cg, c->T64);
  if (q) { /* int8 x int8 (int8_product) */
    LLVMValueRef sx, qx = input_q8(cg, q, qld, t.i, &sx);
    LLVMValueRef at = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, t.i, ci64(cg, M), ""), r.i, "");
    LLVMValueRef corr = offsets ? LLVMBuildLoad2(cg->b, cg->i32, gep(cg, cg->i32, offsets, r.i), "") : NULL;
    store(cg, int8_result(cg, idot(cg, w, qx, nv, corr), load(cg, scale, r.i), sx), c->ptr[id], at);
    loop_end(cg, &t);
    loop_end(cg, &r);
    return;
  }
  LLVMValueRef x = seq_row(c, b, t.i);
  LLVMValueRef acc = acc_new(cg, cf32(cg, 0));
  Loop k = loop_begin(cg, ci64(cg, nv));
  LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, acc, ""),
                            fmul(cg, weight_at(cg, w, k.i, scale), load(cg, x, k.i))), acc);
  loop_end(cg, &k);
  LLVMValueRef y = LLVMBuildLoad2(cg->b, cg->f32, acc, "");
  store(cg, scale ? fmul(cg, y, load(cg, scale, r.i)) : y, c->ptr[id],
        LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, t.i, ci64(cg, M), ""), r.i, ""));
  loop_end(cg, &t);
  loop_end(cg, &r);
}

static void emit_standalone(CG *c, int id) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  const Node *n = N(c, id);
  int a = n->nin > 0 ? n->in[0] : -1, b = n->nin > 1 ? n->in[1] : -1;
  switch (n->op) {
  case OP_LOAD:
    if (c->bk && n->b == SLOT_VALUE) {
      /* quantized, a matrix only products read is only int8 rows */
      if (!c->bk->quantize || !param_quantized(g, n->a) || read_as_float(c, id))
        c->ptr[id] = baked_param(cg, c->bk, n->a);
      break;
    }
    c->ptr[id] = fptr(cg, c->state, ci64(cg, (long long)(n->b * g->nfloats + param_offset(g, n->a))));
    break;
  case OP_INPUT:
    c->ptr[id] = c->chars;
    break;
  case OP_TARGET:
    c->sval[id] = c->target;
    break;
  case OP_CONST:
    c->sval[id] = cf32(cg, n->f);
    break;
  case OP_STEP:
    c->sval[id] = c->step;
    break;
  case OP_NOISE: {
    /* The caller draws U(-1, 1); scale by the bound. */
    LLVMValueRef src = fptr(cg, c->noise, ci64(cg, (long long)c->noise_off[id]));
    c->ptr[id] = buffer(c, id);
    Loop l = loop_begin(cg, ci64(cg, (long long)row_numel(n->type)));
    store(cg, fmul(cg, load(cg, src, l.i), cf32(cg, n->f)), c->ptr[id], l.i);
    loop_end(cg, &l);
    break;
  }
  case OP_ZEROS: {
    if (is_scalar(c, id)) {
      c->sval[id] = cf32(cg, 0);
      break;
    }
    c->ptr[id] = buffer(c, id);
    LLVMValueRef rows = is_seq_type(n->type) ? c->T64 : ci64(cg, 1); /* a sequence: T rows */
    memset_f32(cg, c->ptr[id], LLVMBuildMul(cg->b, rows, ci64(cg, (long long)row_numel(n->type)), ""));
    break;
  }
  case OP_SLICE:
    if (!is_seq_type(n->type)) { /* a view; a sequence's rows are copied below */
      c->ptr[id] = fptr(cg, c->ptr[a], ci64(cg, n->a));
      break;
    }
    /* fallthrough */
  case OP_CONCAT:
  case OP_PAD:
    emit_rows(c, id);
    break;
  case OP_LAST:
    c->ptr[id] = seq_row(c, a, LLVMBuildSub(cg->b, c->T64, ci64(cg, 1), ""));
    if (n->type.kind == TY_ONEHOT) /* the last character's index */
      c->sval[id] = LLVMBuildLoad2(cg->b, cg->i32, c->ptr[id], "");
    break;
  case OP_FIRST:
    c->ptr[id] = c->ptr[a];
    if (n->type.kind == TY_ONEHOT) /* the first character's index */
      c->sval[id] = LLVMBuildLoad2(cg->b, cg->i32, c->ptr[id], "");
    break;
  case OP_PROJ:
    break; /* set by the scan */
  case OP_PICK: {
    LLVMValueRef idx = LLVMBuildSExt(cg->b, c->sval[b], cg->i64, "");
    c->sval[id] = load(cg, c->ptr[a], idx);
    break;
  }
  case OP_SCAN:
    emit_scan(c, id);
    break;
  case OP_DENSE: {
    c->ptr[id] = buffer(c, id);
    memset_f32(cg, c->ptr[id], ci64(cg, (long long)row_numel(n->type)));
    store(cg, cf32(cg, 1), c->ptr[id], LLVMBuildSExt(cg->b, c->sval[a], cg->i64, ""));
    break;
  }
  case OP_SCATTER: {
    c->ptr[id] = buffer(c, id);
    memset_f32(cg, c->ptr[id], ci64(cg, (long long)row_numel(n->type)));
    store(cg, value_at(c, a, ci64(cg, 0)), c->ptr[id], LLVMBuildSExt(cg->b, c->sval[b], cg->i64, ""));
    break;
  }
  case OP_PUT_LAST:
  case OP_PUT_FIRST: {
    size_t rn = row_numel(n->type);
    c->ptr[id] = buffer(c, id);
    memset_f32(cg, c->ptr[id], LLVMBuildMul(cg->b, c->T64, ci64(cg, (long long)rn), ""));
    LLVMValueRef row = n->op == OP_PUT_FIRST ? ci64(cg, 0) : LLVMBuildSub(cg->b, c->T64, ci64(cg, 1), "");
    memcpy_f32(cg, fptr(cg, c->ptr[id], LLVMBuildMul(cg->b, row, ci64(cg, (long long)rn), "")), c->ptr[a],
               ci64(cg, (long long)rn));
    break;
  }
  case OP_LOG_SOFTMAX: {
    /* y = x - (max + log(sum(exp(x - max)))) */
    long long cnt = (long long)row_numel(n->type);
    LLVMValueRef x = c->ptr[a];
    LLVMValueRef mx = acc_new(cg, load(cg, x, ci64(cg, 0)));
    Loop l1 = loop_begin(cg, ci64(cg, cnt));
    LLVMValueRef args[2] = {LLVMBuildLoad2(cg->b, cg->f32, mx, ""), load(cg, x, l1.i)};
    LLVMBuildStore(cg->b, intrinsic(cg, "llvm.maxnum", args, 2), mx);
    loop_end(cg, &l1);
    LLVMValueRef m = LLVMBuildLoad2(cg->b, cg->f32, mx, "");
    LLVMValueRef sum = acc_new(cg, cf32(cg, 0));
    Loop l2 = loop_begin(cg, ci64(cg, cnt));
    LLVMValueRef e = mf_exp(cg->mod, cg->b, fsub(cg, load(cg, x, l2.i), m));
    LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->f32, sum, ""), e), sum);
    loop_end(cg, &l2);
    LLVMValueRef lse = fadd(cg, m, mf_log(cg->mod, cg->b, LLVMBuildLoad2(cg->b, cg->f32, sum, "")));
    c->ptr[id] = buffer(c, id);
    Loop l3 = loop_begin(cg, ci64(cg, cnt));
    store(cg, fsub(cg, load(cg, x, l3.i), lse), c->ptr[id], l3.i);
    loop_end(cg, &l3);
    break;
  }
  case OP_MATVEC:
    emit_matvec(c, id);
    break;
  case OP_MATVEC_T: {
    /* y = W[:, k0:k0+n]^T u: blocked with y in registers (matvec_t_block);
     * a sequence of u, several steps at a time. A one-hot u is row u of W:
     * a view of it; a one-hot sequence, a copy of each step's row. */
    Type tw = N(c, a)->type;
    bool seq = is_seq_type(N(c, b)->type);
    if (N(c, b)->type.kind == TY_ONEHOT) {
      if (!seq) {
        c->ptr[id] = table_row(cg, c->ptr[a], c->sval[b], tw.dim[1], n->a);
        break;
      }
      c->ptr[id] = buffer(c, id);
      Loop t = loop_begin(cg, c->T64);
      memcpy_f32(cg, seq_row(c, id, t.i), table_row(cg, c->ptr[a], char_at(c, b, t.i), tw.dim[1], n->a),
                 ci64(cg, n->b));
      loop_end(cg, &t);
      break;
    }
    c->ptr[id] = buffer(c, id);
    if (n->b % BLOCK == 0) {
      if (seq) {
        Steps ms = {c, id, NULL, NULL, NULL, 0, 0, NULL, 0, NULL};
        step_tuples(cg, c->T64, matvec_t_steps, &ms);
      } else {
        LLVMValueRef u = c->ptr[b], y = c->ptr[id];
        matvec_t_block(cg, fptr(cg, c->ptr[a], ci64(cg, n->a)), tw.dim[1], tw.dim[0], n->b, &u, 1, &y);
      }
      break;
    }
    /* y[k] = sum_r W[r, k0 + k] u[r], as axpys over rows (contiguous in k) */
    Loop t = {0};
    if (seq)
      t = loop_begin(cg, c->T64);
    LLVMValueRef u = seq ? seq_row(c, b, t.i) : c->ptr[b];
    LLVMValueRef y = seq ? seq_row(c, id, t.i) : c->ptr[id];
    memset_f32(cg, y, ci64(cg, n->b));
    Loop r = loop_begin(cg, ci64(cg, tw.dim[0]));
    LLVMValueRef ur = load(cg, u, r.i);
    LLVMValueRef w =
        fptr(cg, c->ptr[a],
             LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r.i, ci64(cg, tw.dim[1]), ""), ci64(cg, n->a), ""));
    Loop k = loop_begin(cg, ci64(cg, n->b));
    store(cg, fadd(cg, load(cg, y, k.i), fmul(cg, load(cg, w, k.i), ur)), y, k.i);
    loop_end(cg, &k);
    loop_end(cg, &r);
    if (seq)
      loop_end(cg, &t);
    break;
  }
  case OP_ACC:
  case OP_ACC_OUTER:
    emit_acc(c, id);
    break;
  default:
    if ((op_flags[n->op] & F_ELEM) && is_seq_type(n->type)) {
      /* a sequence: every row, as one loop over T * n contiguous floats */
      c->ptr[id] = buffer(c, id);
      Loop l = loop_begin(cg, LLVMBuildMul(cg->b, c->T64, ci64(cg, (long long)row_numel(n->type)), ""));
      LLVMValueRef x = is_seq_type(N(c, a)->type) ? load(cg, c->ptr[a], l.i) : value_at(c, a, ci64(cg, 0));
      LLVMValueRef y = NULL;
      if (b >= 0)
        y = is_seq_type(N(c, b)->type) ? load(cg, c->ptr[b], l.i) : value_at(c, b, ci64(cg, 0));
      store(cg, cg_elem(&c->cg, n->op, n->f, x, y), c->ptr[id], l.i);
      loop_end(cg, &l);
      break;
    }
    if (op_flags[n->op] & F_ELEM) { /* a scalar */
      LLVMValueRef x = value_at(c, a, ci64(cg, 0));
      LLVMValueRef y = b >= 0 ? value_at(c, b, ci64(cg, 0)) : NULL;
      c->sval[id] = cg_elem(&c->cg, n->op, n->f, x, y);
      break;
    }
    abort(); /* every other op is grouped: groupable() lists them */
  }
}

/* ------------------------------------------------------------------ parts */

/* CodegenOptions.parts: the kernel as a chain of functions, NAME, then
 * NAME.part1, NAME.part2, ..., each with the kernel's signature and
 * parameter attributes, each ending in a call of the next with its own
 * arguments. A part begins at a node of block 0 (nothing is open there but
 * the function), so the chain computes what the one function does, in the
 * same order and with the same arithmetic: the same bits. Block 0's
 * values go from part to part as carry (kernels.c) takes them. The JIT
 * compiles the parts in parallel (jit_compile). */

/* The kernel's function (or a part of it) named name, its noalias
 * parameters said so, positioned at its entry. */
static void kernel_fn(CG *c, const char *name) {
  Cg *cg = &c->cg;
  const CodegenOptions *opt = c->opt;
  bool acc_arg = opt && opt->accumulate;
  unsigned g_arg = acc_arg ? 1 : 0; /* how far the later arguments move */
  LLVMValueRef fn = LLVMAddFunction(cg->mod, name, c->fty);
  /* The buffers are distinct allocations: say so, and loops need no
   * run-time alias checks. */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  static const unsigned ptr_args[] = {0, 1, 4, 5, 8};
  for (size_t i = 0; i < ARRAY_LEN(ptr_args); i++)
    LLVMAddAttributeAtIndex(fn, ptr_args[i] + (i ? g_arg : 0) + 1,
                            LLVMCreateEnumAttribute(cg->ctx, noalias, 0));
  if (acc_arg)
    LLVMAddAttributeAtIndex(fn, 2, LLVMCreateEnumAttribute(cg->ctx, noalias, 0));
  if (opt && opt->vector_width)
    prefer_vector_width(cg, fn, opt->vector_width);
  cg->fn = fn;
  LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
}

/* c's view of the arguments of the function being built (cg->fn). */
static void bind_params(CG *c) {
  Cg *cg = &c->cg;
  const Graph *g = c->g;
  bool acc_arg = c->opt && c->opt->accumulate;
  unsigned a = acc_arg ? 1 : 0;
  c->state = LLVMGetParam(cg->fn, 0);
  c->chars = LLVMGetParam(cg->fn, 1 + a);
  c->T = LLVMGetParam(cg->fn, 2 + a);
  c->target = LLVMGetParam(cg->fn, 3 + a);
  c->noise = LLVMGetParam(cg->fn, 4 + a);
  c->scratch = LLVMGetParam(cg->fn, 5 + a);
  c->tmax = LLVMBuildSExt(cg->b, LLVMGetParam(cg->fn, 6 + a), cg->i64, "tmax");
  c->step = LLVMGetParam(cg->fn, 7 + a);
  c->out = LLVMGetParam(cg->fn, 8 + a);
  c->grad = acc_arg ? LLVMGetParam(cg->fn, 1)
                    : fptr(cg, c->state, ci64(cg, (long long)(SLOT_GRAD * g->nfloats)));
  c->T64 = LLVMBuildSExt(cg->b, c->T, cg->i64, "T");
  c->lo = c->hi = NULL;
  if (c->opt && c->opt->range) {
    c->lo = c->T64;
    c->hi = LLVMBuildSExt(cg->b, c->target, cg->i64, "hi");
  }
  c->scratch_t = fptr(cg, c->scratch, LLVMBuildLoad2(cg->b, cg->i64, c->fixed_size, ""));
}

static void make_part(void *ctx, const char *name) {
  CG *c = ctx;
  kernel_fn(c, name);
  bind_params(c);
}

/* Ends the part being emitted with a call of the next one, which is made,
 * and carries block 0's values into it. */
static void next_part(CG *c) {
  Carry k = carry_next(&c->cg, c->name, ++c->part, make_part, c,
                       c->opt && c->opt->accumulate ? 6 : 5, &c->fixed);
  LLVMValueRef *const vals[] = {c->ptr, c->sval, c->qin};
  carry_block0(&k, c->g, vals, 3, c->cur);
  carry_end(&k);
}

static void emit_block(CG *c, int blk) {
  const Block *b = &c->g->blocks[blk];
  Group gr = {0};
  for (int i = 0; i < b->n; i++) {
    int id = b->nodes[i];
    const Node *n = N(c, id);
    if (n->op == OP_ARG)
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
      if (gr.n)
        close_group(c, &gr);
      group_add(c, &gr, id);
      continue;
    }
    /* A view or a scalar independent of the open group runs before its
     * loop; anything else closes it first (effects keep their order). */
    if (gr.n && !is_view(n->op) && !is_scalar(c, id))
      close_group(c, &gr);
    emit_standalone(c, id);
  }
  close_group(c, &gr);
  free(gr.m);
}

/* ------------------------------------------------------------ entry point */

/* Whether g's kernel can run on a range of the slots (CodegenOptions.range):
 * no scan; every vector node (values, stores, sums' operands) as long as
 * a whole slot; no sum but grad_norm, and nothing reading it. */
static bool range_ok(const Graph *g) {
  const Block *b0 = &g->blocks[0]; /* the live nodes (a scan is none of the ops below) */
  for (int i = 0; i < b0->n; i++) {
    int id = b0->nodes[i];
    const Node *n = &g->nodes[id];
    Type t = n->type;
    bool scalar = t.kind == TY_F32 && t.rank == 0;
    switch (n->op) {
    case OP_LOAD:
    case OP_CONST:
    case OP_STEP:
    case OP_INPUT: /* the update's graph keeps them, unread */
    case OP_TARGET:
      continue;
    case OP_SUM:
    case OP_STORE:
      if (type_numel(g->nodes[n->in[0]].type) != g->nfloats)
        return false;
      if (n->op == OP_STORE)
        continue;
      if (id != g->grad_norm)
        return false;
      for (int u = 0; u < b0->n; u++)
        for (int k = 0; k < g->nodes[b0->nodes[u]].nin; k++)
          if (g->nodes[b0->nodes[u]].in[k] == id)
            return false;
      continue;
    default:
      if (!(op_flags[n->op] & F_ELEM) || (t.kind != TY_F32 && t.kind != TY_NONE))
        return false;
      if (!scalar && type_numel(t) != g->nfloats)
        return false;
    }
  }
  return true;
}

int codegen(const Graph *g, LLVMModuleRef mod, const char *name, const CodegenOptions *opt,
            KernelAbi *abi, Err *e) {
  if (opt && opt->range && !range_ok(g))
    return errf(e, "no kernel over a range of the slots: the graph is not an update of whole "
                   "slots with no sum but the gradient norm's (a norm that clips)");
  CG c = {.g = g, .opt = opt, .group_serial = 1, .scan_id = -1};
  Cg *cg = &c.cg;
  cg_init(cg, mod, opt && opt->simd.lanes ? opt->simd : (Simd){.lanes = 4, .regs = 16});
  cg->dot = opt ? opt->int8_dot : INT8_DOT_NONE;
  size_t nn = (size_t)g->nnodes;
  c.ptr = xcalloc(nn, sizeof *c.ptr);
  c.sval = xcalloc(nn, sizeof *c.sval);
  c.cur = xcalloc(nn, sizeof *c.cur);
  c.off = xcalloc(nn, sizeof *c.off);
  c.per_t = xcalloc(nn, sizeof *c.per_t);
  c.has_buf = xcalloc(nn, sizeof *c.has_buf);
  c.noise_off = xcalloc(nn, sizeof *c.noise_off);
  c.nusers = xcalloc(nn, sizeof *c.nusers);
  c.users = xcalloc(nn, sizeof *c.users);
  c.in_group = xcalloc(nn, sizeof *c.in_group);
  plan(&c);
  /* AOT: the trained values become read-only data in the object. */
  Baked bk = {g, opt ? opt->baked_values : NULL, opt && opt->quantize};
  if (bk.values)
    c.bk = &bk;

  /* An accumulating kernel takes its gradient buffer as a second argument
   * (each thread of a batch has its own). */
  bool acc_arg = opt && opt->accumulate;
  LLVMTypeRef params[10] = {cg->pty, cg->pty, cg->pty, cg->i32, cg->i32, cg->pty, cg->pty, cg->i32, cg->f32, cg->pty};
  if (!acc_arg) /* no grad argument */
    memmove(params + 1, params + 2, 8 * sizeof *params);
  c.name = name;
  c.fty = LLVMFunctionType(LLVMVoidTypeInContext(cg->ctx), params, 9 + (acc_arg ? 1u : 0u), 0);
  char fname[256];
  snprintf(fname, sizeof fname, "%s_scratch_fixed", name);
  c.fixed_size = LLVMAddGlobal(mod, cg->i64, fname);
  LLVMSetGlobalConstant(c.fixed_size, 1);
  LLVMSetLinkage(c.fixed_size, LLVMPrivateLinkage);
  kernel_fn(&c, name);
  bind_params(&c);
  if (opt && opt->parts > 1)
    c.part_at = plan_parts(g, opt->parts);

  c.first_acc = xcalloc(nn, sizeof *c.first_acc);
  c.qin = xcalloc(nn, sizeof *c.qin);
  c.qin_ld = xcalloc(nn, sizeof *c.qin_ld);
  bool has_acc = false;
  for (int id = 0; id < g->nnodes; id++)
    has_acc |= g->nodes[id].op == OP_ACC || g->nodes[id].op == OP_ACC_OUTER;
  if (g->stage == STAGE_GRAD && has_acc && !(opt && opt->accumulate)) {
    bool *seen = xcalloc((size_t)g->nparams + 1, sizeof *seen);
    plan_grad_init(&c, 0, seen);
    free(seen);
    zero_gradients(&c);
  }
  emit_block(&c, 0);

  /* out = logits, loss, gradient norm */
  int classes = g->classes;
  if (g->output >= 0)
    memcpy_f32(cg, c.out, c.ptr[g->output], ci64(cg, classes));
  if (g->loss >= 0)
    store(cg, c.sval[g->loss], c.out, ci64(cg, classes));
  if (g->stage == STAGE_GRAD) /* the norm exists where the graph clips */
    store(cg, g->grad_norm >= 0 ? c.sval[g->grad_norm] : cf32(cg, 0), c.out,
          ci64(cg, classes + 1));
  LLVMBuildRetVoid(cg->b);
  c.fixed = (c.fixed + 15) & ~(size_t)15;
  LLVMSetInitializer(c.fixed_size, ci64(cg, (long long)c.fixed));

  abi->scratch_fixed = c.fixed;
  abi->scratch_per_t = c.per_t_total;
  abi->noise = c.nnoise;
  for (size_t i = 0; i < nn; i++)
    free(c.users[i]);
  free(c.users);
  free(c.ptr);
  free(c.sval);
  free(c.cur);
  free(c.off);
  free(c.per_t);
  free(c.has_buf);
  free(c.noise_off);
  free(c.nusers);
  free(c.in_group);
  free(c.first_acc);
  free(c.qin);
  free(c.qin_ld);
  free(c.part_at);
  cg_dispose(cg);
  (void)e;
  return 0;
}

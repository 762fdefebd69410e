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
 * out:     (classes + 2) logits, then the loss, then the gradients' norm
 *          before clipping (0 when the graph does not clip).
 *
 * With CodegenOptions.accumulate (the step of a minibatch, one call per
 * sequence), a second argument `float *grad` (g->nfloats) follows state:
 * the gradients add to it; the grad slot of state is not used.
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
 * carried states are the previous row of their own stacks. */
#include <assert.h>
#include <llvm-c/Core.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mathfn.h"
#include "rnnc.h"

typedef struct CG {
  const Graph *g;
  const CodegenOptions *opt;
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef f32, i32, i64, i8, pty;
  LLVMValueRef fn;
  LLVMValueRef state, chars, T, target, noise, scratch, tmax, step, out;
  LLVMValueRef grad; /* the gradients: the grad slot, or the accumulating kernel's own argument */
  LLVMValueRef T64, scratch_t; /* T as i64; start of the T-sized region */
  LLVMValueRef baked;          /* AOT: the parameter values as a constant global */
  LLVMValueRef *baked_cols;    /* AOT: node -> its one-hot product's columns, transposed */
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
  bool *first_acc;          /* node -> the accumulation that initializes its gradient */
} CG;

/* -------------------------------------------------------------- helpers */

static const Node *N(CG *c, int id) { return &c->g->nodes[id]; }

static bool is_seq_type(Type t) { return t.rank >= 1 && t.dim[0] == DIM_T; }

/* Elements per row of a sequence, or of a plain value. */
static size_t row_numel(Type t) {
  if (t.kind == TY_ONEHOT || t.kind == TY_CLASS)
    return 1;
  if (is_seq_type(t))
    return t.rank == 2 ? (size_t)t.dim[1] : 1;
  return type_numel(t);
}

static bool is_scalar(CG *c, int id) {
  Type t = N(c, id)->type;
  return (t.kind == TY_F32 && t.rank == 0) || t.kind == TY_CLASS ||
         (t.kind == TY_ONEHOT && t.rank == 1);
}

static LLVMValueRef ci64(CG *c, long long x) { return LLVMConstInt(c->i64, (unsigned long long)x, 1); }
static LLVMValueRef cf32(CG *c, double x) { return LLVMConstReal(c->f32, x); }

static void fast(LLVMValueRef v) {
  /* Reassociation lets reductions vectorize; contraction makes FMAs. No
   * nnan/ninf: NaN must propagate to the loss, where the runtime sees it. */
  if (LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v))
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
}

static LLVMValueRef fadd(CG *c, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFAdd(c->b, a, b, "");
  fast(v);
  return v;
}
static LLVMValueRef fsub(CG *c, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFSub(c->b, a, b, "");
  fast(v);
  return v;
}
static LLVMValueRef fmul(CG *c, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFMul(c->b, a, b, "");
  fast(v);
  return v;
}
static LLVMValueRef fdiv(CG *c, LLVMValueRef a, LLVMValueRef b) {
  /* arcp: a division by a loop-invariant scalar (Adam's bias correction)
   * becomes a multiplication by its reciprocal, computed once. */
  LLVMValueRef v = LLVMBuildFDiv(c->b, a, b, "");
  if (LLVMIsAInstruction(v)) /* no reassoc: it moved divisions into loops */
    LLVMSetFastMathFlags(v, LLVMFastMathAllowContract | LLVMFastMathAllowReciprocal);
  return v;
}

static LLVMValueRef gep(CG *c, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(c->b, t, base, &idx, 1, "");
}
static LLVMValueRef fptr(CG *c, LLVMValueRef base, LLVMValueRef idx) {
  return gep(c, c->f32, base, idx);
}
static LLVMValueRef load(CG *c, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildLoad2(c->b, c->f32, fptr(c, base, idx), "");
}
static void store(CG *c, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
  LLVMBuildStore(c->b, v, fptr(c, base, idx));
}

static LLVMValueRef intrinsic(CG *c, const char *name, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef ty = LLVMTypeOf(args[0]);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(c->mod, id, &ty, 1);
  LLVMTypeRef fty = LLVMIntrinsicGetType(c->ctx, id, &ty, 1);
  return LLVMBuildCall2(c->b, fty, f, args, (unsigned)n, "");
}

/* A counted loop, do-while form (every count here is at least 1). */
typedef struct Loop {
  LLVMBasicBlockRef pre, head;
  LLVMValueRef i, n;
} Loop;

static Loop loop_begin(CG *c, LLVMValueRef n) {
  Loop l = {.pre = LLVMGetInsertBlock(c->b), .n = n};
  l.head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "loop");
  LLVMBuildBr(c->b, l.head);
  LLVMPositionBuilderAtEnd(c->b, l.head);
  l.i = LLVMBuildPhi(c->b, c->i64, "i");
  LLVMValueRef zero = ci64(c, 0);
  LLVMAddIncoming(l.i, &zero, &l.pre, 1);
  return l;
}

static void loop_end(CG *c, Loop *l) {
  LLVMValueRef next = LLVMBuildNSWAdd(c->b, l->i, ci64(c, 1), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
  LLVMAddIncoming(l->i, &next, &latch, 1);
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, next, l->n, ""), l->head, exit);
  LLVMPositionBuilderAtEnd(c->b, exit);
}

/* An accumulator that SROA turns into a register. */
static LLVMValueRef acc_new(CG *c, LLVMValueRef init) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(c->b, first);
  else
    LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(c->b, c->f32, "acc");
  LLVMPositionBuilderAtEnd(c->b, here);
  LLVMBuildStore(c->b, init, a);
  return a;
}

static void memset_f32(CG *c, LLVMValueRef p, LLVMValueRef n) {
  LLVMBuildMemSet(c->b, p, LLVMConstInt(c->i8, 0, 0), LLVMBuildMul(c->b, n, ci64(c, 4), ""), 4);
}

/* Every copy here is between distinct buffers (or distinct rows of one). */
static void memcpy_f32(CG *c, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n) {
  LLVMBuildMemCpy(c->b, dst, 4, src, 4, LLVMBuildMul(c->b, n, ci64(c, 4), ""));
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
  const Node *n = N(c, id);
  size_t numel = (row_numel(n->type) + 15) & ~(size_t)15; /* 64-byte aligned */
  if (is_seq_type(n->type)) {
    if (!c->per_t[id]) {
      c->per_t[id] = true;
      c->off[id] = c->per_t_total;
      c->per_t_total += numel;
    }
    return fptr(c, c->scratch_t, LLVMBuildMul(c->b, c->tmax, ci64(c, (long long)c->off[id]), ""));
  }
  if (!c->has_buf[id]) {
    c->has_buf[id] = true;
    c->off[id] = c->fixed;
    c->fixed += numel;
  }
  return fptr(c, c->scratch, ci64(c, (long long)c->off[id]));
}

/* ----------------------------------------------------- values at an index */

/* Operand o of a group member at index i (i64). */
static LLVMValueRef value_at(CG *c, int o, LLVMValueRef i) {
  if (c->in_group[o] == c->group_serial && c->cur[o])
    return c->cur[o];
  const Node *n = N(c, o);
  if (n->op == OP_CONST)
    return cf32(c, n->f);
  if (is_scalar(c, o))
    return c->sval[o];
  return load(c, c->ptr[o], i);
}

static LLVMValueRef elem_op(CG *c, Op op, LLVMValueRef a, LLVMValueRef b) {
  switch (op) {
  case OP_ADD:
    return fadd(c, a, b);
  case OP_SUB:
    return fsub(c, a, b);
  case OP_MUL:
    return fmul(c, a, b);
  case OP_DIV:
    return fdiv(c, a, b);
  case OP_NEG:
    return LLVMBuildFNeg(c->b, a, "");
  case OP_MIN: {
    LLVMValueRef args[2] = {a, b};
    return intrinsic(c, "llvm.minnum", args, 2);
  }
  case OP_POW: {
    LLVMValueRef args[2] = {a, b};
    return intrinsic(c, "llvm.pow", args, 2);
  }
  case OP_SQRT:
    return intrinsic(c, "llvm.sqrt", &a, 1);
  case OP_SIGMOID:
    return mf_sigmoid(c->mod, c->b, a);
  case OP_TANH:
    return mf_tanh(c->mod, c->b, a);
  case OP_EXP:
    return mf_exp(c->mod, c->b, a);
  case OP_LOG:
    return mf_log(c->mod, c->b, a);
  default:
    abort(); /* only elementwise ops */
  }
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

/* Products whose shape allows it run 16 rows at a time: 16 vector
 * accumulators over k (each load of v shared by 16 rows), then one
 * transposing reduction tree that turns the 16 accumulators into the 16
 * results in 15 shuffle pairs and adds, instead of a horizontal sum per
 * row (which took 40% of gru.nn's inference kernel). */
enum { BLOCK = 16 };

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

static LLVMValueRef shuffle(CG *c, LLVMValueRef x, LLVMValueRef y, const int *idx) {
  LLVMValueRef m[BLOCK];
  for (int i = 0; i < BLOCK; i++)
    m[i] = LLVMConstInt(c->i32, (unsigned long long)idx[i], 0);
  return LLVMBuildShuffleVector(c->b, x, y, LLVMConstVector(m, BLOCK), "");
}

/* ys[i][0..R) = W rows [0, R) from w (stride ld floats) times xs[i][0..nv),
 * for nx = 16 / R vectors x: 16 accumulators, accumulator i * R + j for
 * row j and vector i, so each load of a row of W serves nx products. */
static void matvec_block_n(CG *c, LLVMValueRef w, long long ld, LLVMValueRef *xs, int nx, long long nv,
                           LLVMValueRef *ys) {
  int R = BLOCK / nx;
  LLVMTypeRef vt = LLVMVectorType(c->f32, BLOCK);
  LLVMValueRef acc[BLOCK];
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
  LLVMPositionBuilderBefore(c->b, LLVMGetFirstInstruction(entry));
  for (int j = 0; j < BLOCK; j++)
    acc[j] = LLVMBuildAlloca(c->b, vt, "vacc");
  LLVMPositionBuilderAtEnd(c->b, here);
  for (int j = 0; j < BLOCK; j++)
    LLVMBuildStore(c->b, LLVMConstNull(vt), acc[j]);
  Loop k = loop_begin(c, ci64(c, nv / BLOCK));
  LLVMValueRef k0 = LLVMBuildMul(c->b, k.i, ci64(c, BLOCK), "");
  LLVMValueRef xv[BLOCK];
  for (int i = 0; i < nx; i++) {
    xv[i] = LLVMBuildLoad2(c->b, vt, fptr(c, xs[i], k0), "");
    LLVMSetAlignment(xv[i], 4);
  }
  for (int j = 0; j < R; j++) {
    LLVMValueRef wp = fptr(c, w, LLVMBuildAdd(c->b, k0, ci64(c, j * ld), ""));
    LLVMValueRef wv = LLVMBuildLoad2(c->b, vt, wp, "");
    LLVMSetAlignment(wv, 4);
    for (int i = 0; i < nx; i++) {
      LLVMValueRef s = fadd(c, LLVMBuildLoad2(c->b, vt, acc[i * R + j], ""), fmul(c, wv, xv[i]));
      LLVMBuildStore(c->b, s, acc[i * R + j]);
    }
  }
  loop_end(c, &k);
  /* The tree: level L pairs vectors whose lanes hold 16 >> L partial sums
   * of 1 << L rows each, and halves the partials. */
  LLVMValueRef v[BLOCK];
  for (int j = 0; j < BLOCK; j++)
    v[j] = LLVMBuildLoad2(c->b, vt, acc[j], "");
  int count = BLOCK;
  for (int width = BLOCK / 2; width >= 1; width /= 2) {
    /* lanes come in runs of 2*width partials per row; keep the first
     * width of each run (lo) and the second (hi), from both vectors */
    int lo[BLOCK], hi[BLOCK];
    for (int i = 0; i < BLOCK; i++) {
      int run = i / width, pos = i % width;
      lo[i] = run * 2 * width + pos;
      hi[i] = run * 2 * width + width + pos;
    }
    for (int p = 0; p < count / 2; p++)
      v[p] = fadd(c, shuffle(c, v[2 * p], v[2 * p + 1], lo), shuffle(c, v[2 * p], v[2 * p + 1], hi));
    count /= 2;
  }
  if (nx == 1) {
    LLVMValueRef st = LLVMBuildStore(c->b, v[0], ys[0]);
    LLVMSetAlignment(st, 4);
    return;
  }
  for (int i = 0; i < nx; i++) {
    LLVMValueRef m[BLOCK];
    for (int j = 0; j < R; j++)
      m[j] = LLVMConstInt(c->i32, (unsigned long long)(i * R + j), 0);
    LLVMValueRef part = LLVMBuildShuffleVector(c->b, v[0], LLVMGetUndef(vt), LLVMConstVector(m, (unsigned)R), "");
    LLVMValueRef st = LLVMBuildStore(c->b, part, ys[i]);
    LLVMSetAlignment(st, 4);
  }
}

static void matvec_block(CG *c, LLVMValueRef w, long long ld, LLVMValueRef x, long long nv,
                         LLVMValueRef y) {
  matvec_block_n(c, w, ld, &x, 1, nv, &y);
}

/* AOT: a product of a baked matrix with a one-hot vector reads one column
 * of the matrix per call, a strided gather. The object also holds those
 * columns transposed (column j's M values contiguous), which this returns
 * for product node id; NULL when the matrix is not baked. */
static LLVMValueRef baked_columns(CG *c, int id) {
  const Node *n = N(c, id), *w = N(c, n->in[0]);
  if (!c->baked || w->op != OP_LOAD || w->b != SLOT_VALUE)
    return NULL;
  if (c->baked_cols[id])
    return c->baked_cols[id];
  const Graph *g = c->g;
  long long M = w->type.dim[0], ld = w->type.dim[1], ncols = N(c, n->in[1])->type.dim[0];
  const float *v = c->opt->baked_values + param_offset(g, w->a);
  size_t cnt = (size_t)(M * ncols);
  LLVMValueRef *vals = xmalloc(cnt * sizeof *vals);
  for (long long j = 0; j < ncols; j++)
    for (long long r = 0; r < M; r++)
      vals[j * M + r] = LLVMConstReal(c->f32, v[r * ld + n->a + j]);
  LLVMValueRef gv = LLVMAddGlobal(c->mod, LLVMArrayType2(c->f32, cnt), "columns");
  LLVMSetInitializer(gv, LLVMConstArray2(c->f32, vals, cnt));
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetAlignment(gv, 64);
  free(vals);
  return c->baked_cols[id] = gv;
}

static void emit_matvec_row(CG *c, int id, LLVMValueRef r) {
  /* y[r] = W[r, k0:k0+n] v  (a one-hot v reads one column) */
  const Node *n = N(c, id);
  Type tw = N(c, n->in[0])->type, tv = N(c, n->in[1])->type;
  LLVMValueRef row = LLVMBuildMul(c->b, r, ci64(c, tw.dim[1]), "");
  row = LLVMBuildAdd(c->b, row, ci64(c, n->a), "");
  LLVMValueRef w = fptr(c, c->ptr[n->in[0]], row);
  if (tv.kind == TY_ONEHOT) {
    LLVMValueRef idx = LLVMBuildSExt(c->b, c->sval[n->in[1]], c->i64, "");
    LLVMValueRef wt = baked_columns(c, id);
    if (wt) /* column idx is contiguous: the row loop vectorizes without a gather */
      c->cur[id] = load(c, wt, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, idx, ci64(c, tw.dim[0]), ""), r, ""));
    else
      c->cur[id] = load(c, w, idx);
    return;
  }
  LLVMValueRef acc = acc_new(c, cf32(c, 0));
  Loop k = loop_begin(c, ci64(c, tv.dim[0]));
  LLVMValueRef s = fadd(c, LLVMBuildLoad2(c->b, c->f32, acc, ""),
                        fmul(c, load(c, w, k.i), load(c, c->ptr[n->in[1]], k.i)));
  LLVMBuildStore(c->b, s, acc);
  loop_end(c, &k);
  c->cur[id] = LLVMBuildLoad2(c->b, c->f32, acc, "");
}

static void close_group(CG *c, Group *gr) {
  if (!gr->n)
    return;
  const Graph *g = c->g;
  /* Buffers of members read outside, and the sums' accumulators. */
  bool *stored = xcalloc((size_t)gr->n, sizeof *stored);
  LLVMValueRef *accs = xcalloc((size_t)gr->n, sizeof *accs);
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    const Node *n = N(c, id);
    if (n->op == OP_SUM)
      accs[j] = acc_new(c, cf32(c, 0));
    else if (n->type.kind != TY_NONE && needed_outside(c, id, -1)) {
      stored[j] = true;
      c->ptr[id] = buffer(c, id);
    }
  }
  Loop l = loop_begin(c, ci64(c, (long long)gr->numel));
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    const Node *n = N(c, id);
    switch (n->op) {
    case OP_MATVEC:
      emit_matvec_row(c, id, l.i);
      break;
    case OP_SUM: {
      LLVMValueRef v = value_at(c, n->in[0], l.i);
      LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, c->f32, accs[j], ""), v), accs[j]);
      break;
    }
    case OP_ACC: {
      LLVMValueRef gp = fptr(c, c->grad, ci64(c, (long long)g->params[n->a].offset));
      LLVMValueRef v = value_at(c, n->in[0], l.i);
      store(c, c->first_acc[id] ? v : fadd(c, load(c, gp, l.i), v), gp, l.i);
      break;
    }
    case OP_STORE: {
      LLVMValueRef sp = fptr(c, c->state, ci64(c, (long long)(n->b * g->nfloats +
                                                               param_offset(g, n->a))));
      store(c, value_at(c, n->in[0], l.i), sp, l.i);
      break;
    }
    default: {
      LLVMValueRef a = value_at(c, n->in[0], l.i);
      LLVMValueRef b = n->nin > 1 ? value_at(c, n->in[1], l.i) : NULL;
      c->cur[id] = elem_op(c, n->op, a, b);
    }
    }
    if (stored[j])
      store(c, c->cur[id], c->ptr[id], l.i);
  }
  loop_end(c, &l);
  for (int j = 0; j < gr->n; j++) {
    int id = gr->m[j];
    c->cur[id] = NULL;
    if (N(c, id)->op == OP_SUM)
      c->sval[id] = LLVMBuildLoad2(c->b, c->f32, accs[j], "");
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
  size_t n = row_numel(N(c, seq)->type);
  return fptr(c, c->ptr[seq], LLVMBuildMul(c->b, t, ci64(c, (long long)n), ""));
}

static void emit_scan(CG *c, int id) {
  const Graph *g = c->g;
  const Node *n = N(c, id);
  const Block *body = &g->blocks[n->region];
  int nseq = n->a, ncarry = n->b;
  bool reverse = n->c;
  /* Stacks: one per yield, T rows each. */
  c->off[id] = c->per_t_total;
  LLVMValueRef base = fptr(c, c->scratch_t, LLVMBuildMul(c->b, c->tmax, ci64(c, (long long)c->off[id]), ""));
  LLVMValueRef *stacks = xmalloc((size_t)body->nyields * sizeof *stacks);
  size_t off = 0;
  for (int k = 0; k < body->nyields; k++) {
    stacks[k] = fptr(c, base, LLVMBuildMul(c->b, c->tmax, ci64(c, (long long)off), ""));
    off += (row_numel(g->nodes[body->yields[k]].type) + 15) & ~(size_t)15;
  }
  c->per_t_total += off;
  LLVMValueRef *saved = c->scan_stack;
  c->scan_stack = stacks;
  Loop s = loop_begin(c, c->T64);
  LLVMValueRef t = reverse ? LLVMBuildSub(c->b, LLVMBuildSub(c->b, c->T64, ci64(c, 1), ""), s.i, "")
                           : s.i;
  LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntEQ, s.i, ci64(c, 0), "");
  LLVMValueRef prev = reverse ? LLVMBuildAdd(c->b, t, ci64(c, 1), "") : LLVMBuildSub(c->b, t, ci64(c, 1), "");
  for (int i = 0; i < nseq; i++) {
    int arg = body->args[i], seq = n->in[i];
    if (N(c, seq)->type.kind == TY_ONEHOT)
      c->sval[arg] = LLVMBuildLoad2(c->b, c->i32, gep(c, c->i32, c->chars, t), "");
    else
      c->ptr[arg] = seq_row(c, seq, t);
  }
  for (int j = 0; j < ncarry; j++) {
    int arg = body->args[nseq + j];
    size_t rn = row_numel(N(c, arg)->type);
    /* prev is out of range at the first step, where the select picks the
     * initial value, so compute the row address without inbounds. */
    LLVMValueRef idx = LLVMBuildMul(c->b, prev, ci64(c, (long long)rn), "");
    LLVMValueRef rowp = LLVMBuildGEP2(c->b, c->f32, stacks[j], &idx, 1, "");
    c->ptr[arg] = LLVMBuildSelect(c->b, first, c->ptr[n->in[nseq + j]], rowp, "");
  }
  emit_block(c, n->region);
  for (int k = 0; k < body->nyields; k++) {
    int y = body->yields[k];
    size_t rn = row_numel(N(c, y)->type);
    LLVMValueRef dst = fptr(c, stacks[k], LLVMBuildMul(c->b, t, ci64(c, (long long)rn), ""));
    if (is_scalar(c, y))
      LLVMBuildStore(c->b, value_at(c, y, ci64(c, 0)), dst);
    else
      memcpy_f32(c, dst, c->ptr[y], ci64(c, (long long)rn));
  }
  loop_end(c, &s);
  c->scan_stack = saved;
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

static LLVMValueRef vacc_new(CG *c, LLVMTypeRef vt) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(c->b);
  LLVMPositionBuilderBefore(c->b, LLVMGetFirstInstruction(LLVMGetEntryBasicBlock(c->fn)));
  LLVMValueRef a = LLVMBuildAlloca(c->b, vt, "vacc");
  LLVMPositionBuilderAtEnd(c->b, here);
  return a;
}

static LLVMValueRef splat(CG *c, LLVMValueRef x) {
  LLVMTypeRef vt = LLVMVectorType(c->f32, BLOCK);
  LLVMValueRef v = LLVMBuildInsertElement(c->b, LLVMGetUndef(vt), x, LLVMConstInt(c->i32, 0, 0), "");
  return LLVMBuildShuffleVector(c->b, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(c->i32, BLOCK)), "");
}

enum { ACC_ROWS = 8 };

/* Rows [r0, r0 + R) of a gradient (row stride ld, from its column 0) get
 * sum_t u[t, r0 + j] v[t, 0..nv), 16 columns at a time with t innermost:
 * each 16-float chunk of the gradient lives in a register over the whole
 * sequence, loaded once (or not at all when `first`) and stored once. u
 * is a [T, M] stack, or NULL for ones (a bias: sum_t v[t]). */
static void outer_seq_rows(CG *c, LLVMValueRef g, long long ld, LLVMValueRef u, long long M,
                           LLVMValueRef r0, int R, LLVMValueRef v, long long nv, bool first) {
  LLVMTypeRef vt = LLVMVectorType(c->f32, BLOCK);
  LLVMValueRef acc[ACC_ROWS], gp[ACC_ROWS];
  for (int j = 0; j < R; j++)
    acc[j] = vacc_new(c, vt);
  Loop k = loop_begin(c, ci64(c, nv / BLOCK));
  LLVMValueRef k0 = LLVMBuildMul(c->b, k.i, ci64(c, BLOCK), "");
  for (int j = 0; j < R; j++) {
    LLVMValueRef row = LLVMBuildAdd(c->b, r0, ci64(c, j), "");
    gp[j] = fptr(c, g, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, row, ci64(c, ld), ""), k0, ""));
    LLVMValueRef init = LLVMConstNull(vt);
    if (!first) {
      init = LLVMBuildLoad2(c->b, vt, gp[j], "");
      LLVMSetAlignment(init, 4);
    }
    LLVMBuildStore(c->b, init, acc[j]);
  }
  Loop t = loop_begin(c, c->T64);
  LLVMValueRef vv = LLVMBuildLoad2(c->b, vt, fptr(c, v, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, ci64(c, nv), ""), k0, "")), "");
  LLVMSetAlignment(vv, 4);
  for (int j = 0; j < R; j++) {
    LLVMValueRef x = vv;
    if (u) {
      LLVMValueRef ui = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, ci64(c, M), ""),
                                     LLVMBuildAdd(c->b, r0, ci64(c, j), ""), "");
      x = fmul(c, splat(c, load(c, u, ui)), vv);
    }
    LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, vt, acc[j], ""), x), acc[j]);
  }
  loop_end(c, &t);
  for (int j = 0; j < R; j++) {
    LLVMValueRef st = LLVMBuildStore(c->b, LLVMBuildLoad2(c->b, vt, acc[j], ""), gp[j]);
    LLVMSetAlignment(st, 4);
  }
  loop_end(c, &k);
}

/* Runs fn over the steps of a sequence four at a time, then two, then
 * one for what remains of T: fn(c, ctx, ts, nx) with ts[0..nx) the steps. */
typedef void StepFn(CG *c, void *ctx, LLVMValueRef *ts, int nx);

static void step_tuples(CG *c, StepFn *fn, void *ctx) {
  LLVMValueRef done = ci64(c, 0);
  for (int nx = 4; nx >= 1; nx /= 2) {
    LLVMValueRef cnt = LLVMBuildSDiv(c->b, LLVMBuildSub(c->b, c->T64, done, ""), ci64(c, nx), "");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "steps");
    LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "steps_done");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, cnt, ci64(c, 0), ""), body, after);
    LLVMPositionBuilderAtEnd(c->b, body);
    Loop t = loop_begin(c, cnt);
    LLVMValueRef t0 = LLVMBuildAdd(c->b, done, LLVMBuildMul(c->b, t.i, ci64(c, nx), ""), "");
    LLVMValueRef ts[4];
    for (int q = 0; q < nx; q++)
      ts[q] = LLVMBuildAdd(c->b, t0, ci64(c, q), "");
    fn(c, ctx, ts, nx);
    loop_end(c, &t);
    LLVMBuildBr(c->b, after);
    LLVMPositionBuilderAtEnd(c->b, after);
    if (nx > 1)
      done = LLVMBuildAdd(c->b, done, LLVMBuildMul(c->b, cnt, ci64(c, nx), ""), "");
  }
}

/* ys[q] = W^T us[q] for nx vectors u (M rows of W from w, stride ld, the
 * n columns from w's column 0; n a multiple of 16): the columns 256 / nx at
 * a time in 16 vector accumulators, rows innermost (per row, a load of each
 * vector of W's row serves the nx products, each u[r] one broadcast), so
 * y is stored once instead of loaded and stored for every row. */
static void matvec_t_block(CG *c, LLVMValueRef w, long long ld, long long M, long long n,
                           LLVMValueRef *us, int nx, LLVMValueRef *ys) {
  LLVMTypeRef vt = LLVMVectorType(c->f32, BLOCK);
  LLVMValueRef acc[BLOCK];
  for (int j = 0; j < BLOCK; j++)
    acc[j] = vacc_new(c, vt);
  int vecs = BLOCK / nx;
  for (long long c0 = 0; c0 < n; c0 += vecs * BLOCK) {
    int nv = (int)((n - c0) / BLOCK < vecs ? (n - c0) / BLOCK : vecs);
    for (int j = 0; j < nx * nv; j++)
      LLVMBuildStore(c->b, LLVMConstNull(vt), acc[j]);
    Loop r = loop_begin(c, ci64(c, M));
    LLVMValueRef wr = fptr(c, w, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r.i, ci64(c, ld), ""), ci64(c, c0), ""));
    LLVMValueRef ur[4];
    for (int q = 0; q < nx; q++)
      ur[q] = splat(c, load(c, us[q], r.i));
    for (int j = 0; j < nv; j++) {
      LLVMValueRef wv = LLVMBuildLoad2(c->b, vt, fptr(c, wr, ci64(c, j * BLOCK)), "");
      LLVMSetAlignment(wv, 4);
      for (int q = 0; q < nx; q++)
        LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, vt, acc[q * nv + j], ""), fmul(c, wv, ur[q])),
                       acc[q * nv + j]);
    }
    loop_end(c, &r);
    for (int q = 0; q < nx; q++)
      for (int j = 0; j < nv; j++) {
        LLVMValueRef st = LLVMBuildStore(c->b, LLVMBuildLoad2(c->b, vt, acc[q * nv + j], ""),
                                         fptr(c, ys[q], ci64(c, c0 + j * BLOCK)));
        LLVMSetAlignment(st, 4);
      }
  }
}

static void matvec_t_steps(CG *c, void *ctx, LLVMValueRef *ts, int nx) {
  int id = *(int *)ctx;
  const Node *n = N(c, id);
  Type tw = N(c, n->in[0])->type;
  LLVMValueRef us[4], ys[4];
  for (int q = 0; q < nx; q++) {
    us[q] = seq_row(c, n->in[1], ts[q]);
    ys[q] = seq_row(c, id, ts[q]);
  }
  matvec_t_block(c, fptr(c, c->ptr[n->in[0]], ci64(c, n->a)), tw.dim[1], tw.dim[0], n->b, us, nx, ys);
}

/* acc grad[p] u and acc_outer grad[p] u, v (ops.h). A sequence operand
 * sums over t. The node that initializes its gradient (c->first_acc, see
 * plan_grad_init) writes it instead of adding to it: with the vector path,
 * by storing its sums and zeros beside its columns; otherwise by zeroing
 * the gradient first. */
static void emit_acc(CG *c, int id) {
  const Graph *g = c->g;
  const Node *n = N(c, id);
  int a = n->in[0], b = n->nin > 1 ? n->in[1] : -1;
  const Param *p = &g->params[n->a];
  LLVMValueRef gp = fptr(c, c->grad, ci64(c, (long long)p->offset));
  size_t cnt = type_numel(p->type);
  bool first = c->first_acc[id], seqs = is_seq_type(N(c, a)->type);
  assert(n->op == OP_ACC_OUTER || seqs);
  if (n->op == OP_ACC) { /* a sequence (a single row is a loop group) */
    if (cnt % BLOCK == 0) {
      outer_seq_rows(c, gp, 0, NULL, 1, ci64(c, 0), 1, c->ptr[a], (long long)cnt, first);
      return;
    }
    if (first)
      memset_f32(c, gp, ci64(c, (long long)cnt));
    Loop t = loop_begin(c, c->T64);
    LLVMValueRef u = seq_row(c, a, t.i);
    Loop i = loop_begin(c, ci64(c, (long long)cnt));
    store(c, fadd(c, load(c, gp, i.i), load(c, u, i.i)), gp, i.i);
    loop_end(c, &i);
    loop_end(c, &t);
    return;
  }
  /* grad[r, k0 + k] += u[r] v[k]; a one-hot v adds u to one column. */
  Type tv = N(c, b)->type;
  long long M = p->type.dim[0], ld = p->type.dim[1], k0 = n->b;
  long long nv = seqs ? (tv.kind == TY_ONEHOT ? 1 : tv.dim[1]) : tv.dim[0];
  if (seqs && tv.kind == TY_F32 && nv % BLOCK == 0) {
    if (first && nv < ld) { /* the columns this product does not write */
      Loop r = loop_begin(c, ci64(c, M));
      LLVMValueRef row = fptr(c, gp, LLVMBuildMul(c->b, r.i, ci64(c, ld), ""));
      if (k0 > 0)
        memset_f32(c, row, ci64(c, k0));
      if (k0 + nv < ld)
        memset_f32(c, fptr(c, row, ci64(c, k0 + nv)), ci64(c, ld - k0 - nv));
      loop_end(c, &r);
    }
    LLVMValueRef g0 = fptr(c, gp, ci64(c, k0));
    if (M >= ACC_ROWS) {
      Loop r = loop_begin(c, ci64(c, M / ACC_ROWS));
      outer_seq_rows(c, g0, ld, c->ptr[a], M, LLVMBuildMul(c->b, r.i, ci64(c, ACC_ROWS), ""), ACC_ROWS,
                     c->ptr[b], nv, first);
      loop_end(c, &r);
    }
    for (long long r = M - M % ACC_ROWS; r < M; r++)
      outer_seq_rows(c, g0, ld, c->ptr[a], M, ci64(c, r), 1, c->ptr[b], nv, first);
    return;
  }
  if (first)
    memset_f32(c, gp, ci64(c, (long long)cnt));
  Loop r = loop_begin(c, ci64(c, M));
  LLVMValueRef row = fptr(c, gp, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r.i, ci64(c, ld), ""), ci64(c, k0), ""));
  Loop t = {0};
  LLVMValueRef ur, vbase, idx = NULL;
  if (seqs) {
    t = loop_begin(c, c->T64);
    ur = load(c, c->ptr[a], LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, ci64(c, M), ""), r.i, ""));
    if (tv.kind == TY_ONEHOT)
      idx = LLVMBuildSExt(c->b, LLVMBuildLoad2(c->b, c->i32, gep(c, c->i32, c->ptr[b], t.i), ""), c->i64, "");
    vbase = tv.kind == TY_ONEHOT ? NULL : seq_row(c, b, t.i);
  } else {
    ur = load(c, c->ptr[a], r.i);
    if (tv.kind == TY_ONEHOT)
      idx = LLVMBuildSExt(c->b, c->sval[b], c->i64, "");
    vbase = c->ptr[b];
  }
  if (tv.kind == TY_ONEHOT) {
    store(c, fadd(c, load(c, row, idx), ur), row, idx);
  } else {
    Loop k = loop_begin(c, ci64(c, nv));
    store(c, fadd(c, load(c, row, k.i), fmul(c, ur, load(c, vbase, k.i))), row, k.i);
    loop_end(c, &k);
  }
  if (seqs)
    loop_end(c, &t);
  loop_end(c, &r);
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
  const Graph *g = c->g;
  bool *covered = xcalloc(g->nfloats ? g->nfloats : 1, sizeof *covered);
  for (int id = 0; id < g->nnodes; id++) {
    if (!c->first_acc[id])
      continue;
    const Param *p = &g->params[N(c, id)->a];
    memset(covered + p->offset, 1, type_numel(p->type));
  }
  LLVMValueRef base = fptr(c, c->state, ci64(c, (long long)(SLOT_GRAD * g->nfloats)));
  for (size_t i = 0; i < g->nfloats;) {
    size_t j = i;
    while (j < g->nfloats && !covered[j])
      j++;
    if (j > i)
      memset_f32(c, fptr(c, base, ci64(c, (long long)i)), ci64(c, (long long)(j - i)));
    while (j < g->nfloats && covered[j])
      j++;
    i = j;
  }
  free(covered);
}

typedef struct MatvecSteps {
  int id;
  LLVMValueRef w, r0; /* rows [r0, r0 + 16) of W, from its column k0 */
} MatvecSteps;

static void matvec_steps(CG *c, void *ctx, LLVMValueRef *ts, int nx) {
  const MatvecSteps *m = ctx;
  const Node *n = N(c, m->id);
  Type tw = N(c, n->in[0])->type;
  long long M = tw.dim[0], nv = N(c, n->in[1])->type.dim[1];
  LLVMValueRef xs[4];
  for (int q = 0; q < nx; q++)
    xs[q] = seq_row(c, n->in[1], ts[q]);
  for (int h = 0; h < nx; h++) {
    LLVMValueRef rh = LLVMBuildAdd(c->b, m->r0, ci64(c, h * BLOCK / nx), "");
    LLVMValueRef ys[4];
    for (int q = 0; q < nx; q++)
      ys[q] = fptr(c, c->ptr[m->id], LLVMBuildAdd(c->b, LLVMBuildMul(c->b, ts[q], ci64(c, M), ""), rh, ""));
    matvec_block_n(c, fptr(c, m->w, ci64(c, h * BLOCK / nx * tw.dim[1])), tw.dim[1], xs, nx, nv, ys);
  }
}

static void emit_standalone(CG *c, int id) {
  const Graph *g = c->g;
  const Node *n = N(c, id);
  int a = n->nin > 0 ? n->in[0] : -1, b = n->nin > 1 ? n->in[1] : -1;
  switch (n->op) {
  case OP_LOAD:
    c->ptr[id] = fptr(c, c->state, ci64(c, (long long)(n->b * g->nfloats + param_offset(g, n->a))));
    if (c->baked && n->b == SLOT_VALUE)
      c->ptr[id] = fptr(c, c->baked, ci64(c, (long long)param_offset(g, n->a)));
    break;
  case OP_INPUT:
    c->ptr[id] = c->chars;
    break;
  case OP_TARGET:
    c->sval[id] = c->target;
    break;
  case OP_CONST:
    c->sval[id] = cf32(c, n->f);
    break;
  case OP_STEP:
    c->sval[id] = c->step;
    break;
  case OP_NOISE: {
    /* The caller draws U(-1, 1); scale by the bound. */
    LLVMValueRef src = fptr(c, c->noise, ci64(c, (long long)c->noise_off[id]));
    c->ptr[id] = buffer(c, id);
    Loop l = loop_begin(c, ci64(c, (long long)row_numel(n->type)));
    store(c, fmul(c, load(c, src, l.i), cf32(c, n->f)), c->ptr[id], l.i);
    loop_end(c, &l);
    break;
  }
  case OP_ZEROS:
    if (is_scalar(c, id)) {
      c->sval[id] = cf32(c, 0);
      break;
    }
    c->ptr[id] = buffer(c, id);
    memset_f32(c, c->ptr[id], ci64(c, (long long)row_numel(n->type)));
    break;
  case OP_SLICE:
    c->ptr[id] = fptr(c, c->ptr[a], ci64(c, n->a));
    break;
  case OP_LAST:
    c->ptr[id] = seq_row(c, a, LLVMBuildSub(c->b, c->T64, ci64(c, 1), ""));
    if (n->type.kind == TY_ONEHOT) /* the last character's index */
      c->sval[id] = LLVMBuildLoad2(c->b, c->i32, c->ptr[id], "");
    break;
  case OP_FIRST:
    c->ptr[id] = c->ptr[a];
    break;
  case OP_PROJ:
    break; /* set by the scan */
  case OP_PICK: {
    LLVMValueRef idx = LLVMBuildSExt(c->b, c->sval[b], c->i64, "");
    c->sval[id] = load(c, c->ptr[a], idx);
    break;
  }
  case OP_SCAN:
    emit_scan(c, id);
    break;
  case OP_CONCAT: {
    size_t na = row_numel(N(c, a)->type), nb = row_numel(N(c, b)->type);
    c->ptr[id] = buffer(c, id);
    memcpy_f32(c, c->ptr[id], c->ptr[a], ci64(c, (long long)na));
    memcpy_f32(c, fptr(c, c->ptr[id], ci64(c, (long long)na)), c->ptr[b], ci64(c, (long long)nb));
    break;
  }
  case OP_PAD: {
    c->ptr[id] = buffer(c, id);
    memset_f32(c, c->ptr[id], ci64(c, n->b));
    memcpy_f32(c, fptr(c, c->ptr[id], ci64(c, n->a)), c->ptr[a],
               ci64(c, (long long)row_numel(N(c, a)->type)));
    break;
  }
  case OP_DENSE: {
    c->ptr[id] = buffer(c, id);
    memset_f32(c, c->ptr[id], ci64(c, (long long)row_numel(n->type)));
    store(c, cf32(c, 1), c->ptr[id], LLVMBuildSExt(c->b, c->sval[a], c->i64, ""));
    break;
  }
  case OP_SCATTER: {
    c->ptr[id] = buffer(c, id);
    memset_f32(c, c->ptr[id], ci64(c, (long long)row_numel(n->type)));
    store(c, value_at(c, a, ci64(c, 0)), c->ptr[id], LLVMBuildSExt(c->b, c->sval[b], c->i64, ""));
    break;
  }
  case OP_PUT_LAST: {
    size_t rn = row_numel(n->type);
    c->ptr[id] = buffer(c, id);
    memset_f32(c, c->ptr[id], LLVMBuildMul(c->b, c->T64, ci64(c, (long long)rn), ""));
    LLVMValueRef last = fptr(c, c->ptr[id], LLVMBuildMul(c->b, LLVMBuildSub(c->b, c->T64, ci64(c, 1), ""),
                                                        ci64(c, (long long)rn), ""));
    memcpy_f32(c, last, c->ptr[a], ci64(c, (long long)rn));
    break;
  }
  case OP_LOG_SOFTMAX: {
    /* y = x - (max + log(sum(exp(x - max)))) */
    long long cnt = (long long)row_numel(n->type);
    LLVMValueRef x = c->ptr[a];
    LLVMValueRef mx = acc_new(c, load(c, x, ci64(c, 0)));
    Loop l1 = loop_begin(c, ci64(c, cnt));
    LLVMValueRef args[2] = {LLVMBuildLoad2(c->b, c->f32, mx, ""), load(c, x, l1.i)};
    LLVMBuildStore(c->b, intrinsic(c, "llvm.maxnum", args, 2), mx);
    loop_end(c, &l1);
    LLVMValueRef m = LLVMBuildLoad2(c->b, c->f32, mx, "");
    LLVMValueRef sum = acc_new(c, cf32(c, 0));
    Loop l2 = loop_begin(c, ci64(c, cnt));
    LLVMValueRef e = mf_exp(c->mod, c->b, fsub(c, load(c, x, l2.i), m));
    LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, c->f32, sum, ""), e), sum);
    loop_end(c, &l2);
    LLVMValueRef lse = fadd(c, m, mf_log(c->mod, c->b, LLVMBuildLoad2(c->b, c->f32, sum, "")));
    c->ptr[id] = buffer(c, id);
    Loop l3 = loop_begin(c, ci64(c, cnt));
    store(c, fsub(c, load(c, x, l3.i), lse), c->ptr[id], l3.i);
    loop_end(c, &l3);
    break;
  }
  case OP_MATVEC: {
    /* Blocked products (see matvec_block), and the sequence form:
     * Y[t] = W[:, k0:k0+n] X[t] for every t, rows outside, so each row of
     * W is read once for the whole sequence while X stays in L1. */
    Type tw = N(c, a)->type, tx = N(c, b)->type;
    bool seq = is_seq_type(tx);
    long long M = tw.dim[0], nv = seq ? tx.dim[1] : tx.dim[0];
    c->ptr[id] = buffer(c, id);
    if (blocked_matvec(c, id)) {
      Loop r = loop_begin(c, ci64(c, M / BLOCK));
      LLVMValueRef r0 = LLVMBuildMul(c->b, r.i, ci64(c, BLOCK), "");
      LLVMValueRef w = fptr(c, c->ptr[a], LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r0, ci64(c, tw.dim[1]), ""),
                                                      ci64(c, n->a), ""));
      if (seq) {
        /* several steps at a time, 16 / n rows each, so a load of W
         * serves n products */
        MatvecSteps ms = {id, w, r0};
        step_tuples(c, matvec_steps, &ms);
      } else {
        matvec_block(c, w, tw.dim[1], c->ptr[b], nv, fptr(c, c->ptr[id], r0));
      }
      loop_end(c, &r);
      break;
    }
    Loop r = loop_begin(c, ci64(c, M));
    LLVMValueRef w = fptr(c, c->ptr[a], LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r.i, ci64(c, tw.dim[1]), ""),
                                                    ci64(c, n->a), ""));
    Loop t = loop_begin(c, c->T64);
    LLVMValueRef x = seq_row(c, b, t.i);
    LLVMValueRef acc = acc_new(c, cf32(c, 0));
    Loop k = loop_begin(c, ci64(c, nv));
    LLVMBuildStore(c->b, fadd(c, LLVMBuildLoad2(c->b, c->f32, acc, ""),
                              fmul(c, load(c, w, k.i), load(c, x, k.i))), acc);
    loop_end(c, &k);
    store(c, LLVMBuildLoad2(c->b, c->f32, acc, ""), c->ptr[id],
          LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, ci64(c, M), ""), r.i, ""));
    loop_end(c, &t);
    loop_end(c, &r);
    break;
  }
  case OP_MATVEC_T: {
    /* y = W[:, k0:k0+n]^T u: blocked with y in registers (matvec_t_block);
     * a sequence of u, several steps at a time */
    Type tw = N(c, a)->type;
    bool seq = is_seq_type(N(c, b)->type);
    c->ptr[id] = buffer(c, id);
    if (n->b % BLOCK == 0) {
      if (seq) {
        step_tuples(c, matvec_t_steps, &id);
      } else {
        LLVMValueRef u = c->ptr[b], y = c->ptr[id];
        matvec_t_block(c, fptr(c, c->ptr[a], ci64(c, n->a)), tw.dim[1], tw.dim[0], n->b, &u, 1, &y);
      }
      break;
    }
    /* y[k] = sum_r W[r, k0 + k] u[r], as axpys over rows (contiguous in k) */
    Loop t = {0};
    if (seq)
      t = loop_begin(c, c->T64);
    LLVMValueRef u = seq ? seq_row(c, b, t.i) : c->ptr[b];
    LLVMValueRef y = seq ? seq_row(c, id, t.i) : c->ptr[id];
    memset_f32(c, y, ci64(c, n->b));
    Loop r = loop_begin(c, ci64(c, tw.dim[0]));
    LLVMValueRef ur = load(c, u, r.i);
    LLVMValueRef w = fptr(c, c->ptr[a], LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r.i, ci64(c, tw.dim[1]), ""),
                                                    ci64(c, n->a), ""));
    Loop k = loop_begin(c, ci64(c, n->b));
    store(c, fadd(c, load(c, y, k.i), fmul(c, load(c, w, k.i), ur)), y, k.i);
    loop_end(c, &k);
    loop_end(c, &r);
    if (seq)
      loop_end(c, &t);
    break;
  }
  case OP_ACC:
  case OP_ACC_OUTER:
    emit_acc(c, id);
    break;
  default:
    if (op_flags[n->op] & F_ELEM) { /* a scalar */
      LLVMValueRef x = value_at(c, a, ci64(c, 0));
      LLVMValueRef y = b >= 0 ? value_at(c, b, ci64(c, 0)) : NULL;
      c->sval[id] = elem_op(c, n->op, x, y);
      break;
    }
    abort(); /* every other op is grouped: groupable() lists them */
  }
}

static void emit_block(CG *c, int blk) {
  const Block *b = &c->g->blocks[blk];
  Group gr = {0};
  for (int i = 0; i < b->n; i++) {
    int id = b->nodes[i];
    const Node *n = N(c, id);
    if (n->op == OP_ARG)
      continue;
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

int codegen(const Graph *g, LLVMModuleRef mod, const char *name, const CodegenOptions *opt,
            KernelAbi *abi, Err *e) {
  CG c = {.g = g, .opt = opt, .mod = mod, .group_serial = 1};
  c.ctx = LLVMGetModuleContext(mod);
  c.b = LLVMCreateBuilderInContext(c.ctx);
  c.f32 = LLVMFloatTypeInContext(c.ctx);
  c.i32 = LLVMInt32TypeInContext(c.ctx);
  c.i64 = LLVMInt64TypeInContext(c.ctx);
  c.i8 = LLVMInt8TypeInContext(c.ctx);
  c.pty = LLVMPointerTypeInContext(c.ctx, 0);
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
  c.baked_cols = xcalloc(nn, sizeof *c.baked_cols);
  plan(&c);

  if (opt && opt->baked_values) {
    /* AOT: the trained values become read-only data in the object. */
    LLVMValueRef *vals = xmalloc(g->nfloats * sizeof *vals);
    for (size_t i = 0; i < g->nfloats; i++)
      vals[i] = LLVMConstReal(c.f32, opt->baked_values[i]);
    LLVMTypeRef aty = LLVMArrayType2(c.f32, g->nfloats);
    char gname[256];
    snprintf(gname, sizeof gname, "%s_weights", name);
    c.baked = LLVMAddGlobal(mod, aty, gname);
    LLVMSetInitializer(c.baked, LLVMConstArray2(c.f32, vals, g->nfloats));
    LLVMSetGlobalConstant(c.baked, 1);
    LLVMSetLinkage(c.baked, LLVMInternalLinkage);
    LLVMSetAlignment(c.baked, 64);
    free(vals);
  }

  /* An accumulating kernel takes its gradient buffer as a second argument
   * (each thread of a batch has its own). */
  bool acc_arg = opt && opt->accumulate;
  int g_arg = acc_arg ? 1 : 0; /* how far the later arguments move */
  LLVMTypeRef params[10] = {c.pty, c.pty, c.pty, c.i32, c.i32, c.pty, c.pty, c.i32, c.f32, c.pty};
  if (!acc_arg) /* no grad argument */
    memmove(params + 1, params + 2, 8 * sizeof *params);
  LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(c.ctx), params, 9 + (unsigned)g_arg, 0);
  c.fn = LLVMAddFunction(mod, name, fty);
  /* The buffers are distinct allocations: say so, and loops need no
   * run-time alias checks. */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  static const unsigned ptr_args[] = {0, 1, 4, 5, 8};
  for (size_t i = 0; i < ARRAY_LEN(ptr_args); i++)
    LLVMAddAttributeAtIndex(c.fn, ptr_args[i] + (i ? (unsigned)g_arg : 0) + 1,
                            LLVMCreateEnumAttribute(c.ctx, noalias, 0));
  if (acc_arg)
    LLVMAddAttributeAtIndex(c.fn, 2, LLVMCreateEnumAttribute(c.ctx, noalias, 0));
  if (opt && opt->vector_width) {
    const char *k = "prefer-vector-width";
    LLVMAddAttributeAtIndex(c.fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(c.ctx, k, (unsigned)strlen(k), opt->vector_width,
                                                      (unsigned)strlen(opt->vector_width)));
  }
  LLVMPositionBuilderAtEnd(c.b, LLVMAppendBasicBlockInContext(c.ctx, c.fn, "entry"));
  c.state = LLVMGetParam(c.fn, 0);
  unsigned a = (unsigned)g_arg;
  c.chars = LLVMGetParam(c.fn, 1 + a);
  c.T = LLVMGetParam(c.fn, 2 + a);
  c.target = LLVMGetParam(c.fn, 3 + a);
  c.noise = LLVMGetParam(c.fn, 4 + a);
  c.scratch = LLVMGetParam(c.fn, 5 + a);
  c.tmax = LLVMBuildSExt(c.b, LLVMGetParam(c.fn, 6 + a), c.i64, "tmax");
  c.step = LLVMGetParam(c.fn, 7 + a);
  c.out = LLVMGetParam(c.fn, 8 + a);
  c.grad = acc_arg ? LLVMGetParam(c.fn, 1)
                   : fptr(&c, c.state, ci64(&c, (long long)(SLOT_GRAD * g->nfloats)));
  c.T64 = LLVMBuildSExt(c.b, c.T, c.i64, "T");
  char fname[256];
  snprintf(fname, sizeof fname, "%s_scratch_fixed", name);
  c.fixed_size = LLVMAddGlobal(mod, c.i64, fname);
  LLVMSetGlobalConstant(c.fixed_size, 1);
  LLVMSetLinkage(c.fixed_size, LLVMPrivateLinkage);
  c.scratch_t = fptr(&c, c.scratch, LLVMBuildLoad2(c.b, c.i64, c.fixed_size, ""));

  c.first_acc = xcalloc(nn, sizeof *c.first_acc);
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
    memcpy_f32(&c, c.out, c.ptr[g->output], ci64(&c, classes));
  if (g->loss >= 0)
    store(&c, c.sval[g->loss], c.out, ci64(&c, classes));
  if (g->stage == STAGE_GRAD) /* the norm exists where the graph clips */
    store(&c, g->grad_norm >= 0 ? c.sval[g->grad_norm] : cf32(&c, 0), c.out,
          ci64(&c, classes + 1));
  LLVMBuildRetVoid(c.b);
  c.fixed = (c.fixed + 15) & ~(size_t)15;
  LLVMSetInitializer(c.fixed_size, ci64(&c, (long long)c.fixed));

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
  free(c.baked_cols);
  LLVMDisposeBuilder(c.b);
  (void)e;
  return 0;
}

/* kernels.c: the product micro-kernels codegen calls, and the builders
 * they share with llvm.c (cg.h).
 *
 * Batch 1 (matrix-vector; BLOCK = 16 rows, 16-float vectors on x86, the
 * target's vectors elsewhere in matvec_block_n):
 *   matvec_block_n   y = W x for 16 rows, one to four vectors x at a time
 *   matvec_t_block   y = W^T u for one to four vectors u, y in registers
 *   outer_seq_rows   a weight or bias gradient summed over a sequence
 *   step_tuples      a sequence's steps four, two, then one at a time
 *
 * Batches (matrix-matrix; vectors as wide as the target's, cg->simd):
 *   gemm             C (+)= A B, register-blocked for the target
 *   transpose        W -> W^T, the forward product's packed B
 *   simd_of          the target's vectors, which size gemm's tile
 *
 * A kernel in parts (CodegenOptions.parts, for llvm.c and batch.c):
 *   plan_parts       where the parts begin
 *   carry_next,      the next part's function, and the values it takes
 *   carry, carry_end from the one before
 *
 * Each emits IR at cg->b's position into cg->fn (gemm also adds its
 * micro-kernels to the module). */
#include <assert.h>
#include <llvm-c/TargetMachine.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cg.h"
#include "mathfn.h"

void cg_init(Cg *cg, LLVMModuleRef m, Simd simd) {
  memset(cg, 0, sizeof *cg);
  cg->simd = simd;
  cg->mod = m;
  cg->ctx = LLVMGetModuleContext(m);
  cg->b = LLVMCreateBuilderInContext(cg->ctx);
  cg->f32 = LLVMFloatTypeInContext(cg->ctx);
  cg->i32 = LLVMInt32TypeInContext(cg->ctx);
  cg->i64 = LLVMInt64TypeInContext(cg->ctx);
  cg->i8 = LLVMInt8TypeInContext(cg->ctx);
  cg->pty = LLVMPointerTypeInContext(cg->ctx, 0);
}

void cg_dispose(Cg *cg) { LLVMDisposeBuilder(cg->b); }

/* ------------------------------------------------------- small builders */

Loop loop_begin(Cg *cg, LLVMValueRef n) {
  Loop l = {.pre = LLVMGetInsertBlock(cg->b), .n = n};
  l.head = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "loop");
  LLVMBuildBr(cg->b, l.head);
  LLVMPositionBuilderAtEnd(cg->b, l.head);
  l.i = LLVMBuildPhi(cg->b, cg->i64, "i");
  LLVMValueRef zero = ci64(cg, 0);
  LLVMAddIncoming(l.i, &zero, &l.pre, 1);
  return l;
}

void loop_end(Cg *cg, Loop *l) {
  LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->i, ci64(cg, 1), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
  LLVMAddIncoming(l->i, &next, &latch, 1);
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "done");
  LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, next, l->n, ""), l->head, exit);
  LLVMPositionBuilderAtEnd(cg->b, exit);
}

Loop for_begin(Cg *cg, LLVMValueRef n) {
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "for");
  LLVMBasicBlockRef skip = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "for_done");
  LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGT, n, ci64(cg, 0), ""), body, skip);
  LLVMPositionBuilderAtEnd(cg->b, body);
  Loop l = loop_begin(cg, n);
  l.skip = skip;
  return l;
}

void for_end(Cg *cg, Loop *l) {
  loop_end(cg, l);
  LLVMBuildBr(cg->b, l->skip);
  LLVMPositionBuilderAtEnd(cg->b, l->skip);
}

/* An alloca at the top of the entry block (where SROA looks for them). */
static LLVMValueRef entry_alloca(Cg *cg, LLVMTypeRef t, const char *name) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(cg->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(cg->b, first);
  else
    LLVMPositionBuilderAtEnd(cg->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(cg->b, t, name);
  LLVMPositionBuilderAtEnd(cg->b, here);
  return a;
}

LLVMValueRef acc_new(Cg *cg, LLVMValueRef init) {
  LLVMValueRef a = entry_alloca(cg, cg->f32, "acc");
  LLVMBuildStore(cg->b, init, a);
  return a;
}

LLVMValueRef vacc_new(Cg *cg, LLVMTypeRef vt) { return entry_alloca(cg, vt, "vacc"); }

LLVMValueRef splat(Cg *cg, LLVMTypeRef vt, LLVMValueRef x) {
  if (LLVMGetTypeKind(vt) != LLVMVectorTypeKind)
    return x;
  unsigned n = LLVMGetVectorSize(vt);
  LLVMValueRef v = LLVMBuildInsertElement(cg->b, LLVMGetUndef(vt), x, LLVMConstInt(cg->i32, 0, 0), "");
  return LLVMBuildShuffleVector(cg->b, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(cg->i32, n)), "");
}

/* ---------------------------------------------------- a kernel in parts */

Carry carry_next(Cg *cg, const char *kernel, int part, void (*make)(void *ctx, const char *name),
                 void *ctx, unsigned scratch_arg, size_t *fixed) {
  char name[256];
  snprintf(name, sizeof name, "%s.part%d", kernel, part);
  LLVMValueRef from = cg->fn;
  LLVMBuilderRef at_from = cg->b;
  cg->b = LLVMCreateBuilderInContext(cg->ctx);
  make(ctx, name);
  return (Carry){.cg = cg, .from = from, .to = cg->fn, .from_scratch = LLVMGetParam(from, scratch_arg),
                 .to_scratch = LLVMGetParam(cg->fn, scratch_arg), .at_from = at_from, .fixed = fixed};
}

LLVMValueRef carry(Carry *k, LLVMValueRef v) {
  if (!v || LLVMIsConstant(v) || LLVMIsAGlobalValue(v))
    return v;
  for (int i = 0; i < k->n; i++)
    if (k->src[i] == v)
      return k->dst[i];
  Cg *cg = k->cg;
  LLVMValueRef to = NULL;
  if (LLVMIsAArgument(v)) {
    unsigned np = LLVMCountParams(k->from);
    for (unsigned i = 0; i < np && !to; i++)
      if (LLVMGetParam(k->from, i) == v)
        to = LLVMGetParam(k->to, i);
  } else if (LLVMIsAInstruction(v)) {
    LLVMOpcode op = LLVMGetInstructionOpcode(v);
    LLVMValueRef ops[8];
    int nops = LLVMGetNumOperands(v);
    bool remat = nops <= 8;
    switch (op) {
    case LLVMGetElementPtr:
    case LLVMAdd:
    case LLVMSub:
    case LLVMMul:
    case LLVMShl:
    case LLVMSExt:
    case LLVMZExt:
    case LLVMTrunc:
      break;
    case LLVMLoad: /* of a constant global (a scratch size) */
      remat = LLVMIsAGlobalVariable(LLVMGetOperand(v, 0)) &&
              LLVMIsGlobalConstant(LLVMGetOperand(v, 0));
      break;
    default:
      remat = false;
    }
    for (int i = 0; remat && i < nops; i++)
      ops[i] = carry(k, LLVMGetOperand(v, i));
    if (remat) {
      switch (op) {
      case LLVMGetElementPtr:
        to = LLVMBuildGEP2(cg->b, LLVMGetGEPSourceElementType(v), ops[0], ops + 1,
                           (unsigned)nops - 1, "");
        LLVMSetIsInBounds(to, LLVMIsInBounds(v));
        break;
      case LLVMSExt:
      case LLVMZExt:
      case LLVMTrunc:
        to = LLVMBuildCast(cg->b, op, ops[0], LLVMTypeOf(v), "");
        break;
      case LLVMLoad:
        to = LLVMBuildLoad2(cg->b, LLVMTypeOf(v), ops[0], "");
        break;
      default:
        to = LLVMBuildBinOp(cg->b, op, ops[0], ops[1], "");
        LLVMSetNSW(to, LLVMGetNSW(v));
        LLVMSetNUW(to, LLVMGetNUW(v));
      }
    }
  }
  if (!to) { /* through scratch: 8 bytes of the fixed part */
    LLVMValueRef slot = ci64(cg, (long long)*k->fixed);
    *k->fixed += 2;
    LLVMBuildStore(k->at_from, v, LLVMBuildGEP2(k->at_from, cg->f32, k->from_scratch, &slot, 1, ""));
    to = LLVMBuildLoad2(cg->b, LLVMTypeOf(v), fptr(cg, k->to_scratch, slot), "");
  }
  if (k->n == k->cap) {
    k->cap = k->cap ? 2 * k->cap : 64;
    k->src = xrealloc(k->src, (size_t)k->cap * sizeof *k->src);
    k->dst = xrealloc(k->dst, (size_t)k->cap * sizeof *k->dst);
  }
  k->src[k->n] = v;
  k->dst[k->n++] = to;
  return to;
}

void carry_block0(Carry *k, const Graph *g, LLVMValueRef *const *vals, int n, LLVMValueRef *cur) {
  for (int id = 0; id < g->nnodes; id++) {
    if (g->nodes[id].block != 0)
      continue;
    for (int i = 0; i < n; i++)
      vals[i][id] = carry(k, vals[i][id]);
    cur[id] = NULL;
  }
}

void carry_end(Carry *k) {
  *k->fixed = (*k->fixed + 15) & ~(size_t)15; /* the spills took 8 bytes each */
  unsigned np = LLVMCountParams(k->from);
  LLVMValueRef args[16];
  assert(np <= ARRAY_LEN(args));
  for (unsigned i = 0; i < np; i++)
    args[i] = LLVMGetParam(k->from, i);
  LLVMBuildCall2(k->at_from, LLVMGlobalGetValueType(k->to), k->to, args, np, "");
  LLVMBuildRetVoid(k->at_from);
  LLVMDisposeBuilder(k->at_from);
  free(k->src);
  free(k->dst);
}

/* Roughly how long LLVM takes over the code node id makes, in units of
 * an elementwise node's (measured on gru.nn's train kernel, part by part):
 * a matrix-vector product's blocked loops weigh 64, a transposed one's 16
 * (one vector at a time), each three times over a sequence (step_tuples:
 * four steps at a time, two, one); a product of a one-hot is a row read,
 * a gradient's outer product a rank-1 update; a scan weighs its body. */
static long node_weight(const Graph *g, int id) {
  const Node *n = &g->nodes[id];
  long seq = type_is_seq(n->type) ? 3 : 1;
  switch (n->op) {
  case OP_MATVEC:
  case OP_MATVEC_T:
    if (g->nodes[n->in[1]].type.kind == TY_ONEHOT)
      return 4;
    return seq * (n->op == OP_MATVEC ? 64 : 16);
  case OP_ACC_OUTER:
    return 16;
  case OP_SCAN: {
    long w = 4;
    const Block *b = &g->blocks[n->region];
    for (int i = 0; i < b->n; i++)
      w += node_weight(g, b->nodes[i]);
    return w;
  }
  default:
    return 1;
  }
}

/* Which of block 0's node indices a part cannot begin at: where a float
 * scalar of an earlier node (a sum, a pick, sqrt of one...) is read at or
 * after it. Carried through scratch, such a value is what the one
 * function computes, but not what it goes on to compute with it: there
 * LLVM sees the scalar's arithmetic and its readers' together, and with
 * fast-math's reassociation and contraction adds the partial sums of a
 * gradient norm in another order, or fuses a product into a reader's add
 * (an FMA): other bits. Constants and the step (an argument) are the same
 * values in every part; the loss and the norm are only stored at the end
 * (exactly) where nothing else reads them. */
static bool *scalars_crossing(const Graph *g) {
  const Block *b0 = &g->blocks[0];
  int *index0 = xmalloc((size_t)g->nnodes * sizeof *index0); /* node -> block 0's index, or -1 */
  int *scan_of = xmalloc((size_t)g->nblocks * sizeof *scan_of); /* a body -> its scan */
  for (int id = 0; id < g->nnodes; id++) {
    index0[id] = -1;
    if (g->nodes[id].op == OP_SCAN)
      scan_of[g->nodes[id].region] = id;
  }
  for (int i = 0; i < b0->n; i++)
    index0[b0->nodes[i]] = i;
  bool *crossing = xcalloc((size_t)b0->n + 1, sizeof *crossing);
  for (int u = 0; u < g->nnodes; u++) {
    int at = u; /* where u's code is: its own node of block 0, or its scan's */
    while (g->nodes[at].block != 0)
      at = scan_of[g->nodes[at].block];
    for (int k = 0; k < g->nodes[u].nin; k++) {
      const Node *v = &g->nodes[g->nodes[u].in[k]];
      int from = index0[g->nodes[u].in[k]];
      if (from < 0 || v->type.kind != TY_F32 || v->type.rank != 0 || v->op == OP_CONST ||
          v->op == OP_STEP)
        continue;
      for (int i = from + 1; i <= index0[at]; i++)
        crossing[i] = true;
    }
  }
  free(index0);
  free(scan_of);
  return crossing;
}

int *plan_parts(const Graph *g, int parts) {
  parts = parts < MAX_KERNEL_PARTS ? parts : MAX_KERNEL_PARTS;
  const Block *b0 = &g->blocks[0];
  int *part_at = xmalloc((size_t)(parts > 1 ? parts : 1) * sizeof *part_at);
  bool *crossing = parts > 1 ? scalars_crossing(g) : NULL;
  long total = 0;
  for (int i = 0; i < b0->n; i++)
    total += node_weight(g, b0->nodes[i]);
  int np = 0;
  long sum = 0;
  for (int i = 0; i < b0->n && np < parts - 1; i++) {
    if (sum * parts >= total * (np + 1) && node_weight(g, b0->nodes[i]) > 1 && !crossing[i])
      part_at[np++] = i;
    sum += node_weight(g, b0->nodes[i]);
  }
  part_at[np] = -1;
  free(crossing);
  return part_at;
}

/* ------------------------------------------------ batch-1 products */

LLVMValueRef cg_elem(Cg *cg, Op op, double f, LLVMValueRef a, LLVMValueRef b) {
  switch (op) {
  case OP_DROPOUT: {
    /* a kept (scaled by 1/(1-p)) where its draw b in U(-1, 1) is at least
     * 2p - 1: with probability 1 - p */
    LLVMTypeRef t = LLVMTypeOf(a);
    LLVMValueRef thr = splat(cg, t, LLVMConstReal(cg->f32, (float)(2 * f - 1)));
    LLVMValueRef scale = splat(cg, t, LLVMConstReal(cg->f32, (float)(1 / (1 - f))));
    LLVMValueRef keep = LLVMBuildFCmp(cg->b, LLVMRealOGE, b, thr, "");
    return LLVMBuildSelect(cg->b, keep, fmul(cg, a, scale), LLVMConstNull(t), "");
  }
  case OP_ADD:
    return fadd(cg, a, b);
  case OP_SUB:
    return fsub(cg, a, b);
  case OP_MUL:
    return fmul(cg, a, b);
  case OP_DIV:
    return fdiv(cg, a, b);
  case OP_NEG:
    return LLVMBuildFNeg(cg->b, a, "");
  case OP_MIN: {
    LLVMValueRef args[2] = {a, b};
    return intrinsic(cg, "llvm.minnum", args, 2);
  }
  case OP_POW: {
    LLVMValueRef args[2] = {a, b};
    return intrinsic(cg, "llvm.pow", args, 2);
  }
  case OP_SQRT:
    return intrinsic(cg, "llvm.sqrt", &a, 1);
  case OP_RELU: /* a > 0 ? a : 0, as the interpreter (NaN gives 0) */
    return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOGT, a, LLVMConstNull(LLVMTypeOf(a)), ""),
                           a, LLVMConstNull(LLVMTypeOf(a)), "");
  case OP_RELU_GRAD: /* the adjoint a where relu's result b is positive */
    return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOGT, b, LLVMConstNull(LLVMTypeOf(b)), ""),
                           a, LLVMConstNull(LLVMTypeOf(a)), "");
  case OP_FLOOR:
    return intrinsic(cg, "llvm.floor", &a, 1);
  case OP_COS: /* a learning-rate schedule's scalar: cosf, not inline (JIT only) */
    return intrinsic(cg, "llvm.cos", &a, 1);
  case OP_SIGMOID:
    return mf_sigmoid(cg->mod, cg->b, a);
  case OP_TANH:
    return mf_tanh(cg->mod, cg->b, a);
  case OP_EXP:
    return mf_exp(cg->mod, cg->b, a);
  case OP_LOG:
    return mf_log(cg->mod, cg->b, a);
  default:
    abort(); /* only elementwise ops */
  }
}

static LLVMValueRef shuffle(Cg *cg, LLVMValueRef x, LLVMValueRef y, const int *idx, int n) {
  LLVMValueRef m[BLOCK];
  for (int i = 0; i < n; i++)
    m[i] = LLVMConstInt(cg->i32, (unsigned long long)idx[i], 0);
  return LLVMBuildShuffleVector(cg->b, x, y, LLVMConstVector(m, (unsigned)n), "");
}

/* The 16 floats of count vectors of 16 / count lanes (or scalars), in
 * order, as one vector. */
static LLVMValueRef concat16(Cg *cg, LLVMValueRef *v, int count) {
  if (count == BLOCK) {
    LLVMValueRef r = LLVMGetUndef(LLVMVectorType(cg->f32, BLOCK));
    for (int j = 0; j < BLOCK; j++)
      r = LLVMBuildInsertElement(cg->b, r, v[j], LLVMConstInt(cg->i32, (unsigned long long)j, 0), "");
    return r;
  }
  for (; count > 1; count /= 2) {
    int n = 2 * BLOCK / count, idx[BLOCK];
    for (int i = 0; i < n; i++)
      idx[i] = i;
    for (int p = 0; p < count / 2; p++)
      v[p] = shuffle(cg, v[2 * p], v[2 * p + 1], idx, n);
  }
  return v[0];
}

/* ys[i][0..R) = W rows [0, R) from w (stride ld floats) times xs[i][0..nv),
 * for nx = 16 / R vectors x: 16 accumulators over k, accumulator i * R + j
 * for row j and vector i, so each load of a row of W serves nx products;
 * then one transposing reduction tree turns the 16 accumulators into the
 * 16 results in 15 shuffle pairs and adds, instead of a horizontal sum per
 * row (which took 40% of gru.nn's inference kernel). The accumulators are
 * vectors of V = cg->simd.mv_lanes floats: 16 on x86 (two ymm registers
 * each with AVX2), the target's own width elsewhere, where 16-float
 * vectors split into spilled pieces (on a Cortex-M4, V = 1: 16 scalar
 * sums in the FPU's registers, one multiply-add each per load of W, and
 * no tree). */
int mv_lanes(const Cg *cg) { return cg->simd.mv_lanes ? cg->simd.mv_lanes : BLOCK; }

void matvec_block_n(Cg *cg, LLVMValueRef w, long long ld, long long ks, LLVMValueRef *xs, int nx,
                    long long nv, LLVMValueRef *ys, LLVMValueRef scale) {
  int R = BLOCK / nx, V = mv_lanes(cg);
  if (!ks)
    ks = V;
  assert(V >= 1 && V <= BLOCK && BLOCK % V == 0 && nv % V == 0);
  LLVMTypeRef vt = V == 1 ? cg->f32 : LLVMVectorType(cg->f32, (unsigned)V);
  LLVMTypeRef vq = V == 1 ? cg->i8 : LLVMVectorType(cg->i8, (unsigned)V);
  LLVMValueRef acc[BLOCK];
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(cg->fn);
  LLVMPositionBuilderBefore(cg->b, LLVMGetFirstInstruction(entry));
  for (int j = 0; j < BLOCK; j++)
    acc[j] = LLVMBuildAlloca(cg->b, vt, "vacc");
  LLVMPositionBuilderAtEnd(cg->b, here);
  for (int j = 0; j < BLOCK; j++)
    LLVMBuildStore(cg->b, LLVMConstNull(vt), acc[j]);
  /* Where an accumulator spans P > 1 registers (x86's 16 floats: 2 ymm
   * with AVX2, 4 xmm with SSE2), rows [j0, j0 + RP) per pass over k, so
   * that their nx * RP accumulators, the x vectors and a row of W fit in
   * the registers: with AVX2 all 16 accumulators (32 registers of 16)
   * were spilled to the stack at every step of k. Each accumulator sums
   * the same terms in the same order however the rows are split. At the
   * target's own width (P = 1: AVX-512, NEON, the M4's 32 single
   * registers) one pass, which loads x once. */
  int P = cg->simd.lanes > 1 && V > cg->simd.lanes ? V / cg->simd.lanes : 1, RP = R;
  while (P > 1 && RP > 1 && nx * P * (RP + 1) + P > cg->simd.regs)
    RP /= 2;
  for (int j0 = 0; j0 < R; j0 += RP) {
    Loop k = loop_begin(cg, ci64(cg, nv / V));
    LLVMValueRef k0 = LLVMBuildMul(cg->b, k.i, ci64(cg, V), "");
    LLVMValueRef xv[BLOCK];
    for (int i = 0; i < nx; i++)
      xv[i] = vload(cg, vt, fptr(cg, xs[i], k0));
    LLVMValueRef kw = ks == V ? k0 : LLVMBuildMul(cg->b, k.i, ci64(cg, ks), "");
    for (int j = j0; j < j0 + RP; j++) {
      LLVMValueRef at = LLVMBuildAdd(cg->b, kw, ci64(cg, j * ld), "");
      LLVMValueRef wv = scale ? LLVMBuildSIToFP(cg->b, vload(cg, vq, gep(cg, cg->i8, w, at)), vt, "")
                              : vload(cg, vt, fptr(cg, w, at));
      for (int i = 0; i < nx; i++) {
        LLVMValueRef s = fadd(cg, LLVMBuildLoad2(cg->b, vt, acc[i * R + j], ""), fmul(cg, wv, xv[i]));
        LLVMBuildStore(cg->b, s, acc[i * R + j]);
      }
    }
    loop_end(cg, &k);
  }
  /* The tree: level L pairs vectors whose lanes hold V >> L partial sums
   * of 1 << L rows each, and halves the partials; at the end vector p
   * holds the results of accumulators [p V, (p + 1) V). */
  LLVMValueRef v[BLOCK];
  for (int j = 0; j < BLOCK; j++)
    v[j] = LLVMBuildLoad2(cg->b, vt, acc[j], "");
  int count = BLOCK;
  for (int width = V / 2; width >= 1; width /= 2) {
    /* lanes come in runs of 2*width partials per row; keep the first
     * width of each run (lo) and the second (hi), from both vectors */
    int lo[BLOCK], hi[BLOCK];
    for (int i = 0; i < V; i++) {
      int run = i / width, pos = i % width;
      lo[i] = run * 2 * width + pos;
      hi[i] = run * 2 * width + width + pos;
    }
    for (int p = 0; p < count / 2; p++)
      v[p] = fadd(cg, shuffle(cg, v[2 * p], v[2 * p + 1], lo, V), shuffle(cg, v[2 * p], v[2 * p + 1], hi, V));
    count /= 2;
  }
  LLVMValueRef y = concat16(cg, v, count);
  LLVMTypeRef vt16 = LLVMVectorType(cg->f32, BLOCK);
  if (scale) { /* lane i R + j is row j's */
    LLVMValueRef m[BLOCK];
    for (int l = 0; l < BLOCK; l++)
      m[l] = LLVMConstInt(cg->i32, (unsigned long long)(l % R), 0);
    LLVMTypeRef vr = LLVMVectorType(cg->f32, (unsigned)R);
    LLVMValueRef sv = vload(cg, vr, scale);
    if (R < BLOCK)
      sv = LLVMBuildShuffleVector(cg->b, sv, LLVMGetUndef(vr), LLVMConstVector(m, BLOCK), "");
    y = fmul(cg, y, sv);
  }
  if (nx == 1) {
    vstore(cg, y, ys[0]);
    return;
  }
  for (int i = 0; i < nx; i++) {
    LLVMValueRef m[BLOCK];
    for (int j = 0; j < R; j++)
      m[j] = LLVMConstInt(cg->i32, (unsigned long long)(i * R + j), 0);
    LLVMValueRef part =
        LLVMBuildShuffleVector(cg->b, y, LLVMGetUndef(vt16), LLVMConstVector(m, (unsigned)R), "");
    vstore(cg, part, ys[i]);
  }
}

/* Rows [r0, r0 + R) of a gradient (row stride ld, from its column 0) get
 * sum_t u[t, r0 + j] v[t, 0..nv), 16 columns at a time with t innermost:
 * each 16-float chunk of the gradient lives in a register over the whole
 * sequence, loaded once (or not at all when `first`) and stored once. u
 * is a [T, M] stack, or NULL for ones (a bias: sum_t v[t]). */
void outer_seq_rows(Cg *cg, LLVMValueRef T, LLVMValueRef g, long long ld, LLVMValueRef u,
                    long long M, LLVMValueRef r0, int R, LLVMValueRef v, long long nv, bool first) {
  LLVMTypeRef vt = LLVMVectorType(cg->f32, BLOCK);
  LLVMValueRef acc[ACC_ROWS], gp[ACC_ROWS];
  for (int j = 0; j < R; j++)
    acc[j] = vacc_new(cg, vt);
  Loop k = loop_begin(cg, ci64(cg, nv / BLOCK));
  LLVMValueRef k0 = LLVMBuildMul(cg->b, k.i, ci64(cg, BLOCK), "");
  for (int j = 0; j < R; j++) {
    LLVMValueRef row = LLVMBuildAdd(cg->b, r0, ci64(cg, j), "");
    gp[j] = fptr(cg, g, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, row, ci64(cg, ld), ""), k0, ""));
    LLVMBuildStore(cg->b, first ? LLVMConstNull(vt) : vload(cg, vt, gp[j]), acc[j]);
  }
  Loop t = loop_begin(cg, T);
  LLVMValueRef vv =
      vload(cg, vt, fptr(cg, v, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, t.i, ci64(cg, nv), ""), k0, "")));
  for (int j = 0; j < R; j++) {
    LLVMValueRef x = vv;
    if (u) {
      LLVMValueRef ui = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, t.i, ci64(cg, M), ""),
                                     LLVMBuildAdd(cg->b, r0, ci64(cg, j), ""), "");
      x = fmul(cg, splat(cg, vt, load(cg, u, ui)), vv);
    }
    LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, vt, acc[j], ""), x), acc[j]);
  }
  loop_end(cg, &t);
  for (int j = 0; j < R; j++)
    vstore(cg, LLVMBuildLoad2(cg->b, vt, acc[j], ""), gp[j]);
  loop_end(cg, &k);
}

void step_tuples(Cg *cg, LLVMValueRef T, StepFn *fn, void *ctx) {
  LLVMValueRef done = ci64(cg, 0);
  for (int nx = 4; nx >= 1; nx /= 2) {
    LLVMValueRef cnt = LLVMBuildSDiv(cg->b, LLVMBuildSub(cg->b, T, done, ""), ci64(cg, nx), "");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "steps");
    LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "steps_done");
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGT, cnt, ci64(cg, 0), ""), body, after);
    LLVMPositionBuilderAtEnd(cg->b, body);
    Loop t = loop_begin(cg, cnt);
    LLVMValueRef t0 = LLVMBuildAdd(cg->b, done, LLVMBuildMul(cg->b, t.i, ci64(cg, nx), ""), "");
    LLVMValueRef ts[4];
    for (int q = 0; q < nx; q++)
      ts[q] = LLVMBuildAdd(cg->b, t0, ci64(cg, q), "");
    fn(ctx, ts, nx);
    loop_end(cg, &t);
    LLVMBuildBr(cg->b, after);
    LLVMPositionBuilderAtEnd(cg->b, after);
    if (nx > 1)
      done = LLVMBuildAdd(cg->b, done, LLVMBuildMul(cg->b, cnt, ci64(cg, nx), ""), "");
  }
}

/* ys[q] = W^T us[q] for nx vectors u (M rows of W from w, stride ld, the
 * n columns from w's column 0; n a multiple of 16): the columns 256 / nx at
 * a time in 16 vector accumulators, rows innermost (per row, a load of each
 * vector of W's row serves the nx products, each u[r] one broadcast), so
 * y is stored once instead of loaded and stored for every row. */
void matvec_t_block(Cg *cg, LLVMValueRef w, long long ld, long long M, long long n,
                    LLVMValueRef *us, int nx, LLVMValueRef *ys) {
  LLVMTypeRef vt = LLVMVectorType(cg->f32, BLOCK);
  LLVMValueRef acc[BLOCK];
  for (int j = 0; j < BLOCK; j++)
    acc[j] = vacc_new(cg, vt);
  int vecs = BLOCK / nx;
  for (long long c0 = 0; c0 < n; c0 += vecs * BLOCK) {
    int nv = (int)((n - c0) / BLOCK < vecs ? (n - c0) / BLOCK : vecs);
    for (int j = 0; j < nx * nv; j++)
      LLVMBuildStore(cg->b, LLVMConstNull(vt), acc[j]);
    Loop r = loop_begin(cg, ci64(cg, M));
    LLVMValueRef wr =
        fptr(cg, w, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, r.i, ci64(cg, ld), ""), ci64(cg, c0), ""));
    LLVMValueRef ur[4];
    for (int q = 0; q < nx; q++)
      ur[q] = splat(cg, vt, load(cg, us[q], r.i));
    for (int j = 0; j < nv; j++) {
      LLVMValueRef wv = vload(cg, vt, fptr(cg, wr, ci64(cg, j * BLOCK)));
      for (int q = 0; q < nx; q++)
        LLVMBuildStore(cg->b,
                       fadd(cg, LLVMBuildLoad2(cg->b, vt, acc[q * nv + j], ""), fmul(cg, wv, ur[q])),
                       acc[q * nv + j]);
    }
    loop_end(cg, &r);
    for (int q = 0; q < nx; q++)
      for (int j = 0; j < nv; j++)
        vstore(cg, LLVMBuildLoad2(cg->b, vt, acc[q * nv + j], ""),
               fptr(cg, ys[q], ci64(cg, c0 + j * BLOCK)));
  }
}

/* -------------------- int8 x int8 products (AArch64's sdot, x86's vpdpbusd) */

/* n bytes as a vector (any alignment). */
static LLVMValueRef load_i8s(Cg *cg, LLVMValueRef p, unsigned n) {
  LLVMValueRef v = LLVMBuildLoad2(cg->b, LLVMVectorType(cg->i8, n), p, "");
  LLVMSetAlignment(v, 1);
  return v;
}

static LLVMValueRef load_i8x16(Cg *cg, LLVMValueRef p) { return load_i8s(cg, p, 16); }

/* acc + the four lanes' 4-byte dot products of a and b (ARMv8.2 sdot). */
static LLVMValueRef sdot(Cg *cg, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef tys[2] = {LLVMVectorType(cg->i32, 4), LLVMVectorType(cg->i8, 16)};
  const char *name = "llvm.aarch64.neon.sdot";
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef args[3] = {acc, a, b};
  return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, tys, 2),
                        LLVMGetIntrinsicDeclaration(cg->mod, id, tys, 2), args, 3, "");
}

/* acc (n / 4 i32 lanes) + each lane's 4 products of unsigned bytes u by
 * signed bytes s, n of 16, 32, 64 (x86's vpdpbusd: AVX512-VNNI, or
 * AVX-VNNI for 16 and 32). */
static LLVMValueRef vpdpbusd(Cg *cg, LLVMValueRef acc, LLVMValueRef u, LLVMValueRef s, unsigned n) {
  char name[40];
  snprintf(name, sizeof name, "llvm.x86.avx512.vpdpbusd.%u", 8 * n);
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef vt = LLVMVectorType(cg->i32, n / 4);
  LLVMValueRef args[3] = {acc, LLVMBuildBitCast(cg->b, u, vt, ""), LLVMBuildBitCast(cg->b, s, vt, "")};
  return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, NULL, 0),
                        LLVMGetIntrinsicDeclaration(cg->mod, id, NULL, 0), args, 3, "");
}

static bool vnni(const Cg *cg) { return cg->dot == INT8_DOT_VNNI256 || cg->dot == INT8_DOT_VNNI512; }

/* The bytes of one dot product instruction: sdot 16, vpdpbusd 32 or 64. */
static unsigned dot_bytes(const Cg *cg) {
  return cg->dot == INT8_DOT_VNNI512 ? 64 : cg->dot == INT8_DOT_VNNI256 ? 32 : 16;
}

/* acc + the dot products of x (the quantized input) and w, n bytes each. */
static LLVMValueRef dot_step(Cg *cg, LLVMValueRef acc, LLVMValueRef x, LLVMValueRef w, unsigned n) {
  return vnni(cg) ? vpdpbusd(cg, acc, x, w, n) : sdot(cg, acc, w, x);
}

static LLVMValueRef sum_i32x4(Cg *cg, LLVMValueRef v) {
  return intrinsic(cg, "llvm.vector.reduce.add", &v, 1);
}

LLVMValueRef quantize_vec(Cg *cg, LLVMValueRef x, long long n, LLVMValueRef q) {
  LLVMValueRef mx = acc_new(cg, cf32(cg, 0));
  Loop l = loop_begin(cg, ci64(cg, n));
  LLVMValueRef a = load(cg, x, l.i);
  LLVMValueRef args[2] = {LLVMBuildLoad2(cg->b, cg->f32, mx, ""), intrinsic(cg, "llvm.fabs", &a, 1)};
  LLVMBuildStore(cg->b, intrinsic(cg, "llvm.maxnum", args, 2), mx);
  loop_end(cg, &l);
  LLVMValueRef m = LLVMBuildLoad2(cg->b, cg->f32, mx, "");
  LLVMValueRef s = LLVMBuildFDiv(cg->b, m, cf32(cg, 127), "");
  /* all zero (m = 0): q = 0 / 1 = 0, and the scale 0 */
  LLVMValueRef d = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOGT, m, cf32(cg, 0), ""), s,
                                   cf32(cg, 1), "");
  Loop k = loop_begin(cg, ci64(cg, n));
  LLVMValueRef v = LLVMBuildFDiv(cg->b, load(cg, x, k.i), d, "");
  v = intrinsic(cg, "llvm.roundeven", &v, 1); /* lrintf's rounding: to nearest, ties to even */
  LLVMValueRef lo[2] = {v, cf32(cg, -127)};
  v = intrinsic(cg, "llvm.maxnum", lo, 2);
  LLVMValueRef hi[2] = {v, cf32(cg, 127)};
  v = intrinsic(cg, "llvm.minnum", hi, 2);
  v = LLVMBuildFPToSI(cg->b, v, cg->i8, "");
  if (vnni(cg)) /* vpdpbusd's unsigned operand: q + 128 */
    v = LLVMBuildXor(cg->b, v, LLVMConstInt(cg->i8, 0x80, 0), "");
  LLVMBuildStore(cg->b, v, gep(cg, cg->i8, q, k.i));
  loop_end(cg, &k);
  return s;
}

LLVMValueRef int8_result(Cg *cg, LLVMValueRef dot, LLVMValueRef sw, LLVMValueRef sx) {
  /* plain multiplications (no reassociation, no contraction into the
   * bias's add): the reference's roundings */
  LLVMValueRef scale = LLVMBuildFMul(cg->b, sw, sx, "");
  return LLVMBuildFMul(cg->b, LLVMBuildSIToFP(cg->b, dot, cg->f32, ""), scale, "");
}

LLVMValueRef idot(Cg *cg, LLVMValueRef w, LLVMValueRef q, long long n, LLVMValueRef corr) {
  LLVMValueRef sum = corr ? LLVMBuildNeg(cg->b, corr, "") : LLVMConstInt(cg->i32, 0, 0);
  unsigned B = dot_bytes(cg);
  long long k0 = 0;
  if (n >= B) {
    LLVMTypeRef vt = LLVMVectorType(cg->i32, B / 4);
    LLVMValueRef acc = vacc_new(cg, vt);
    LLVMBuildStore(cg->b, LLVMConstNull(vt), acc);
    Loop k = loop_begin(cg, ci64(cg, n / B));
    LLVMValueRef o = LLVMBuildMul(cg->b, k.i, ci64(cg, B), "");
    LLVMValueRef a = load_i8s(cg, gep(cg, cg->i8, w, o), B), b = load_i8s(cg, gep(cg, cg->i8, q, o), B);
    LLVMBuildStore(cg->b, dot_step(cg, LLVMBuildLoad2(cg->b, vt, acc, ""), b, a, B), acc);
    loop_end(cg, &k);
    LLVMValueRef t = sum_i32x4(cg, LLVMBuildLoad2(cg->b, vt, acc, ""));
    sum = corr ? LLVMBuildAdd(cg->b, sum, t, "") : t;
    k0 = n / B * B;
  }
  for (unsigned c = 32; vnni(cg) && c >= 16; c /= 2) /* vpdpbusd's tails: 32, 16 bytes */
    for (; n - k0 >= c; k0 += c) {
      LLVMValueRef a = load_i8s(cg, gep(cg, cg->i8, w, ci64(cg, k0)), c);
      LLVMValueRef b = load_i8s(cg, gep(cg, cg->i8, q, ci64(cg, k0)), c);
      LLVMValueRef t = vpdpbusd(cg, LLVMConstNull(LLVMVectorType(cg->i32, c / 4)), b, a, c);
      sum = LLVMBuildAdd(cg->b, sum, sum_i32x4(cg, t), "");
    }
  for (long long k = k0; k < n; k++) {
    LLVMValueRef a = LLVMBuildLoad2(cg->b, cg->i8, gep(cg, cg->i8, w, ci64(cg, k)), "");
    LLVMValueRef b = LLVMBuildLoad2(cg->b, cg->i8, gep(cg, cg->i8, q, ci64(cg, k)), "");
    b = vnni(cg) ? LLVMBuildZExt(cg->b, b, cg->i32, "") : LLVMBuildSExt(cg->b, b, cg->i32, "");
    LLVMValueRef p = LLVMBuildMul(cg->b, LLVMBuildSExt(cg->b, a, cg->i32, ""), b, "");
    sum = LLVMBuildAdd(cg->b, sum, p, "");
  }
  return sum;
}

/* L lanes of type t from p + at (any alignment), or, if L > R, the R
 * values at p repeated (lane l: p[l % R]). */
static LLVMValueRef load_rows(Cg *cg, LLVMTypeRef t, LLVMValueRef p, long long at, int L, int R) {
  int n = L > R ? R : L;
  LLVMValueRef v = LLVMBuildLoad2(cg->b, LLVMVectorType(t, (unsigned)n), gep(cg, t, p, ci64(cg, at)), "");
  LLVMSetAlignment(v, 4);
  if (n == L)
    return v;
  LLVMValueRef mask[16];
  for (int l = 0; l < L; l++)
    mask[l] = LLVMConstInt(cg->i32, (unsigned long long)(l % R), 0);
  return LLVMBuildShuffleVector(cg->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(mask, (unsigned)L),
                                "");
}

/* Lanes [from, from + n) of v. */
static LLVMValueRef lanes(Cg *cg, LLVMValueRef v, int from, int n) {
  LLVMValueRef mask[16];
  for (int l = 0; l < n; l++)
    mask[l] = LLVMConstInt(cg->i32, (unsigned long long)(from + l), 0);
  return LLVMBuildShuffleVector(cg->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(mask, (unsigned)n),
                                "");
}

/* Integer vector v with zeros appended to L lanes. */
static LLVMValueRef widen(Cg *cg, LLVMValueRef v, int L) {
  int n = (int)LLVMGetVectorSize(LLVMTypeOf(v));
  if (n == L)
    return v;
  LLVMValueRef mask[16];
  for (int l = 0; l < L; l++)
    mask[l] = LLVMConstInt(cg->i32, (unsigned long long)(l < n ? l : n), 0); /* n: z's lane 0 */
  return LLVMBuildShuffleVector(cg->b, v, LLVMConstNull(LLVMTypeOf(v)), LLVMConstVector(mask, (unsigned)L),
                                "");
}

/* matvec_block_q8 with vpdpbusd: the accumulators' lanes summed by
 * shuffles (L vectors of L lanes into one whose lane j is accumulator
 * j's sum: log2 L rounds halving each row's lanes), then the input's
 * offset (128 * the row's sum, corr) subtracted and the scales applied
 * L rows at a time. */
static void matvec_block_vnni(Cg *cg, LLVMValueRef w, long long ld, LLVMValueRef *qs, LLVMValueRef *sxs,
                              int nx, long long nv, LLVMValueRef *ys, LLVMValueRef scale, LLVMValueRef corr) {
  int R = BLOCK / nx, B = (int)dot_bytes(cg), L = B / 4;
  LLVMTypeRef vt = LLVMVectorType(cg->i32, (unsigned)L);
  LLVMValueRef acc[BLOCK];
  for (int j = 0; j < BLOCK; j++) {
    acc[j] = vacc_new(cg, vt);
    LLVMBuildStore(cg->b, LLVMConstNull(vt), acc[j]);
  }
  if (nv >= B) {
    Loop k = loop_begin(cg, ci64(cg, nv / B));
    LLVMValueRef k0 = LLVMBuildMul(cg->b, k.i, ci64(cg, B), ""), xv[BLOCK];
    for (int i = 0; i < nx; i++)
      xv[i] = load_i8s(cg, gep(cg, cg->i8, qs[i], k0), (unsigned)B);
    for (int j = 0; j < R; j++) {
      LLVMValueRef at = LLVMBuildAdd(cg->b, k0, ci64(cg, j * ld), "");
      LLVMValueRef wv = load_i8s(cg, gep(cg, cg->i8, w, at), (unsigned)B);
      for (int i = 0; i < nx; i++)
        LLVMBuildStore(cg->b,
                       vpdpbusd(cg, LLVMBuildLoad2(cg->b, vt, acc[i * R + j], ""), xv[i], wv, (unsigned)B),
                       acc[i * R + j]);
    }
    loop_end(cg, &k);
  }
  LLVMValueRef v[BLOCK];
  for (int j = 0; j < BLOCK; j++)
    v[j] = LLVMBuildLoad2(cg->b, vt, acc[j], "");
  long long k0 = nv / B * B;
  for (unsigned c = 32; c >= 16; c /= 2) /* the tails: 32, 16 bytes (nv % 16 == 0) */
    for (; (int)c < B && nv - k0 >= c; k0 += c) {
      LLVMTypeRef ct = LLVMVectorType(cg->i32, c / 4);
      LLVMValueRef xv[BLOCK];
      for (int i = 0; i < nx; i++)
        xv[i] = load_i8s(cg, gep(cg, cg->i8, qs[i], ci64(cg, k0)), c);
      for (int j = 0; j < R; j++) {
        LLVMValueRef wv = load_i8s(cg, gep(cg, cg->i8, w, ci64(cg, k0 + j * ld)), c);
        for (int i = 0; i < nx; i++) {
          LLVMValueRef t = vpdpbusd(cg, LLVMConstNull(ct), xv[i], wv, c);
          v[i * R + j] = LLVMBuildAdd(cg->b, v[i * R + j], widen(cg, t, L), "");
        }
      }
    }
  for (int g = 0; g < BLOCK; g += L) {
    LLVMValueRef *u = v + g;
    for (int s = L, n = L; n > 1; s /= 2, n /= 2) /* n vectors of L / s rows' s lanes */
      for (int p = 0; p < n / 2; p++) {
        LLVMValueRef lo[16], hi[16];
        for (int l = 0; l < L; l++) {
          int from = l < L / 2 ? 0 : L, r = l % (L / 2); /* a's rows, then b's */
          int at = from + r / (s / 2) * s + r % (s / 2);
          lo[l] = LLVMConstInt(cg->i32, (unsigned long long)at, 0);
          hi[l] = LLVMConstInt(cg->i32, (unsigned long long)(at + s / 2), 0);
        }
        LLVMValueRef a = u[2 * p], b = u[2 * p + 1];
        u[p] = LLVMBuildAdd(cg->b, LLVMBuildShuffleVector(cg->b, a, b, LLVMConstVector(lo, (unsigned)L), ""),
                            LLVMBuildShuffleVector(cg->b, a, b, LLVMConstVector(hi, (unsigned)L), ""), "");
      }
    /* lane l: accumulator g + l, row (g + l) % R of vector (g + l) / R */
    LLVMValueRef d = LLVMBuildSub(cg->b, u[0], load_rows(cg, cg->i32, corr, g % R, L, R), "");
    LLVMValueRef sx = LLVMGetPoison(LLVMVectorType(cg->f32, (unsigned)L));
    for (int l = 0; l < L; l++)
      sx = LLVMBuildInsertElement(cg->b, sx, sxs[(g + l) / R],
                                  LLVMConstInt(cg->i32, (unsigned long long)l, 0), "");
    LLVMValueRef sc = LLVMBuildFMul(cg->b, load_rows(cg, cg->f32, scale, g % R, L, R), sx, "");
    LLVMValueRef y =
        LLVMBuildFMul(cg->b, LLVMBuildSIToFP(cg->b, d, LLVMVectorType(cg->f32, (unsigned)L), ""), sc, "");
    for (int l = 0; l < L; l += R < L ? R : L) {
      int n = R < L ? R : L;
      LLVMValueRef part = n == L ? y : lanes(cg, y, l, n);
      LLVMValueRef st = LLVMBuildStore(cg->b, part, fptr(cg, ys[(g + l) / R], ci64(cg, (g + l) % R)));
      LLVMSetAlignment(st, 4);
    }
  }
}

/* 16 / nx rows of int8 W times nx int8 vectors: per 16 bytes of k, a load
 * of each row serves the nx vectors, one sdot each into accumulator
 * i * R + j (16 of <4 x i32>, with the vectors and a row 21 of NEON's 32
 * registers); then each accumulator's four lanes summed. With vpdpbusd,
 * matvec_block_vnni. */
void matvec_block_q8(Cg *cg, LLVMValueRef w, long long ld, LLVMValueRef *qs, LLVMValueRef *sxs, int nx,
                     long long nv, LLVMValueRef *ys, LLVMValueRef scale, LLVMValueRef corr) {
  assert(nv % 16 == 0);
  if (vnni(cg)) {
    matvec_block_vnni(cg, w, ld, qs, sxs, nx, nv, ys, scale, corr);
    return;
  }
  int R = BLOCK / nx;
  LLVMTypeRef v4 = LLVMVectorType(cg->i32, 4);
  LLVMValueRef acc[BLOCK];
  for (int j = 0; j < BLOCK; j++) {
    acc[j] = vacc_new(cg, v4);
    LLVMBuildStore(cg->b, LLVMConstNull(v4), acc[j]);
  }
  Loop k = loop_begin(cg, ci64(cg, nv / 16));
  LLVMValueRef k0 = LLVMBuildMul(cg->b, k.i, ci64(cg, 16), ""), xv[BLOCK];
  for (int i = 0; i < nx; i++)
    xv[i] = load_i8x16(cg, gep(cg, cg->i8, qs[i], k0));
  for (int j = 0; j < R; j++) {
    LLVMValueRef wv = load_i8x16(cg, gep(cg, cg->i8, w, LLVMBuildAdd(cg->b, k0, ci64(cg, j * ld), "")));
    for (int i = 0; i < nx; i++)
      LLVMBuildStore(cg->b, sdot(cg, LLVMBuildLoad2(cg->b, v4, acc[i * R + j], ""), wv, xv[i]),
                     acc[i * R + j]);
  }
  loop_end(cg, &k);
  for (int j = 0; j < R; j++) {
    LLVMValueRef sw = load(cg, scale, ci64(cg, j));
    for (int i = 0; i < nx; i++) {
      LLVMValueRef d = sum_i32x4(cg, LLVMBuildLoad2(cg->b, v4, acc[i * R + j], ""));
      store(cg, int8_result(cg, d, sw, sxs[i]), ys[i], ci64(cg, j));
    }
  }
}

/* ------------------------------------------------------ the target's vectors */

static bool has_feature(const char *features, const char *f) {
  size_t n = strlen(f);
  for (const char *p = features; (p = strstr(p, f)); p += n)
    if ((p == features || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
      return true;
  return false;
}

/* A CPU named without a feature list: what registers does its back end
 * put a 64-float add in? (Asking LLVM beats a table of CPU names.) */
static Simd simd_probe(LLVMTargetMachineRef tm) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("simd_probe", ctx);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTypeRef vt = LLVMVectorType(LLVMFloatTypeInContext(ctx), 64);
  LLVMTypeRef pty = LLVMPointerTypeInContext(ctx, 0), params[2] = {pty, pty};
  LLVMValueRef fn = LLVMAddFunction(m, "probe", LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, 2, 0));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
  LLVMValueRef x = LLVMBuildLoad2(b, vt, LLVMGetParam(fn, 0), "");
  LLVMValueRef y = LLVMBuildLoad2(b, vt, LLVMGetParam(fn, 1), "");
  LLVMBuildStore(b, LLVMBuildFAdd(b, x, y, ""), LLVMGetParam(fn, 0));
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  Simd s = {.lanes = 1, .regs = 16};
  char *text = target_asm_text(tm, m);
  if (text) {
    if (strstr(text, "%zmm"))
      s = (Simd){.lanes = 16, .regs = 32};
    else if (strstr(text, "%ymm"))
      s = (Simd){.lanes = 8, .regs = 16};
    else if (strstr(text, "%xmm"))
      s = (Simd){.lanes = 4, .regs = 16};
    else if (strstr(text, ".4s"))
      s = (Simd){.lanes = 4, .regs = 32}; /* AArch64 NEON */
    else if (strstr(text, "f32x4"))
      s = (Simd){.lanes = 4, .regs = 16}; /* wasm simd128 */
    free(text);
  }
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  return s;
}

/* From a triple and a feature list; tm (may be NULL when features is not
 * empty) for a CPU named without one. */
static Simd simd_for(const char *triple, const char *features, LLVMTargetMachineRef tm) {
  Simd s = {.lanes = 1, .regs = 16};
  bool x86 =
      !strncmp(triple, "x86_64", 6) || (triple[0] == 'i' && triple[1] && !strncmp(triple + 2, "86", 2));
  if (!*features)
    s = simd_probe(tm);
  else if (x86 && has_feature(features, "+avx512f"))
    s = (Simd){.lanes = 16, .regs = 32};
  else if (x86 && has_feature(features, "+avx"))
    s = (Simd){.lanes = 8, .regs = 16};
  else if (x86 && has_feature(features, "+sse2"))
    s = (Simd){.lanes = 4, .regs = 16};
  else if (!strncmp(triple, "aarch64", 7) || !strncmp(triple, "arm64", 5))
    s = (Simd){.lanes = 4, .regs = 32};
  else if (!strncmp(triple, "wasm", 4) && has_feature(features, "+simd128"))
    s = (Simd){.lanes = 4, .regs = 16};
  s.mv_lanes = x86 ? BLOCK : s.lanes;
  return s;
}

Simd simd_of(LLVMTargetMachineRef tm) {
  char *triple = LLVMGetTargetMachineTriple(tm), *features = LLVMGetTargetMachineFeatureString(tm);
  Simd s = simd_for(triple, features, tm);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(features);
  return s;
}

Simd simd_of_features(const char *triple, const char *features) {
  return simd_for(triple, features, NULL);
}

void prefer_vector_width(Cg *cg, LLVMValueRef fn, const char *width) {
  if (!width)
    width = cg->simd.lanes >= 16 ? "512" : NULL;
  if (!width)
    return;
  static const char k[] = "prefer-vector-width";
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(cg->ctx, k, sizeof k - 1, width, (unsigned)strlen(width)));
}

/* ------------------------------------------------------------------ GEMM
 *
 * BLIS's loop nest without the packing: row blocks of A (GEMM_MC rows, in
 * L2 while the panels pass), panels of C (GEMM_PANEL registers across),
 * in a panel column blocks of nr registers and row tiles of mr rows, then
 * k innermost in the micro-kernel, where the tile's mr x nr registers of
 * C stay in registers: per k, nr vector loads of B and mr broadcasts of A
 * feed mr x nr fused multiply-adds. mr and nr come from the registers:
 * mr x nr accumulators + nr of B + a broadcast fit (6 x 4 with AVX-512's
 * 32, 6 x 2 with 16). A block's rows are cut into tiles of even heights
 * of at most mr (see gemm_panel); a last register that n does not fill is
 * loaded and stored masked.
 *
 * The micro-kernel of each tile shape is a function of its own, made once
 * per module and shared by every call site (its strides are arguments):
 * a tile costs LLVM about as much to compile as a whole GEMM's loops. */

/* GEMM_MC: rows of A a block holds; GEMM_PANEL: registers across a panel
 * of C (a multiple of nr, 2 or 4); GEMM_CHAINS: independent sums a tile
 * needs to keep the FMA units busy (4 cycles of latency x 2 units);
 * GEMM_PREFETCH: how many rows of B ahead of k the micro-kernel asks for
 * B's lines (its rows are ldb apart, 1-3 KB at gru.nn's shapes, and an
 * Intel core's stride prefetcher follows strides of up to 2 KB). */
enum { GEMM_MC = 96, GEMM_MR_MAX = 8, GEMM_PANEL = 8, GEMM_CHAINS = 8, GEMM_PREFETCH = 16 };

/* A tile shape: rows x nvec registers across, the last with `last` valid
 * lanes; vt a register (<lanes x float>, or float). */
typedef struct Tile {
  int rows, nvec, last, lanes;
  bool accumulate;
  LLVMTypeRef vt;
} Tile;

static LLVMValueRef lane_mask(Cg *cg, int lanes, int valid) {
  LLVMTypeRef i1 = LLVMInt1TypeInContext(cg->ctx);
  LLVMValueRef m[64];
  for (int i = 0; i < lanes; i++)
    m[i] = LLVMConstInt(i1, i < valid, 0);
  return LLVMConstVector(m, (unsigned)lanes);
}

/* The register at p, of which only the first `valid` lanes are read (the
 * rest are 0) or written. */
static LLVMValueRef load_lanes(Cg *cg, const Tile *t, LLVMValueRef p, int valid) {
  if (valid == t->lanes)
    return vload(cg, t->vt, p);
  LLVMTypeRef tys[2] = {t->vt, cg->pty};
  unsigned id = LLVMLookupIntrinsicID("llvm.masked.load", 16);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(cg->mod, id, tys, 2);
  LLVMValueRef args[4] = {p, LLVMConstInt(cg->i32, 4, 0), lane_mask(cg, t->lanes, valid),
                          LLVMConstNull(t->vt)};
  return LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, tys, 2), f, args, 4, "");
}

static void store_lanes(Cg *cg, const Tile *t, LLVMValueRef v, LLVMValueRef p, int valid) {
  if (valid == t->lanes) {
    vstore(cg, v, p);
    return;
  }
  LLVMTypeRef tys[2] = {t->vt, cg->pty};
  unsigned id = LLVMLookupIntrinsicID("llvm.masked.store", 17);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(cg->mod, id, tys, 2);
  LLVMValueRef args[4] = {v, p, LLVMConstInt(cg->i32, 4, 0), lane_mask(cg, t->lanes, valid)};
  LLVMBuildCall2(cg->b, LLVMIntrinsicGetType(cg->ctx, id, tys, 2), f, args, 4, "");
}

/* The micro-kernel of tile shape t, in this module:
 *   void (float *a, float *b, float *c, i64 K, i64 a_si, i64 a_sk, i64 ldb, i64 ldc)
 * C[i*ldc + j] (+)= sum over k < K of A[i*a_si + k*a_sk] B[k*ldb + j] for
 * the tile's rows i and columns j. */
static LLVMValueRef tile_fn(Cg *cg, const Tile *t, LLVMTypeRef *fty) {
  LLVMTypeRef params[8] = {cg->pty, cg->pty, cg->pty, cg->i64, cg->i64, cg->i64, cg->i64, cg->i64};
  *fty = LLVMFunctionType(LLVMVoidTypeInContext(cg->ctx), params, 8, 0);
  char name[96];
  snprintf(name, sizeof name, "rnnc.gemm.%dx%d.l%d.%d%s", t->rows, t->nvec, t->lanes, t->last,
           t->accumulate ? ".acc" : "");
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn)
    return fn;
  fn = LLVMAddFunction(cg->mod, name, *fty);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(cg->ctx, noinline, 0));
  /* build it with this builder, then go back */
  LLVMValueRef caller = cg->fn;
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  cg->fn = fn;
  LLVMPositionBuilderAtEnd(cg->b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
  LLVMValueRef a = LLVMGetParam(fn, 0), b = LLVMGetParam(fn, 1), c = LLVMGetParam(fn, 2);
  LLVMValueRef K = LLVMGetParam(fn, 3), a_si = LLVMGetParam(fn, 4), a_sk = LLVMGetParam(fn, 5);
  LLVMValueRef ldb = LLVMGetParam(fn, 6), ldc = LLVMGetParam(fn, 7);
  int nv = t->nvec;
  assert(t->rows <= GEMM_MR_MAX && nv <= GEMM_PANEL);
  LLVMValueRef acc[GEMM_MR_MAX][GEMM_PANEL], ap[GEMM_MR_MAX], cp[GEMM_MR_MAX];
  for (int r = 0; r < t->rows; r++) {
    ap[r] = fptr(cg, a, LLVMBuildMul(cg->b, ci64(cg, r), a_si, ""));
    cp[r] = fptr(cg, c, LLVMBuildMul(cg->b, ci64(cg, r), ldc, ""));
    for (int v = 0; v < nv; v++) {
      acc[r][v] = vacc_new(cg, t->vt);
      int valid = v == nv - 1 ? t->last : t->lanes;
      LLVMValueRef c0 = t->accumulate ? load_lanes(cg, t, fptr(cg, cp[r], ci64(cg, v * t->lanes)), valid)
                                      : LLVMConstNull(t->vt);
      LLVMBuildStore(cg->b, c0, acc[r][v]);
    }
  }
  Loop k = for_begin(cg, K);
  LLVMValueRef bk = fptr(cg, b, LLVMBuildMul(cg->b, k.i, ldb, ""));
  if (t->lanes > 1) {
    /* B's row k + GEMM_PREFETCH, a line at a time (past B's end is fine:
     * a prefetch does not fault) */
    LLVMValueRef ahead = fptr(cg, b, LLVMBuildMul(cg->b, LLVMBuildAdd(cg->b, k.i, ci64(cg, GEMM_PREFETCH), ""), ldb, ""));
    int line = 64 / (int)sizeof(float);
    for (int f = 0; f < nv * t->lanes; f += line)
      prefetch(cg, fptr(cg, ahead, ci64(cg, f)), false);
  }
  LLVMValueRef bv[GEMM_PANEL];
  for (int v = 0; v < nv; v++)
    bv[v] = load_lanes(cg, t, fptr(cg, bk, ci64(cg, v * t->lanes)), v == nv - 1 ? t->last : t->lanes);
  LLVMValueRef ak = LLVMBuildMul(cg->b, k.i, a_sk, "");
  for (int r = 0; r < t->rows; r++) {
    LLVMValueRef x = splat(cg, t->vt, load(cg, ap[r], ak));
    for (int v = 0; v < nv; v++) {
      LLVMValueRef args[3] = {x, bv[v], LLVMBuildLoad2(cg->b, t->vt, acc[r][v], "")};
      LLVMBuildStore(cg->b, intrinsic(cg, "llvm.fmuladd", args, 3), acc[r][v]);
    }
  }
  for_end(cg, &k);
  for (int r = 0; r < t->rows; r++)
    for (int v = 0; v < nv; v++)
      store_lanes(cg, t, LLVMBuildLoad2(cg->b, t->vt, acc[r][v], ""), fptr(cg, cp[r], ci64(cg, v * t->lanes)),
                  v == nv - 1 ? t->last : t->lanes);
  LLVMBuildRetVoid(cg->b);
  cg->fn = caller;
  LLVMPositionBuilderAtEnd(cg->b, here);
  return fn;
}

/* C rows [i0, i0 + rows) x the tile's registers from column j0. */
static void call_tile(Cg *cg, const Gemm *p, Tile t, int rows, LLVMValueRef i0, LLVMValueRef j0) {
  t.rows = rows;
  LLVMTypeRef fty;
  LLVMValueRef fn = tile_fn(cg, &t, &fty);
  LLVMValueRef args[8] = {
      fptr(cg, p->a, LLVMBuildMul(cg->b, i0, ci64(cg, p->a_si), "")),
      fptr(cg, p->b, j0),
      fptr(cg, p->c, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, i0, ci64(cg, p->ldc), ""), j0, "")),
      p->k,
      ci64(cg, p->a_si),
      ci64(cg, p->a_sk),
      ci64(cg, p->ldb),
      ci64(cg, p->ldc)};
  LLVMBuildCall2(cg->b, fty, fn, args, 8, "");
}

/* One tile of a runtime height h (1 <= h <= mr) at rows [i0, i0 + h): a
 * switch over the heights, each its own micro-kernel. */
static void call_tile_rows(Cg *cg, const Gemm *p, Tile t, int mr, LLVMValueRef h, LLVMValueRef i0,
                           LLVMValueRef j) {
  LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "tile_done");
  LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "tile_full");
  LLVMValueRef sw = LLVMBuildSwitch(cg->b, h, full, (unsigned)mr - 1);
  for (int r = 1; r <= mr; r++) {
    LLVMBasicBlockRef bb = full;
    if (r < mr) {
      bb = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "tile_rows");
      LLVMAddCase(sw, ci64(cg, r), bb);
    }
    LLVMPositionBuilderAtEnd(cg->b, bb);
    call_tile(cg, p, t, r, i0, j);
    LLVMBuildBr(cg->b, after);
  }
  LLVMPositionBuilderAtEnd(cg->b, after);
}

/* Rows [i0, i0 + rows) x nv registers of C from column j0 (nv <= PANEL,
 * the last with `last` valid lanes), column by column in blocks of nr
 * registers so each K x nr panel of B serves all the row tiles. The rows
 * are cut into q = ceil(rows / mr) tiles of as even heights as they go
 * (10 rows: 5 + 5; 7: 4 + 3) rather than tiles of mr and a rest in
 * smaller tiles (10 = 6 + 4 x 2 registers; 7 = 6 + 1 x 8), each at least
 * mr / 2 rows high, so every tile keeps 8 or more independent sums with
 * AVX-512 (4 cycles of FMA latency x 2 units) and few loads per FMA. One
 * row alone runs as 1 x 8 tiles (a chain a register: 8 keep the units
 * busy). Every element of C is the same sum in the same order whatever
 * the tiles. */
static void gemm_panel(Cg *cg, const Gemm *p, Tile t, LLVMValueRef i0, LLVMValueRef rows,
                       LLVMValueRef j0, int nv, int last) {
  int nr = cg->simd.regs >= 32 ? 4 : 2;
  int mr = (cg->simd.regs - nr - 1) / nr;
  mr = mr > GEMM_MR_MAX ? GEMM_MR_MAX : mr;
  LLVMBasicBlockRef one = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "gemm_one_row");
  LLVMBasicBlockRef many = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "gemm_rows");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "gemm_panel_done");
  LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntEQ, rows, ci64(cg, 1), ""), one, many);
  LLVMPositionBuilderAtEnd(cg->b, one);
  int wide = GEMM_CHAINS < GEMM_PANEL ? GEMM_CHAINS : GEMM_PANEL;
  for (int v0 = 0; v0 < nv; v0 += wide) {
    t.nvec = nv - v0 < wide ? nv - v0 : wide;
    t.last = v0 + t.nvec == nv ? last : t.lanes;
    call_tile(cg, p, t, 1, i0, LLVMBuildAdd(cg->b, j0, ci64(cg, v0 * t.lanes), ""));
  }
  LLVMBuildBr(cg->b, done);
  LLVMPositionBuilderAtEnd(cg->b, many);
  /* q tiles: the first `extra` of h + 1 rows, the others of h */
  LLVMValueRef q = LLVMBuildUDiv(cg->b, LLVMBuildAdd(cg->b, rows, ci64(cg, mr - 1), ""), ci64(cg, mr), "");
  LLVMValueRef h = LLVMBuildUDiv(cg->b, rows, q, "");
  LLVMValueRef extra = LLVMBuildURem(cg->b, rows, q, "");
  for (int v0 = 0; v0 < nv; v0 += nr) {
    t.nvec = nv - v0 < nr ? nv - v0 : nr;
    t.last = v0 + t.nvec == nv ? last : t.lanes;
    LLVMValueRef j = LLVMBuildAdd(cg->b, j0, ci64(cg, v0 * t.lanes), "");
    Loop it = for_begin(cg, q);
    LLVMValueRef tall = LLVMBuildICmp(cg->b, LLVMIntULT, it.i, extra, "");
    LLVMValueRef height = LLVMBuildAdd(cg->b, h, LLVMBuildZExt(cg->b, tall, cg->i64, ""), "");
    LLVMValueRef before = LLVMBuildSelect(cg->b, tall, it.i, extra, ""); /* taller tiles before it */
    LLVMValueRef at = LLVMBuildAdd(cg->b, i0, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, it.i, h, ""), before, ""), "");
    call_tile_rows(cg, p, t, mr, height, at, j);
    for_end(cg, &it);
  }
  LLVMBuildBr(cg->b, done);
  LLVMPositionBuilderAtEnd(cg->b, done);
}

void gemm(Cg *cg, const Gemm *p) {
  const Simd *s = &cg->simd;
  assert(s->lanes >= 1 && s->lanes <= 64 && s->regs >= 16 && p->n >= 1);
  int lanes = s->lanes;
  Tile t = {0, 0, 0, lanes, p->accumulate, lanes == 1 ? cg->f32 : LLVMVectorType(cg->f32, (unsigned)lanes)};
  /* panels of PANEL full registers, then one of what is left (its last
   * register partial when n is not a multiple of lanes) */
  long long nvec = (p->n + lanes - 1) / lanes, panels = p->n / lanes / GEMM_PANEL;
  int tail = (int)(nvec - panels * GEMM_PANEL), last = (int)(p->n - (nvec - 1) * lanes);
  LLVMValueRef mblocks =
      LLVMBuildUDiv(cg->b, LLVMBuildAdd(cg->b, p->m, ci64(cg, GEMM_MC - 1), ""), ci64(cg, GEMM_MC), "");
  Loop ib = for_begin(cg, mblocks);
  LLVMValueRef i0 = LLVMBuildMul(cg->b, ib.i, ci64(cg, GEMM_MC), "");
  LLVMValueRef left = LLVMBuildSub(cg->b, p->m, i0, "");
  LLVMValueRef big = LLVMBuildICmp(cg->b, LLVMIntSGT, left, ci64(cg, GEMM_MC), "");
  LLVMValueRef rows = LLVMBuildSelect(cg->b, big, ci64(cg, GEMM_MC), left, "");
  if (panels > 0) {
    Loop jp = loop_begin(cg, ci64(cg, panels));
    gemm_panel(cg, p, t, i0, rows, LLVMBuildMul(cg->b, jp.i, ci64(cg, (long long)GEMM_PANEL * lanes), ""),
               GEMM_PANEL, lanes);
    loop_end(cg, &jp);
  }
  if (tail > 0)
    gemm_panel(cg, p, t, i0, rows, ci64(cg, panels * GEMM_PANEL * lanes), tail, last);
  for_end(cg, &ib);
}

/* Eight rows at a time: per column, the eight values gathered into one
 * vector and stored contiguous; the rows left over one at a time. */
static void transpose_gather(Cg *cg, LLVMValueRef dst, long long ldd, LLVMValueRef src,
                             long long lds, long long rows, LLVMValueRef cols) {
  enum { R = 8 };
  LLVMTypeRef vt = LLVMVectorType(cg->f32, R);
  if (rows >= R) {
    Loop i = loop_begin(cg, ci64(cg, rows / R));
    LLVMValueRef i0 = LLVMBuildMul(cg->b, i.i, ci64(cg, R), "");
    LLVMValueRef s0 = fptr(cg, src, LLVMBuildMul(cg->b, i0, ci64(cg, lds), ""));
    Loop j = loop_begin(cg, cols);
    LLVMValueRef v = LLVMGetUndef(vt);
    for (int r = 0; r < R; r++)
      v = LLVMBuildInsertElement(cg->b, v, load(cg, s0, LLVMBuildAdd(cg->b, j.i, ci64(cg, r * lds), "")),
                                 LLVMConstInt(cg->i32, (unsigned long long)r, 0), "");
    vstore(cg, v, fptr(cg, dst, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, j.i, ci64(cg, ldd), ""), i0, "")));
    loop_end(cg, &j);
    loop_end(cg, &i);
  }
  for (long long r = rows - rows % R; r < rows; r++) {
    Loop j = loop_begin(cg, cols);
    store(cg, load(cg, src, LLVMBuildAdd(cg->b, j.i, ci64(cg, r * lds), "")), dst,
          LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, j.i, ci64(cg, ldd), ""), ci64(cg, r), ""));
    loop_end(cg, &j);
  }
}

/* A 16 x 16 block in registers: sixteen rows loaded, four rounds of
 * two-vector shuffles (round d swaps bit d of the row and column indices:
 * rows i and i + d exchange their off-diagonal d x d blocks), sixteen
 * columns stored, whole 64-byte lines both ways (nontemporal: stored with
 * !nontemporal, dst 64-byte aligned and ldd a multiple of 16). */
static void transpose_block(Cg *cg, LLVMValueRef dst, long long ldd, LLVMValueRef src, long long lds,
                            bool nontemporal) {
  enum { R = 16 };
  LLVMTypeRef vt = LLVMVectorType(cg->f32, R);
  LLVMValueRef v[R];
  for (int r = 0; r < R; r++)
    v[r] = vload(cg, vt, fptr(cg, src, ci64(cg, r * lds)));
  for (int d = 1; d < R; d *= 2) {
    LLVMValueRef lo[R], hi[R];
    for (int c = 0; c < R; c++) {
      lo[c] = LLVMConstInt(cg->i32, (unsigned long long)(c & d ? R + c - d : c), 0);
      hi[c] = LLVMConstInt(cg->i32, (unsigned long long)(c & d ? R + c : c + d), 0);
    }
    LLVMValueRef mlo = LLVMConstVector(lo, R), mhi = LLVMConstVector(hi, R);
    for (int i = 0; i < R; i++) {
      if (i & d)
        continue;
      LLVMValueRef a = v[i], b = v[i + d];
      v[i] = LLVMBuildShuffleVector(cg->b, a, b, mlo, "");
      v[i + d] = LLVMBuildShuffleVector(cg->b, a, b, mhi, "");
    }
  }
  LLVMValueRef nt = NULL;
  if (nontemporal) {
    LLVMMetadataRef one = LLVMValueAsMetadata(LLVMConstInt(cg->i32, 1, 0));
    nt = LLVMMetadataAsValue(cg->ctx, LLVMMDNodeInContext2(cg->ctx, &one, 1));
  }
  for (int c = 0; c < R; c++) {
    LLVMValueRef st = LLVMBuildStore(cg->b, v[c], fptr(cg, dst, ci64(cg, c * ldd)));
    LLVMSetAlignment(st, nt ? 64 : 4);
    if (nt)
      LLVMSetMetadata(st, LLVMGetMDKindIDInContext(cg->ctx, "nontemporal", 11), nt);
  }
}

/* dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: in 16 x 16
 * blocks (transpose_block), the rows and columns those leave over by
 * gathering (transpose_gather). */
void transpose(Cg *cg, LLVMValueRef dst, long long ldd, LLVMValueRef src, long long lds,
               long long rows, LLVMValueRef cols, bool nontemporal) {
  enum { R = 16 };
  LLVMValueRef full = ci64(cg, 0); /* columns in blocks */
  if (rows >= R) {
    full = LLVMBuildAnd(cg->b, cols, ci64(cg, -R), "");
    Loop jb = for_begin(cg, LLVMBuildSDiv(cg->b, cols, ci64(cg, R), ""));
    LLVMValueRef j0 = LLVMBuildMul(cg->b, jb.i, ci64(cg, R), "");
    Loop ib = loop_begin(cg, ci64(cg, rows / R));
    LLVMValueRef i0 = LLVMBuildMul(cg->b, ib.i, ci64(cg, R), "");
    transpose_block(cg, fptr(cg, dst, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, j0, ci64(cg, ldd), ""), i0, "")), ldd,
                    fptr(cg, src, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, i0, ci64(cg, lds), ""), j0, "")), lds,
                    nontemporal && ldd % R == 0);
    loop_end(cg, &ib);
    long long r0 = rows - rows % R; /* the rows left over, of these columns */
    if (r0 < rows)
      transpose_gather(cg, fptr(cg, dst, LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, j0, ci64(cg, ldd), ""), ci64(cg, r0), "")),
                       ldd, fptr(cg, src, LLVMBuildAdd(cg->b, j0, ci64(cg, r0 * lds), "")), lds, rows - r0,
                       ci64(cg, R));
    for_end(cg, &jb);
  }
  /* the columns left over, every row */
  LLVMValueRef left = LLVMBuildSub(cg->b, cols, full, "");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "tcols");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, "tdone");
  LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGT, left, ci64(cg, 0), ""), body, done);
  LLVMPositionBuilderAtEnd(cg->b, body);
  transpose_gather(cg, fptr(cg, dst, LLVMBuildMul(cg->b, full, ci64(cg, ldd), "")), ldd, fptr(cg, src, full),
                   lds, rows, left);
  LLVMBuildBr(cg->b, done);
  LLVMPositionBuilderAtEnd(cg->b, done);
}

/* ------------------------------------------------- baked values (AOT) */

void quantize_row(const float *w, size_t n, int8_t *q, float *scale) {
  float m = 0;
  for (size_t k = 0; k < n; k++)
    m = fmaxf(m, fabsf(w[k]));
  *scale = m / 127;
  for (size_t k = 0; k < n; k++) {
    long v = m > 0 ? lrintf(w[k] / *scale) : 0;
    q[k] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
  }
}

bool param_quantized(const Graph *g, int p) {
  for (int id = 0; id < g->nnodes; id++) {
    const Node *n = &g->nodes[id];
    const Node *w = n->op == OP_MATVEC ? &g->nodes[n->in[0]] : NULL;
    if (w && w->op == OP_LOAD && w->b == SLOT_VALUE && w->a == p)
      return true;
  }
  return false;
}

void quantized_values(const Graph *g, const float *values, float *out) {
  if (out != values)
    memcpy(out, values, g->nfloats * sizeof *out);
  for (int p = 0; p < g->nparams; p++) {
    if (!param_quantized(g, p))
      continue;
    Type t = g->params[p].type;
    size_t M = (size_t)t.dim[0], ld = (size_t)t.dim[1];
    int8_t *q = xmalloc(ld);
    for (size_t r = 0; r < M; r++) {
      float s, *row = out + g->params[p].offset + r * ld;
      quantize_row(row, ld, q, &s);
      for (size_t k = 0; k < ld; k++)
        row[k] = (float)q[k] * s;
    }
    free(q);
  }
}

/* A private constant of the module, 64-byte aligned, named `name`. */
static LLVMValueRef constant(Cg *cg, LLVMTypeRef elem, LLVMValueRef *vals, size_t n, const char *name) {
  LLVMValueRef gv = LLVMAddGlobal(cg->mod, LLVMArrayType2(elem, n), name);
  LLVMSetInitializer(gv, LLVMConstArray2(elem, vals, n));
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetAlignment(gv, 64);
  return gv;
}

static LLVMValueRef f32_constant(Cg *cg, const float *v, size_t n, const char *name) {
  LLVMValueRef *vals = xmalloc((n ? n : 1) * sizeof *vals);
  for (size_t i = 0; i < n; i++)
    vals[i] = LLVMConstReal(cg->f32, v[i]);
  LLVMValueRef gv = constant(cg, cg->f32, vals, n, name);
  free(vals);
  return gv;
}

static LLVMValueRef i8_constant(Cg *cg, const int8_t *v, size_t n, const char *name) {
  LLVMValueRef *vals = xmalloc((n ? n : 1) * sizeof *vals);
  for (size_t i = 0; i < n; i++)
    vals[i] = LLVMConstInt(cg->i8, (unsigned long long)(long long)v[i], 1);
  LLVMValueRef gv = constant(cg, cg->i8, vals, n, name);
  free(vals);
  return gv;
}

LLVMValueRef baked_param(Cg *cg, const Baked *bk, int p) {
  const Graph *g = bk->g;
  char name[64];
  snprintf(name, sizeof name, "rnnc.values.%d", p);
  LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
  return gv ? gv : f32_constant(cg, bk->values + g->params[p].offset, type_numel(g->params[p].type), name);
}

/* Parameter p's rows quantized (malloc'd: M * ld int8, then M floats). */
static int8_t *quantize_param(const Baked *bk, int p, float **scales) {
  Type t = bk->g->params[p].type;
  size_t M = (size_t)t.dim[0], ld = (size_t)t.dim[1];
  int8_t *q = xmalloc(M * ld);
  *scales = xmalloc(M * sizeof **scales);
  for (size_t r = 0; r < M; r++)
    quantize_row(bk->values + bk->g->params[p].offset + r * ld, ld, q + r * ld, *scales + r);
  return q;
}

/* Parameter p's M row scales, made once. */
static LLVMValueRef baked_scales(Cg *cg, const Baked *bk, int p) {
  char name[64];
  snprintf(name, sizeof name, "rnnc.scale.%d", p);
  LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
  if (!gv) {
    float *s;
    free(quantize_param(bk, p, &s));
    gv = f32_constant(cg, s, (size_t)bk->g->params[p].type.dim[0], name);
    free(s);
  }
  return gv;
}

LLVMValueRef baked_q8(Cg *cg, const Baked *bk, int p, int k0, int n, LLVMValueRef *scale) {
  char name[96];
  snprintf(name, sizeof name, "rnnc.q8.%d.%d.%d", p, k0, n);
  LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
  if (!gv) {
    float *s;
    int8_t *q = quantize_param(bk, p, &s);
    size_t M = (size_t)bk->g->params[p].type.dim[0], ld = (size_t)bk->g->params[p].type.dim[1];
    for (size_t r = 0; r < M; r++) /* the slice's rows, packed */
      memmove(q + r * (size_t)n, q + r * ld + (size_t)k0, (size_t)n);
    gv = i8_constant(cg, q, M * (size_t)n, name);
    free(q);
    free(s);
  }
  *scale = baked_scales(cg, bk, p);
  return gv;
}

LLVMValueRef baked_q8_offsets(Cg *cg, const Baked *bk, int p, int k0, int n) {
  char name[96];
  snprintf(name, sizeof name, "rnnc.q8sum.%d.%d.%d", p, k0, n);
  LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
  if (gv)
    return gv;
  float *s;
  int8_t *q = quantize_param(bk, p, &s);
  size_t M = (size_t)bk->g->params[p].type.dim[0], ld = (size_t)bk->g->params[p].type.dim[1];
  LLVMValueRef *vals = xmalloc((M ? M : 1) * sizeof *vals);
  for (size_t r = 0; r < M; r++) {
    long long sum = 0;
    for (size_t k = 0; k < (size_t)n; k++)
      sum += q[r * ld + (size_t)k0 + k];
    vals[r] = LLVMConstInt(cg->i32, (unsigned long long)(128 * sum), 1);
  }
  gv = constant(cg, cg->i32, vals, M, name);
  free(vals);
  free(q);
  free(s);
  return gv;
}

LLVMValueRef baked_blocked(Cg *cg, const Baked *bk, int p, int k0, int n) {
  Type t = bk->g->params[p].type;
  size_t M = (size_t)t.dim[0], ld = (size_t)t.dim[1], V = (size_t)mv_lanes(cg), N = (size_t)n;
  assert(!bk->quantize && M % BLOCK == 0 && N % BLOCK == 0);
  char name[96];
  snprintf(name, sizeof name, "rnnc.blocked.%d.%d.%d.%zu", p, k0, n, V);
  LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
  if (gv)
    return gv;
  const float *v = bk->values + bk->g->params[p].offset;
  float *b = xmalloc(M * N * sizeof *b);
  for (size_t r = 0; r < M; r++)
    for (size_t k = 0; k < N; k++)
      b[r / BLOCK * BLOCK * N + k / V * BLOCK * V + r % BLOCK * V + k % V] = v[r * ld + (size_t)k0 + k];
  gv = f32_constant(cg, b, M * N, name);
  free(b);
  return gv;
}

LLVMValueRef baked_columns(Cg *cg, const Baked *bk, int p, int k0, int n, LLVMValueRef *scale) {
  Type t = bk->g->params[p].type;
  size_t M = (size_t)t.dim[0], ld = (size_t)t.dim[1];
  char name[96];
  snprintf(name, sizeof name, "rnnc.columns.%d.%d.%d", p, k0, n);
  *scale = bk->quantize ? baked_scales(cg, bk, p) : NULL;
  LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
  if (gv)
    return gv;
  if (!bk->quantize) {
    const float *v = bk->values + bk->g->params[p].offset;
    float *cols = xmalloc((size_t)n * M * sizeof *cols);
    for (size_t j = 0; j < (size_t)n; j++)
      for (size_t r = 0; r < M; r++)
        cols[j * M + r] = v[r * ld + (size_t)k0 + j];
    gv = f32_constant(cg, cols, (size_t)n * M, name);
    free(cols);
    return gv;
  }
  float *s;
  int8_t *q = quantize_param(bk, p, &s), *cols = xmalloc((size_t)n * M);
  for (size_t j = 0; j < (size_t)n; j++)
    for (size_t r = 0; r < M; r++)
      cols[j * M + r] = q[r * ld + (size_t)k0 + j];
  gv = i8_constant(cg, cols, (size_t)n * M, name);
  free(q);
  free(s);
  free(cols);
  return gv;
}

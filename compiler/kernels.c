/* kernels.c: the product micro-kernels codegen calls, and the builders
 * they share with llvm.c (cg.h).
 *
 * Batch 1 (matrix-vector; BLOCK = 16 floats per vector on every target):
 *   matvec_block_n   y = W x for 16 rows, one to four vectors x at a time
 *   matvec_t_block   y = W^T u for one to four vectors u, y in registers
 *   outer_seq_rows   a weight or bias gradient summed over a sequence
 *   step_tuples      a sequence's steps four, two, then one at a time
 *
 * Each emits IR at cg->b's position into cg->fn. */
#include <stdlib.h>

#include "cg.h"
#include "mathfn.h"

void cg_init(Cg *cg, LLVMModuleRef m) {
  memset(cg, 0, sizeof *cg);
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

LLVMValueRef acc_new(Cg *cg, LLVMValueRef init) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(cg->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(cg->b, first);
  else
    LLVMPositionBuilderAtEnd(cg->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(cg->b, cg->f32, "acc");
  LLVMPositionBuilderAtEnd(cg->b, here);
  LLVMBuildStore(cg->b, init, a);
  return a;
}

LLVMValueRef vacc_new(Cg *cg, LLVMTypeRef vt) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMPositionBuilderBefore(cg->b, LLVMGetFirstInstruction(LLVMGetEntryBasicBlock(cg->fn)));
  LLVMValueRef a = LLVMBuildAlloca(cg->b, vt, "vacc");
  LLVMPositionBuilderAtEnd(cg->b, here);
  return a;
}

LLVMValueRef splat(Cg *cg, LLVMValueRef x) {
  LLVMTypeRef vt = LLVMVectorType(cg->f32, BLOCK);
  LLVMValueRef v = LLVMBuildInsertElement(cg->b, LLVMGetUndef(vt), x, LLVMConstInt(cg->i32, 0, 0), "");
  return LLVMBuildShuffleVector(cg->b, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(cg->i32, BLOCK)), "");
}

/* ------------------------------------------------ batch-1 products */

LLVMValueRef cg_elem(Cg *cg, Op op, LLVMValueRef a, LLVMValueRef b) {
  switch (op) {
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

static LLVMValueRef shuffle(Cg *cg, LLVMValueRef x, LLVMValueRef y, const int *idx) {
  LLVMValueRef m[BLOCK];
  for (int i = 0; i < BLOCK; i++)
    m[i] = LLVMConstInt(cg->i32, (unsigned long long)idx[i], 0);
  return LLVMBuildShuffleVector(cg->b, x, y, LLVMConstVector(m, BLOCK), "");
}

/* ys[i][0..R) = W rows [0, R) from w (stride ld floats) times xs[i][0..nv),
 * for nx = 16 / R vectors x: 16 vector accumulators over k, accumulator
 * i * R + j for row j and vector i, so each load of a row of W serves nx
 * products; then one transposing reduction tree turns the 16 accumulators
 * into the 16 results in 15 shuffle pairs and adds, instead of a
 * horizontal sum per row (which took 40% of gru.nn's inference kernel). */
void matvec_block_n(Cg *cg, LLVMValueRef w, long long ld, LLVMValueRef *xs, int nx, long long nv,
                    LLVMValueRef *ys) {
  int R = BLOCK / nx;
  LLVMTypeRef vt = LLVMVectorType(cg->f32, BLOCK);
  LLVMValueRef acc[BLOCK];
  LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(cg->fn);
  LLVMPositionBuilderBefore(cg->b, LLVMGetFirstInstruction(entry));
  for (int j = 0; j < BLOCK; j++)
    acc[j] = LLVMBuildAlloca(cg->b, vt, "vacc");
  LLVMPositionBuilderAtEnd(cg->b, here);
  for (int j = 0; j < BLOCK; j++)
    LLVMBuildStore(cg->b, LLVMConstNull(vt), acc[j]);
  Loop k = loop_begin(cg, ci64(cg, nv / BLOCK));
  LLVMValueRef k0 = LLVMBuildMul(cg->b, k.i, ci64(cg, BLOCK), "");
  LLVMValueRef xv[BLOCK];
  for (int i = 0; i < nx; i++)
    xv[i] = vload(cg, vt, fptr(cg, xs[i], k0));
  for (int j = 0; j < R; j++) {
    LLVMValueRef wv = vload(cg, vt, fptr(cg, w, LLVMBuildAdd(cg->b, k0, ci64(cg, j * ld), "")));
    for (int i = 0; i < nx; i++) {
      LLVMValueRef s = fadd(cg, LLVMBuildLoad2(cg->b, vt, acc[i * R + j], ""), fmul(cg, wv, xv[i]));
      LLVMBuildStore(cg->b, s, acc[i * R + j]);
    }
  }
  loop_end(cg, &k);
  /* The tree: level L pairs vectors whose lanes hold 16 >> L partial sums
   * of 1 << L rows each, and halves the partials. */
  LLVMValueRef v[BLOCK];
  for (int j = 0; j < BLOCK; j++)
    v[j] = LLVMBuildLoad2(cg->b, vt, acc[j], "");
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
      v[p] = fadd(cg, shuffle(cg, v[2 * p], v[2 * p + 1], lo), shuffle(cg, v[2 * p], v[2 * p + 1], hi));
    count /= 2;
  }
  if (nx == 1) {
    vstore(cg, v[0], ys[0]);
    return;
  }
  for (int i = 0; i < nx; i++) {
    LLVMValueRef m[BLOCK];
    for (int j = 0; j < R; j++)
      m[j] = LLVMConstInt(cg->i32, (unsigned long long)(i * R + j), 0);
    LLVMValueRef part =
        LLVMBuildShuffleVector(cg->b, v[0], LLVMGetUndef(vt), LLVMConstVector(m, (unsigned)R), "");
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
      x = fmul(cg, splat(cg, load(cg, u, ui)), vv);
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
      ur[q] = splat(cg, load(cg, us[q], r.i));
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

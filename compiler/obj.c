/* obj.c: ahead-of-time inference. One LLVM module holds the forward
 * kernel of an inference graph (llvm.c) with the trained weights baked in
 * as a read-only constant, and C-callable wrappers generated as IR:
 *
 *   int P_forward(const int32_t *chars, int32_t len, float *logits)
 *   int P_forward_batch(const int32_t *idx, const int32_t *lens, int32_t n,
 *                       float *logits)
 *   int P_predict(const char *ascii_name, float *probs)
 *   extern const char *const P_labels[classes]
 *
 * The module is optimized for the chosen target and emitted as one
 * relocatable (PIC) object; obj_header writes the C header that declares
 * it. Nothing in the object calls into LLVM or rnnc, and the wrappers use
 * no libm (exp is inline IR, mathfn.c): at most the memcpy/memset/memmove
 * that LLVM may emit for block copies.
 *
 * Decisions the header documents:
 * - Noise nodes (a random initial state, as rnn.nn's kaiming_uniform h0)
 *   read a constant zero buffer: the kernel scales U(-1, 1) draws by the
 *   bound, so every noise value is 0, the expected value of the symmetric
 *   uniform, and P_forward is deterministic.
 * - The kernel's scratch is a variable-size alloca in P_forward, sized for
 *   the actual length (scratch_fixed + len * scratch_per_t floats): the
 *   functions keep no state between calls and are reentrant and
 *   thread-safe; the price is stack space, bounded by OBJ_MAX_LEN.
 * - P_forward_batch runs batch.c's kernel (products as GEMMs over up to
 *   OBJ_BATCH names) with the weights' transposed copies as constants too
 *   (the object's float weights twice), on a stack scratch sized for its
 *   input; on bare metal, and where batch.c makes no kernel (int8
 *   weights, a graph it cannot batch), it calls P_forward for each name.
 * - With ObjOptions.quantize the products' matrices are int8 rows with a
 *   float scale each (kernels.c's baked_q8); everything else stays float.
 *   On a CPU with int8 dot products (target_int8_dot: AArch64's sdot,
 *   x86's vpdpbusd) the products with a float input quantize it too and
 *   sum int8 x int8 in int32 (llvm.c's int8_product); elsewhere they
 *   convert the weights and sum in float.
 *
 * require: g is a verified inference graph after graph_passes(g, false,
 * PASSES_ALL): a forward kernel that reads only the parameter values. */
#include <llvm-c/Core.h>
#include <llvm-c/Object.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistr.h>

#include "mathfn.h"
#include "rnnc.h"

/* The IR builder and the types the wrappers use. */
typedef struct W {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef f32, i16, i32, i64, i8, pty;
  LLVMValueRef fn;    /* the function being built */
  bool unwind_tables; /* for an OS: see c_function_attrs */
} W;

static LLVMValueRef c32(W *w, long long x) { return LLVMConstInt(w->i32, (unsigned long long)x, 1); }
static LLVMValueRef c64(W *w, long long x) { return LLVMConstInt(w->i64, (unsigned long long)x, 1); }

static LLVMBasicBlockRef block(W *w, const char *name) {
  return LLVMAppendBasicBlockInContext(w->ctx, w->fn, name);
}

static void at(W *w, LLVMBasicBlockRef bb) { LLVMPositionBuilderAtEnd(w->b, bb); }

static void fn_attr(W *w, LLVMValueRef fn, const char *name, uint64_t val) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(w->ctx, kind, val));
}

static void param_attr(W *w, LLVMValueRef fn, unsigned param, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, param + 1, LLVMCreateEnumAttribute(w->ctx, kind, 0));
}

/* No exceptions pass through; asynchronous unwind tables (uwtable=2) as a
 * C compiler makes them, so debuggers and profilers can walk the stack,
 * but not on bare metal: there, ARM's tables need libgcc's unwinder
 * (__aeabi_unwind_cpp_pr0). */
static void c_function_attrs(W *w, LLVMValueRef fn) {
  fn_attr(w, fn, "nounwind", 0);
  if (w->unwind_tables)
    fn_attr(w, fn, "uwtable", 2);
}

static LLVMValueRef private_const(W *w, LLVMTypeRef ty, LLVMValueRef init, const char *name) {
  LLVMValueRef gv = LLVMAddGlobal(w->mod, ty, name);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
  return gv;
}

/* A float slot in the entry block (mem2reg makes it a register). */
static LLVMValueRef slot(W *w, LLVMTypeRef ty, const char *name) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(w->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(w->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(w->b, first);
  else
    at(w, entry);
  LLVMValueRef a = LLVMBuildAlloca(w->b, ty, name);
  at(w, here);
  return a;
}

/* for (i = 0; i < n; i++) with n >= 1 (a do-while): returns i (i64) with
 * the builder in the body; loop_close ends it. */
typedef struct Loop {
  LLVMBasicBlockRef head;
  LLVMValueRef i, n;
} Loop;

static Loop loop_open(W *w, LLVMValueRef n, const char *name) {
  Loop l = {.n = n};
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(w->b);
  l.head = block(w, name);
  LLVMBuildBr(w->b, l.head);
  at(w, l.head);
  l.i = LLVMBuildPhi(w->b, w->i64, "i");
  LLVMValueRef zero = c64(w, 0);
  LLVMAddIncoming(l.i, &zero, &pre, 1);
  return l;
}

static void loop_close(W *w, Loop *l) {
  LLVMValueRef next = LLVMBuildNUWAdd(w->b, l->i, c64(w, 1), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(w->b);
  LLVMAddIncoming(l->i, &next, &latch, 1);
  LLVMBasicBlockRef exit = block(w, "done");
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntSLT, next, l->n, ""), l->head, exit);
  at(w, exit);
}

static LLVMValueRef fptr(W *w, LLVMValueRef base, LLVMValueRef i) {
  return LLVMBuildInBoundsGEP2(w->b, w->f32, base, &i, 1, "");
}

/* Loads element i of an i32 or i64 array (i an i64). */
static LLVMValueRef load_at(W *w, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef i) {
  return LLVMBuildLoad2(w->b, ty, LLVMBuildInBoundsGEP2(w->b, ty, base, &i, 1, ""), "");
}

static void store_at(W *w, LLVMTypeRef ty, LLVMValueRef v, LLVMValueRef base, LLVMValueRef i) {
  LLVMBuildStore(w->b, v, LLVMBuildInBoundsGEP2(w->b, ty, base, &i, 1, ""));
}

static LLVMValueRef load_slot(W *w, LLVMTypeRef ty, LLVMValueRef s) { return LLVMBuildLoad2(w->b, ty, s, ""); }

/* Continues in a new block when cond holds, else returns rc. */
static void return_unless(W *w, LLVMValueRef cond, int rc) {
  LLVMBasicBlockRef ok = block(w, "ok"), bad = block(w, "bad");
  LLVMBuildCondBr(w->b, cond, ok, bad);
  at(w, bad);
  LLVMBuildRet(w->b, c32(w, rc));
  at(w, ok);
}

/* P_forward: checks the pointers, the length and every index, then runs
 * the kernel on a stack scratch sized for len, with the zero noise
 * buffer. Returns 0, 1 (len outside [1, max_len]), 2 (an index outside
 * [0, vocab)) or 3 (chars or logits NULL). */
static LLVMValueRef build_forward(W *w, const Graph *g, const char *prefix, LLVMValueRef kernel,
                                  LLVMTypeRef kty, LLVMValueRef noise, const KernelAbi *abi) {
  LLVMTypeRef params[3] = {w->pty, w->i32, w->pty};
  LLVMTypeRef fty = LLVMFunctionType(w->i32, params, 3, 0);
  char name[128];
  snprintf(name, sizeof name, "%s_forward", prefix);
  w->fn = LLVMAddFunction(w->mod, name, fty);
  c_function_attrs(w, w->fn);
  /* One copy of the kernel, here: P_predict calls P_forward. */
  fn_attr(w, w->fn, "noinline", 0);
  param_attr(w, w->fn, 0, "nocapture");
  param_attr(w, w->fn, 0, "readonly");
  param_attr(w, w->fn, 2, "nocapture");
  param_attr(w, w->fn, 2, "writeonly");
  LLVMValueRef chars = LLVMGetParam(w->fn, 0), len = LLVMGetParam(w->fn, 1),
               logits = LLVMGetParam(w->fn, 2);
  LLVMSetValueName2(chars, "chars", 5);
  LLVMSetValueName2(len, "len", 3);
  LLVMSetValueName2(logits, "logits", 6);

  LLVMBasicBlockRef entry = block(w, "entry"), bad_len = block(w, "bad_len"),
                    bad_index = block(w, "bad_index"), bad_ptr = block(w, "bad_ptr"),
                    lengths = block(w, "lengths");
  at(w, entry);
  LLVMValueRef out = slot(w, LLVMArrayType2(w->f32, (uint64_t)g->classes + 2), "out");
  LLVMBuildCondBr(w->b,
                  LLVMBuildOr(w->b, LLVMBuildIsNull(w->b, chars, ""),
                              LLVMBuildIsNull(w->b, logits, ""), "null"),
                  bad_ptr, lengths);
  at(w, lengths);
  LLVMValueRef len_ok =
      LLVMBuildAnd(w->b, LLVMBuildICmp(w->b, LLVMIntSGE, len, c32(w, 1), ""),
                   LLVMBuildICmp(w->b, LLVMIntSLE, len, c32(w, OBJ_MAX_LEN), ""), "len_ok");
  LLVMBasicBlockRef check = block(w, "check");
  LLVMBuildCondBr(w->b, len_ok, check, bad_len);
  at(w, check);
  LLVMValueRef n = LLVMBuildZExt(w->b, len, w->i64, "n");
  Loop l = loop_open(w, n, "check_index");
  LLVMValueRef c = LLVMBuildLoad2(w->b, w->i32, LLVMBuildInBoundsGEP2(w->b, w->i32, chars, &l.i, 1, ""), "c");
  /* Unsigned: a negative index is out of range too. */
  LLVMValueRef c_ok = LLVMBuildICmp(w->b, LLVMIntULT, c, c32(w, g->vocab), "");
  LLVMBasicBlockRef next = block(w, "next");
  LLVMBuildCondBr(w->b, c_ok, next, bad_index);
  at(w, next);
  loop_close(w, &l);

  /* scratch: abi->scratch_fixed + len * abi->scratch_per_t floats, with
   * tmax = len; 64-byte aligned as the runtime allocates it. */
  LLVMValueRef nscratch =
      LLVMBuildNUWAdd(w->b, c64(w, (long long)abi->scratch_fixed),
                      LLVMBuildNUWMul(w->b, n, c64(w, (long long)abi->scratch_per_t), ""), "");
  LLVMValueRef scratch = LLVMBuildArrayAlloca(w->b, w->f32, nscratch, "scratch");
  LLVMSetAlignment(scratch, 64);
  /* the kernel reads its weights from the module's constants, not from
   * the state argument */
  LLVMValueRef args[9] = {LLVMConstNull(w->pty), chars, len, c32(w, 0), noise,
                          scratch, len, LLVMConstReal(w->f32, 0), out};
  LLVMBuildCall2(w->b, kty, kernel, args, 9, "");
  LLVMBuildMemCpy(w->b, logits, 4, out, 4, c64(w, 4LL * g->classes));
  LLVMBuildRet(w->b, c32(w, 0));
  at(w, bad_len);
  LLVMBuildRet(w->b, c32(w, 1));
  at(w, bad_index);
  LLVMBuildRet(w->b, c32(w, 2));
  at(w, bad_ptr);
  LLVMBuildRet(w->b, c32(w, 3));
  return w->fn;
}

/* P_forward_batch(idx, lens, n, logits): names i < n of lens[i] indices
 * each, one after the other in idx; logits[i * classes ..] gets name i's.
 * Checks everything before it writes anything: 3 for a NULL pointer or
 * n < 1, 1 for a length outside [1, max_len], 2 for an index outside
 * [0, vocab). Then, with a batched kernel (batch.c; kty NULL: none), runs
 * the names OBJ_BATCH at a time: sorted by length, longest first
 * (stable), packed as the kernel wants them, on one stack scratch sized
 * for the chunk with the most characters; without one, calls P_forward
 * for each name. */
static void build_forward_batch(W *w, const Graph *g, const char *prefix, LLVMValueRef forward,
                                LLVMValueRef kernel, LLVMTypeRef kty, LLVMValueRef noise,
                                const KernelAbi *abi) {
  LLVMTypeRef params[4] = {w->pty, w->pty, w->i32, w->pty};
  char name[128];
  snprintf(name, sizeof name, "%s_forward_batch", prefix);
  w->fn = LLVMAddFunction(w->mod, name, LLVMFunctionType(w->i32, params, 4, 0));
  c_function_attrs(w, w->fn);
  param_attr(w, w->fn, 0, "nocapture");
  param_attr(w, w->fn, 0, "readonly");
  param_attr(w, w->fn, 1, "nocapture");
  param_attr(w, w->fn, 1, "readonly");
  param_attr(w, w->fn, 3, "nocapture");
  LLVMValueRef idx = LLVMGetParam(w->fn, 0), lens = LLVMGetParam(w->fn, 1),
               n32 = LLVMGetParam(w->fn, 2), logits = LLVMGetParam(w->fn, 3);
  LLVMSetValueName2(idx, "idx", 3);
  LLVMSetValueName2(lens, "lens", 4);
  LLVMSetValueName2(n32, "n", 1);
  LLVMSetValueName2(logits, "logits", 6);
  const long long C = g->classes, CH = OBJ_BATCH, L = OBJ_MAX_LEN;
  at(w, block(w, "entry"));
  LLVMValueRef total = slot(w, w->i64, "total"), pos = slot(w, w->i64, "pos");
  LLVMValueRef some_null = LLVMBuildOr(
      w->b, LLVMBuildOr(w->b, LLVMBuildIsNull(w->b, idx, ""), LLVMBuildIsNull(w->b, lens, ""), ""),
      LLVMBuildIsNull(w->b, logits, ""), "");
  return_unless(w, LLVMBuildAnd(w->b, LLVMBuildNot(w->b, some_null, ""),
                                LLVMBuildICmp(w->b, LLVMIntSGE, n32, c32(w, 1), ""), ""),
                3);
  LLVMValueRef n = LLVMBuildZExt(w->b, n32, w->i64, "n");
  /* the lengths, and the characters of the most characters in one chunk
   * (for the scratch) */
  LLVMValueRef run = slot(w, w->i64, "run"), most = slot(w, w->i64, "most");
  LLVMBuildStore(w->b, c64(w, 0), total);
  LLVMBuildStore(w->b, c64(w, 0), run);
  LLVMBuildStore(w->b, c64(w, 0), most);
  Loop l = loop_open(w, n, "check_len");
  LLVMValueRef len = load_at(w, w->i32, lens, l.i);
  return_unless(w, LLVMBuildAnd(w->b, LLVMBuildICmp(w->b, LLVMIntSGE, len, c32(w, 1), ""),
                                LLVMBuildICmp(w->b, LLVMIntSLE, len, c32(w, L), ""), ""),
                1);
  LLVMValueRef len64 = LLVMBuildZExt(w->b, len, w->i64, "");
  LLVMBuildStore(w->b, LLVMBuildNUWAdd(w->b, load_slot(w, w->i64, total), len64, ""), total);
  LLVMValueRef r = LLVMBuildNUWAdd(w->b, load_slot(w, w->i64, run), len64, "");
  LLVMValueRef m = load_slot(w, w->i64, most);
  LLVMBuildStore(w->b, LLVMBuildSelect(w->b, LLVMBuildICmp(w->b, LLVMIntUGT, r, m, ""), r, m, ""), most);
  LLVMValueRef chunk_end = LLVMBuildICmp(w->b, LLVMIntEQ, LLVMBuildURem(w->b, l.i, c64(w, CH), ""),
                                         c64(w, CH - 1), "");
  LLVMBuildStore(w->b, LLVMBuildSelect(w->b, chunk_end, c64(w, 0), r, ""), run);
  loop_close(w, &l);
  l = loop_open(w, load_slot(w, w->i64, total), "check_index");
  /* unsigned: a negative index is out of range too */
  return_unless(w, LLVMBuildICmp(w->b, LLVMIntULT, load_at(w, w->i32, idx, l.i), c32(w, g->vocab), ""),
                2);
  loop_close(w, &l);
  LLVMBuildStore(w->b, c64(w, 0), pos);

  if (!kernel) { /* one name at a time */
    l = loop_open(w, n, "name");
    LLVMValueRef s = load_slot(w, w->i64, pos);
    len = load_at(w, w->i32, lens, l.i);
    LLVMValueRef args[3] = {LLVMBuildInBoundsGEP2(w->b, w->i32, idx, &s, 1, ""), len,
                            fptr(w, logits, LLVMBuildNUWMul(w->b, l.i, c64(w, C), ""))};
    LLVMBuildCall2(w->b, LLVMGlobalGetValueType(forward), forward, args, 3, "");
    LLVMBuildStore(w->b, LLVMBuildNUWAdd(w->b, s, LLVMBuildZExt(w->b, len, w->i64, ""), ""), pos);
    loop_close(w, &l);
    LLVMBuildRet(w->b, c32(w, 0));
    return;
  }

  /* A chunk's names: start[b] in idx, order[b] = the chunk's b-th longest,
   * slens[b] its length; bs, off and chars as batch.c packs them. */
  LLVMValueRef start = slot(w, LLVMArrayType2(w->i64, (uint64_t)CH), "start");
  LLVMValueRef order = slot(w, LLVMArrayType2(w->i32, (uint64_t)CH), "order");
  LLVMValueRef slens = slot(w, LLVMArrayType2(w->i32, (uint64_t)CH), "slens");
  LLVMValueRef bs = slot(w, LLVMArrayType2(w->i32, (uint64_t)L), "bs");
  LLVMValueRef off = slot(w, LLVMArrayType2(w->i32, (uint64_t)L + 1), "off");
  LLVMValueRef chars = slot(w, LLVMArrayType2(w->i32, (uint64_t)(CH * L)), "chars");
  LLVMValueRef out = slot(w, LLVMArrayType2(w->f32, (uint64_t)(CH * (C + 1))), "out");
  LLVMValueRef count = slot(w, w->i32, "count");
  /* scratch: fixed + CH * per_b + most * per_t floats, 64-byte aligned */
  LLVMValueRef nscratch = LLVMBuildNUWAdd(
      w->b, c64(w, (long long)(abi->scratch_fixed + (size_t)CH * abi->scratch_per_b)),
      LLVMBuildNUWMul(w->b, load_slot(w, w->i64, most), c64(w, (long long)abi->scratch_per_t), ""), "");
  LLVMValueRef scratch = LLVMBuildArrayAlloca(w->b, w->f32, nscratch, "scratch");
  LLVMSetAlignment(scratch, 64);

  LLVMValueRef nchunks = LLVMBuildUDiv(w->b, LLVMBuildNUWAdd(w->b, n, c64(w, CH - 1), ""), c64(w, CH), "");
  Loop k = loop_open(w, nchunks, "chunk");
  LLVMValueRef c0 = LLVMBuildNUWMul(w->b, k.i, c64(w, CH), "c0");
  LLVMValueRef left = LLVMBuildSub(w->b, n, c0, "");
  LLVMValueRef B = LLVMBuildSelect(w->b, LLVMBuildICmp(w->b, LLVMIntULT, left, c64(w, CH), ""), left,
                                   c64(w, CH), "B");
  Loop b = loop_open(w, B, "starts");
  LLVMValueRef s = load_slot(w, w->i64, pos);
  store_at(w, w->i64, s, start, b.i);
  len = load_at(w, w->i32, lens, LLVMBuildNUWAdd(w->b, c0, b.i, ""));
  LLVMBuildStore(w->b, LLVMBuildNUWAdd(w->b, s, LLVMBuildZExt(w->b, len, w->i64, ""), ""), pos);
  loop_close(w, &b);
  /* sort by length, longest first: for len = L .. 1, the names of that
   * length in order; bs[len - 1] = the names at least that long */
  LLVMBuildStore(w->b, c32(w, 0), count);
  Loop q = loop_open(w, c64(w, L), "by_length");
  LLVMValueRef want = LLVMBuildTrunc(w->b, LLVMBuildSub(w->b, c64(w, L), q.i, ""), w->i32, "want");
  b = loop_open(w, B, "pick");
  len = load_at(w, w->i32, lens, LLVMBuildNUWAdd(w->b, c0, b.i, ""));
  LLVMBasicBlockRef take = block(w, "take"), skip = block(w, "skip");
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntEQ, len, want, ""), take, skip);
  at(w, take);
  LLVMValueRef cnt = load_slot(w, w->i32, count);
  LLVMValueRef cnt64 = LLVMBuildZExt(w->b, cnt, w->i64, "");
  store_at(w, w->i32, LLVMBuildTrunc(w->b, b.i, w->i32, ""), order, cnt64);
  store_at(w, w->i32, len, slens, cnt64);
  LLVMBuildStore(w->b, LLVMBuildNUWAdd(w->b, cnt, c32(w, 1), ""), count);
  LLVMBuildBr(w->b, skip);
  at(w, skip);
  loop_close(w, &b);
  store_at(w, w->i32, load_slot(w, w->i32, count), bs, LLVMBuildSub(w->b, c64(w, L - 1), q.i, ""));
  loop_close(w, &q);
  LLVMValueRef T = load_at(w, w->i32, slens, c64(w, 0));
  LLVMValueRef T64 = LLVMBuildZExt(w->b, T, w->i64, "T");
  store_at(w, w->i32, c32(w, 0), off, c64(w, 0));
  Loop t = loop_open(w, T64, "offsets");
  store_at(w, w->i32, LLVMBuildNUWAdd(w->b, load_at(w, w->i32, off, t.i), load_at(w, w->i32, bs, t.i), ""),
           off, LLVMBuildNUWAdd(w->b, t.i, c64(w, 1), ""));
  loop_close(w, &t);
  /* chars[off[t] + b] = character t of the b-th longest */
  b = loop_open(w, B, "pack");
  LLVMValueRef name_b = LLVMBuildZExt(w->b, load_at(w, w->i32, order, b.i), w->i64, "");
  s = load_at(w, w->i64, start, name_b);
  t = loop_open(w, LLVMBuildZExt(w->b, load_at(w, w->i32, slens, b.i), w->i64, ""), "pack_t");
  LLVMValueRef ch = load_at(w, w->i32, idx, LLVMBuildNUWAdd(w->b, s, t.i, ""));
  LLVMValueRef dst = LLVMBuildNUWAdd(w->b, LLVMBuildZExt(w->b, load_at(w, w->i32, off, t.i), w->i64, ""), b.i, "");
  store_at(w, w->i32, ch, chars, dst);
  loop_close(w, &t);
  loop_close(w, &b);
  /* the kernel reads its weights and their packs from the module's
   * constants, and no targets (an inference graph) */
  LLVMValueRef args[13] = {LLVMConstNull(w->pty), LLVMConstNull(w->pty), LLVMConstNull(w->pty),
                           chars, slens, bs, off, T, LLVMBuildTrunc(w->b, B, w->i32, ""),
                           LLVMConstNull(w->pty), noise, scratch, out};
  LLVMBuildCall2(w->b, kty, kernel, args, 13, "");
  b = loop_open(w, B, "scatter");
  name_b = LLVMBuildZExt(w->b, load_at(w, w->i32, order, b.i), w->i64, "");
  LLVMBuildMemCpy(w->b, fptr(w, logits, LLVMBuildNUWMul(w->b, LLVMBuildNUWAdd(w->b, c0, name_b, ""), c64(w, C), "")), 4,
                  fptr(w, out, LLVMBuildNUWMul(w->b, b.i, c64(w, C + 1), "")), 4, c64(w, 4 * C));
  loop_close(w, &b);
  loop_close(w, &k);
  LLVMBuildRet(w->b, c32(w, 0));
}

/* P_predict: UTF-8 -> indices through the vocabulary (ASCII through a
 * byte table; a longer character decoded and looked up among the
 * vocabulary's, when it has any or an unknown slot), P_forward, argmax
 * (the first of equal maxima) and, when probs is not NULL, the softmax.
 * A character the vocabulary lacks takes its unknown slot (o->unknown >=
 * 0). Returns the class, or -1 for NULL, "", a character outside a
 * vocabulary without an unknown slot, malformed UTF-8 or a name longer
 * than max_len characters. */
static void build_predict(W *w, const Graph *g, const ObjOptions *o, LLVMValueRef forward) {
  const char *prefix = o->prefix;
  /* table[byte] = the index of ASCII character byte, or the unknown slot,
   * or -1 (the first occurrence wins); the other characters in order of
   * their index, as code points (cps) and indices (ixs). */
  LLVMValueRef tv[256];
  for (int ch = 0; ch < 256; ch++)
    tv[ch] = NULL;
  LLVMValueRef *cps = xcalloc((size_t)g->vocab + 1, sizeof *cps);
  LLVMValueRef *ixs = xcalloc((size_t)g->vocab + 1, sizeof *ixs);
  int nmulti = 0;
  for (int i = 0; i < g->vocab; i++) {
    const unsigned char *v = (const unsigned char *)o->vocab[i];
    ucs4_t c;
    if (v[0] && !v[1] && v[0] < 0x80) {
      if (!tv[v[0]])
        tv[v[0]] = LLVMConstInt(w->i16, (unsigned long long)i, 1);
    } else if (v[0] && u8_mbtouc(&c, v, strlen((const char *)v)) > 0) {
      cps[nmulti] = c32(w, (int)c);
      ixs[nmulti++] = c32(w, i);
    }
  }
  for (int ch = 0; ch < 256; ch++)
    if (!tv[ch] || ch == 0)
      tv[ch] = LLVMConstInt(w->i16, ch && o->unknown >= 0 ? (unsigned long long)o->unknown
                                                           : (unsigned long long)-1, 1);
  bool decode = nmulti > 0 || o->unknown >= 0;
  char name[128];
  snprintf(name, sizeof name, "%s_vocab_table", prefix);
  LLVMValueRef table =
      private_const(w, LLVMArrayType2(w->i16, 256), LLVMConstArray2(w->i16, tv, 256), name);
  LLVMValueRef cp_table = NULL, ix_table = NULL;
  if (nmulti) {
    snprintf(name, sizeof name, "%s_vocab_code_points", prefix);
    cp_table = private_const(w, LLVMArrayType2(w->i32, (uint64_t)nmulti),
                             LLVMConstArray2(w->i32, cps, (uint64_t)nmulti), name);
    snprintf(name, sizeof name, "%s_vocab_indices", prefix);
    ix_table = private_const(w, LLVMArrayType2(w->i32, (uint64_t)nmulti),
                             LLVMConstArray2(w->i32, ixs, (uint64_t)nmulti), name);
  }
  free(cps);
  free(ixs);

  LLVMTypeRef params[2] = {w->pty, w->pty};
  LLVMTypeRef fty = LLVMFunctionType(w->i32, params, 2, 0);
  snprintf(name, sizeof name, "%s_predict", prefix);
  w->fn = LLVMAddFunction(w->mod, name, fty);
  c_function_attrs(w, w->fn);
  param_attr(w, w->fn, 0, "nocapture");
  param_attr(w, w->fn, 0, "readonly");
  param_attr(w, w->fn, 1, "nocapture");
  LLVMValueRef text = LLVMGetParam(w->fn, 0), probs = LLVMGetParam(w->fn, 1);
  LLVMSetValueName2(text, "name", 4);
  LLVMSetValueName2(probs, "probs", 5);

  LLVMBasicBlockRef entry = block(w, "entry"), fail = block(w, "fail");
  at(w, entry);
  LLVMValueRef chars = slot(w, LLVMArrayType2(w->i32, OBJ_MAX_LEN), "chars");
  LLVMValueRef logits = slot(w, LLVMArrayType2(w->f32, (uint64_t)g->classes), "logits");
  /* i: the byte, j: the character; ix, step: the character's index and bytes */
  LLVMValueRef pi = slot(w, w->i64, "i"), pj = slot(w, w->i64, "j"), pix = slot(w, w->i32, "ix"),
               pstep = slot(w, w->i64, "step");
  LLVMValueRef zero = c64(w, 0);
  LLVMBuildStore(w->b, zero, pi);
  LLVMBuildStore(w->b, zero, pj);
  LLVMBasicBlockRef scan = block(w, "scan"), map = block(w, "map"), lookup = block(w, "lookup"),
                    ascii = block(w, "ascii"), put = block(w, "put"), end = block(w, "end"),
                    run = block(w, "run");
  LLVMBuildCondBr(w->b, LLVMBuildIsNull(w->b, text, ""), fail, scan);

  /* scan: until the NUL */
  at(w, scan);
  LLVMValueRef i = LLVMBuildLoad2(w->b, w->i64, pi, "i");
  LLVMValueRef ch = LLVMBuildLoad2(w->b, w->i8, LLVMBuildInBoundsGEP2(w->b, w->i8, text, &i, 1, ""), "ch");
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntEQ, ch, LLVMConstInt(w->i8, 0, 0), ""), end, map);
  at(w, map);
  LLVMValueRef j = LLVMBuildLoad2(w->b, w->i64, pj, "j");
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntEQ, j, c64(w, OBJ_MAX_LEN), "too_long"), fail,
                  lookup);
  at(w, lookup);
  LLVMValueRef byte = LLVMBuildZExt(w->b, ch, w->i32, "byte");
  LLVMBasicBlockRef multi = decode ? block(w, "multi") : ascii;
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntULT, byte, c32(w, 0x80), ""), ascii, multi);

  at(w, ascii);
  LLVMValueRef idx2[2] = {zero, LLVMBuildZExt(w->b, ch, w->i64, "")};
  LLVMValueRef ix = LLVMBuildLoad2(
      w->b, w->i16, LLVMBuildInBoundsGEP2(w->b, LLVMArrayType2(w->i16, 256), table, idx2, 2, ""), "ix");
  LLVMBuildStore(w->b, LLVMBuildSExt(w->b, ix, w->i32, ""), pix);
  LLVMBuildStore(w->b, c64(w, 1), pstep);
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntSLT, ix, LLVMConstInt(w->i16, 0, 0), ""), fail,
                  put);

  if (decode) {
    /* multi: a lead byte 110xxxxx, 1110xxxx or 11110xxx and its 1, 2 or 3
     * continuation bytes 10xxxxxx (a NUL among them is malformed too) */
    at(w, multi);
    LLVMValueRef n = LLVMBuildSelect(
        w->b, LLVMBuildICmp(w->b, LLVMIntUGE, byte, c32(w, 0xF0), ""), c32(w, 4),
        LLVMBuildSelect(w->b, LLVMBuildICmp(w->b, LLVMIntUGE, byte, c32(w, 0xE0), ""), c32(w, 3),
                        c32(w, 2), ""),
        "n");
    LLVMValueRef lead_ok = LLVMBuildAnd(w->b, LLVMBuildICmp(w->b, LLVMIntUGE, byte, c32(w, 0xC2), ""),
                                        LLVMBuildICmp(w->b, LLVMIntULT, byte, c32(w, 0xF5), ""), "");
    LLVMValueRef pcp = slot(w, w->i32, "cp");
    /* the lead byte's bits: 0x1F, 0x0F or 0x07 = 0x7F >> n */
    LLVMBuildStore(w->b, LLVMBuildAnd(w->b, byte, LLVMBuildLShr(w->b, c32(w, 0x7F), n, ""), ""), pcp);
    LLVMBuildStore(w->b, LLVMBuildZExt(w->b, n, w->i64, ""), pstep);
    LLVMBasicBlockRef next = block(w, "cont1");
    LLVMBuildCondBr(w->b, lead_ok, next, fail);
    for (int k = 1; k <= 3; k++) {
      at(w, next);
      LLVMBasicBlockRef read = block(w, "read"), after = block(w, k < 3 ? "cont" : "search");
      LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntSGT, n, c32(w, k), ""), read, after);
      at(w, read);
      LLVMValueRef at_k = LLVMBuildNUWAdd(w->b, i, c64(w, k), "");
      LLVMValueRef bk = LLVMBuildZExt(
          w->b, LLVMBuildLoad2(w->b, w->i8, LLVMBuildInBoundsGEP2(w->b, w->i8, text, &at_k, 1, ""), ""),
          w->i32, "");
      LLVMValueRef cont_ok =
          LLVMBuildICmp(w->b, LLVMIntEQ, LLVMBuildAnd(w->b, bk, c32(w, 0xC0), ""), c32(w, 0x80), "");
      LLVMValueRef cp = LLVMBuildOr(w->b, LLVMBuildShl(w->b, LLVMBuildLoad2(w->b, w->i32, pcp, ""), c32(w, 6), ""),
                                    LLVMBuildAnd(w->b, bk, c32(w, 0x3F), ""), "");
      LLVMBuildStore(w->b, cp, pcp);
      LLVMBuildCondBr(w->b, cont_ok, after, fail);
      next = after;
    }
    /* search: the vocabulary's characters beyond ASCII, in index order */
    at(w, next);
    LLVMValueRef cp = LLVMBuildLoad2(w->b, w->i32, pcp, "cp");
    LLVMBuildStore(w->b, c32(w, o->unknown), pix);
    if (nmulti) {
      Loop l = loop_open(w, c64(w, nmulti), "search");
      LLVMValueRef gi[2] = {zero, l.i};
      LLVMValueRef c = LLVMBuildLoad2(
          w->b, w->i32, LLVMBuildInBoundsGEP2(w->b, LLVMArrayType2(w->i32, (uint64_t)nmulti), cp_table, gi, 2, ""), "");
      LLVMValueRef x = LLVMBuildLoad2(
          w->b, w->i32, LLVMBuildInBoundsGEP2(w->b, LLVMArrayType2(w->i32, (uint64_t)nmulti), ix_table, gi, 2, ""), "");
      LLVMValueRef hit = LLVMBuildICmp(w->b, LLVMIntEQ, c, cp, "");
      LLVMBuildStore(w->b, LLVMBuildSelect(w->b, hit, x, LLVMBuildLoad2(w->b, w->i32, pix, ""), ""), pix);
      loop_close(w, &l);
    }
    LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntSLT, LLVMBuildLoad2(w->b, w->i32, pix, ""), c32(w, 0), ""),
                    fail, put);
  }

  at(w, put);
  j = LLVMBuildLoad2(w->b, w->i64, pj, "");
  LLVMBuildStore(w->b, LLVMBuildLoad2(w->b, w->i32, pix, ""),
                 LLVMBuildInBoundsGEP2(w->b, w->i32, chars, &j, 1, ""));
  LLVMBuildStore(w->b, LLVMBuildNUWAdd(w->b, j, c64(w, 1), ""), pj);
  LLVMBuildStore(w->b,
                 LLVMBuildNUWAdd(w->b, LLVMBuildLoad2(w->b, w->i64, pi, ""),
                                 LLVMBuildLoad2(w->b, w->i64, pstep, ""), ""),
                 pi);
  LLVMBuildBr(w->b, scan);

  at(w, end);
  i = LLVMBuildLoad2(w->b, w->i64, pj, "len");
  LLVMBasicBlockRef call = block(w, "call");
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntEQ, i, zero, "empty"), fail, call);
  at(w, call);
  LLVMValueRef args[3] = {chars, LLVMBuildTrunc(w->b, i, w->i32, ""), logits};
  LLVMValueRef rc = LLVMBuildCall2(w->b, LLVMGlobalGetValueType(forward), forward, args, 3, "");
  LLVMBuildCondBr(w->b, LLVMBuildICmp(w->b, LLVMIntEQ, rc, c32(w, 0), ""), run, fail);

  /* argmax: the first index of the largest logit (NaNs never win) */
  at(w, run);
  LLVMValueRef mx = slot(w, w->f32, "max"), best = slot(w, w->i32, "best");
  LLVMBuildStore(w->b, LLVMBuildLoad2(w->b, w->f32, logits, ""), mx);
  LLVMBuildStore(w->b, c32(w, 0), best);
  Loop l = loop_open(w, c64(w, g->classes), "argmax");
  LLVMValueRef v = LLVMBuildLoad2(w->b, w->f32, fptr(w, logits, l.i), "");
  LLVMValueRef m = LLVMBuildLoad2(w->b, w->f32, mx, "");
  LLVMValueRef gt = LLVMBuildFCmp(w->b, LLVMRealOGT, v, m, "");
  LLVMBuildStore(w->b, LLVMBuildSelect(w->b, gt, v, m, ""), mx);
  LLVMBuildStore(w->b,
                 LLVMBuildSelect(w->b, gt, LLVMBuildTrunc(w->b, l.i, w->i32, ""),
                                 LLVMBuildLoad2(w->b, w->i32, best, ""), ""),
                 best);
  loop_close(w, &l);
  LLVMBasicBlockRef soft = block(w, "softmax"), ret = block(w, "ret");
  LLVMBuildCondBr(w->b, LLVMBuildIsNull(w->b, probs, ""), ret, soft);

  /* softmax: probs[k] = exp(x[k] - max) / sum_j exp(x[j] - max) */
  at(w, soft);
  m = LLVMBuildLoad2(w->b, w->f32, mx, "max");
  LLVMValueRef sum = slot(w, w->f32, "sum");
  LLVMBuildStore(w->b, LLVMConstReal(w->f32, 0), sum);
  Loop l1 = loop_open(w, c64(w, g->classes), "exp");
  LLVMValueRef x = LLVMBuildLoad2(w->b, w->f32, fptr(w, logits, l1.i), "");
  LLVMValueRef ex = mf_exp(w->mod, w->b, LLVMBuildFSub(w->b, x, m, ""));
  LLVMBuildStore(w->b, ex, fptr(w, probs, l1.i));
  LLVMBuildStore(w->b, LLVMBuildFAdd(w->b, LLVMBuildLoad2(w->b, w->f32, sum, ""), ex, ""), sum);
  loop_close(w, &l1);
  LLVMValueRef s = LLVMBuildLoad2(w->b, w->f32, sum, "");
  Loop l2 = loop_open(w, c64(w, g->classes), "normalize");
  LLVMValueRef pk = fptr(w, probs, l2.i);
  LLVMBuildStore(w->b, LLVMBuildFDiv(w->b, LLVMBuildLoad2(w->b, w->f32, pk, ""), s, ""), pk);
  loop_close(w, &l2);
  LLVMBuildBr(w->b, ret);
  at(w, ret);
  LLVMBuildRet(w->b, LLVMBuildLoad2(w->b, w->i32, best, ""));
  at(w, fail);
  LLVMBuildRet(w->b, c32(w, -1));
}

/* P_labels: an array of pointers to the label strings. */
static void build_labels(W *w, const Graph *g, const char *prefix, char *const *labels) {
  LLVMValueRef *ptrs = xcalloc((size_t)g->classes, sizeof *ptrs);
  char name[160];
  for (int k = 0; k < g->classes; k++) {
    LLVMValueRef str = LLVMConstStringInContext2(w->ctx, labels[k], strlen(labels[k]), 0);
    snprintf(name, sizeof name, "%s_label_%d", prefix, k);
    ptrs[k] = private_const(w, LLVMTypeOf(str), str, name);
  }
  snprintf(name, sizeof name, "%s_labels", prefix);
  LLVMTypeRef aty = LLVMArrayType2(w->pty, (uint64_t)g->classes);
  LLVMValueRef gv = LLVMAddGlobal(w->mod, aty, name);
  LLVMSetInitializer(gv, LLVMConstArray2(w->pty, ptrs, (uint64_t)g->classes));
  LLVMSetGlobalConstant(gv, 1);
  free(ptrs);
}

/* What the object's sections hold, by their names (ELF's, and the wasm
 * object's CODE and DATA): code, read-only data (the weights, the other
 * constants, the unwind tables; the label pointers, in .data.rel.ro when
 * PIC), and writable data. */
static void section_sizes(LLVMMemoryBufferRef mb, LLVMContextRef ctx, ObjInfo *info) {
  static const char *const rodata[] = {".rodata", ".data.rel.ro", ".eh_frame", ".ARM.ex", "DATA"};
  char *msg = NULL;
  LLVMBinaryRef bin = LLVMCreateBinary(mb, ctx, &msg);
  LLVMDisposeMessage(msg);
  if (bin) {
    LLVMSectionIteratorRef it = LLVMObjectFileCopySectionIterator(bin);
    for (; !LLVMObjectFileIsSectionIteratorAtEnd(bin, it); LLVMMoveToNextSection(it)) {
      const char *name = LLVMGetSectionName(it);
      if (!name)
        continue;
      size_t size = (size_t)LLVMGetSectionSize(it);
      bool ro = false;
      for (size_t i = 0; i < ARRAY_LEN(rodata); i++)
        ro |= !strncmp(name, rodata[i], strlen(rodata[i]));
      if (!strncmp(name, ".text", 5) || !strcmp(name, "CODE"))
        info->text_bytes += size;
      else if (ro)
        info->rodata_bytes += size;
      else if (!strncmp(name, ".data", 5) || !strncmp(name, ".bss", 4))
        info->data_bytes += size;
    }
    LLVMDisposeSectionIterator(it);
    LLVMDisposeBinary(bin);
  }
  LLVMDisposeMemoryBuffer(mb);
}

/* P_forward_batch's stack buffers, in bytes, besides the scratch's
 * 4 * per_t bytes per character of its largest chunk: the scratch's fixed
 * part, and start, order, slens, bs, off, chars and out. */
static size_t batch_stack_fixed(const Graph *g, const KernelAbi *babi) {
  return 4 * (babi->scratch_fixed + OBJ_BATCH * babi->scratch_per_b) + 8 * OBJ_BATCH + 4 * 2 * OBJ_BATCH +
         4 * (2 * OBJ_MAX_LEN + 1) + 4 * OBJ_BATCH * OBJ_MAX_LEN + 4 * OBJ_BATCH * ((size_t)g->classes + 1);
}

static LLVMTargetMachineRef make_target(const ObjOptions *o, TargetChoice *c, Err *e) {
  if (target_choose(o->triple, o->cpu, c, e))
    return NULL;
  return target_machine(o->triple, c->host ? NULL : c->cpu, c->host ? NULL : c->features,
                        c->reloc, e);
}

static bool is_identifier(const char *s) {
  if (!*s || !(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
    return false;
  for (; *s; s++)
    if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9')))
      return false;
  return true;
}

int obj_check_prefix(const char *prefix, Err *e) {
  if (!is_identifier(prefix))
    return errf(e, "'%s' is not a C identifier (letters, digits and '_', not starting with a digit)",
                prefix);
  if (strlen(prefix) > OBJ_MAX_PREFIX)
    return errf(e, "prefix '%s' is longer than %d characters", prefix, OBJ_MAX_PREFIX);
  return 0;
}

int obj_emit(const Graph *g, const ObjOptions *o, Buf *object, ObjInfo *info, Err *e) {
  memset(info, 0, sizeof *info);
  if (obj_check_prefix(o->prefix, e))
    return -1;
  if (g->stage != STAGE_FORWARD || g->output < 0)
    return errf(e, "internal error: obj_emit wants an inference graph with an output");
  if (g->input < 0 || g->classes < 1)
    return errf(e, "%s: the graph has no character input or no classes: nothing to classify",
                g->src ? g->src->path : "graph");
  for (int p = 0; o->quantize && p < g->nparams; p++) {
    const float *v = o->values + g->params[p].offset;
    for (size_t i = 0; param_quantized(g, p) && i < type_numel(g->params[p].type); i++)
      if (!isfinite(v[i]))
        return errf(e, "%s is %g at element %zu: int8 weights need finite values", g->params[p].name,
                    (double)v[i], i);
  }
  TargetChoice tc;
  LLVMTargetMachineRef tm = make_target(o, &tc, e);
  if (!tm)
    return -1;

  /* Ownership: ctx owns mod (disposed first); tm and the builder are ours. */
  W w = {.ctx = LLVMContextCreate(), .unwind_tables = !tc.bare};
  w.mod = LLVMModuleCreateWithNameInContext(o->prefix, w.ctx);
  w.b = LLVMCreateBuilderInContext(w.ctx);
  w.f32 = LLVMFloatTypeInContext(w.ctx);
  w.i8 = LLVMInt8TypeInContext(w.ctx);
  w.i16 = LLVMInt16TypeInContext(w.ctx);
  w.i32 = LLVMInt32TypeInContext(w.ctx);
  w.i64 = LLVMInt64TypeInContext(w.ctx);
  w.pty = LLVMPointerTypeInContext(w.ctx, 0);
  int rc = -1;
  char name[160];

  /* The kernel: internal, so it exists only inlined into P_forward. */
  snprintf(name, sizeof name, "%s_kernel", o->prefix);
  CodegenOptions co = {.baked_values = o->values, .simd = simd_of(tm), .quantize = o->quantize,
                       .int8_dot = o->quantize ? target_int8_dot(tm) : INT8_DOT_NONE};
  info->int8_dot = co.int8_dot;
  if (codegen(g, w.mod, name, &co, &info->abi, e))
    goto done;
  LLVMValueRef kernel = LLVMGetNamedFunction(w.mod, name);
  if (!kernel) {
    errf(e, "internal error: codegen made no kernel for %s", o->prefix);
    goto done;
  }
  LLVMSetLinkage(kernel, LLVMInternalLinkage);
  c_function_attrs(&w, kernel);
  /* Noise: zeros (see the top of the file); at least one element, so
   * the pointer is a real one. */
  size_t nnoise = info->abi.noise ? info->abi.noise : 1;
  snprintf(name, sizeof name, "%s_zero_noise", o->prefix);
  LLVMTypeRef nty = LLVMArrayType2(w.f32, nnoise);
  LLVMValueRef noise = private_const(&w, nty, LLVMConstNull(nty), name);
  LLVMSetAlignment(noise, 64);

  LLVMValueRef forward = build_forward(&w, g, o->prefix, kernel, LLVMGlobalGetValueType(kernel),
                                       noise, &info->abi);
  /* The batched kernel, where batch.c can make one, but not on bare metal,
   * whose flash would hold the weights twice (and whose cores have no
   * caches for GEMMs to use), nor for int8 weights, nor when the user
   * asks for none (a smaller object): P_forward_batch then calls
   * P_forward for each name. */
  snprintf(name, sizeof name, "%s_kernel_batch", o->prefix);
  Err ignored;
  LLVMValueRef bkernel = NULL, bnoise = NULL;
  if (!tc.bare && !o->no_batch_kernel && !codegen_batch(g, w.mod, name, &co, &info->babi, &ignored)) {
    bkernel = LLVMGetNamedFunction(w.mod, name);
    LLVMSetLinkage(bkernel, LLVMInternalLinkage);
    c_function_attrs(&w, bkernel);
    snprintf(name, sizeof name, "%s_zero_noise_batch", o->prefix);
    nty = LLVMArrayType2(w.f32, OBJ_BATCH * (info->babi.noise ? info->babi.noise : 1));
    bnoise = private_const(&w, nty, LLVMConstNull(nty), name);
    LLVMSetAlignment(bnoise, 64);
    info->batched = true;
  }
  build_forward_batch(&w, g, o->prefix, forward, bkernel, bkernel ? LLVMGlobalGetValueType(bkernel) : NULL,
                      bnoise, &info->babi);
  build_predict(&w, g, o, forward);
  build_labels(&w, g, o->prefix, o->labels);
  /* The inline exp, sigmoid and tanh (mathfn.c) use llvm.fma, which
   * would be a call to fmaf without an instruction for it. */
  if (!target_has_fma(tm))
    mf_lower_fma(w.mod);
  if (optimize_module(w.mod, tm, e))
    goto done;

  char *msg = NULL;
  LLVMMemoryBufferRef mb;
  if (target_emit(tm, w.mod, LLVMObjectFile, &mb, &msg)) {
    errf(e, "emitting the object file: %s", msg);
    LLVMDisposeMessage(msg);
    goto done;
  }
  buf_put(object, LLVMGetBufferStart(mb), LLVMGetBufferSize(mb));
  section_sizes(mb, w.ctx, info); /* takes mb */
  char *s = LLVMGetTargetMachineTriple(tm);
  snprintf(info->triple, sizeof info->triple, "%s", s);
  LLVMDisposeMessage(s);
  s = LLVMGetTargetMachineCPU(tm);
  snprintf(info->cpu, sizeof info->cpu, "%s", *s ? s : "default");
  LLVMDisposeMessage(s);
  snprintf(info->means, sizeof info->means, "%s", tc.host ? "and its features" : tc.means);
  size_t fwd = 4 * (info->abi.scratch_fixed + (size_t)OBJ_MAX_LEN * info->abi.scratch_per_t +
                    (size_t)g->classes + 2);
  info->stack_bytes = fwd + 4 * ((size_t)OBJ_MAX_LEN + (size_t)g->classes); /* and P_predict's */
  info->batch_stack_bytes =
      info->batched ? batch_stack_fixed(g, &info->babi) + 4 * info->babi.scratch_per_t * OBJ_BATCH * OBJ_MAX_LEN
                    : fwd;
  rc = 0;
done:
  LLVMDisposeBuilder(w.b);
  LLVMDisposeModule(w.mod);
  LLVMContextDispose(w.ctx);
  LLVMDisposeTargetMachine(tm);
  return rc;
}

/* ------------------------------------------------------------- the header */

/* s as the body of a C string literal (octal escapes: a hex escape would
 * swallow the digits after it). */
static void c_string(Buf *b, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      buf_printf(b, "\\%c", ch);
    else if (ch < 32 || ch >= 127 || ch == '?') /* '?': no trigraphs */
      buf_printf(b, "\\%03o", ch);
    else
      buf_put(b, s, 1);
  }
}

/* s inside a block comment: printable ASCII and UTF-8 characters beyond
 * it (labels are UTF-8), no end of comment, no start of one (-Wcomment),
 * no trigraph (??/ before a newline is a line splice that -Wtrigraphs
 * reports); control characters and malformed UTF-8 become '?'. */
static void comment_text(Buf *b, const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    unsigned char ch = (unsigned char)s[i];
    ucs4_t c;
    int k = ch >= 0x80 ? u8_mbtoucr(&c, (const uint8_t *)s + i, n - i) : 1;
    if (ch >= 0x80 && k > 0 && c >= 0xA0) {
      buf_put(b, s + i, (size_t)k);
      i += (size_t)k;
      continue;
    }
    if ((ch == '*' && s[i + 1] == '/') || (ch == '/' && s[i + 1] == '*') ||
        (ch == '?' && s[i + 1] == '?')) {
      buf_put(b, s + i, 1);
      buf_put(b, "\\", 1); /* the next character follows a backslash */
    } else if (ch < 32 || ch >= 127) {
      buf_put(b, "?", 1);
    } else {
      buf_put(b, s + i, 1);
    }
    i += k > 0 ? (size_t)k : 1;
  }
}

void obj_header(const Graph *g, const ObjOptions *o, const ObjInfo *info, const char *object_name,
                Buf *out) {
  const char *P = o->prefix;
  char guard[OBJ_MAX_PREFIX + 16];
  size_t n = 0;
  for (const char *s = P; *s && n < OBJ_MAX_PREFIX; s++)
    guard[n++] = (*s >= 'a' && *s <= 'z') ? (char)(*s - 'a' + 'A') : *s;
  snprintf(guard + n, sizeof guard - n, "_RNNC_H");

  char weights[400] = "";
  if (o->quantize)
    snprintf(weights, sizeof weights,
             " * Weights (--quantize int8): the products' matrices as int8 rows with\n"
             " * a float scale each; the other parameters as float.%s%s%s\n",
             info->int8_dot ? " The products\n"
                              " * quantize their input vectors to int8 too (a scale each) and sum in\n"
                              " * int32 with the CPU's dot product instructions ("
                            : "",
             int8_dot_name(info->int8_dot), info->int8_dot ? ")." : "");

  /* P_forward_batch: how it runs, and its stack */
  char how[160], m_is[160];
  if (info->batched)
    snprintf(m_is, sizeof m_is,
             "the most characters of one run of %s_BATCH_NAMES\n * names (names [0, %d), [%d, %d), ...)", P,
             OBJ_BATCH, OBJ_BATCH, 2 * OBJ_BATCH);
  else
    snprintf(m_is, sizeof m_is, "the longest name's length");
  if (info->batched)
    snprintf(how, sizeof how, "It runs the\n *   names through a batched kernel (matrix products), up to %d at a time.",
             OBJ_BATCH);
  else
    snprintf(how, sizeof how, "It runs\n *   %s_forward's kernel on each name.", P);
  size_t bfixed = info->batched ? batch_stack_fixed(g, &info->babi)
                                : 4 * (info->abi.scratch_fixed + (size_t)g->classes + 2);
  size_t bper_char = 4 * (info->batched ? info->babi.scratch_per_t : info->abi.scratch_per_t);
  buf_printf(out, "/* ");
  comment_text(out, object_name);
  buf_printf(out, " (header): generated by rnnc build; do not edit.\n *\n * Model: ");
  comment_text(out, o->source ? o->source : "?");
  buf_printf(out,
             "\n * Target: %s, CPU %s%s%s%s.\n"
             " *\n"
             " * The object holds the compiled inference kernel with its trained weights\n"
             " * (read-only data). It needs nothing from the C library but memcpy,\n"
             " * memmove and memset (no libm, no heap), and no LLVM or rnnc library.\n"
             "%s"
             " *\n"
             " * %s_forward(chars, len, logits): chars[0..len) are vocabulary indices\n"
             " *   (%s_VOCAB_CHARS[i] is the character of index i), 1 <= len <= %s_MAX_LEN.\n"
             " *   Writes %s_NUM_CLASSES logits and returns 0; returns 1 when len is out of\n"
             " *   range, 2 when an index is outside [0, %s_VOCAB_SIZE) and 3 when chars or\n"
             " *   logits is NULL, writing nothing.\n"
             " * %s_forward_batch(idx, lens, n, logits): n >= 1 names at once, name i of\n"
             " *   lens[i] indices (1 <= lens[i] <= %s_MAX_LEN), the names one after the\n"
             " *   other in idx; writes name i's logits to logits[i * %s_NUM_CLASSES ..]\n"
             " *   (the same as %s_forward's but for the order of the sums' terms: within\n"
             " *   about 1e-6 relative). Checks every length and index before it writes:\n"
             " *   returns 0, 1 (a length out of range), 2 (an index out of range) or 3\n"
             " *   (n < 1 or a NULL pointer). %s\n"
             " * %s_predict(name, probs): maps each character of a NUL-terminated UTF-8\n"
             " *   name through the vocabulary (no normalization: pass text normalized\n"
             " *   as %s_NORMALIZATION says), returns the most likely class (an index into\n"
             " *   %s_labels), or -1 when the name is NULL, empty, not UTF-8, longer than\n"
             " *   %s_MAX_LEN characters or has a character outside a vocabulary without\n"
             " *   an unknown slot. When probs is not NULL it receives the softmax of the\n"
             " *   logits (%s_NUM_CLASSES floats).\n"
             " *\n"
             " * Deterministic: a graph whose initial state is random noise at training\n"
             " * time (a kaiming_uniform initial state) uses zeros, the expected value of\n"
             " * that symmetric uniform distribution.\n"
             " *\n"
             " * Thread safety: the functions are reentrant and thread-safe. The weights\n"
             " * are read-only and the working memory is on the caller's stack (no heap),\n"
             " * sized for the input: %s_forward %zu + %zu * len bytes, at most\n"
             " * %s_STACK_BYTES (with the buffers of %s_predict); %s_forward_batch\n"
             " * %zu + %zu * m bytes, m %s,\n"
             " * at most %s_BATCH_STACK_BYTES;\n"
             " * plus the functions' own frames, a few hundred bytes. A thread with a\n"
             " * small stack (musl's default is 128 KiB, a microcontroller's main stack\n"
             " * often less) may need more for long names.\n"
             " *\n"
             " * Sizes: %s_TEXT_BYTES of code, %s_RODATA_BYTES of constants (the weights),\n"
             " * %s_DATA_BYTES of writable data, as the object's sections hold them.\n"
             " */\n",
             info->triple, info->cpu, *info->means ? " (" : "", info->means, *info->means ? ")" : "",
             weights,
             P, P, P, P, P, P, P, P, P, how, P, P, P, P, P, P,
             4 * (info->abi.scratch_fixed + (size_t)g->classes + 2), 4 * info->abi.scratch_per_t, P, P,
             P, bfixed, bper_char, m_is, P, P, P, P);
  buf_printf(out, "#ifndef %s\n#define %s\n\n#include <stdint.h>\n\n", guard, guard);
  buf_printf(out, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
  buf_printf(out, "#define %s_NUM_CLASSES %d\n", P, g->classes);
  buf_printf(out, "#define %s_VOCAB_SIZE %d\n", P, g->vocab);
  /* The vocabulary: an initializer of UTF-8 strings ("" the unknown slot)
   * and, when every character is one ASCII byte, the characters in one
   * string. */
  bool one_string = true;
  for (int i = 0; i < g->vocab; i++)
    one_string &= o->vocab[i][0] && !o->vocab[i][1] && (unsigned char)o->vocab[i][0] < 0x80;
  if (one_string) {
    buf_printf(out, "#define %s_VOCAB \"", P);
    for (int i = 0; i < g->vocab; i++)
      c_string(out, o->vocab[i]);
    buf_printf(out, "\"\n");
  }
  buf_printf(out, "/* const char *const v[%s_VOCAB_SIZE] = %s_VOCAB_CHARS; */\n", P, P);
  buf_printf(out, "#define %s_VOCAB_CHARS {", P);
  for (int i = 0; i < g->vocab; i++) {
    buf_printf(out, "%s\"", i % 12 ? ", " : i ? ", \\\n    " : " \\\n    ");
    c_string(out, o->vocab[i]);
    buf_printf(out, "\"");
  }
  buf_printf(out, " }\n");
  buf_printf(out, "#define %s_UNKNOWN_INDEX %d /* -1: no unknown slot */\n", P, o->unknown);
  buf_printf(out, "#define %s_NORMALIZATION \"%s\" /* how training normalized text */\n", P,
             o->normalization ? o->normalization : "ascii");
  buf_printf(out, "#define %s_MAX_LEN %d\n", P, OBJ_MAX_LEN);
  buf_printf(out, "#define %s_STACK_BYTES %zu\n", P, info->stack_bytes);
  buf_printf(out, "#define %s_BATCH_NAMES %d\n", P, OBJ_BATCH);
  buf_printf(out, "#define %s_BATCH_STACK_BYTES %zu\n", P, info->batch_stack_bytes);
  buf_printf(out, "#define %s_TEXT_BYTES %zu\n", P, info->text_bytes);
  buf_printf(out, "#define %s_RODATA_BYTES %zu\n", P, info->rodata_bytes);
  buf_printf(out, "#define %s_DATA_BYTES %zu\n\n", P, info->data_bytes);
  buf_printf(out, "/* The class names, in class order:");
  for (int k = 0; k < g->classes; k++) {
    buf_printf(out, "%s%d ", k % 6 ? ", " : "\n *   ", k);
    comment_text(out, o->labels[k]);
  }
  buf_printf(out, " */\nextern const char *const %s_labels[%s_NUM_CLASSES];\n\n", P, P);
  buf_printf(out, "int %s_forward(const int32_t *chars, int32_t len, float *logits);\n", P);
  buf_printf(out, "int %s_forward_batch(const int32_t *idx, const int32_t *lens, int32_t n, float *logits);\n",
             P);
  buf_printf(out, "int %s_predict(const char *name, float *probs);\n\n", P);
  buf_printf(out, "#ifdef __cplusplus\n}\n#endif\n\n#endif /* %s */\n", guard);
}

/* ------------------------------------------------- the WebAssembly module */

/* s as the body of a JavaScript string literal in single quotes. Labels
 * are UTF-8 (the checkpoint's JSON), which a module's source may hold. */
static void js_string(Buf *b, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '\'' || ch == '\\')
      buf_printf(b, "\\%c", ch);
    else if (ch < 32 || ch == 127)
      buf_printf(b, "\\x%02x", ch);
    else
      buf_put(b, s, 1);
  }
}

void obj_js_module(const Graph *g, const ObjOptions *o, const ObjInfo *info,
                   const char *wasm_name, Buf *out) {
  const char *P = o->prefix;
  buf_printf(out, "// ");
  comment_text(out, wasm_name);
  buf_printf(out, " (JavaScript module): generated by rnnc build; do not edit.\n//\n// Model: ");
  comment_text(out, o->source ? o->source : "?");
  buf_printf(
      out,
      "\n// The WebAssembly module (%s, CPU %s) imports nothing and exports its\n"
      "// memory and the functions %s_forward and %s_predict of rnnc's C API\n"
      "// (docs/aot.md). It needs %zu bytes of stack at most, inside its memory.\n"
      "//\n"
      "//   import { load } from './this-file.mjs';\n"
      "//   const model = await load();   // the .wasm file beside this one\n"
      "//   model.predict('Nguyen');      // { index, label, probs }\n"
      "//   model.forward([13, 6, 20]);   // Float32Array of %d logits\n"
      "//\n"
      "// predict(name) takes text normalized as training saw it (names: ASCII,\n"
      "// so transliterate 'Ślusàrski' to 'Slusarski' first; a unicode vocabulary:\n"
      "// NFC, name.normalize('NFC')). It returns null for a name that is empty,\n"
      "// longer than maxLen characters or has a character outside a vocab\n"
      "// without an unknown slot (''). forward takes vocabulary indices and\n"
      "// throws a RangeError for a bad one.\n\n",
      info->triple, info->cpu, P, P, info->stack_bytes, g->classes);
  buf_printf(out, "export const labels = Object.freeze([");
  for (int k = 0; k < g->classes; k++) {
    buf_printf(out, "%s%s'", k ? "," : "", k % 6 ? " " : "\n  ");
    js_string(out, o->labels[k]);
    buf_printf(out, "'");
  }
  buf_printf(out, "\n]);\nexport const vocab = Object.freeze([");
  for (int i = 0; i < g->vocab; i++) {
    buf_printf(out, "%s'", i % 12 ? ", " : (i ? ",\n  " : "\n  "));
    js_string(out, o->vocab[i]);
    buf_printf(out, "'");
  }
  buf_printf(out, "\n]);\nexport const maxLen = %d;\n\n", OBJ_MAX_LEN);
  buf_printf(
      out,
      "const classes = %d;\n"
      "// Inputs and results live past the module's data and stack (__heap_base),\n"
      "// in memory nothing else uses: maxLen int32 indices (or a NUL-terminated\n"
      "// name), then the classes' floats.\n"
      "const resultOffset = 4 * maxLen;\n"
      "const ioBytes = resultOffset + 4 * classes;\n\n",
      g->classes);
  buf_printf(out, "export async function load(source = new URL('");
  js_string(out, wasm_name);
  buf_printf(
      out,
      "', import.meta.url)) {\n"
      "  let bytes = source;\n"
      "  if (source instanceof URL || typeof source === 'string') {\n"
      "    const url = new URL(source, import.meta.url);\n"
      "    if (url.protocol === 'file:' && globalThis.process?.versions?.node) {\n"
      "      const { readFile } = await import('node:fs/promises');\n"
      "      bytes = await readFile(url);\n"
      "    } else {\n"
      "      const response = await fetch(url);\n"
      "      if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);\n"
      "      bytes = await response.arrayBuffer();\n"
      "    }\n"
      "  }\n"
      "  const { instance } = await WebAssembly.instantiate(bytes, {});\n"
      "  return new Model(instance.exports);\n"
      "}\n\n"
      "class Model {\n"
      "  #exports;\n"
      "  #io;\n\n"
      "  constructor(exports) {\n"
      "    this.#exports = exports;\n"
      "    this.#io = (exports.__heap_base.value + 15) & ~15;\n"
      "    const missing = this.#io + ioBytes - exports.memory.buffer.byteLength;\n"
      "    if (missing > 0) exports.memory.grow(Math.ceil(missing / 65536));\n"
      "  }\n\n"
      "  predict(name) {\n"
      "    if (typeof name !== 'string' || name.length < 1 || name.includes('\\0')) return null;\n"
      "    const utf8 = new TextEncoder().encode(name); // 4 bytes a character at most\n"
      "    if (utf8.length >= resultOffset) return null;\n"
      "    const bytes = new Uint8Array(this.#exports.memory.buffer, this.#io, utf8.length + 1);\n"
      "    bytes.set(utf8);\n"
      "    bytes[utf8.length] = 0;\n"
      "    const k = this.#exports.%s_predict(this.#io, this.#io + resultOffset);\n"
      "    if (k < 0) return null;\n"
      "    return { index: k, label: labels[k], probs: this.#result() };\n"
      "  }\n\n"
      "  forward(indices) {\n"
      "    const n = indices.length;\n"
      "    if (!(n >= 1 && n <= maxLen)) throw new RangeError(`forward: ${n} indices, not 1 to ${maxLen}`);\n"
      "    const chars = new Int32Array(this.#exports.memory.buffer, this.#io, n);\n"
      "    for (let i = 0; i < n; i++) {\n"
      "      const c = indices[i];\n"
      "      if (!(Number.isInteger(c) && c >= 0 && c < vocab.length))\n"
      "        throw new RangeError(`forward: index ${c} is not in [0, ${vocab.length})`);\n"
      "      chars[i] = c;\n"
      "    }\n"
      "    if (this.#exports.%s_forward(this.#io, n, this.#io + resultOffset) !== 0)\n"
      "      throw new Error('forward: the module rejected its input');\n"
      "    return this.#result();\n"
      "  }\n\n"
      "  #result() {\n"
      "    return new Float32Array(this.#exports.memory.buffer, this.#io + resultOffset, classes).slice();\n"
      "  }\n"
      "}\n",
      P, P);
}

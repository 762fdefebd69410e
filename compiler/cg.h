/* cg.h: what codegen's two files share. llvm.c turns a graph into a
 * kernel; kernels.c holds the product micro-kernels it calls (and that
 * batched codegen calls): matrix-vector blocks for batch 1 and the GEMM
 * micro-kernel. Both build IR with one Cg and the small builders below,
 * so the fast-math policy, loops and accumulators are written once.
 *
 * Internal to codegen (llvm.c, kernels.c), as mathfn.h is. */
#ifndef RNNC_CG_H
#define RNNC_CG_H

#include <llvm-c/Core.h>
#include <stdbool.h>
#include <string.h>

#include "rnnc.h"

/* The LLVM builder and the types a kernel is built with. */
typedef struct Cg {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMValueRef fn; /* the function being built: loops append blocks to it,
                    * accumulators are allocas in its entry block */
  LLVMTypeRef f32, i32, i64, i8, pty;
  Simd simd;   /* the target's vectors: the GEMM's tile */
  Int8Dot dot; /* int8 x int8 products' instructions (CodegenOptions.int8_dot) */
} Cg;

/* A builder in m's context for a target with vectors simd (cg->fn is set
 * by the caller). */
void cg_init(Cg *cg, LLVMModuleRef m, Simd simd);
void cg_dispose(Cg *cg);

/* ------------------------------------------------------- small builders */

static inline LLVMValueRef ci64(Cg *cg, long long x) {
  return LLVMConstInt(cg->i64, (unsigned long long)x, 1);
}
static inline LLVMValueRef cf32(Cg *cg, double x) { return LLVMConstReal(cg->f32, x); }

static inline void fast(LLVMValueRef v) {
  /* Reassociation lets reductions vectorize; contraction makes FMAs. No
   * nnan/ninf: NaN must propagate to the loss, where the runtime sees it. */
  if (LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v))
    LLVMSetFastMathFlags(v, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
}

static inline LLVMValueRef fadd(Cg *cg, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFAdd(cg->b, a, b, "");
  fast(v);
  return v;
}
static inline LLVMValueRef fsub(Cg *cg, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFSub(cg->b, a, b, "");
  fast(v);
  return v;
}
static inline LLVMValueRef fmul(Cg *cg, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef v = LLVMBuildFMul(cg->b, a, b, "");
  fast(v);
  return v;
}
static inline LLVMValueRef fdiv(Cg *cg, LLVMValueRef a, LLVMValueRef b) {
  /* arcp: a division by a loop-invariant scalar (Adam's bias correction)
   * becomes a multiplication by its reciprocal, computed once. */
  LLVMValueRef v = LLVMBuildFDiv(cg->b, a, b, "");
  if (LLVMIsAInstruction(v)) /* no reassoc: it moved divisions into loops */
    LLVMSetFastMathFlags(v, LLVMFastMathAllowContract | LLVMFastMathAllowReciprocal);
  return v;
}

static inline LLVMValueRef gep(Cg *cg, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(cg->b, t, base, &idx, 1, "");
}
static inline LLVMValueRef fptr(Cg *cg, LLVMValueRef base, LLVMValueRef idx) {
  return gep(cg, cg->f32, base, idx);
}
static inline LLVMValueRef load(Cg *cg, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildLoad2(cg->b, cg->f32, fptr(cg, base, idx), "");
}
static inline void store(Cg *cg, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
  LLVMBuildStore(cg->b, v, fptr(cg, base, idx));
}

/* Vector loads and stores at float alignment (rows of any length). */
static inline LLVMValueRef vload(Cg *cg, LLVMTypeRef vt, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(cg->b, vt, p, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static inline void vstore(Cg *cg, LLVMValueRef v, LLVMValueRef p) {
  LLVMSetAlignment(LLVMBuildStore(cg->b, v, p), 4);
}

static inline LLVMValueRef intrinsic(Cg *cg, const char *name, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef ty = LLVMTypeOf(args[0]);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(cg->mod, id, &ty, 1);
  LLVMTypeRef fty = LLVMIntrinsicGetType(cg->ctx, id, &ty, 1);
  return LLVMBuildCall2(cg->b, fty, f, args, (unsigned)n, "");
}

/* Asks for the line at p in the L1 cache, to read or (write) to store to
 * (llvm.prefetch, keep in every level; a target without it drops it). */
static inline void prefetch(Cg *cg, LLVMValueRef p, bool write) {
  LLVMValueRef args[4] = {p, LLVMConstInt(cg->i32, write, 0), LLVMConstInt(cg->i32, 3, 0),
                          LLVMConstInt(cg->i32, 1, 0)};
  intrinsic(cg, "llvm.prefetch", args, 4);
}

static inline void memset_f32(Cg *cg, LLVMValueRef p, LLVMValueRef n) {
  LLVMBuildMemSet(cg->b, p, LLVMConstInt(cg->i8, 0, 0), LLVMBuildMul(cg->b, n, ci64(cg, 4), ""), 4);
}

/* Every copy here is between distinct buffers (or distinct rows of one). */
static inline void memcpy_f32(Cg *cg, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef n) {
  LLVMBuildMemCpy(cg->b, dst, 4, src, 4, LLVMBuildMul(cg->b, n, ci64(cg, 4), ""));
}

/* A counted loop over i = 0 .. n-1 (n an i64), do-while form: n must be at
 * least 1. for_begin/for_end: the same loop, skipped when n <= 0. */
typedef struct Loop {
  LLVMBasicBlockRef pre, head, skip;
  LLVMValueRef i, n;
} Loop;
Loop loop_begin(Cg *cg, LLVMValueRef n);
void loop_end(Cg *cg, Loop *l);
Loop for_begin(Cg *cg, LLVMValueRef n);
void for_end(Cg *cg, Loop *l);

/* An accumulator that SROA turns into a register: a float alloca in the
 * entry block, initialized here; a vector one, uninitialized. */
LLVMValueRef acc_new(Cg *cg, LLVMValueRef init);
LLVMValueRef vacc_new(Cg *cg, LLVMTypeRef vt);
/* x (a float) in every lane of vector type vt (x itself when vt is float). */
LLVMValueRef splat(Cg *cg, LLVMTypeRef vt, LLVMValueRef x);
/* An elementwise op (F_ELEM in ops.h) on scalars: b is NULL for unary ops.
 * The math functions are the inline ones of mathfn.c. */
LLVMValueRef cg_elem(Cg *cg, Op op, double f, LLVMValueRef a, LLVMValueRef b);

/* --------------------------------------------------- a kernel in parts */

/* CodegenOptions.parts (llvm.c, batch.c): a kernel as a chain of functions
 * with one signature, each ending in a call of the next with its own
 * arguments. What a later part reads of an earlier one's values: a
 * constant, a global or an argument is itself (the next part's argument);
 * address arithmetic on them (GEPs, integer adds, subs, multiplies,
 * shifts, extensions, loads of constant globals) is computed again at the
 * next part's entry, so LLVM sees the same offsets of the same noalias
 * arguments; anything else is stored to 8 bytes of scratch (*fixed floats
 * into it, grown) before the call and loaded at the entry. */
typedef struct Carry {
  Cg *cg;                  /* building the next part: cg->b at its entry */
  LLVMValueRef from, to;   /* the two functions */
  LLVMValueRef from_scratch, to_scratch; /* their scratch arguments */
  LLVMBuilderRef at_from;  /* at from's end */
  size_t *fixed;           /* the fixed part of scratch, in floats */
  LLVMValueRef *src, *dst; /* what is carried: from's value -> to's */
  int n, cap;
} Carry;

/* Part `part` of kernel `kernel` begins: the function being built
 * (cg->fn, cg->b at its end) is left, make(ctx, "KERNEL.partN") makes the
 * next one (cg->fn, with a new builder cg->b at its entry), and the Carry
 * between them is returned (scratch_arg: the kernel's scratch argument). */
Carry carry_next(Cg *cg, const char *kernel, int part, void (*make)(void *ctx, const char *name),
                 void *ctx, unsigned scratch_arg, size_t *fixed);
/* v, a value of k->from, in k->to (NULL: NULL). */
LLVMValueRef carry(Carry *k, LLVMValueRef v);
/* Every node of g's block 0: its value in each of the n arrays vals[i]
 * (node -> value) carried, and cur[node] (a loop group's value in the part
 * before) dropped. */
void carry_block0(Carry *k, const Graph *g, LLVMValueRef *const *vals, int n, LLVMValueRef *cur);
/* from calls to with its own arguments and returns; *fixed is rounded up
 * to 16 floats again. Disposes at_from. */
void carry_end(Carry *k);
/* Where the parts of g's kernel begin: block 0's node indices, ascending,
 * then -1 (at most parts - 1 of them; parts at most MAX_KERNEL_PARTS),
 * where the estimated LLVM work (node_weight) before and after is about
 * equal, at a scan or a product
 * (where work begins; not a view, which has no code), and where no float
 * scalar of an earlier node is read at or after it (it would not be the
 * same bits: see scalars_crossing). The caller frees it. */
int *plan_parts(const Graph *g, int parts);

/* ------------------------------------------- batch-1 product kernels */

/* The batch-1 kernels' blocks: 16 rows, and vectors of 16 floats (two ymm
 * on AVX2, four xmm on SSE2; their results are pinned bit for bit), but
 * for the forward product on targets other than x86 (cg->simd.mv_lanes).
 * Rows of a weight gradient one outer_seq_rows call keeps in registers. */
enum { BLOCK = 16, ACC_ROWS = 8 };

/* ys[i][0..16/nx) = rows [0, 16/nx) of W times xs[i][0..nv), for nx in
 * {1, 2, 4} vectors x; nv a multiple of 16. Row j's lanes [k, k + V) (V =
 * mv_lanes, 16 on x86) are at w + j ld + (k / V) ks: row-major W has ld
 * its row stride and ks = V (or 0, which means V); baked_blocked's layout
 * has ld = V and ks = 16 V. W is float, or with scale int8 rows whose row
 * j is scaled by scale[j] (its result multiplied: the products are summed
 * in float). */
void matvec_block_n(Cg *cg, LLVMValueRef w, long long ld, long long ks, LLVMValueRef *xs, int nx,
                    long long nv, LLVMValueRef *ys, LLVMValueRef scale);
/* The lanes of matvec_block_n's vectors of W (cg->simd.mv_lanes, or 16). */
int mv_lanes(const Cg *cg);
/* int8 x int8 products, on a CPU with sdot or vpdpbusd only (cg->dot,
 * CodegenOptions.int8_dot). quantize_vec: q[0..n) (int8) = x[0..n)
 * quantized as quantize_row does (scale max |x| / 127, x / scale rounded
 * to nearest even; with vpdpbusd stored plus 128, as unsigned bytes);
 * returns the scale. idot: the i32 sum over k < n of w[k] q[k] (int8 w and
 * q), with vpdpbusd less corr (the row's baked_q8_offsets value), else
 * corr NULL; matvec_block_q8's corr: the block's first row's offset.
 * int8_result: a row's result, (float) dot * (sw * sx), rounded as the
 * reference (the interpreter's interp_set_object) rounds it.
 * matvec_block_q8: as matvec_block_n with int8 W, for nx int8 vectors
 * qs[i] with scales sxs[i] (float values). */
LLVMValueRef quantize_vec(Cg *cg, LLVMValueRef x, long long n, LLVMValueRef q);
LLVMValueRef idot(Cg *cg, LLVMValueRef w, LLVMValueRef q, long long n, LLVMValueRef corr);
LLVMValueRef int8_result(Cg *cg, LLVMValueRef dot, LLVMValueRef sw, LLVMValueRef sx);
void matvec_block_q8(Cg *cg, LLVMValueRef w, long long ld, LLVMValueRef *qs, LLVMValueRef *sxs, int nx,
                     long long nv, LLVMValueRef *ys, LLVMValueRef scale, LLVMValueRef corr);
/* ys[q][0..n) = W^T us[q] for nx in {1, 2, 4} vectors u: W's M rows from
 * w (stride ld), its n columns from w's column 0; n a multiple of 16. */
void matvec_t_block(Cg *cg, LLVMValueRef w, long long ld, long long M, long long n,
                    LLVMValueRef *us, int nx, LLVMValueRef *ys);
/* Rows [r0, r0 + R) (R <= ACC_ROWS) of a gradient g (row stride ld, from
 * its column 0) get sum over t < T of u[t, r0 + j] v[t, 0..nv): u a [T, M]
 * stack, or NULL for ones (a bias); nv a multiple of 16; first: store the
 * sums instead of adding them. */
void outer_seq_rows(Cg *cg, LLVMValueRef T, LLVMValueRef g, long long ld, LLVMValueRef u,
                    long long M, LLVMValueRef r0, int R, LLVMValueRef v, long long nv, bool first);
/* Runs fn over the steps t < T (i64, >= 1) four at a time, then two, then
 * one: fn(ctx, ts, nx) with ts[0..nx) the steps. */
typedef void StepFn(void *ctx, LLVMValueRef *ts, int nx);
void step_tuples(Cg *cg, LLVMValueRef T, StepFn *fn, void *ctx);

/* fn's "prefer-vector-width": `width` ("256", "512") when given, else
 * 512 bits where cg->simd has 16-float registers (AVX-512), where LLVM's
 * own choice for Intel's CPUs is 256 bits; otherwise LLVM's choice. It
 * sizes what LLVM vectorizes (gate loops, copies); the GEMM tiles and the
 * batch-1 products are explicit vectors either way. batch.c's kernels
 * take the default; llvm.c's only a CodegenOptions.vector_width (on a
 * 2-vCPU Xeon, 512 bits made batched training 4-7% and batched inference
 * 0-12% faster, and batch-1 gru training 1-3% slower). */
void prefer_vector_width(Cg *cg, LLVMValueRef fn, const char *width);

/* ------------------------------------------------------------------ GEMM */

/* C[i*ldc + j] (= or +=) sum over k < K of A[i*a_si + k*a_sk] * B[k*ldb + j]
 * for 0 <= i < m, 0 <= j < n. m and K are known at run time, the rest when
 * the kernel is generated. Each C element is summed in the order k = 0, 1,
 * ..., K-1 from 0 (or from C) with llvm.fmuladd, whatever the tile that
 * computes it: the same rows give the same bits for any m and any split
 * of the rows between calls. */
typedef struct Gemm {
  LLVMValueRef a, b, c;         /* float pointers; C does not overlap A or B */
  LLVMValueRef m, k;            /* i64, >= 0 */
  long long n;                  /* >= 1 */
  long long a_si, a_sk;         /* A's strides over i and over k */
  long long ldb, ldc;           /* B's and C's row strides */
  bool accumulate;              /* C += ...; else C = ... (0 when K = 0) */
} Gemm;
/* Register-blocked for cg->simd: a tile of mr rows x nr vectors of C in
 * registers over all of K, A broadcast, B loaded a vector at a time. */
void gemm(Cg *cg, const Gemm *p);

/* ------------------------------------------------- baked values (AOT) */

/* rnnc build: the checkpoint's values as constants of the module, each
 * made once and shared by the module's kernels (private globals named
 * rnnc.*), one for each parameter and layout, so that a layout nothing
 * reads is left out of the object. Unquantized, each parameter is a float
 * array; quantized (rnnc.h's quantize_row), the parameters that are a
 * product's matrix are int8 rows with float row scales, and every other
 * parameter is a float array of its own. */
typedef struct Baked {
  const Graph *g;
  const float *values; /* (g->nfloats) */
  bool quantize;
} Baked;
/* Parameter p's floats. */
LLVMValueRef baked_param(Cg *cg, const Baked *bk, int p);
/* Columns [k0, k0 + n) of matrix parameter p [M][ld] as int8 rows, [M][n];
 * *scale the M row scales (of whole rows). */
LLVMValueRef baked_q8(Cg *cg, const Baked *bk, int p, int k0, int n, LLVMValueRef *scale);
/* The M int32 offsets of baked_q8's rows for vpdpbusd's unsigned input
 * (the quantized input plus 128): 128 times each row's sum. */
LLVMValueRef baked_q8_offsets(Cg *cg, const Baked *bk, int p, int k0, int n);
/* Columns [k0, k0 + n) of float matrix parameter p [M][ld], M and n
 * multiples of 16, in matvec_block_n's blocked layout: each block of 16
 * rows is 16 n contiguous floats, lanes [k, k + V) of its 16 rows one
 * after the other (V = mv_lanes(cg)), so the block's product reads one
 * sequential stream instead of 16 rows 4 ld bytes apart. Element (r, k)
 * is at (r / 16) 16 n + (k / V) 16 V + (r % 16) V + k % V. */
LLVMValueRef baked_blocked(Cg *cg, const Baked *bk, int p, int k0, int n);
/* Columns [k0, k0 + n) of matrix parameter p [M][ld] transposed, [n][M]
 * (column k0 + j's M values contiguous: what a product with a one-hot
 * vector reads): floats, or quantized int8 with *scale the M row scales
 * (else *scale is NULL). */
LLVMValueRef baked_columns(Cg *cg, const Baked *bk, int p, int k0, int n, LLVMValueRef *scale);

/* dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols: W [rows][cols]
 * packed transposed, W^T [cols][rows], as the forward product's B. cols
 * (an i64) is known at run time and at least 1. nontemporal: where ldd is
 * a multiple of 16, the whole 64-byte lines of the 16 x 16 blocks are
 * stored non-temporally (past the caches, and out of every other core's);
 * dst must then be 64-byte aligned, and the caller fences before another
 * thread reads dst. */
void transpose(Cg *cg, LLVMValueRef dst, long long ldd, LLVMValueRef src, long long lds,
               long long rows, LLVMValueRef cols, bool nontemporal);

#endif

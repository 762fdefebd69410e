/* rnnc.h: the compiler's one internal header, a section per stage. Each
 * stage exports an entry point or two and uses only the types of the stages
 * before it:
 *
 *   text --tokenize--> Token[] --parse--> Program (AST) --lower--> Graph (IR)
 *        --graph_verify after every pass-- --grad--> Graph (+ backward, update)
 *
 * Shapes: rank 0 (scalar), 1 ([n]) or 2 ([m, n]); a sequence has the
 * symbolic length T as its first dimension (DIM_T). */
#ifndef RNNC_H
#define RNNC_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llvm-c/TargetMachine.h>
#include <llvm-c/Types.h>

#include "ops.h"
#include "util.h"

/* ----------------------------------------------------- diagnostics, arena */

typedef struct Src {
  char *path;
  char *text; /* NUL-terminated */
  size_t len;
} Src;

/* A position in a source file; line 0 means "no position" (compiler-made). */
typedef struct Pos {
  int line, col; /* 1-based */
} Pos;

/* Front-end errors unwind with longjmp to the stage's entry point, which
 * returns a status (as Lua's parser does), so errors stay testable. */
typedef struct Diag {
  jmp_buf jb;
  Err *err;
  const Src *src;
} Diag;

/* Formats "path:line:col: error: message", the source line and a caret
 * into d->err, then longjmps to d->jb. */
_Noreturn void error_at(Diag *d, Pos p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same message without unwinding (for errors found outside a Diag). */
void format_error(Err *e, const Src *src, Pos p, const char *msg);

typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
  ArenaBlock *head;
} Arena;
void *arena_alloc(Arena *a, size_t n); /* zeroed, 16-byte aligned */
char *arena_strndup(Arena *a, const char *s, size_t n);
void arena_free(Arena *a);

/* ------------------------------------------------------------------ lex.c */

typedef enum TokKind { TK_IDENT, TK_NUM, TK_PUNCT, TK_NL, TK_EOF } TokKind;

typedef struct Token {
  TokKind kind;
  const char *s; /* points into the source text */
  int len;
  double num; /* TK_NUM */
  Pos pos;
} Token;

/* Newlines are tokens (they end statements) except inside () and []. An
 * identifier may contain dots and {name} interpolations: gru.weight_ih_l{l}. */
Token *tokenize(const Src *src, Diag *d, Arena *a);

/* ---------------------------------------------------------------- parse.c */

typedef struct Ident {
  const char *s;
  int len;
  Pos pos;
} Ident;

typedef enum ExprKind {
  E_NUM,   /* num */
  E_NAME,  /* name */
  E_BIN,   /* l op r; op is a char or one of the BIN_* codes */
  E_NEG,   /* -l */
  E_CALL,  /* name[targs](args) */
  E_INDEX, /* l[r] or l[r:c] */
  E_COND,  /* c ? l : r, compile time only */
  E_SCAN,  /* scan [reverse] name[targs] over args[0..nover) from args[nover..nargs) */
} ExprKind;

enum { BIN_EQ = 256, BIN_NE, BIN_LT, BIN_LE, BIN_GT, BIN_GE };

typedef struct Expr Expr;
struct Expr {
  ExprKind kind;
  Pos pos;
  double num;
  Ident name;
  int op;
  Expr *l, *r, *c;
  Expr **args;
  int nargs, nover;
  Expr **targs;
  int ntargs;
  Ident *keys; /* named arguments: keys[i] names args[i]; NULL if none */
  bool reverse; /* E_SCAN: steps T-1 down to 0 */
};

typedef enum StmtKind {
  S_CONST,     /* const name = value */
  S_INPUT,     /* input name : onehot[T, value] (or f32[T, value]: trainable set) */
  S_TARGET,    /* target name : class[value] */
  S_PARAM,     /* param|buffer name [dims] = init */
  S_DEF,       /* def name[tparams](params) { body } */
  S_LET,       /* let names = value */
  S_FOR,       /* for name in lo..hi { body } */
  S_RETURN,    /* return dims... (values) */
  S_OUTPUT,    /* output value */
  S_LOSS,      /* loss value */
  S_OPTIMIZER, /* optimizer value (a call with named arguments) */
  S_SCHEDULE,  /* schedule value (a call with named arguments) */
  S_CLIP,      /* clip_grad_norm value */
  S_TRAIN,     /* train key = value, ... */
} StmtKind;

typedef struct Stmt Stmt;
struct Stmt {
  StmtKind kind;
  Pos pos;
  Ident name;
  bool trainable; /* S_PARAM: param (true) or buffer (false); S_INPUT: f32 (true) */
  Ident *names;   /* S_LET targets, S_DEF params, S_TRAIN keys */
  int nnames;
  Ident *tparams; /* S_DEF compile-time parameters */
  int ntparams;
  Expr **exprs; /* S_PARAM dims, S_RETURN values, S_TRAIN values */
  int nexprs;
  Expr *value, *init, *lo, *hi;
  Stmt **body;
  int nbody;
  bool active; /* S_DEF: being inlined now (lowering's recursion check) */
};

typedef struct Program {
  Stmt **stmts;
  int nstmts;
} Program;

Program *parse(Token *toks, Diag *d, Arena *a);

/* ------------------------------------------------------------------- ir.c */

enum { DIM_T = -1 };

typedef enum TypeKind {
  TY_F32,    /* dense float32 */
  TY_ONEHOT, /* a character index, a one-hot vector of width dim[rank-1] */
  TY_CLASS,  /* a class index in [0, dim[0]) (rank 0; dim[0] = classes) */
  TY_TUPLE,  /* the multiple results of a scan (read through proj) */
  TY_NONE,   /* effects */
} TypeKind;

typedef struct Type {
  TypeKind kind;
  int rank;
  int dim[2];
} Type;

typedef struct Node {
  Op op;
  Type type;
  int *in; /* (nin) operand node ids */
  int nin;
  int a, b, c; /* integer attributes; meaning per op (ops.h) */
  double f;    /* float attribute: CONST value, NOISE bound */
  int region;  /* SCAN: its body block; -1 otherwise */
  int block;   /* the block this node belongs to */
  Pos pos;     /* the source position it came from */
} Node;

/* A block: nodes in execution order. Block 0 is the graph's top level; a
 * scan body's args are ARG nodes, its yields the carried values first,
 * then the per-step outputs. */
typedef struct Block {
  int *nodes, n, cap;
  int *args, nargs;
  int *yields, nyields;
  int parent; /* enclosing block; -1 for block 0 */
} Block;

/* SCAN attributes: a = number of sequence operands (the rest are the
 * carries' initial values), b = number of carries, c = 1 if reverse. Body
 * args: one row of each sequence, then the carries. Results (proj i): for
 * each carry, then each extra yield, the [T, ...] stack of its value at
 * every step (row t = the value computed at step t). */

typedef enum Init {
  INIT_ZEROS,           /* 0 */
  INIT_UNIFORM,         /* U(-arg, arg) */
  INIT_LINEAR,          /* PyTorch Linear: U(-1/sqrt(arg), 1/sqrt(arg)), arg = fan_in */
  INIT_KAIMING_UNIFORM, /* U(-sqrt(6/arg), sqrt(6/arg)), arg = fan_in */
  INIT_NORMAL,          /* N(0, arg^2): nn.Embedding's N(0, 1) */
} Init;

/* Parameter slots: what LOAD/STORE/ACC address. */
enum { SLOT_VALUE, SLOT_GRAD, SLOT_M, SLOT_V, SLOT_COUNT };
/* LOAD/STORE of this "parameter": the whole flat buffer of a slot, every
 * parameter and buffer with the padding between (the optimizer's update
 * is one pass over it). */
enum { PARAM_ALL = -1 };

typedef struct Param {
  char *name; /* PyTorch state_dict name */
  Type type;
  Init init;
  double init_arg;
  bool trainable; /* param: trained; buffer: only loaded and saved */
  Pos pos;
  size_t offset; /* in floats, in the flat parameter buffer */
} Param;

typedef enum OptimKind { OPTIM_NONE, OPTIM_ADAM, OPTIM_ADAMW, OPTIM_SGD } OptimKind;
/* The learning rate at optimizer step t (see grad.c's scheduled_lr). */
typedef enum SchedKind { SCHED_CONSTANT, SCHED_STEP, SCHED_COSINE } SchedKind;

typedef struct TrainConfig {
  OptimKind optim;
  double lr, beta1, beta2, eps;
  double weight_decay;        /* adam, sgd: L2, added to the gradient; adamw: decoupled */
  double momentum, dampening; /* sgd (its buffer is the m slot) */
  bool nesterov;              /* sgd */
  SchedKind sched;
  int warmup;     /* steps of linear warmup (0: none), any schedule */
  int decay;      /* step: steps between decays; cosine: steps to decay over */
  double gamma;   /* step: the factor of each decay */
  double min_lr;  /* cosine: the rate it ends at */
  double clip_norm; /* 0: no clipping */
  int epochs, batch;
} TrainConfig;

typedef enum Stage { STAGE_FORWARD, STAGE_GRAD } Stage;

/* Every field of a graph but src and the positions is in graph_key's bytes
 * (the kernel cache's key): a new field goes there too. */
typedef struct Graph {
  Src *src;
  Node *nodes;
  int nnodes, capnodes;
  Block *blocks;
  int nblocks;
  Param *params;
  int nparams;
  size_t nfloats; /* size of one slot of the flat parameter buffer */
  int vocab, classes;
  int input, target, output, loss; /* node ids (-1 if absent) */
  int grad_norm;                   /* after grad: the gradients' global L2 norm where
                                      the graph clips, else sum(grad * 0): 0, or NaN
                                      when a gradient is not finite; -1 before grad */
  TrainConfig train;
  Stage stage;
} Graph;

extern const char *const op_names[OP_COUNT];
extern const int op_arity[OP_COUNT];
extern const int op_flags[OP_COUNT];

/* Appends a node to block blk, computing its type by the op's shape rule.
 * A shape error is reported through d at pos (d may be NULL for
 * compiler-made nodes, where an error is an internal bug and aborts). */
int ir_add(Graph *g, Diag *d, int blk, Op op, const int *in, int nin, int a, int b,
           double f, Pos pos);
/* Leaf with an explicit type (INPUT, TARGET, ZEROS, NOISE, ARG, CONST). */
int ir_leaf(Graph *g, int blk, Op op, Type t, double f, int a, Pos pos);
int ir_new_block(Graph *g, int parent);
int ir_block_arg(Graph *g, int blk, Type t, Pos pos);
void ir_yield(Graph *g, int blk, int value);
/* A scan: seqs are [T, ...] values, inits the carries' initial values;
 * body is a block whose args and yields are already in place. Returns the
 * SCAN node; read its results with PROJ nodes. */
int ir_scan(Graph *g, Diag *d, int blk, const int *seqs, int nseq, const int *inits,
            int ncarry, int body, bool reverse, Pos pos);
int ir_proj(Graph *g, int blk, int scan, int index, Pos pos);

Graph *graph_new(void);
void graph_free(Graph *g);
/* Writes the deterministic text form of the IR. */
void graph_print(const Graph *g, Buf *out);
/* Appends the graph as bytes that determine its kernels: every field of
 * the graph, its nodes, blocks and parameters, exactly (floats as their
 * bits), but the source and positions (a comment changed in the graph file
 * gives the same bytes). The kernel cache's key (jit_kernel); a field added
 * to Graph, Node, Block, Param or TrainConfig belongs here too. */
void graph_key(const Graph *g, Buf *out);
/* Checks SSA order, operand types and every op's shape rule; returns 0, or
 * -1 with a message naming the node and the rule it breaks. */
int graph_verify(const Graph *g, Err *e);
Type type_scalar(void);
Type type_vec(int n);
Type type_mat(int m, int n);
bool type_eq(Type a, Type b);
const char *type_str(Type t, char *buf, size_t n);
size_t type_numel(Type t); /* elements of a non-sequence f32 type */
static inline bool type_is_seq(Type t) { return t.rank >= 1 && t.dim[0] == DIM_T; }
/* Elements per row of a sequence, or of a plain value (one-hot values and
 * classes: one index). */
static inline size_t type_row_numel(Type t) {
  if (t.kind == TY_ONEHOT || t.kind == TY_CLASS)
    return 1;
  if (type_is_seq(t))
    return t.rank == 2 ? (size_t)t.dim[1] : 1;
  return type_numel(t);
}
/* The last dimension: a vector's size, a sequence's row size (one-hot:
 * the vocabulary), 1 for a scalar. */
static inline int type_width(Type t) { return t.rank ? t.dim[t.rank - 1] : 1; }
/* The same type with rows of n elements ([n] or [T, n]). */
static inline Type type_with_width(Type t, int n) {
  t.dim[t.rank - 1] = n;
  return t;
}
/* Type, offset and name of parameter a of a load or store (PARAM_ALL too). */
Type param_type(const Graph *g, int a);
size_t param_offset(const Graph *g, int a);
const char *param_name(const Graph *g, int a);

/* ---------------------------------------------------------------- lower.c */

/* The sizes a graph may take from its data set: the names data.vocab (the
 * vocabulary's size) and data.classes (the number of labels); 0 where the
 * command has no data (then a graph that uses the name is an error). */
typedef struct DataSizes {
  int vocab, classes;
} DataSizes;

/* Evaluates the program: constants, parameter declarations, compile-time
 * loops and calls of user functions (inlined), and emits the IR of the
 * forward graph with its loss and training settings. sizes may be NULL. */
Graph *lower(Program *prog, const Src *src, const DataSizes *sizes, Diag *d);

/* ----------------------------------------------------------------- grad.c */

/* Appends the backward graph and the parameter update to a forward graph
 * (see grad.c). Returns 0, or -1 with a positioned message in e. */
int grad(Graph *g, Err *e);

/* --------------------------------------------------------------- interp.c */

/* The reference interpreter: runs any IR on one sequence, in float64, or
 * in float32 (each value rounded to float after every op). */
typedef struct Interp Interp;
Interp *interp_new(const Graph *g, bool f32);
void interp_free(Interp *I);
/* A parameter slot (SLOT_VALUE, _GRAD, _M, _V): g->nfloats doubles laid
 * out by Param.offset, zero at first. */
double *interp_slot(Interp *I, int slot);
/* The optimizer's step count: updates done so far. */
int64_t *interp_step(Interp *I);
/* The generator noise nodes draw from (kaiming_uniform initial states). */
void interp_set_rng(Interp *I, Rng *rng);
/* Computes what an object of rnnc build computes: noise nodes give zeros
 * (its zero noise buffer); with int8_dot, the products of a baked matrix
 * as an object of --quantize int8 with integer dot products computes them
 * (CodegenOptions.int8_dot): the matrix's rows quantized (quantize_row),
 * a float input quantized the same way, their int8 products summed in
 * int32, the sum times the row's scale times the input's. */
void interp_set_object(Interp *I, bool int8_dot);
/* Runs the graph on chars[0..len) with a target class. A graph with a
 * backward pass zeroes the gradients first and counts one step. */
int interp_run(Interp *I, const int32_t *chars, int len, int target, Err *e);
/* The same for a graph whose input is float vectors (input x : f32[T, n]):
 * x holds len rows of n floats. */
int interp_run_f32(Interp *I, const float *x, int len, int target, Err *e);
/* Minibatch training on n sequences: each one's forward and backward pass
 * (the step phase, see graph_mark_update), the summed gradients times 1/n
 * (the gradient of the mean loss), then one update. logits (n * classes)
 * and losses (n) receive each sequence's values (either may be NULL). */
int interp_run_batch(Interp *I, const int32_t *const *chars, const int *lens, const int *targets,
                     int n, double *logits, double *losses, Err *e);
/* A top-level node's value after a run (output, loss, grad_norm). */
const double *interp_value(const Interp *I, int node, size_t *n);

/* ------------------------------------------------------------------ opt.c */

/* Local rewrites (products of concatenations split, one-hot products
 * become column gathers and updates, slices pushed into products), weight
 * gradients out of scans, CSE, then dead code elimination; verifies after
 * every round. late (after grad): also products out of the recurrence. */
int graph_optimize(Graph *g, bool late, Err *e);
/* A graph for inference: dropout is the identity (its noise then dies). */
void graph_inference(Graph *g);
/* Removes nodes nothing reads and renumbers the rest densely. */
void graph_dce(Graph *g);

/* A training graph in two phases, for minibatches: the step (forward and
 * backward of one sequence: gradients accumulate into the grad slot) runs
 * for every sequence of a batch, the update (clipping, the optimizer) once
 * per batch on the summed gradients. A node is in the update when it
 * writes a parameter slot, or reads the step counter or a slot other than
 * the values, itself or through its operands. upd: (g->nnodes). */
typedef enum Phase { PHASE_STEP, PHASE_UPDATE } Phase;
void graph_mark_update(const Graph *g, bool *upd);
/* Keeps one phase of a graph after grad: PHASE_STEP drops the stores (and
 * the gradient norm), PHASE_UPDATE the accumulations, the output and the
 * loss; then removes what nothing reads. */
void graph_keep_phase(Graph *g, Phase p);

/* ------------------------------------------------------- llvm.c, kernels.c */

/* Codegen: llvm.c emits a graph's kernel; the product micro-kernels it
 * (and batched codegen) emits are in kernels.c, behind cg.h. */

/* A target's vector registers, which size the GEMM's register tile. */
typedef struct Simd {
  int lanes; /* floats per register: 16 (AVX-512), 8 (AVX, AVX2), 4 (SSE2, NEON,
              * wasm simd128), 1 (no vectors) */
  int regs;  /* vector registers: 32 (AVX-512, AArch64) or 16 */
  int mv_lanes; /* the batch-1 products' vectors (matvec_block_n): 16 floats on
                 * x86, whose results are pinned, the target's lanes elsewhere
                 * (a Cortex-M4 adds scalars); 0: 16 */
} Simd;
/* The vectors of tm's CPU, from its feature list, or for a CPU named without
 * one (jit_new("haswell")), from the registers its back end gives a vector
 * add (kernels.c). */
Simd simd_of(LLVMTargetMachineRef tm);
/* The same without a target machine, for a non-empty feature list (what
 * a target machine of that triple and features would give). */
Simd simd_of_features(const char *triple, const char *features);

/* What a generated kernel needs from its caller, in floats. */
typedef struct KernelAbi {
  size_t scratch_fixed; /* scratch: scratch_fixed + tmax * scratch_per_t (batched: */
  size_t scratch_per_t; /* + B * scratch_per_b, and per_t per packed row) */
  size_t scratch_per_b;
  size_t noise; /* uniform draws per call (batched: per sequence), for noise nodes */
  size_t packed; /* batched: floats of the packed weights (batch.c's packs), 0: none */
  bool extra;    /* a second function beside the kernel: a batched kernel's NAME_pack,
                  * the update's update_range (kernel_emit_simd) */
} KernelAbi;

/* A CPU's instructions for int8 x int8 dot products into int32 lanes. */
typedef enum Int8Dot {
  INT8_DOT_NONE,
  INT8_DOT_SDOT,    /* AArch64's dotprod: sdot, 16 bytes */
  INT8_DOT_VNNI256, /* x86 AVX-VNNI (Alder Lake): vpdpbusd, 32 bytes (unsigned x signed) */
  INT8_DOT_VNNI512, /* x86 AVX512-VNNI (Ice Lake server, Zen 4): vpdpbusd, 64 bytes */
} Int8Dot;

enum { MAX_KERNEL_PARTS = 8 }; /* CodegenOptions.parts */

typedef struct CodegenOptions {
  const float *baked_values; /* AOT: parameter values as constant data */
  const char *vector_width;  /* "prefer-vector-width": "256" or "512"; NULL: LLVM's
                              * choice, and 512 for batch.c's kernels with AVX-512's
                              * registers (cg.h's prefer_vector_width) */
  bool accumulate;           /* gradients add to what the grad slot holds (a batch's
                              * sequences, one call each); else a call computes them
                              * afresh, from zero */
  bool range;                /* an update over a range of the slots (llvm.c) */
  Simd simd;                 /* the target's vectors (simd_of); lanes 0: 4 x 16, SSE2's */
  bool quantize;             /* with baked_values: the products' matrices as int8 rows
                              * with per-row scales (see quantize_row) */
  int parts;                 /* the function cut into this many, at most MAX_KERNEL_PARTS
                              * (NAME, NAME.part1, ...; see llvm.c), for the JIT to
                              * compile at once; 0, 1: one function */
  Int8Dot int8_dot;          /* with quantize, on a CPU with integer dot products
                              * (target_int8_dot): a product with a float input
                              * quantizes it as quantize_row does (one scale per
                              * vector) and sums int8 x int8 in int32 (sdot,
                              * vpdpbusd), then scales by the two scales */
} CodegenOptions;

/* rnnc build --quantize int8. A parameter that is a product's matrix
 * (param_quantized: a matrix-vector product reads it) is stored as int8
 * rows: row w of n floats as q[0..n) and a scale, w[k] ~ q[k] * scale, with
 * scale = max |w[k]| / 127 and q[k] = w[k] / scale rounded to nearest
 * (quantize_row). quantized_values writes the values such an object
 * computes with (the quantized parameters' q * scale, the others as they
 * are), the reference its results are compared with. */
void quantize_row(const float *w, size_t n, int8_t *q, float *scale);
bool param_quantized(const Graph *g, int p);
void quantized_values(const Graph *g, const float *values, float *out);

/* Emits the kernel of graph g as function `name` in module m (see llvm.c
 * for its signature). */
int codegen(const Graph *g, LLVMModuleRef m, const char *name, const CodegenOptions *opt,
            KernelAbi *abi, Err *e);

/* ---------------------------------------------------------------- batch.c */

/* Emits the batched kernel of graph g (see batch.c for its signature):
 * a batch of packed sequences at once, products as GEMMs. Returns -1 with
 * a message naming the node when the graph has something it cannot batch
 * (the caller then runs sequences one at a time). */
int codegen_batch(const Graph *g, LLVMModuleRef m, const char *name, const CodegenOptions *opt,
                  KernelAbi *abi, Err *e);

/* -------------------------------------------------------------- targets.c */

/* The host's back end (for the JIT); the first call's host_code (the
 * process compiles for this machine) sets the code generator's options. */
void target_init_native(bool host_code);
/* A target machine; NULL triple/cpu mean the host (its CPU name and
 * features, so AVX-512 gets used where the machine has it). The back end
 * of another triple is initialized here, when first needed. */
LLVMTargetMachineRef target_machine(const char *triple, const char *cpu, const char *features,
                                    LLVMRelocMode reloc, Err *e);
/* Module m compiled by tm as assembly text (malloc'd, NUL-terminated), or
 * NULL when it cannot be: what the probes below look for instructions in. */
char *target_asm_text(LLVMTargetMachineRef tm, LLVMModuleRef m);
/* LLVMTargetMachineEmitToMemoryBuffer, whose buffer (a partial one, on a
 * failure) is the caller's only on success: 0, or -1 with LLVM's message
 * in *msg (LLVMDisposeMessage it; *mb is then NULL). */
int target_emit(LLVMTargetMachineRef tm, LLVMModuleRef m, LLVMCodeGenFileType type,
                LLVMMemoryBufferRef *mb, char **msg);
/* Whether tm has an instruction for llvm.fma.f32 (else it is a call to
 * libm's fmaf). */
bool target_has_fma(LLVMTargetMachineRef tm);
/* tm's int8 dot product instructions (4-way int8 products summed into
 * int32 lanes): an AArch64 CPU with the dotprod extension's sdot, an x86
 * CPU with AVX512-VNNI or AVX-VNNI's vpdpbusd; --quantize int8 then
 * quantizes the products' input vectors too (CodegenOptions.int8_dot). */
Int8Dot target_int8_dot(LLVMTargetMachineRef tm);
/* Its instruction's name: "sdot", "vpdpbusd" (or "" for none). */
const char *int8_dot_name(Int8Dot d);

/* What `rnnc build --target TRIPLE --cpu CPU` compiles for. */
typedef struct TargetChoice {
  bool host;           /* the host's CPU and all its features (cpu and features unused) */
  char cpu[32];        /* an LLVM CPU name; "": LLVM's default for the triple */
  char features[64];   /* added to the CPU's, e.g. "+m,+a,+f,+d,+c" */
  char means[64];      /* for --cpu generic: what the code runs on ("any x86-64") */
  bool bare;           /* no OS (thumbv7em-none-eabihf, wasm32): no unwind tables */
  LLVMRelocMode reloc; /* PIC, but static for bare metal and WebAssembly */
} TargetChoice;
/* Checks cpu (NULL, "host", "generic" or a CPU name) for triple (NULL: the
 * host's) and fills c; -1 with a message for a CPU rnnc does not accept
 * for the triple (LLVM would ignore an unknown name and aborts on some). */
int target_choose(const char *triple, const char *cpu, TargetChoice *c, Err *e);
/* rnnc build --help's list of targets: the tested ones and every other
 * back end this build has. */
void target_help(Buf *b);
/* The CPUs --cpu accepts for triple (NULL: the host's); -1 for a triple
 * of an architecture rnnc does not test. */
int target_cpus(const char *triple, Buf *b, Err *e);

/* ---------------------------------------------------------------- cache.c */

/* Compiled kernels on disk: a directory of entries, each a key (bytes that
 * determine the machine code) and an object file; see cache.c for what is
 * trusted. */
typedef struct Cache Cache;
/* The cache in dir, created 0700 if missing. NULL, with the reason in why,
 * when dir cannot be created or opened, belongs to another user or is
 * writable by group or others. */
Cache *cache_open(const char *dir, Err *why);
void cache_close(Cache *c);
/* $RNNC_CACHE_DIR, else $XDG_CACHE_HOME/rnnc, else $HOME/.cache/rnnc;
 * NULL when none is set (malloc'd). */
char *cache_default_dir(void);
/* RNNC_NO_CACHE is set (and neither empty nor "0"). */
bool cache_disabled_by_env(void);
/* 0 with the object of key appended to obj, or -1: no entry, or one that
 * is not to be trusted or used (a miss). */
int cache_load(Cache *c, const void *key, size_t keylen, Buf *obj);
/* Stores obj for key, replacing the entry atomically (never another
 * user's). Failures are ignored: a cache that cannot be written misses. */
void cache_store(Cache *c, const void *key, size_t keylen, const void *obj, size_t objlen);

/* ------------------------------------------------------------------ jit.c */

/* Verify the module, then run LLVM's O3 pipeline for tm (AOT objects),
 * or the kernels' pipeline: the same objects for the JIT's kernels at less
 * cost (see jit.c). */
int optimize_module(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *e);
int optimize_kernel(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *e);

typedef struct Jit Jit;
/* A JIT for the host's CPU (cpu NULL) or for a named x86-64 CPU that the
 * host can run (see target_choose), so that results are the same on every
 * machine. */
Jit *jit_new(const char *cpu, Err *e);
void jit_free(Jit *j);
/* The vectors of the JIT's target (simd_of), for codegen. */
Simd jit_simd(const Jit *j);

/* Where jit_kernel's and jit_compile's time went, summed over calls: CPU
 * seconds of the thread that compiled. */
typedef struct JitTimes {
  double cache;        /* the key, reading and writing the cache */
  double codegen;      /* rnnc's codegen of the kernels not in the cache */
  double optimize;     /* LLVM's optimization passes */
  double machine_code; /* LLVM's code generator */
  int kernels, cached; /* kernels compiled; how many of them came from the cache */
} JitTimes;

/* Compiles the kernel in module m (as codegen made it) for the JIT's
 * target into an object file appended to obj: optimizes it and generates
 * machine code. A kernel codegen cut in parts (CodegenOptions.parts) is
 * compiled part by part at once, a thread each, into one object per part,
 * all appended to obj (see jit.c). m is changed, not taken. Thread-safe:
 * kernels can be compiled at once, each in a context of its own. */
int jit_compile(const Jit *j, LLVMModuleRef m, Buf *obj, JitTimes *t, Err *e);
/* Adds the object (or objects) of jit_compile's to the JIT (not
 * thread-safe); it is linked at the first lookup of one of its symbols. */
int jit_add_object(Jit *j, const void *obj, size_t len, Err *e);
void *jit_lookup(Jit *j, const char *name, Err *e);

/* ------------------------------------------------------------------ obj.c */

/* Ahead-of-time inference: the forward kernel with baked weights and the
 * C-callable wrappers P_forward and P_predict in one object file (see
 * obj.c), and the C header that declares them. */
enum {
  OBJ_MAX_LEN = 64,    /* longest sequence P_forward takes (its stack scratch grows with len) */
  OBJ_MAX_PREFIX = 64, /* longest symbol prefix */
  OBJ_BATCH = 16,      /* names per call of P_forward_batch's batched kernel */
};

typedef struct ObjOptions {
  const char *prefix;   /* a C identifier: P_forward, P_predict, P_labels, P_NUM_CLASSES, ... */
  const char *triple;   /* NULL: the host's */
  const char *cpu;      /* NULL, "host", "generic" or a CPU name: see target_choose */
  char *const *vocab;   /* (g->vocab) characters as UTF-8: index i is vocab[i]; "" the unknown slot */
  int unknown;          /* the unknown slot's index, or -1 */
  const char *normalization; /* "ascii" or "nfc": for the header */
  char *const *labels;  /* (g->classes) class names */
  const float *values;  /* (g->nfloats) parameter values, laid out by Param.offset */
  const char *source;   /* for the header's comment, e.g. "graphs/gru.nn, CKPT" */
  bool quantize;        /* --quantize int8: the products' matrices as int8 rows (quantize_row) */
  bool no_batch_kernel; /* --no-batch-kernel: P_forward_batch calls P_forward per name */
} ObjOptions;

typedef struct ObjInfo {
  KernelAbi abi;
  char triple[128], cpu[64]; /* what the object was compiled for */
  char means[64];            /* what it runs on: "any x86-64", "and its features" (host) */
  KernelAbi babi;      /* P_forward_batch's batched kernel's, when batched */
  bool batched;        /* P_forward_batch runs a batched kernel (batch.c); else P_forward */
  size_t stack_bytes; /* P_forward's and P_predict's stack buffers at OBJ_MAX_LEN */
  size_t batch_stack_bytes; /* P_forward_batch's, at OBJ_BATCH names of OBJ_MAX_LEN */
  size_t text_bytes, rodata_bytes, data_bytes; /* code, constants (weights), writable data */
  Int8Dot int8_dot; /* --quantize int8 with integer dot products (CodegenOptions.int8_dot) */
} ObjInfo;

/* 0 if prefix can name the symbols, else -1 with a message. */
int obj_check_prefix(const char *prefix, Err *e);
/* Compiles inference graph g (after graph_passes(g, false, PASSES_ALL))
 * into a relocatable PIC object appended to object. */
int obj_emit(const Graph *g, const ObjOptions *o, Buf *object, ObjInfo *info, Err *e);
/* The C header for that object (object_name: its file name, for the
 * comment). */
void obj_header(const Graph *g, const ObjOptions *o, const ObjInfo *info, const char *object_name,
                Buf *out);
/* The JavaScript (ES) module that loads a WebAssembly module linked from
 * that object (wasm_name: its file name, beside the JS module) and wraps
 * its exports: labels, vocab, maxLen and load(), which gives predict(name)
 * and forward(indices). */
void obj_js_module(const Graph *g, const ObjOptions *o, const ObjInfo *info,
                   const char *wasm_name, Buf *out);

/* ---------------------------------------------------------- onnx_export.c */

/* The ONNX model (opset 14) of forward graph g (compile_graph's, before the
 * passes) with parameter values (g->nfloats, laid out by Param.offset),
 * appended to out; -1 with a message naming the node ONNX cannot express
 * (a random initial state). rnnc import reads it back (onnx_import.c). */
int onnx_export(const Graph *g, const float *values, Buf *out, Err *e);

/* -------------------------------------------------------------- compile.c */

/* The front end: tokenize, parse, lower, verify. Returns NULL with a
 * positioned message in e. text need not be NUL-terminated. */
Graph *compile_graph(const char *path, const char *text, size_t len, Err *e);
/* The same, with the data's sizes (may be NULL). */
Graph *compile_graph_data(const char *path, const char *text, size_t len, const DataSizes *sizes,
                          Err *e);
/* A graph file: a regular file of at most GRAPH_MAX_BYTES (a graph is a
 * few KB; /dev/zero or a sparse file of gigabytes is refused before it is
 * read). The text is NUL-terminated (len excludes it). */
enum { GRAPH_MAX_BYTES = 16 << 20 };
char *read_graph(const char *path, size_t *len, Err *e);
/* Whether path can be a graph file: readable, and not a checkpoint given
 * where the graph goes (what compile_graph says then). For commands that
 * read a checkpoint before they compile the graph. */
int graph_file_check(const char *path, Err *e);
/* read_graph, then compile_graph. */
Graph *compile_graph_file(const char *path, Err *e);

typedef enum PassStop { PASSES_FRONT, PASSES_GRAD, PASSES_ALL } PassStop;
/* The middle end: optimize, grad (when train), optimize; stops early for
 * --emit. */
int graph_passes(Graph *g, bool train, PassStop stop, Err *e);

/* The kernels a graph file compiles into: one generated function each, the
 * same for the JIT and for `rnnc compile --emit llvm|asm`. compile.c's
 * table says how each kind's graph is prepared and which codegen entry
 * emits it. */
typedef enum KernelKind {
  KERNEL_TRAIN,         /* batch 1: one training step: forward, loss, backward, update */
  KERNEL_FORWARD,       /* inference: the logits, no loss */
  KERNEL_STEP,          /* a minibatch, one name per call: forward, loss, backward */
  KERNEL_UPDATE,        /* a minibatch's update: clipping, the optimizer */
  KERNEL_STEP_BATCH,    /* a minibatch's packed names at once (batch.c) */
  KERNEL_FORWARD_BATCH, /* inference on packed names at once (batch.c) */
  KERNEL_KINDS
} KernelKind;
#define KERNEL_BIT(k) (1u << (k))
#define KERNEL_ALL (KERNEL_BIT(KERNEL_KINDS) - 1)

typedef struct Kernels {
  Graph *graph[KERNEL_KINDS]; /* after its passes; NULL: not asked for */
  double front, passes;       /* seconds in the front end and in the passes */
} Kernels;

/* The function name of kind k ("train", "forward"). */
const char *kernel_name(KernelKind k);
/* The name of the second function kind k's module may hold (the update's
 * update_range, a batched kernel's NAME_pack; KernelAbi.extra says whether
 * it does), or NULL. */
const char *kernel_extra_name(KernelKind k);
/* Whether a graph may have no kernel of kind k (batch.c cannot batch it:
 * kernel_emit fails, naming the node), the runtime then running the
 * one-name kernels instead. */
bool kernel_optional(KernelKind k);
/* The graph of every kind in want (KERNEL_BIT(k) for each), from one graph
 * file's text, each prepared and through its passes; lr > 0 replaces the
 * graph's learning rate; sizes (may be NULL): the data's. On failure,
 * nothing is left to free. */
int kernels_prepare(Kernels *ks, const char *path, const char *text, size_t len, unsigned want,
                    double lr, const DataSizes *sizes, Err *e);
void kernels_free(Kernels *ks);
/* Emits kind k's kernel of g (ks->graph[k]) as function kernel_name(k) in m,
 * for target machine tm (the JIT's or --emit's). */
int kernel_emit(KernelKind k, const Graph *g, LLVMModuleRef m, LLVMTargetMachineRef tm,
                KernelAbi *abi, Err *e);
/* The same for vectors simd (simd_of of the target): thread-safe, for
 * kernels compiled at once in contexts of their own. */
int kernel_emit_simd(KernelKind k, const Graph *g, LLVMModuleRef m, Simd simd, KernelAbi *abi,
                     Err *e);

/* (jit.c) Kernel `kind` of graph g (after its passes, see kernels_prepare) for the
 * JIT's target with vectors simd (jit_simd): the object file appended to
 * obj and its ABI in *abi. Takes both from cache c (NULL: none) when it
 * holds the kernel's key, with no codegen at all; else emits the kernel
 * (kernel_emit_simd), compiles it (jit_compile) and stores both. The key
 * (jit_kernel_key): the JIT's identity (rnnc's and LLVM's builds, target
 * triple, CPU and features), the kind, simd and the graph's bytes
 * (graph_key): everything the kernel's code and ABI depend on.
 * Thread-safe as jit_compile; g is only read. */
int jit_kernel(const Jit *j, KernelKind kind, const Graph *g, Simd simd, Cache *c, Buf *obj,
               KernelAbi *abi, JitTimes *t, Err *e);
/* jit_kernel in two halves, for a caller that wants to know a kernel's
 * ABI, and whether codegen makes it at all, before LLVM compiles it (maybe
 * later, on another thread). jit_kernel_begin: from the cache as
 * jit_kernel, leaving p->mod NULL; else codegen into p->mod (in a context
 * of its own, p->ctx), *abi set. jit_kernel_finish: LLVM's passes and
 * machine code, the object appended to obj and stored in the cache (a
 * no-op when p->mod is NULL); it frees p, as jit_kernel_drop does without
 * compiling. Each half thread-safe as jit_kernel; p may move between
 * threads in between. */
typedef struct JitPending {
  LLVMContextRef ctx;
  LLVMModuleRef mod; /* NULL: nothing left to compile */
  Buf key;           /* the cache key (empty: not cached) */
} JitPending;
int jit_kernel_begin(const Jit *j, KernelKind kind, const Graph *g, Simd simd, Cache *c, Buf *obj,
                     KernelAbi *abi, JitPending *p, JitTimes *t, Err *e);
int jit_kernel_finish(const Jit *j, Cache *c, JitPending *p, Buf *obj, const KernelAbi *abi,
                      JitTimes *t, Err *e);
void jit_kernel_drop(JitPending *p);
void jit_kernel_key(const Jit *j, KernelKind kind, const Graph *g, Simd simd, Buf *key);

#endif

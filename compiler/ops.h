/* ops.h: every IR op, defined once. ORDER OP: the enum, the name table and
 * the shape rules are all generated from this list.
 *
 * Columns: enum name, printed name, operand count (-1: variable), flags,
 * shape rule (a function in ir.c that checks the operand types and returns
 * the result type, or reports an error).
 *
 * Flags: F_ELEM   elementwise (a fusion candidate: same-shape loop, scalar
 *                 operands broadcast)
 *        F_EFFECT has a side effect (writes a parameter slot); never dead
 *        F_LEAF   reads no operand values
 *
 * Legend for the comments: W a matrix [M, N], u [M], v [N], s a scalar,
 * k0 the first column a product uses, T the sequence length. */
#ifndef RNNC_OPS_H
#define RNNC_OPS_H

#define F_ELEM 1
#define F_EFFECT 2
#define F_LEAF 4

/* clang-format off */
#define RNNC_OPS(X) \
  /* leaves */ \
  X(LOAD,        "load",        0, F_LEAF,   shape_load)    /* slot b of param a          */ \
  X(INPUT,       "input",       0, F_LEAF,   shape_leaf)    /* onehot[T, V]               */ \
  X(TARGET,      "target",      0, F_LEAF,   shape_leaf)    /* class[C]                   */ \
  X(CONST,       "const",       0, F_LEAF,   shape_leaf)    /* f32 scalar f               */ \
  X(ZEROS,       "zeros",       0, F_LEAF,   shape_leaf)    /* f32[...] of zeros          */ \
  X(NOISE,       "noise",       0, F_LEAF,   shape_leaf)    /* U(-f, f), drawn every call */ \
  X(STEP,        "step",        0, F_LEAF,   shape_leaf)    /* optimizer step t (1-based) */ \
  X(ARG,         "arg",         0, F_LEAF,   shape_leaf)    /* block argument a           */ \
  /* elementwise: operands of one shape, or scalars that broadcast */ \
  X(ADD,         "add",         2, F_ELEM,   shape_elem)    \
  X(SUB,         "sub",         2, F_ELEM,   shape_elem)    \
  X(MUL,         "mul",         2, F_ELEM,   shape_elem)    \
  X(DIV,         "div",         2, F_ELEM,   shape_elem)    \
  X(POW,         "pow",         2, F_ELEM,   shape_elem)    \
  X(MIN,         "min",         2, F_ELEM,   shape_elem)    \
  X(NEG,         "neg",         1, F_ELEM,   shape_elem)    \
  X(SIGMOID,     "sigmoid",     1, F_ELEM,   shape_elem)    \
  X(TANH,        "tanh",        1, F_ELEM,   shape_elem)    \
  X(EXP,         "exp",         1, F_ELEM,   shape_elem)    \
  X(LOG,         "log",         1, F_ELEM,   shape_elem)    \
  X(SQRT,        "sqrt",        1, F_ELEM,   shape_elem)    \
  X(RELU,        "relu",        1, F_ELEM,   shape_elem)    /* max(a, 0)                  */ \
  X(FLOOR,       "floor",       1, F_ELEM,   shape_elem)    \
  X(COS,         "cos",         1, F_ELEM,   shape_elem)    \
  X(DROPOUT,     "dropout",     2, F_ELEM,   shape_elem)    /* v, u: u >= 2f-1 ? v/(1-f) : 0 */ \
  X(RELU_GRAD,   "relu_grad",   2, F_ELEM,   shape_elem)    /* g, y: y > 0 ? g : 0 (relu's adjoint) */ \
  /* structure */ \
  X(CONCAT,      "concat",      2, 0,        shape_concat)  /* [na] [nb] -> [na+nb]       */ \
  X(SLICE,       "slice",       1, 0,        shape_slice)   /* v[a:b]                     */ \
  X(PAD,         "pad",         1, 0,        shape_pad)     /* [n] -> [b], v at [a:a+n], zeros elsewhere */ \
  X(DENSE,       "dense",       1, 0,        shape_dense)   /* onehot[V] -> f32[V]        */ \
  X(SUM,         "sum",         1, 0,        shape_sum)     /* [n] or [m, n] -> scalar    */ \
  X(MATVEC,      "matvec",      2, 0,        shape_matvec)  /* W[:, a:a+n] @ v -> [M]     */ \
  X(MATVEC_T,    "matvec_t",    2, 0,        shape_matvec_t)/* W[:, a:a+b]^T u -> [b]     */ \
  X(LOG_SOFTMAX, "log_softmax", 1, 0,        shape_same)    /* [n] -> [n]                 */ \
  X(PICK,        "pick",        2, 0,        shape_pick)    /* v[y], y a class -> scalar  */ \
  X(SCATTER,     "scatter",     2, 0,        shape_scatter) /* s at y, zeros elsewhere    */ \
  X(LAST,        "last",        1, 0,        shape_last)    /* [T, n] -> row T-1          */ \
  X(PUT_LAST,    "put_last",    1, 0,        shape_put_last)/* [n] -> [T, n], zeros + row T-1 */ \
  X(FIRST,       "first",       1, 0,        shape_last)    /* [T, n] -> row 0            */ \
  X(PUT_FIRST,   "put_first",   1, 0,        shape_put_last)/* [n] -> [T, n], zeros + row 0 */ \
  /* recurrence: a scan over the sequence operands, carrying state */ \
  X(SCAN,        "scan",       -1, 0,        shape_scan)    /* see ir.c                   */ \
  X(PROJ,        "proj",        1, 0,        shape_proj)    /* output a of a scan         */ \
  /* effects on parameter slots */ \
  X(ACC,         "acc",         1, F_EFFECT, shape_acc)     /* grad[a] += v               */ \
  X(ACC_OUTER,   "acc_outer",   2, F_EFFECT, shape_acc_outer)/* grad[a][:, b:] += u v^T    */ \
  X(STORE,       "store",       1, F_EFFECT, shape_store)   /* slot b of param a = v      */
/* clang-format on */

typedef enum Op {
#define X(e, name, arity, flags, rule) OP_##e,
  RNNC_OPS(X)
#undef X
      OP_COUNT
} Op;

#endif

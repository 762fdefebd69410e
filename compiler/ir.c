/* ir.c: the IR: construction with shape inference, the text printer and
 * the verifier. Every op's shape rule is here, named in ops.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

const char *const op_names[OP_COUNT] = {
#define X(e, name, arity, flags, rule) name,
    RNNC_OPS(X)
#undef X
};
const int op_arity[OP_COUNT] = {
#define X(e, name, arity, flags, rule) arity,
    RNNC_OPS(X)
#undef X
};
const int op_flags[OP_COUNT] = {
#define X(e, name, arity, flags, rule) flags,
    RNNC_OPS(X)
#undef X
};

/* ------------------------------------------------------------------ types */

Type type_scalar(void) { return (Type){TY_F32, 0, {0, 0}}; }
Type type_vec(int n) { return (Type){TY_F32, 1, {n, 0}}; }
Type type_mat(int m, int n) { return (Type){TY_F32, 2, {m, n}}; }

bool type_eq(Type a, Type b) {
  if (a.kind != b.kind || a.rank != b.rank)
    return false;
  if (a.kind == TY_CLASS)
    return a.dim[0] == b.dim[0];
  for (int i = 0; i < a.rank; i++)
    if (a.dim[i] != b.dim[i])
      return false;
  return true;
}

const char *type_str(Type t, char *buf, size_t n) {
  static const char *const kinds[] = {"f32", "onehot", "class", "tuple", "none"};
  if (t.kind == TY_CLASS) {
    snprintf(buf, n, "class[%d]", t.dim[0]);
    return buf;
  }
  if (t.kind == TY_TUPLE || t.kind == TY_NONE) {
    snprintf(buf, n, "%s", kinds[t.kind]);
    return buf;
  }
  int k = snprintf(buf, n, "%s", kinds[t.kind]);
  if (t.rank == 0) {
    if (t.kind == TY_F32)
      snprintf(buf + k, n - (size_t)k, "[]");
    return buf;
  }
  for (int i = 0; i < t.rank && (size_t)k < n; i++) {
    char d[16];
    if (t.dim[i] == DIM_T)
      snprintf(d, sizeof d, "T");
    else
      snprintf(d, sizeof d, "%d", t.dim[i]);
    k += snprintf(buf + k, n - (size_t)k, "%s%s", i ? ", " : "[", d);
  }
  if ((size_t)k < n)
    snprintf(buf + k, n - (size_t)k, "]");
  return buf;
}

size_t type_numel(Type t) {
  size_t n = 1;
  for (int i = 0; i < t.rank; i++)
    n *= (size_t)(t.dim[i] == DIM_T ? 1 : t.dim[i]);
  return n;
}

static bool is_seq(Type t) { return t.rank >= 1 && t.dim[0] == DIM_T; }
static bool is_f32(Type t) { return t.kind == TY_F32; }
static bool is_vec(Type t) { return t.kind == TY_F32 && t.rank == 1 && !is_seq(t); }

/* The type of one row of a sequence. */
static Type row_type(Type t) {
  Type r = t;
  r.rank = t.rank - 1;
  r.dim[0] = t.dim[1];
  r.dim[1] = 0;
  return r;
}

static Type seq_of(Type t) {
  Type s = t;
  s.rank = t.rank + 1;
  s.dim[0] = DIM_T;
  s.dim[1] = t.dim[0];
  return s;
}

/* ------------------------------------------------------------ shape rules
 * Each returns 0 and sets *out, or returns -1 with the reason in why. */

typedef struct Why {
  char s[512];
} Why;

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    snprintf(why->s, sizeof why->s, __VA_ARGS__);                                                  \
    return -1;                                                                                     \
  } while (0)

#define T0 (g->nodes[n->in[0]].type)
#define T1 (g->nodes[n->in[1]].type)
#define TS(t, buf) type_str(t, buf, sizeof buf)

static int shape_leaf(const Graph *g, const Node *n, Type *out, Why *why) {
  *out = n->type;
  return 0;
}

/* Parameter a of a load or store; PARAM_ALL is the whole flat buffer. */
Type param_type(const Graph *g, int a) {
  return a == PARAM_ALL ? type_vec((int)g->nfloats) : g->params[a].type;
}
size_t param_offset(const Graph *g, int a) { return a == PARAM_ALL ? 0 : g->params[a].offset; }
const char *param_name(const Graph *g, int a) { return a == PARAM_ALL ? "*" : g->params[a].name; }

static int shape_load(const Graph *g, const Node *n, Type *out, Why *why) {
  if (n->a != PARAM_ALL && (n->a < 0 || n->a >= g->nparams))
    FAIL("no parameter %d", n->a);
  if (n->b < 0 || n->b >= SLOT_COUNT)
    FAIL("no slot %d", n->b);
  if (n->a != PARAM_ALL && n->b != SLOT_VALUE && !g->params[n->a].trainable)
    FAIL("buffer %s has no optimizer slots", g->params[n->a].name);
  *out = param_type(g, n->a);
  return 0;
}

/* Operands of one shape, or a scalar and a tensor (broadcast). A sequence
 * of vectors [T, n] counts as one shape: the op applies to every row (the
 * adjoint of a sequence two scans read is a sum of sequences). */
static int shape_elem(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  const char *op = op_names[n->op];
  if (!is_f32(T0) || (is_seq(T0) && T0.rank != 2))
    FAIL("%s needs a float tensor, not %s", op, TS(T0, b0));
  if (n->nin == 1) {
    *out = T0;
    return 0;
  }
  if (!is_f32(T1) || (is_seq(T1) && T1.rank != 2))
    FAIL("%s needs a float tensor, not %s", op, TS(T1, b1));
  if (type_eq(T0, T1) || T1.rank == 0)
    *out = T0;
  else if (T0.rank == 0)
    *out = T1;
  else
    FAIL("%s: shapes %s and %s do not match", op, TS(T0, b0), TS(T1, b1));
  return 0;
}

static int shape_same(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  if (!is_vec(T0))
    FAIL("%s needs a vector, not %s", op_names[n->op], TS(T0, b));
  *out = T0;
  return 0;
}

/* A float vector [n], or a sequence of them [T, n]: what concat, slices
 * and pads work on (a sequence row by row). */
static bool is_rows(Type t) { return is_vec(t) || (is_f32(t) && t.rank == 2 && is_seq(t)); }

static int shape_concat(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (!is_rows(T0) || !is_rows(T1) || is_seq(T0) != is_seq(T1))
    FAIL("concat needs two vectors or two sequences of vectors, not %s and %s", TS(T0, b0),
         TS(T1, b1));
  /* Sizes are at most 2^24 (lowering's eval_int); repeated concats must not
   * overflow int (a loop doubling a vector did: tests/errors/concat_overflow.nn). */
  if (type_width(T0) > (1 << 24) - type_width(T1))
    FAIL("concat of %s and %s: over %d elements", TS(T0, b0), TS(T1, b1), 1 << 24);
  *out = type_with_width(T0, type_width(T0) + type_width(T1));
  return 0;
}

static int shape_slice(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  if (!is_rows(T0))
    FAIL("slicing needs a vector or a sequence of vectors, not %s", TS(T0, b));
  if (n->a < 0 || n->a >= n->b || n->b > type_width(T0))
    FAIL("slice [%d:%d] is out of range for %s", n->a, n->b, TS(T0, b));
  *out = type_with_width(T0, n->b - n->a);
  return 0;
}

static int shape_pad(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  if (!is_rows(T0))
    FAIL("pad needs a vector or a sequence of vectors, not %s", TS(T0, b));
  if (n->a < 0 || n->a + type_width(T0) > n->b)
    FAIL("pad of %s at %d exceeds size %d", TS(T0, b), n->a, n->b);
  *out = type_with_width(T0, n->b);
  return 0;
}

static int shape_dense(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  if (T0.kind != TY_ONEHOT || T0.rank != 1)
    FAIL("dense needs a one-hot vector, not %s", TS(T0, b));
  *out = type_vec(T0.dim[0]);
  return 0;
}

static int shape_sum(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  if (!is_f32(T0) || T0.rank == 0 || is_seq(T0))
    FAIL("sum needs a vector or a matrix, not %s", TS(T0, b));
  *out = type_scalar();
  return 0;
}

static int shape_matvec(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (!is_f32(T0) || T0.rank != 2 || is_seq(T0))
    FAIL("the left operand of @ must be a matrix, not %s", TS(T0, b0));
  /* A sequence of vectors [T, n] (compiler-made: a product hoisted out of
   * a scan) gives the sequence of products [T, m]. */
  bool seq = T1.kind == TY_F32 && T1.rank == 2 && is_seq(T1);
  Type v = seq ? row_type(T1) : T1;
  if (v.rank != 1 || is_seq(v) || (v.kind != TY_F32 && v.kind != TY_ONEHOT))
    FAIL("the right operand of @ must be a vector, not %s", TS(T1, b1));
  /* b = 0: the whole matrix; else columns [a, a + b) with b = len(v). */
  bool whole = n->b == 0 && n->a == 0 && v.dim[0] == T0.dim[1];
  bool part = n->b == v.dim[0] && n->a >= 0 && n->a + n->b <= T0.dim[1];
  if (!whole && !part)
    FAIL("@: matrix %s and vector %s do not match", TS(T0, b0), TS(T1, b1));
  *out = seq ? seq_of(type_vec(T0.dim[0])) : type_vec(T0.dim[0]);
  return 0;
}

static int shape_matvec_t(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  /* A sequence [T, m] gives the sequence of products [T, b]. A one-hot u
   * (a row index) picks row u of W: an embedding's lookup. */
  bool seq = T1.rank == 2 && is_seq(T1);
  Type u = seq ? row_type(T1) : T1;
  if (!is_f32(T0) || T0.rank != 2 || is_seq(T0) || (u.kind != TY_F32 && u.kind != TY_ONEHOT) ||
      u.rank != 1 || is_seq(u) || u.dim[0] != T0.dim[0])
    FAIL(u.kind == TY_ONEHOT ? "W[x] (or x @ W): one-hot %s cannot pick a row of %s"
                             : "@: vector %s and matrix %s do not match",
         TS(T1, b1), TS(T0, b0));
  if (n->a < 0 || n->b <= 0 || n->a + n->b > T0.dim[1])
    FAIL("matvec_t: columns [%d:%d] out of range for %s", n->a, n->a + n->b, TS(T0, b0));
  *out = seq ? seq_of(type_vec(n->b)) : type_vec(n->b);
  return 0;
}

static int shape_pick(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (!is_vec(T0) || T1.kind != TY_CLASS || T1.dim[0] != T0.dim[0])
    FAIL("indexing %s by %s: the class count must equal the vector's size", TS(T0, b0),
         TS(T1, b1));
  *out = type_scalar();
  return 0;
}

static int shape_scatter(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (!is_f32(T0) || T0.rank != 0 || T1.kind != TY_CLASS)
    FAIL("scatter needs a scalar and a class, not %s and %s", TS(T0, b0), TS(T1, b1));
  *out = type_vec(T1.dim[0]);
  return 0;
}

static int shape_last(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  bool onehot = T0.kind == TY_ONEHOT; /* compiler-made: a character */
  if ((!is_f32(T0) && !onehot) || T0.rank != 2 || !is_seq(T0))
    FAIL("%s needs a sequence of vectors [T, n], not %s", op_names[n->op], TS(T0, b));
  *out = row_type(T0);
  return 0;
}

static int shape_put_last(const Graph *g, const Node *n, Type *out, Why *why) {
  char b[64];
  if (!is_vec(T0))
    FAIL("%s needs a vector, not %s", op_names[n->op], TS(T0, b));
  *out = seq_of(T0);
  return 0;
}

static int shape_scan(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (n->region <= 0 || n->region >= g->nblocks)
    FAIL("scan without a body");
  const Block *body = &g->blocks[n->region];
  int nseq = n->a, ncarry = n->b;
  if (nseq < 1 || ncarry < 1 || nseq + ncarry != n->nin)
    FAIL("scan needs at least one sequence and one carried state");
  if (body->nargs != n->nin)
    FAIL("scan body takes %d arguments, scan passes %d", body->nargs, n->nin);
  if (body->nyields < ncarry)
    FAIL("scan body yields %d values for %d carried states", body->nyields, ncarry);
  for (int i = 0; i < n->nin; i++) {
    Type t = g->nodes[n->in[i]].type;
    Type want = i < nseq ? row_type(t) : t;
    Type arg = g->nodes[body->args[i]].type;
    if (i < nseq && !is_seq(t))
      FAIL("scan over %s: not a sequence", TS(t, b0));
    if (i >= nseq && (t.rank > 1 || is_seq(t) || t.kind != TY_F32))
      FAIL("a carried state must be a float vector, not %s", TS(t, b0));
    if (!type_eq(arg, want))
      FAIL("scan body argument %d is %s but receives %s", i + 1, TS(arg, b0), TS(want, b1));
  }
  for (int i = 0; i < body->nyields; i++) {
    Type y = g->nodes[body->yields[i]].type;
    if (i < ncarry && !type_eq(y, g->nodes[n->in[nseq + i]].type))
      FAIL("the cell returns %s for a state that starts as %s", TS(y, b0),
           TS(g->nodes[n->in[nseq + i]].type, b1));
    if (y.kind != TY_F32 || y.rank > 1 || is_seq(y))
      FAIL("a scan can only stack float vectors, not %s", TS(y, b0));
  }
  *out = (Type){TY_TUPLE, 0, {0, 0}};
  return 0;
}

static int shape_proj(const Graph *g, const Node *n, Type *out, Why *why) {
  const Node *s = &g->nodes[n->in[0]];
  if (s->op != OP_SCAN)
    FAIL("proj of a %s, not a scan", op_names[s->op]);
  const Block *body = &g->blocks[s->region];
  if (n->a < 0 || n->a >= body->nyields)
    FAIL("scan has no result %d", n->a);
  *out = seq_of(g->nodes[body->yields[n->a]].type);
  return 0;
}

static int param_check(const Graph *g, const Node *n, Why *why) {
  if (n->a < 0 || n->a >= g->nparams)
    FAIL("no parameter %d", n->a);
  if (!g->params[n->a].trainable)
    FAIL("%s is a buffer: it has no gradient or optimizer state", g->params[n->a].name);
  return 0;
}

static int shape_acc(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (param_check(g, n, why))
    return -1;
  /* A sequence [T, n] accumulates the sum of its rows. */
  Type v = is_seq(T0) ? row_type(T0) : T0;
  if (!type_eq(v, g->params[n->a].type))
    FAIL("acc of %s into %s %s", TS(T0, b0), g->params[n->a].name,
         TS(g->params[n->a].type, b1));
  *out = (Type){TY_NONE, 0, {0, 0}};
  return 0;
}

static int shape_acc_outer(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64], b2[64];
  if (param_check(g, n, why))
    return -1;
  /* Two sequences [T, m] and [T, n] accumulate the sum of the rows'
   * outer products (U^T V). A one-hot v adds u to column v; a one-hot u
   * adds v to row u (an embedding's gradient: a scatter-add of rows). */
  Type p = g->params[n->a].type;
  bool seqs = is_seq(T0) && is_seq(T1);
  Type u = seqs ? row_type(T0) : T0, v = seqs ? row_type(T1) : T1;
  bool u_ok = u.rank == 1 && !is_seq(u) && (u.kind == TY_F32 || u.kind == TY_ONEHOT);
  if (p.rank != 2 || !u_ok || u.dim[0] != p.dim[0] || v.rank != 1 || is_seq(v) ||
      (v.kind != TY_F32 && v.kind != TY_ONEHOT) || (u.kind == TY_ONEHOT && v.kind == TY_ONEHOT) ||
      n->b < 0 || n->b + v.dim[0] > p.dim[1])
    FAIL("acc_outer of %s and %s into %s at column %d", TS(T0, b0), TS(T1, b1), TS(p, b2), n->b);
  *out = (Type){TY_NONE, 0, {0, 0}};
  return 0;
}

static int shape_store(const Graph *g, const Node *n, Type *out, Why *why) {
  char b0[64], b1[64];
  if (n->a != PARAM_ALL && param_check(g, n, why))
    return -1;
  if (n->b < 0 || n->b >= SLOT_COUNT || n->b == SLOT_GRAD)
    FAIL("store to slot %d", n->b);
  if (!type_eq(T0, param_type(g, n->a)))
    FAIL("store of %s into %s %s", TS(T0, b0), param_name(g, n->a),
         TS(param_type(g, n->a), b1));
  *out = (Type){TY_NONE, 0, {0, 0}};
  return 0;
}

#undef FAIL
#undef T0
#undef T1
#undef TS

typedef int (*ShapeRule)(const Graph *, const Node *, Type *, Why *);
static const ShapeRule shape_rules[OP_COUNT] = {
#define X(e, name, arity, flags, rule) rule,
    RNNC_OPS(X)
#undef X
};

/* ----------------------------------------------------------- construction */

Graph *graph_new(void) {
  Graph *g = xcalloc(1, sizeof *g);
  g->input = g->target = g->output = g->loss = g->grad_norm = -1;
  ir_new_block(g, -1);
  return g;
}

void graph_free(Graph *g) {
  if (!g)
    return;
  for (int i = 0; i < g->nnodes; i++)
    free(g->nodes[i].in);
  for (int i = 0; i < g->nblocks; i++) {
    free(g->blocks[i].nodes);
    free(g->blocks[i].args);
    free(g->blocks[i].yields);
  }
  for (int i = 0; i < g->nparams; i++)
    free(g->params[i].name);
  free(g->nodes);
  free(g->blocks);
  free(g->params);
  if (g->src) {
    free(g->src->path);
    free(g->src->text);
    free(g->src);
  }
  free(g);
}

int ir_new_block(Graph *g, int parent) {
  g->blocks = xrealloc(g->blocks, (size_t)(g->nblocks + 1) * sizeof *g->blocks);
  g->blocks[g->nblocks] = (Block){.parent = parent};
  return g->nblocks++;
}

static int new_node(Graph *g, int blk, Op op, const int *in, int nin, Pos pos) {
  if (g->nnodes == g->capnodes) {
    g->capnodes = g->capnodes ? 2 * g->capnodes : 256;
    g->nodes = xrealloc(g->nodes, (size_t)g->capnodes * sizeof *g->nodes);
  }
  int id = g->nnodes++;
  Node *n = &g->nodes[id];
  *n = (Node){.op = op, .nin = nin, .region = -1, .block = blk, .pos = pos};
  if (nin) {
    n->in = xmalloc((size_t)nin * sizeof *n->in);
    memcpy(n->in, in, (size_t)nin * sizeof *in);
  }
  Block *b = &g->blocks[blk];
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 16;
    b->nodes = xrealloc(b->nodes, (size_t)b->cap * sizeof *b->nodes);
  }
  b->nodes[b->n++] = id;
  return id;
}

/* Undoes the most recent new_node (after a shape error). */
static void drop_last(Graph *g, int blk) {
  free(g->nodes[g->nnodes - 1].in);
  g->nnodes--;
  g->blocks[blk].n--;
}

static int typed(Graph *g, Diag *d, int blk, int id) {
  Node *n = &g->nodes[id];
  Why why;
  Type t;
  if (shape_rules[n->op](g, n, &t, &why)) {
    Pos pos = n->pos;
    drop_last(g, blk);
    if (d)
      error_at(d, pos, "%s", why.s);
    fprintf(stderr, "rnnc: internal error: compiler-made %s node: %s\n", op_names[n->op], why.s);
    abort();
  }
  g->nodes[id].type = t;
  return id;
}

int ir_add(Graph *g, Diag *d, int blk, Op op, const int *in, int nin, int a, int b, double f,
           Pos pos) {
  if (op_arity[op] >= 0 && op_arity[op] != nin) {
    fprintf(stderr, "rnnc: internal error: %s takes %d operands, got %d\n", op_names[op],
            op_arity[op], nin);
    abort();
  }
  int id = new_node(g, blk, op, in, nin, pos);
  g->nodes[id].a = a;
  g->nodes[id].b = b;
  g->nodes[id].f = f;
  return typed(g, d, blk, id);
}

int ir_leaf(Graph *g, int blk, Op op, Type t, double f, int a, Pos pos) {
  int id = new_node(g, blk, op, NULL, 0, pos);
  g->nodes[id].type = t;
  g->nodes[id].f = f;
  g->nodes[id].a = a;
  return id;
}

int ir_block_arg(Graph *g, int blk, Type t, Pos pos) {
  Block *b = &g->blocks[blk];
  int id = ir_leaf(g, blk, OP_ARG, t, 0, b->nargs, pos);
  b = &g->blocks[blk];
  b->args = xrealloc(b->args, (size_t)(b->nargs + 1) * sizeof *b->args);
  b->args[b->nargs++] = id;
  return id;
}

void ir_yield(Graph *g, int blk, int value) {
  Block *b = &g->blocks[blk];
  b->yields = xrealloc(b->yields, (size_t)(b->nyields + 1) * sizeof *b->yields);
  b->yields[b->nyields++] = value;
}

int ir_scan(Graph *g, Diag *d, int blk, const int *seqs, int nseq, const int *inits, int ncarry,
            int body, bool reverse, Pos pos) {
  int *in = xmalloc((size_t)(nseq + ncarry) * sizeof *in);
  memcpy(in, seqs, (size_t)nseq * sizeof *in);
  memcpy(in + nseq, inits, (size_t)ncarry * sizeof *in);
  int id = new_node(g, blk, OP_SCAN, in, nseq + ncarry, pos);
  free(in);
  Node *n = &g->nodes[id];
  n->a = nseq;
  n->b = ncarry;
  n->c = reverse;
  n->region = body;
  return typed(g, d, blk, id);
}

int ir_proj(Graph *g, int blk, int scan, int index, Pos pos) {
  return ir_add(g, NULL, blk, OP_PROJ, &scan, 1, index, 0, 0, pos);
}

/* ---------------------------------------------------------------- printer */

typedef struct Printer {
  const Graph *g;
  Buf *out;
  int *num; /* node id -> printed number (-1: not yet printed) */
  int next;
} Printer;

static const char *const slot_names[SLOT_COUNT] = {"value", "grad", "m", "v"};

static void print_ref(Printer *p, int id) {
  if (p->num[id] < 0)
    p->num[id] = p->next++;
  buf_printf(p->out, "%%%d", p->num[id]);
}

static void print_block(Printer *p, int blk, int indent);

static void print_pos(Printer *p, Pos pos) {
  if (pos.line > 0)
    buf_printf(p->out, "  ; %d:%d", pos.line, pos.col);
  buf_printf(p->out, "\n");
}

static void print_node(Printer *p, int id, int indent) {
  const Graph *g = p->g;
  const Node *n = &g->nodes[id];
  char tb[64];
  buf_printf(p->out, "%*s", indent, "");
  if (!(op_flags[n->op] & F_EFFECT)) {
    print_ref(p, id);
    buf_printf(p->out, " = ");
  }
  buf_printf(p->out, "%s", op_names[n->op]);
  switch (n->op) {
  case OP_LOAD:
  case OP_STORE:
    buf_printf(p->out, " %s[%s]", slot_names[n->b], param_name(g, n->a));
    break;
  case OP_ACC:
  case OP_ACC_OUTER:
    buf_printf(p->out, " grad[%s]", g->params[n->a].name);
    break;
  case OP_CONST:
  case OP_NOISE:
  case OP_DROPOUT:
    buf_printf(p->out, " %.9g", n->f);
    break;
  case OP_ARG:
    buf_printf(p->out, " %d", n->a);
    break;
  default:
    break;
  }
  for (int i = 0; i < n->nin; i++) {
    buf_printf(p->out, "%s", i ? ", " : " ");
    print_ref(p, n->in[i]);
  }
  switch (n->op) {
  case OP_SLICE:
    buf_printf(p->out, " [%d:%d]", n->a, n->b);
    break;
  case OP_PAD:
    buf_printf(p->out, " at %d", n->a);
    break;
  case OP_MATVEC:
    if (n->b)
      buf_printf(p->out, " cols [%d:%d]", n->a, n->a + n->b);
    break;
  case OP_MATVEC_T:
    buf_printf(p->out, " cols [%d:%d]", n->a, n->a + n->b);
    break;
  case OP_ACC_OUTER:
    if (n->b)
      buf_printf(p->out, " col %d", n->b);
    break;
  case OP_PROJ:
    buf_printf(p->out, " #%d", n->a);
    break;
  case OP_SCAN:
    buf_printf(p->out, " (%d seq, %d carried%s)", n->a, n->b, n->c ? ", reverse" : "");
    break;
  default:
    break;
  }
  if (n->type.kind != TY_NONE && n->type.kind != TY_TUPLE)
    buf_printf(p->out, " : %s", type_str(n->type, tb, sizeof tb));
  if (n->op == OP_SCAN) {
    buf_printf(p->out, " {");
    print_pos(p, n->pos);
    print_block(p, n->region, indent + 2);
    buf_printf(p->out, "%*s}\n", indent, "");
  } else {
    print_pos(p, n->pos);
  }
}

static void print_block(Printer *p, int blk, int indent) {
  const Block *b = &p->g->blocks[blk];
  if (b->nargs) {
    buf_printf(p->out, "%*sargs", indent, "");
    for (int i = 0; i < b->nargs; i++) {
      char tb[64];
      buf_printf(p->out, "%s", i ? ", " : " ");
      print_ref(p, b->args[i]);
      buf_printf(p->out, " : %s", type_str(p->g->nodes[b->args[i]].type, tb, sizeof tb));
    }
    buf_printf(p->out, "\n");
  }
  for (int i = 0; i < b->n; i++)
    if (p->g->nodes[b->nodes[i]].op != OP_ARG)
      print_node(p, b->nodes[i], indent);
  if (b->nyields) {
    buf_printf(p->out, "%*syield", indent, "");
    for (int i = 0; i < b->nyields; i++) {
      buf_printf(p->out, "%s", i ? ", " : " ");
      print_ref(p, b->yields[i]);
    }
    buf_printf(p->out, "\n");
  }
}

static const char *init_name(Init i) {
  switch (i) {
  case INIT_ZEROS:
    return "zeros";
  case INIT_UNIFORM:
    return "uniform";
  case INIT_LINEAR:
    return "linear";
  case INIT_KAIMING_UNIFORM:
    return "kaiming_uniform";
  case INIT_NORMAL:
    return "normal";
  }
  return "?";
}

void graph_print(const Graph *g, Buf *out) {
  char tb[64];
  buf_printf(out, "; %s (%s)\n", g->src ? g->src->path : "<graph>",
             g->stage == STAGE_FORWARD ? "forward" : "forward, backward and update");
  for (int i = 0; i < g->nparams; i++) {
    const Param *p = &g->params[i];
    buf_printf(out, "%s %s : %s = %s", p->trainable ? "param" : "buffer", p->name,
               type_str(p->type, tb, sizeof tb), init_name(p->init));
    if (p->init != INIT_ZEROS)
      buf_printf(out, "(%.9g)", p->init_arg);
    buf_printf(out, "  ; offset %zu", p->offset);
    buf_printf(out, "\n");
  }
  const TrainConfig *t = &g->train;
  /* settings at their defaults are not printed (but adam's four) */
  if (t->optim == OPTIM_ADAM || t->optim == OPTIM_ADAMW)
    buf_printf(out, "optimizer %s(lr = %.9g, beta1 = %.9g, beta2 = %.9g, eps = %.9g",
               t->optim == OPTIM_ADAM ? "adam" : "adamw", t->lr, t->beta1, t->beta2, t->eps);
  else if (t->optim == OPTIM_SGD)
    buf_printf(out, "optimizer sgd(lr = %.9g", t->lr);
  if (t->optim == OPTIM_ADAMW || t->weight_decay > 0)
    buf_printf(out, ", weight_decay = %.9g", t->weight_decay);
  if (t->momentum > 0)
    buf_printf(out, ", momentum = %.9g", t->momentum);
  if (t->dampening > 0)
    buf_printf(out, ", dampening = %.9g", t->dampening);
  if (t->nesterov)
    buf_printf(out, ", nesterov = 1");
  if (t->optim != OPTIM_NONE)
    buf_printf(out, ")\n");
  if (t->sched != SCHED_CONSTANT || t->warmup) {
    static const char *const names[] = {"constant", "step", "cosine"};
    buf_printf(out, "schedule %s(warmup = %d", names[t->sched], t->warmup);
    if (t->sched == SCHED_STEP)
      buf_printf(out, ", every = %d, gamma = %.9g", t->decay, t->gamma);
    if (t->sched == SCHED_COSINE)
      buf_printf(out, ", steps = %d, min_lr = %.9g", t->decay, t->min_lr);
    buf_printf(out, ")\n");
  }
  if (t->clip_norm > 0)
    buf_printf(out, "clip_grad_norm %.9g\n", t->clip_norm);
  buf_printf(out, "train epochs = %d, batch = %d\n\n", t->epochs, t->batch);
  Printer p = {g, out, xmalloc((size_t)(g->nnodes ? g->nnodes : 1) * sizeof(int)), 0};
  for (int i = 0; i < g->nnodes; i++)
    p.num[i] = -1;
  print_block(&p, 0, 0);
  if (g->output >= 0) {
    buf_printf(out, "output ");
    print_ref(&p, g->output);
    buf_printf(out, "\n");
  }
  if (g->loss >= 0) {
    buf_printf(out, "loss ");
    print_ref(&p, g->loss);
    buf_printf(out, "\n");
  }
  if (g->grad_norm >= 0) {
    buf_printf(out, "grad_norm ");
    print_ref(&p, g->grad_norm);
    buf_printf(out, "\n");
  }
  free(p.num);
}

/* ------------------------------------------------------------- graph_key */

static void key_i64(Buf *out, int64_t v) { buf_put_le64(out, (uint64_t)v); }

static void key_f64(Buf *out, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  key_i64(out, (int64_t)bits);
}

static void key_type(Buf *out, Type t) {
  key_i64(out, t.kind);
  key_i64(out, t.rank);
  key_i64(out, t.dim[0]);
  key_i64(out, t.dim[1]);
}

static void key_ints(Buf *out, const int *v, int n) {
  key_i64(out, n);
  for (int i = 0; i < n; i++)
    key_i64(out, v[i]);
}

void graph_key(const Graph *g, Buf *out) {
  static const char tag[] = "rnnc graph key 1\n";
  buf_put(out, tag, sizeof tag - 1);
  key_i64(out, g->stage);
  key_i64(out, (int64_t)g->nfloats);
  key_i64(out, g->vocab);
  key_i64(out, g->classes);
  key_i64(out, g->input);
  key_i64(out, g->target);
  key_i64(out, g->output);
  key_i64(out, g->loss);
  key_i64(out, g->grad_norm);
  const TrainConfig *t = &g->train;
  key_i64(out, t->optim);
  key_f64(out, t->lr);
  key_f64(out, t->beta1);
  key_f64(out, t->beta2);
  key_f64(out, t->eps);
  key_f64(out, t->weight_decay);
  key_f64(out, t->momentum);
  key_f64(out, t->dampening);
  key_i64(out, t->nesterov);
  key_i64(out, t->sched);
  key_i64(out, t->warmup);
  key_i64(out, t->decay);
  key_f64(out, t->gamma);
  key_f64(out, t->min_lr);
  key_f64(out, t->clip_norm);
  key_i64(out, t->epochs);
  key_i64(out, t->batch);
  key_i64(out, g->nparams);
  for (int i = 0; i < g->nparams; i++) {
    const Param *p = &g->params[i];
    size_t n = strlen(p->name);
    key_i64(out, (int64_t)n);
    buf_put(out, p->name, n);
    key_type(out, p->type);
    key_i64(out, p->init);
    key_f64(out, p->init_arg);
    key_i64(out, p->trainable);
    key_i64(out, (int64_t)p->offset);
  }
  key_i64(out, g->nblocks);
  for (int i = 0; i < g->nblocks; i++) {
    const Block *b = &g->blocks[i];
    key_i64(out, b->parent);
    key_ints(out, b->nodes, b->n);
    key_ints(out, b->args, b->nargs);
    key_ints(out, b->yields, b->nyields);
  }
  key_i64(out, g->nnodes);
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = &g->nodes[i];
    key_i64(out, n->op);
    key_type(out, n->type);
    key_ints(out, n->in, n->nin);
    key_i64(out, n->a);
    key_i64(out, n->b);
    key_i64(out, n->c);
    key_f64(out, n->f);
    key_i64(out, n->region);
    key_i64(out, n->block);
  }
}

/* --------------------------------------------------------------- verifier */

typedef struct Verifier {
  const Graph *g;
  Err *e;
  char *defined; /* node id -> visible at this point */
  char *seen;    /* node id -> already placed in some block */
} Verifier;

static int vfail(Verifier *v, int id, const char *fmt, const char *detail) {
  const Node *n = &v->g->nodes[id];
  char msg[768];
  snprintf(msg, sizeof msg, fmt, detail);
  return errf(v->e, "IR verifier: node %d (%s, from %d:%d): %s", id, op_names[n->op],
              n->pos.line, n->pos.col, msg);
}

static int verify_block(Verifier *v, int blk) {
  const Graph *g = v->g;
  const Block *b = &g->blocks[blk];
  for (int i = 0; i < b->nargs; i++) {
    int id = b->args[i];
    if (id < 0 || id >= g->nnodes || g->nodes[id].op != OP_ARG || g->nodes[id].a != i)
      return errf(v->e, "IR verifier: block %d: argument %d is not its ARG node", blk, i);
  }
  for (int i = 0; i < b->n; i++) {
    int id = b->nodes[i];
    if (id < 0 || id >= g->nnodes)
      return errf(v->e, "IR verifier: block %d lists node %d of %d", blk, id, g->nnodes);
    const Node *n = &g->nodes[id];
    if (v->seen[id])
      return vfail(v, id, "%s", "appears twice in the graph");
    v->seen[id] = 1;
    if (n->block != blk)
      return vfail(v, id, "%s", "its block field disagrees with the block that lists it");
    if (op_arity[n->op] >= 0 && n->nin != op_arity[n->op])
      return vfail(v, id, "%s", "wrong number of operands");
    for (int k = 0; k < n->nin; k++) {
      int in = n->in[k];
      if (in < 0 || in >= g->nnodes || !v->defined[in])
        return vfail(v, id, "%s", "uses a value not defined before it (SSA order)");
      TypeKind tk = g->nodes[in].type.kind;
      if ((tk == TY_TUPLE && n->op != OP_PROJ) || tk == TY_NONE)
        return vfail(v, id, "%s", "uses an effect or a scan's tuple as a value");
    }
    if (n->op == OP_SCAN) {
      if (n->region <= 0 || n->region >= g->nblocks || g->blocks[n->region].parent != blk)
        return vfail(v, id, "%s", "its body is not a child block of the scan's block");
      if (verify_block(v, n->region))
        return -1;
    } else if (n->region != -1) {
      return vfail(v, id, "%s", "only a scan has a body");
    }
    Why why;
    Type t;
    if (shape_rules[n->op](g, n, &t, &why))
      return vfail(v, id, "%s", why.s);
    if (!type_eq(t, n->type)) {
      char b0[64], b1[64];
      char msg[160];
      snprintf(msg, sizeof msg, "type %s, but its shape rule gives %s",
               type_str(n->type, b0, sizeof b0), type_str(t, b1, sizeof b1));
      return vfail(v, id, "%s", msg);
    }
    v->defined[id] = 1;
  }
  for (int i = 0; i < b->nyields; i++) {
    int y = b->yields[i];
    if (y < 0 || y >= g->nnodes || !v->defined[y])
      return errf(v->e, "IR verifier: block %d yields a value not defined in it", blk);
  }
  if (blk != 0) /* a body's values are not visible after it */
    for (int i = 0; i < b->n; i++)
      v->defined[b->nodes[i]] = 0;
  return 0;
}

int graph_verify(const Graph *g, Err *e) {
  Verifier v = {g, e, xcalloc((size_t)g->nnodes + 1, 1), xcalloc((size_t)g->nnodes + 1, 1)};
  int rc = verify_block(&v, 0);
  for (int i = 0; rc == 0 && i < g->nnodes; i++)
    if (!v.seen[i])
      rc = vfail(&v, i, "%s", "belongs to no block");
  const int roots[] = {g->input, g->target, g->output, g->loss, g->grad_norm};
  static const char *const root_names[] = {"input", "target", "output", "loss", "grad_norm"};
  for (int i = 0; rc == 0 && i < 5; i++)
    if (roots[i] >= g->nnodes || (roots[i] >= 0 && g->nodes[roots[i]].block != 0))
      rc = errf(e, "IR verifier: the %s is not a top-level node", root_names[i]);
  if (rc == 0 && g->loss >= 0 && !type_eq(g->nodes[g->loss].type, type_scalar()))
    rc = errf(e, "IR verifier: the loss is not a scalar");
  free(v.defined);
  free(v.seen);
  return rc;
}

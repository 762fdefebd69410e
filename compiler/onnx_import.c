/* onnx_import.c: an ONNX model -> a graph file (the graph language of
 * docs/dsl.md) and the values of its parameters.
 *
 * The model is read with protobuf-c through C generated from ONNX's schema
 * (third_party/onnx/onnx.proto). The importer then runs the graph's nodes in
 * order on abstract values, each either
 *   - a constant: an initializer, a Constant node, a bound graph input, or
 *     anything computed from constants alone (the shape arithmetic
 *     torch.onnx.export writes for a zero initial state: Shape, Gather,
 *     Unsqueeze, Concat, ConstantOfShape, Slice ... are folded here), or
 *   - a runtime value: an expression of the graph language (a `let` name)
 *     with its ONNX shape.
 * Shapes are per sequence: rnnc runs each sequence on its own, so every
 * batch dimension is 1, and the sequence length is the symbol T (SYM_T), in
 * shapes and in folded shape arithmetic alike; a number that depends on T
 * where a number is needed is an error. A runtime value of any shape is
 * read as its elements in row-major order: the graph language's vectors
 * f32[n] (n the product of its dimensions) and sequences f32[T, n] (T
 * before every dimension above 1); selecting along one of its dimensions
 * is a slice, or a concat of slices.
 *
 * Recurrent nodes (GRU, LSTM, RNN) become a cell (`def`) and a `scan` per
 * direction (`scan reverse` for the reverse one), with ONNX's gate order
 * and equations written out from primitives; their
 * weights become parameters named after the node (gru0.W, gru0.R, ...),
 * other weights keep their initializer's name where the graph language
 * can spell it (fc.weight). Every constant a runtime value meets becomes a
 * number (a scalar) or a parameter: initializers and bound inputs are
 * trained (`param`), Constant nodes are not (`buffer`).
 *
 * Errors name the node, its op and the attribute; the importer never reads
 * outside what protobuf-c unpacked (every count is checked against its
 * array), so a truncated or hostile file is an error, not a crash. */
#include "onnx_import.h"

#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"

enum { MAXR = 8 };
/* The sequence length, in a shape or in folded shape arithmetic. */
#define SYM_T INT64_MIN
/* At most this many elements in one constant (1 GiB of float). */
#define MAX_NUMEL ((int64_t)1 << 28)
#define MAX_FOLDED ((int64_t)1 << 24)

typedef struct Val {
  const char *name; /* the ONNX value's name (owned by the model) */
  bool konst;
  int rank;
  int64_t dim[MAXR]; /* SYM_T for the sequence length */
  /* a constant */
  double *c;         /* (numel) values; SYM_T stands for T */
  bool isfloat;      /* a float tensor (else an integer or bool one) */
  bool weight;       /* an initializer or bound input: a trained param */
  char *param;       /* its parameter's name once declared, as it is */
  char *param_t;     /* ... and transposed */
  int64_t param_rows; /* the rows both were declared with (0: a vector) */
  /* a runtime value */
  char *expr;        /* a graph-language name */
  int taxis;         /* the axis of T, or -1 */
  bool onehot;       /* the one-hot input (or indices: an embedding's) */
  const char *embed; /* an embedding's rows, Gather(table, indices): gathered in the cell
                      * that reads them, from this parameter (the table transposed, [E, V]),
                      * expr being the indices */
  bool lengths;      /* a graph input only read as recurrent nodes' sequence_lens: each
                      * sequence's own length, which rnnc's runtime knows */
} Val;

typedef struct Imp {
  jmp_buf jb;
  Err *e;
  const ImportOptions *o;
  const Onnx__GraphProto *graph;
  const Onnx__NodeProto *node; /* the node being imported, for messages */
  int64_t opset;
  Val **vals;
  int nvals, capvals;
  void **owned; /* everything malloc'd, freed at the end */
  int nowned, capowned;
  Buf head, params, defs, body; /* the graph file's parts */
  Buf *out;                     /* where lets go: body, or a Scan's cell being written */
  const char *indent;           /* "" at the top level, "  " in a cell */
  Buf *cells[16];               /* the Scan cells being written (nested), freed on failure */
  int ncells;
  StTensor *ts; /* the parameters' values */
  int nts, capts;
  int nlet, ncell;
} Imp;

/* ------------------------------------------------------------- utilities */

static _Noreturn __attribute__((format(printf, 2, 3))) void fail(Imp *m, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (m->node)
    errf(m->e, "node '%.200s' (%.60s): %s", m->node->name ? m->node->name : "",
         m->node->op_type ? m->node->op_type : "", msg);
  else
    errf(m->e, "%s", msg);
  longjmp(m->jb, 1);
}

static void *own(Imp *m, void *p) {
  if (m->nowned == m->capowned) {
    m->capowned = m->capowned ? 2 * m->capowned : 64;
    m->owned = xrealloc(m->owned, (size_t)m->capowned * sizeof *m->owned);
  }
  return m->owned[m->nowned++] = p;
}

static void *alloc(Imp *m, size_t n) { return own(m, xcalloc(n ? n : 1, 1)); }

static __attribute__((format(printf, 2, 3))) char *fmt(Imp *m, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  char *s = NULL;
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  s = alloc(m, (size_t)n + 1);
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

/* A name from the model for a comment of the graph file: at most 200
 * bytes, control characters (a newline would end the comment) as '?'. */
static const char *safe(Imp *m, const char *s) {
  if (!s)
    return "";
  size_t n = strnlen(s, 200);
  char *r = alloc(m, n + 1);
  for (size_t i = 0; i < n; i++)
    r[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
  return r;
}

static int64_t numel(Imp *m, const int64_t *dim, int rank) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dim[i] == SYM_T)
      fail(m, "a shape that depends on the sequence length T where a number is needed");
    if (dim[i] < 0 || (dim[i] > 0 && n > MAX_NUMEL / dim[i]))
      fail(m, "a tensor of %" PRId64 " x ... elements: too large or negative", dim[i]);
    n *= dim[i];
  }
  return n;
}

static const char *shape_str(Imp *m, const Val *v) {
  Buf b = {0};
  buf_put(&b, "[", 1);
  for (int i = 0; i < v->rank; i++)
    if (v->dim[i] == SYM_T)
      buf_printf(&b, "%sT", i ? ", " : "");
    else
      buf_printf(&b, "%s%" PRId64, i ? ", " : "", v->dim[i]);
  buf_put(&b, "]", 2);
  return own(m, b.data);
}

static Val *find(Imp *m, const char *name) {
  for (int i = m->nvals - 1; i >= 0; i--)
    if (!strcmp(m->vals[i]->name, name))
      return m->vals[i];
  return NULL;
}

static Val *new_val(Imp *m, const char *name) {
  Val *v = alloc(m, sizeof *v);
  v->name = name ? name : "";
  v->taxis = -1;
  if (m->nvals == m->capvals) {
    m->capvals = m->capvals ? 2 * m->capvals : 64;
    m->vals = xrealloc(m->vals, (size_t)m->capvals * sizeof *m->vals);
  }
  m->vals[m->nvals++] = v;
  return v;
}

/* A constant whose values the file holds (an initializer, a bound input):
 * as large as MAX_NUMEL. */
static Val *new_data_const(Imp *m, const char *name, int rank, const int64_t *dim, bool isfloat) {
  Val *v = new_val(m, name);
  v->konst = true;
  v->rank = rank;
  for (int i = 0; i < rank; i++)
    v->dim[i] = dim[i];
  v->isfloat = isfloat;
  v->c = alloc(m, (size_t)numel(m, dim, rank) * sizeof(double));
  return v;
}

static int64_t vnumel(Imp *m, const Val *v) { return numel(m, v->dim, v->rank); }

/* A constant folded at import (ConstantOfShape, Expand, a broadcast...):
 * a few bytes of the file could ask for gigabytes, so at most MAX_FOLDED
 * values (shape arithmetic and initial states are far smaller). */
static Val *new_const(Imp *m, const char *name, int rank, const int64_t *dim, bool isfloat) {
  int64_t n = numel(m, dim, rank);
  if (n > MAX_FOLDED)
    fail(m, "folding makes a constant of %" PRId64 " values (rnnc folds at most %" PRId64 ")", n,
         (int64_t)MAX_FOLDED);
  return new_data_const(m, name, rank, dim, isfloat);
}

/* ----------------------------------------------------------- the tensors */

static int dtype_size(int32_t t) {
  switch (t) {
  case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
  case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    return 4;
  case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
  case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    return 8;
  case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
  case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
  case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
    return 1;
  default:
    return 0;
  }
}

static const char *dtype_name(int32_t t) {
  static const char *const names[] = {"UNDEFINED", "FLOAT",  "UINT8",     "INT8",   "UINT16",
                                      "INT16",     "INT32",  "INT64",     "STRING", "BOOL",
                                      "FLOAT16",   "DOUBLE", "UINT32",    "UINT64", "COMPLEX64",
                                      "COMPLEX128", "BFLOAT16"};
  return t >= 0 && t < (int32_t)ARRAY_LEN(names) ? names[t] : "an unknown type";
}

/* A TensorProto's n values as doubles (out NULL: only whether it holds
 * them); -1 with a message when rnnc cannot read it. */
static int tensor_values(const Onnx__TensorProto *tp, int64_t n, double *out, Err *e) {
  int32_t dt = tp->data_type;
  int size = dtype_size(dt);
  if (!size)
    return errf(e, "data type %s is not supported (FLOAT, DOUBLE, INT64, INT32, INT8, UINT8, "
                   "BOOL are)",
                dtype_name(dt));
  if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return errf(e, "its data is in an external file, which rnnc does not read");
  if (tp->has_raw_data) {
    if (tp->raw_data.len != (size_t)n * (size_t)size)
      return errf(e, "%zu bytes of raw data for %" PRId64 " elements of %s", tp->raw_data.len, n,
                  dtype_name(dt));
    if (!out)
      return 0;
    const uint8_t *p = tp->raw_data.data;
    for (int64_t i = 0; i < n; i++, p += size) {
      switch (dt) {
      case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: {
        float f;
        memcpy(&f, p, 4);
        out[i] = f;
        break;
      }
      case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        memcpy(&out[i], p, 8);
        break;
      case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        out[i] = x;
        break;
      }
      case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: {
        int64_t x;
        memcpy(&x, p, 8);
        out[i] = (double)x;
        break;
      }
      case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
        out[i] = (int8_t)*p;
        break;
      default: /* UINT8, BOOL */
        out[i] = *p;
        break;
      }
    }
    return 0;
  }
  size_t have;
  switch (dt) {
  case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    have = tp->n_float_data;
    break;
  case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    have = tp->n_double_data;
    break;
  case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    have = tp->n_int64_data;
    break;
  default:
    have = tp->n_int32_data;
    break;
  }
  if (have != (size_t)n)
    return errf(e, "%zu values for %" PRId64 " elements", have, n);
  if (!out)
    return 0;
  for (int64_t i = 0; i < n; i++)
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
      out[i] = tp->float_data[i];
      break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
      out[i] = tp->double_data[i];
      break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
      out[i] = (double)tp->int64_data[i];
      break;
    default:
      out[i] = tp->int32_data[i];
      break;
    }
  return 0;
}

static Val *tensor_const(Imp *m, const char *name, const Onnx__TensorProto *tp) {
  if (tp->n_dims > MAXR)
    fail(m, "tensor '%.200s' has %zu dimensions (at most %d)", name, tp->n_dims, MAXR);
  for (size_t i = 0; i < tp->n_dims; i++)
    if (tp->dims[i] < 0)
      fail(m, "tensor '%.200s' has a negative dimension", name);
  int32_t dt = tp->data_type;
  /* the file holds the values before they are given room */
  Err te;
  int64_t n = numel(m, tp->dims, (int)tp->n_dims);
  if (tensor_values(tp, n, NULL, &te))
    fail(m, "tensor '%.200s': %s", name, te.msg);
  Val *v = new_data_const(m, name, (int)tp->n_dims, tp->dims,
                          dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ||
                              dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE);
  tensor_values(tp, n, v->c, &te);
  return v;
}

/* ------------------------------------------------- the graph language */

static bool is_reserved(const char *s, size_t n) {
  static const char *const words[] = {
      "const",  "input",  "target", "param",   "buffer", "def",   "let",   "for",
      "in",     "return", "output", "loss",    "optimizer", "clip_grad_norm", "train",
      "scan",   "over",   "from",   "sigmoid", "tanh",   "exp",   "log",   "sqrt",
      "concat", "last",   "first",  "log_softmax", "sum", "zeros", "kaiming_uniform", "x",
      "relu",   "dropout",
      "y",      "T"};
  for (size_t i = 0; i < ARRAY_LEN(words); i++)
    if (strlen(words[i]) == n && !memcmp(words[i], s, n))
      return true;
  return false;
}

static bool name_taken(const Imp *m, const char *s) {
  for (int i = 0; i < m->nts; i++)
    if (!strcmp(m->ts[i].name, s))
      return true;
  return false;
}

/* A parameter name the graph language accepts, from an ONNX name: letters,
 * digits, '_' and '.'-separated parts that start with a letter or '_'
 * (onnx::GRU_181 -> onnx__GRU_181, layer.0.weight -> layer._0.weight);
 * unique among the parameters, and never a let name (v<N>) or a word the
 * language reserves. */
static char *param_name(Imp *m, const char *onnx) {
  Buf b = {0};
  size_t n = strlen(onnx);
  if (n > 150)
    n = 150;
  bool part_start = true;
  for (size_t i = 0; i < n; i++) {
    char c = onnx[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c == '.' && !part_start && i + 1 < n) {
      buf_put(&b, ".", 1);
      part_start = true;
      continue;
    }
    if (!alnum && c != '_')
      c = '_';
    if (part_start && c >= '0' && c <= '9')
      buf_put(&b, "_", 1);
    buf_put(&b, &c, 1);
    part_start = false;
  }
  if (!b.len)
    buf_put(&b, "p", 1);
  buf_put(&b, "", 1);
  size_t first = strcspn(b.data, ".");
  bool letname = b.data[0] == 'v' && first > 1 && strspn(b.data + 1, "0123456789") == first - 1;
  char *s = fmt(m, "%s%s", is_reserved(b.data, first) || letname ? "p_" : "", b.data);
  buf_free(&b);
  for (int k = 2; name_taken(m, s); k++)
    s = fmt(m, "%s_%d", s, k);
  return s;
}

/* Declares a parameter (a buffer when !trained) with its values. */
static void declare(Imp *m, const char *name, int rank, const int64_t *dim, const float *data,
                    bool trained, const char *init, const char *comment) {
  if (rank < 1 || rank > 2)
    fail(m, "a parameter of %d dimensions (the graph language has vectors and matrices)", rank);
  for (int i = 0; i < rank; i++)
    if (dim[i] < 1 || dim[i] > (1 << 24))
      fail(m, "a parameter dimension of %" PRId64 " (1 to 2^24)", dim[i]);
  buf_printf(&m->params, "%s %s [%" PRId64, trained ? "param " : "buffer", name, dim[0]);
  if (rank == 2)
    buf_printf(&m->params, ", %" PRId64, dim[1]);
  buf_printf(&m->params, "] = %s%s%s\n", init, comment ? "  # " : "", comment ? comment : "");
  if (m->nts == m->capts) {
    m->capts = m->capts ? 2 * m->capts : 16;
    m->ts = xrealloc(m->ts, (size_t)m->capts * sizeof *m->ts);
  }
  StTensor *t = &m->ts[m->nts++];
  memset(t, 0, sizeof *t);
  t->name = xstrdup(name);
  t->ndim = rank;
  t->nelem = 1;
  for (int i = 0; i < rank; i++)
    t->nelem *= (size_t)(t->shape[i] = dim[i]);
  t->data = xmalloc(t->nelem * sizeof(float));
  memcpy(t->data, data, t->nelem * sizeof(float));
}

/* rows x cols of a constant from element offset off, as float, optionally
 * transposed (then the result is cols x rows). */
static float *floats_of(Imp *m, const Val *v, int64_t off, int64_t rows, int64_t cols,
                        bool transpose) {
  float *f = alloc(m, (size_t)(rows * cols) * sizeof(float));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++)
      f[transpose ? c * rows + r : r * cols + c] = (float)v->c[off + r * cols + c];
  return f;
}

/* The parameter holding constant v, declared at its first use: a vector
 * of all its elements, or the matrix [rows, numel / rows] (transposed:
 * [numel / rows, rows]). */
static const char *const_param(Imp *m, Val *v, int64_t rows, bool transpose, const char *init) {
  char **slot = transpose ? &v->param_t : &v->param;
  if (*slot && v->param_rows == rows)
    return *slot;
  v->param_rows = rows;
  v->param = v->param_t = NULL;
  if (!v->isfloat)
    fail(m, "'%.200s' is an integer tensor used as float values", v->name);
  int64_t n = vnumel(m, v);
  int64_t dim[2] = {rows, rows ? n / rows : 0};
  int rank = rows > 0 ? 2 : 1;
  if (rank == 1)
    dim[0] = n;
  if (transpose)
    dim[0] = n / rows, dim[1] = rows;
  char *name = param_name(m, transpose ? fmt(m, "%s.T", v->name) : v->name);
  const char *comment =
      fmt(m, "ONNX '%s'%s", safe(m, v->name), transpose ? " transposed" : "");
  declare(m, name, rank, dim,
          floats_of(m, v, 0, rank == 2 ? rows : 1, rank == 2 ? n / rows : n, transpose),
          v->weight, v->weight ? init : "zeros", comment);
  return *slot = name;
}

/* The number of features of a runtime value's shape: the product of its
 * dimensions besides T. The value is a vector of them (f32[n]) or a
 * sequence of such vectors (f32[T, n]), in row-major order, so T comes
 * before every dimension above 1. */
static int64_t features(Imp *m, const int64_t *dim, int rank, int taxis) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (i == taxis)
      continue;
    if (dim[i] == SYM_T)
      fail(m, "the sequence length T in two dimensions");
    if (i < taxis && dim[i] != 1) {
      Val tmp = {.rank = rank};
      memcpy(tmp.dim, dim, (size_t)rank * sizeof *dim);
      fail(m, "a value of shape %s: rnnc's sequences are [T, features] (batch dimensions of 1 "
              "aside): the sequence length comes before the features",
           shape_str(m, &tmp));
    }
    if (dim[i] < 0 || (dim[i] > 0 && n > ((int64_t)1 << 24) / dim[i]))
      fail(m, "a value of more than 2^24 features per step");
    n *= dim[i];
  }
  return n;
}

static int64_t vfeat(Imp *m, const Val *v) { return features(m, v->dim, v->rank, v->taxis); }

/* Whether a and b have the same dimensions above 1 (T among them) in the
 * same order: the same elements at the same places of their features. */
static bool same_layout(const Val *a, const Val *b) {
  int i = 0, j = 0;
  for (;;) {
    while (i < a->rank && a->dim[i] == 1)
      i++;
    while (j < b->rank && b->dim[j] == 1)
      j++;
    if (i == a->rank || j == b->rank)
      return i == a->rank && j == b->rank;
    if (a->dim[i++] != b->dim[j++])
      return false;
  }
}

/* A runtime value named by a new `let` name (vN). */
static Val *new_let(Imp *m, const char *name, int rank, const int64_t *dim, int taxis) {
  Val *v = new_val(m, name);
  v->rank = rank;
  memcpy(v->dim, dim, (size_t)rank * sizeof *dim);
  v->taxis = taxis;
  features(m, dim, rank, taxis);
  v->expr = fmt(m, "v%d", m->nlet++);
  return v;
}

/* A runtime value: `let vN = <expr>` at the top level. */
static __attribute__((format(printf, 6, 7))) Val *
let_val(Imp *m, const char *name, int rank, const int64_t *dim, int taxis, const char *f, ...) {
  Val *v = new_let(m, name, rank, dim, taxis);
  buf_printf(m->out, "%slet %s = ", m->indent, v->expr);
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  char *line = alloc(m, (size_t)n + 1);
  va_start(ap, f);
  vsnprintf(line, (size_t)n + 1, f, ap);
  va_end(ap);
  buf_printf(m->out, "%s", line);
  if (name && *name)
    buf_printf(m->out, "    # %s", safe(m, name));
  buf_put(m->out, "\n", 1);
  return v;
}

/* A runtime value that is another one with a new shape (Squeeze ...). */
static Val *alias(Imp *m, const char *name, const Val *src, int rank, const int64_t *dim,
                  int taxis) {
  Val *v = new_val(m, name);
  v->rank = rank;
  memcpy(v->dim, dim, (size_t)rank * sizeof *dim);
  v->taxis = taxis;
  v->expr = src->expr;
  v->onehot = src->onehot;
  if (features(m, dim, rank, taxis) != vfeat(m, src))
    fail(m, "reshapes %s to %s", shape_str(m, src), shape_str(m, v));
  return v;
}

static const char *number(Imp *m, double x) {
  if (!isfinite(x))
    fail(m, "a constant that is not a finite number");
  return fmt(m, "(%.9g)", (double)(float)x);
}

/* ------------------------------------------------------- the node's parts */

static Val *in_val(Imp *m, int i) {
  const Onnx__NodeProto *n = m->node;
  if (i >= (int)n->n_input || !n->input[i][0])
    return NULL;
  Val *v = find(m, n->input[i]);
  if (!v)
    fail(m, "input '%.200s' is not computed before the node (the graph is not sorted)",
         n->input[i]);
  return v;
}

static Val *need(Imp *m, int i, const char *what) {
  Val *v = in_val(m, i);
  if (!v)
    fail(m, "has no %s (input %d)", what, i);
  return v;
}

static Val *need_const(Imp *m, int i, const char *what) {
  Val *v = need(m, i, what);
  if (!v->konst)
    fail(m, "its %s ('%.200s') is computed at run time; rnnc needs a constant", what, v->name);
  return v;
}

static const char *out_name(Imp *m, int i) {
  return i < (int)m->node->n_output ? m->node->output[i] : "";
}

/* Whether a node or the graph's outputs read the node's output i. */
static bool out_used(Imp *m, int i) {
  const char *name = out_name(m, i);
  if (!name[0])
    return false;
  const Onnx__GraphProto *g = m->graph;
  for (size_t k = 0; k < g->n_output; k++)
    if (g->output[k]->name && !strcmp(g->output[k]->name, name))
      return true;
  for (size_t k = 0; k < g->n_node; k++)
    for (size_t j = 0; j < g->node[k]->n_input; j++)
      if (!strcmp(g->node[k]->input[j], name))
        return true;
  return false;
}

/* The node's attributes: each is looked up by name and marked used; any
 * left unused is an error (an attribute rnnc does not know). */
typedef struct Attrs {
  const Onnx__NodeProto *n;
  bool used[64];
} Attrs;

static const Onnx__AttributeProto *attr(Imp *m, Attrs *a, const char *name) {
  for (size_t i = 0; i < a->n->n_attribute; i++)
    if (a->n->attribute[i]->name && !strcmp(a->n->attribute[i]->name, name)) {
      if (i < ARRAY_LEN(a->used))
        a->used[i] = true;
      return a->n->attribute[i];
    }
  return NULL;
}

static int64_t attr_int(Imp *m, Attrs *a, const char *name, int64_t dflt) {
  const Onnx__AttributeProto *p = attr(m, a, name);
  if (!p)
    return dflt;
  if (!p->has_i)
    fail(m, "attribute '%s' is not an integer", name);
  return p->i;
}

static double attr_float(Imp *m, Attrs *a, const char *name, double dflt) {
  const Onnx__AttributeProto *p = attr(m, a, name);
  if (!p)
    return dflt;
  if (!p->has_f)
    fail(m, "attribute '%s' is not a float", name);
  return p->f;
}

static const char *attr_str(Imp *m, Attrs *a, const char *name, const char *dflt) {
  const Onnx__AttributeProto *p = attr(m, a, name);
  if (!p)
    return dflt;
  if (!p->has_s)
    fail(m, "attribute '%s' is not a string", name);
  char *s = alloc(m, p->s.len + 1);
  memcpy(s, p->s.data, p->s.len);
  return s;
}

static void attrs_done(Imp *m, Attrs *a) {
  if (a->n->n_attribute > ARRAY_LEN(a->used))
    fail(m, "has %zu attributes", a->n->n_attribute);
  for (size_t i = 0; i < a->n->n_attribute; i++)
    if (!a->used[i])
      fail(m, "attribute '%.100s' is not supported", a->n->attribute[i]->name);
}

static int norm_axis(Imp *m, int64_t axis, int rank, const char *what) {
  if (axis < -rank || axis >= rank)
    fail(m, "%s %" PRId64 " is out of range for rank %d", what, axis, rank);
  return (int)(axis < 0 ? axis + rank : axis);
}

/* The integers of a constant (axes, indices, shapes); T stays SYM_T. */
static int64_t *ints_of(Imp *m, const Val *v, int64_t *n) {
  *n = vnumel(m, v);
  int64_t *r = alloc(m, (size_t)*n * sizeof *r);
  for (int64_t i = 0; i < *n; i++) {
    double x = v->c[i];
    if (x == (double)SYM_T)
      r[i] = SYM_T;
    else if (x != floor(x) || fabs(x) > 9.2e18)
      fail(m, "'%.200s' holds %g where an integer is needed", v->name, x);
    else
      r[i] = (int64_t)x;
  }
  return r;
}

static void no_T(Imp *m, const int64_t *x, int64_t n, const char *what) {
  for (int64_t i = 0; i < n; i++)
    if (x[i] == SYM_T)
      fail(m, "%s depends on the sequence length T (a dynamic shape rnnc cannot bind)", what);
}

/* Axes of Squeeze/Unsqueeze/ReduceX: an input from opset 13, else an
 * attribute. NULL when absent. */
static int64_t *axes_of(Imp *m, Attrs *a, int input, int64_t *n) {
  const Onnx__AttributeProto *p = attr(m, a, "axes");
  if (p) {
    *n = (int64_t)p->n_ints;
    return p->ints;
  }
  Val *v = in_val(m, input);
  if (!v)
    return NULL;
  if (!v->konst)
    fail(m, "its axes are computed at run time");
  int64_t *r = ints_of(m, v, n);
  no_T(m, r, *n, "an axis");
  return r;
}

/* --------------------------------------------------------- constant ops */

static double fold2(Imp *m, const char *op, double a, double b, bool isfloat) {
  if (a == (double)SYM_T || b == (double)SYM_T)
    fail(m, "arithmetic on the sequence length T (a dynamic shape rnnc cannot bind)");
  switch (op[0]) {
  case 'A':
    return a + b;
  case 'S':
    return a - b;
  case 'M':
    return a * b;
  default:
    if (!isfloat) {
      if (b == 0)
        fail(m, "an integer division by zero");
      return trunc(a / b);
    }
    return a / b;
  }
}

/* numpy broadcasting of two shapes into out; false if they do not. */
static bool broadcast(const Val *a, const Val *b, int *rank, int64_t *out) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
    if (da == db || db == 1)
      out[i] = da;
    else if (da == 1)
      out[i] = db;
    else
      return false;
  }
  *rank = r;
  return true;
}

/* The element of broadcast source v at index idx of a shape of rank r. */
static double bcast_at(const Val *v, int r, const int64_t *dim, int64_t idx) {
  int64_t off = 0, stride = 1;
  for (int i = r - 1; i >= 0; i--) {
    int64_t k = idx % dim[i];
    idx /= dim[i];
    int iv = i - (r - v->rank);
    if (iv >= 0) {
      if (v->dim[iv] != 1)
        off += k * stride;
      stride *= v->dim[iv];
    }
  }
  return v->c[off];
}

static Val *fold_binary(Imp *m, const char *op, const Val *a, const Val *b) {
  int r;
  int64_t dim[MAXR];
  if (!broadcast(a, b, &r, dim))
    fail(m, "shapes %s and %s do not broadcast", shape_str(m, a), shape_str(m, b));
  Val *v = new_const(m, out_name(m, 0), r, dim, a->isfloat || b->isfloat);
  int64_t n = vnumel(m, v);
  for (int64_t i = 0; i < n; i++)
    v->c[i] = fold2(m, op, bcast_at(a, r, dim, i), bcast_at(b, r, dim, i), v->isfloat);
  return v;
}

/* Gather of constants along axis. */
static Val *fold_gather(Imp *m, const Val *d, const Val *idx, int axis) {
  int64_t ni;
  int64_t *ix = ints_of(m, idx, &ni);
  no_T(m, ix, ni, "an index");
  int r = d->rank - 1 + idx->rank;
  if (r > MAXR)
    fail(m, "a result of rank %d", r);
  int64_t dim[MAXR];
  int k = 0;
  for (int i = 0; i < axis; i++)
    dim[k++] = d->dim[i];
  for (int i = 0; i < idx->rank; i++)
    dim[k++] = idx->dim[i];
  for (int i = axis + 1; i < d->rank; i++)
    dim[k++] = d->dim[i];
  Val *v = new_const(m, out_name(m, 0), r, dim, d->isfloat);
  int64_t outer = 1, inner = 1, len = d->dim[axis];
  for (int i = 0; i < axis; i++)
    outer *= d->dim[i];
  for (int i = axis + 1; i < d->rank; i++)
    inner *= d->dim[i];
  int64_t o = 0;
  for (int64_t a = 0; a < outer; a++)
    for (int64_t j = 0; j < ni; j++) {
      int64_t x = ix[j] < 0 ? ix[j] + len : ix[j];
      if (x < 0 || x >= len)
        fail(m, "index %" PRId64 " is out of range for a dimension of %" PRId64, ix[j], len);
      for (int64_t i = 0; i < inner; i++)
        v->c[o++] = d->c[(a * len + x) * inner + i];
    }
  return v;
}

static Val *reshape_const(Imp *m, const Val *src, int rank, const int64_t *dim) {
  Val *v = new_const(m, out_name(m, 0), rank, dim, src->isfloat);
  int64_t n = vnumel(m, v);
  if (n != vnumel(m, src))
    fail(m, "reshapes %s to %s", shape_str(m, src), shape_str(m, v));
  memcpy(v->c, src->c, (size_t)n * sizeof(double));
  v->weight = src->weight;
  return v;
}

/* Slice of a constant: starts, ends, steps per axis (already clamped). */
static Val *fold_slice(Imp *m, const Val *d, const int64_t *lo, const int64_t *step,
                       const int64_t *cnt) {
  Val *v = new_const(m, out_name(m, 0), d->rank, cnt, d->isfloat);
  int64_t n = vnumel(m, v);
  for (int64_t i = 0; i < n; i++) {
    int64_t rest = i, off = 0, stride = 1;
    for (int k = d->rank - 1; k >= 0; k--) {
      int64_t j = rest % cnt[k];
      rest /= cnt[k];
      off += (lo[k] + j * step[k]) * stride;
      stride *= d->dim[k];
    }
    v->c[i] = d->c[off];
  }
  return v;
}

/* ----------------------------------------------------- runtime operands */

/* An operand of an elementwise op with runtime value r: a number, a
 * parameter, or r's own kind of value. */
static const char *operand(Imp *m, Val *x, const Val *r) {
  if (!x->konst) {
    if (x->onehot)
      fail(m, "arithmetic on the one-hot input");
    if (!same_layout(x, r))
      fail(m, "operands %s and %s: the graph language adds vectors of one size (or sequences "
              "of them) and numbers",
           shape_str(m, x), shape_str(m, r));
    return x->expr;
  }
  int64_t n = vnumel(m, x);
  if (n == 1)
    return number(m, x->c[0]);
  if (r->taxis >= 0 || !same_layout(x, r))
    fail(m, "a constant of shape %s with a value of shape %s: rnnc broadcasts numbers and "
            "vectors of the value's size",
         shape_str(m, x), shape_str(m, r));
  return const_param(m, x, 0, false, "zeros");
}

static void binary(Imp *m, const char *op) {
  Val *a = need(m, 0, "A"), *b = need(m, 1, "B");
  if (a->konst && b->konst) {
    fold_binary(m, op, a, b);
    return;
  }
  int r;
  int64_t dim[MAXR];
  if (!broadcast(a, b, &r, dim))
    fail(m, "shapes %s and %s do not broadcast", shape_str(m, a), shape_str(m, b));
  Val *rt = a->konst ? b : a;
  int taxis = rt->taxis < 0 ? -1 : rt->taxis + (r - rt->rank);
  if (features(m, dim, r, taxis) != vfeat(m, rt)) {
    Val tmp = {.rank = r};
    memcpy(tmp.dim, dim, sizeof tmp.dim);
    fail(m, "shapes %s and %s broadcast to %s: rnnc's elementwise ops keep the value's size",
         shape_str(m, a), shape_str(m, b), shape_str(m, &tmp));
  }
  const char *sym = op[0] == 'A' ? "+" : op[0] == 'S' ? "-" : op[0] == 'M' ? "*" : "/";
  let_val(m, out_name(m, 0), r, dim, taxis, "%s %s %s", operand(m, a, rt), sym,
          operand(m, b, rt));
}

static Val *runtime_in(Imp *m, int i, const char *what) {
  Val *v = need(m, i, what);
  if (v->konst)
    fail(m, "internal: a constant operand here is folded");
  if (v->onehot)
    fail(m, "this op on the one-hot input (its rows are characters)");
  return v;
}

static void unary(Imp *m, const char *fn) {
  Val *x = need(m, 0, "X");
  if (x->konst) {
    Val *v = new_const(m, out_name(m, 0), x->rank, x->dim, true);
    int64_t n = vnumel(m, v);
    for (int64_t i = 0; i < n; i++) {
      double a = x->c[i];
      v->c[i] = !strcmp(fn, "sigmoid") ? 1 / (1 + exp(-a))
                : !strcmp(fn, "tanh")  ? tanh(a)
                : !strcmp(fn, "exp")   ? exp(a)
                : !strcmp(fn, "log")   ? log(a)
                : !strcmp(fn, "sqrt")  ? sqrt(a)
                : !strcmp(fn, "relu")  ? (a > 0 ? a : 0)
                                       : -a;
    }
    return;
  }
  x = runtime_in(m, 0, "X");
  if (!strcmp(fn, "-"))
    let_val(m, out_name(m, 0), x->rank, x->dim, x->taxis, "-%s", x->expr);
  else
    let_val(m, out_name(m, 0), x->rank, x->dim, x->taxis, "%s(%s)", fn, x->expr);
}

/* Elements lo .. lo+n-1 along axis ax (not T) of runtime value x as an
 * expression: in x's row-major features, one slice per index of the axes
 * before ax, concatenated. */
static const char *select_expr(Imp *m, const Val *x, int ax, int64_t lo, int64_t n) {
  int64_t outer = 1, inner = 1, D = x->dim[ax];
  for (int i = 0; i < x->rank; i++)
    if (i != x->taxis && i != ax)
      *(i < ax ? &outer : &inner) *= x->dim[i];
  if (outer > 256)
    fail(m, "selects %" PRId64 " pieces of %s (rnnc's limit is 256)", outer, shape_str(m, x));
  if (outer == 1 && lo == 0 && n == D)
    return x->expr;
  const char *e = "";
  for (int64_t o = 0; o < outer; o++)
    e = fmt(m, "%s%s%s[%" PRId64 ":%" PRId64 "]", e, o ? ", " : "", x->expr, (o * D + lo) * inner,
            (o * D + lo + n) * inner);
  return outer > 1 ? fmt(m, "concat(%s)", e) : e;
}

/* ---------------------------------------------------------- recurrences */

typedef enum { CELL_GRU, CELL_LSTM, CELL_RNN } CellKind;

static void check_acts(Imp *m, Attrs *a, CellKind k, int nd) {
  static const char *const want[][3] = {
      {"Sigmoid", "Tanh", NULL}, {"Sigmoid", "Tanh", "Tanh"}, {"Tanh", NULL, NULL}};
  const Onnx__AttributeProto *p = attr(m, a, "activations");
  if (!p)
    return;
  size_t n = k == CELL_GRU ? 2 : k == CELL_LSTM ? 3 : 1;
  if (p->n_strings != n * (size_t)nd)
    fail(m, "attribute 'activations' has %zu functions (%d direction%s: %zu)", p->n_strings, nd,
         nd == 1 ? "" : "s", n * (size_t)nd);
  for (size_t i = 0; i < n * (size_t)nd; i++)
    if (p->strings[i].len != strlen(want[k][i % n]) ||
        memcmp(p->strings[i].data, want[k][i % n], p->strings[i].len))
      fail(m, "attribute 'activations': function %zu is not %s (rnnc supports the default "
              "activations)",
           i, want[k][i % n]);
}

/* Input i of a node, a state of nd directions' states of `size` values
 * each ([nd, batch, size] or [batch, nd, size] with a batch of 1), as an
 * expression of direction d's f32[size]: zeros when absent or all zero. */
static const char *initial_state(Imp *m, int i, int64_t size, int nd, int d, const char *pfx,
                                 const char *what) {
  Val *v = in_val(m, i);
  if (!v)
    return fmt(m, "zeros(%" PRId64 ")", size);
  if (!v->konst) {
    if (v->taxis >= 0 || vfeat(m, v) != nd * size)
      fail(m, "%s has shape %s; rnnc needs %" PRId64 " values per sequence", what,
           shape_str(m, v), nd * size);
    return nd == 1 ? v->expr
                   : fmt(m, "%s[%" PRId64 ":%" PRId64 "]", v->expr, d * size, (d + 1) * size);
  }
  if (vnumel(m, v) != nd * size)
    fail(m, "%s has shape %s; rnnc needs %" PRId64 " values per sequence (%d direction%s, a "
            "batch of 1)",
         what, shape_str(m, v), nd * size, nd, nd == 1 ? "" : "s");
  bool zero = true;
  for (int64_t k = 0; k < size; k++)
    zero &= v->c[d * size + k] == 0;
  if (zero)
    return fmt(m, "zeros(%" PRId64 ")", size);
  char *name = param_name(m, fmt(m, "%s.%s", pfx, what));
  int64_t dim[1] = {size};
  declare(m, name, 1, dim, floats_of(m, v, d * size, 1, size, false), false, "zeros",
          fmt(m, "ONNX '%s'%s", safe(m, v->name), nd == 1 ? "" : d ? ", reverse" : ", forward"));
  return name;
}

/* A GRU, LSTM or RNN node's parts. */
typedef struct Rec {
  CellKind k;
  int64_t I, H, G, lbr;
  Val *X, *W, *R, *B, *P; /* W, R, B, P: nd directions' stacked */
  const char *src;        /* "ONNX GRU 'name'", for comments */
} Rec;

/* Direction d's parameters, from row d of ONNX's stacked W, R, B and P,
 * named PFX.W ..., and its cell `def PFX_cell`, ONNX's equations
 * (docs/onnx.md) with its gate order; returns the cell's name. */
static const char *rnn_cell(Imp *m, const Rec *c, const char *pfx, int d) {
  CellKind k = c->k;
  int64_t H = c->H, I = c->I, G = c->G, lbr = c->lbr;
  bool tr = true;
  const char *u = fmt(m, "uniform(%.9g)", 1 / sqrt((double)H));
  const char *src = d ? fmt(m, "%s, reverse direction", c->src) : c->src;
  char *w = fmt(m, "%s.W", pfx), *r = fmt(m, "%s.R", pfx), *rh = NULL;
  char *wb = c->B ? fmt(m, "%s.Wb", pfx) : NULL, *rb = c->B ? fmt(m, "%s.Rb", pfx) : NULL;
  char *p = c->P ? fmt(m, "%s.P", pfx) : NULL;
  int64_t d2[2] = {G * H, I};
  declare(m, w, 2, d2, floats_of(m, c->W, d * G * H * I, G * H, I, false), tr, u,
          fmt(m, "%s: W", src));
  if (lbr || k != CELL_GRU) {
    d2[0] = G * H, d2[1] = H;
    declare(m, r, 2, d2, floats_of(m, c->R, d * G * H * H, G * H, H, false), tr, u, "R");
  } else { /* R's z and r rows, and the h rows, which multiply r * h */
    d2[0] = 2 * H, d2[1] = H;
    r = fmt(m, "%s.R_zr", pfx);
    declare(m, r, 2, d2, floats_of(m, c->R, d * G * H * H, 2 * H, H, false), tr, u,
            "R, gates z and r");
    d2[0] = H;
    rh = fmt(m, "%s.R_h", pfx);
    declare(m, rh, 2, d2, floats_of(m, c->R, d * G * H * H + 2 * H * H, H, H, false), tr, u,
            "R, gate h");
  }
  if (c->B) {
    int64_t d1[1] = {G * H};
    declare(m, wb, 1, d1, floats_of(m, c->B, d * 2 * G * H, 1, G * H, false), tr, u, "B: Wb");
    declare(m, rb, 1, d1, floats_of(m, c->B, d * 2 * G * H + G * H, 1, G * H, false), tr, u,
            "B: Rb");
  }
  if (c->P) {
    int64_t d1[1] = {3 * H};
    declare(m, p, 1, d1, floats_of(m, c->P, d * 3 * H, 1, 3 * H, false), tr, "zeros",
            "P: i, o, f");
  }

  Buf *b = &m->defs;
  const char *bi = c->B ? fmt(m, " + %s", wb) : "", *bh = c->B ? fmt(m, " + %s", rb) : "";
  char *cell = fmt(m, "%s_cell", pfx);
  for (char *s = cell; *s; s++)
    if (*s == '.')
      *s = '_';
  long long h = H; /* for the cells' text */
  /* An embedding's rows are gathered here, in the cell. */
  const char *xin = c->X->embed ? "xe" : "x";
  char *xe =
      c->X->embed ? fmt(m, "  let xe = %s @ x    # the embedding's row\n", c->X->embed) : "";
  buf_printf(b, "# %s, hidden %" PRId64, src, H);
  switch (k) {
  case CELL_GRU:
    buf_printf(b, ", gates z, r, h, linear_before_reset %" PRId64 "\n", lbr);
    buf_printf(b, "def %s(x, h) {\n%s  let gi = %s @ %s%s\n", cell, xe, w, xin, bi);
    /* linear_before_reset 0: the h gate's product is of r * h (R split) */
    buf_printf(b, "  let gh = %s @ h%s\n", r,
               lbr || !c->B ? bh : fmt(m, " + %s[0:%lld]", rb, 2 * h));
    buf_printf(b, "  let z = sigmoid(gi[0:%lld] + gh[0:%lld])\n", h, h);
    buf_printf(b, "  let r = sigmoid(gi[%lld:%lld] + gh[%lld:%lld])\n", h, 2 * h, h, 2 * h);
    if (lbr)
      buf_printf(b, "  let n = tanh(gi[%lld:%lld] + r * gh[%lld:%lld])\n", 2 * h, 3 * h, 2 * h,
                 3 * h);
    else
      buf_printf(b, "  let n = tanh(gi[%lld:%lld] + %s @ (r * h)%s)\n", 2 * h, 3 * h, rh,
                 c->B ? fmt(m, " + %s[%lld:%lld]", rb, 2 * h, 3 * h) : "");
    buf_printf(b, "  return (1 - z) * n + z * h\n}\n\n");
    break;
  case CELL_LSTM:
    buf_printf(b, ", gates i, o, f, c%s\n", c->P ? ", peepholes" : "");
    buf_printf(b, "def %s(x, h, c) {\n%s  let g = %s @ %s%s + %s @ h%s\n", cell, xe, w, xin, bi,
               r, bh);
    buf_printf(b, "  let i = sigmoid(g[0:%lld]%s)\n", h,
               p ? fmt(m, " + %s[0:%lld] * c", p, h) : "");
    buf_printf(b, "  let f = sigmoid(g[%lld:%lld]%s)\n", 2 * h, 3 * h,
               p ? fmt(m, " + %s[%lld:%lld] * c", p, 2 * h, 3 * h) : "");
    buf_printf(b, "  let c2 = f * c + i * tanh(g[%lld:%lld])\n", 3 * h, 4 * h);
    buf_printf(b, "  let o = sigmoid(g[%lld:%lld]%s)\n", h, 2 * h,
               p ? fmt(m, " + %s[%lld:%lld] * c2", p, h, 2 * h) : "");
    buf_printf(b, "  return o * tanh(c2), c2\n}\n\n");
    break;
  case CELL_RNN:
    buf_printf(b, "\ndef %s(x, h) {\n%s  return tanh(%s @ %s%s + %s @ h%s)\n}\n\n", cell, xe, w,
               xin, bi, r, bh);
    break;
  }
  return cell;
}

static void recurrent(Imp *m, CellKind k) {
  static const char *const op[] = {"gru", "lstm", "rnn"};
  static const int gates[] = {3, 4, 1};
  Attrs a = {.n = m->node};
  int64_t Hattr = attr_int(m, &a, "hidden_size", 0);
  const char *dir = attr_str(m, &a, "direction", "forward");
  int64_t layout = attr_int(m, &a, "layout", 0);
  Rec c = {.k = k, .G = gates[k]};
  c.lbr = k == CELL_GRU ? attr_int(m, &a, "linear_before_reset", 0) : 0;
  if (k == CELL_LSTM && attr_int(m, &a, "input_forget", 0))
    fail(m, "attribute 'input_forget' = 1 is not supported");
  if (attr(m, &a, "clip"))
    fail(m, "attribute 'clip' is not supported (rnnc does not clip cell inputs)");
  if (attr(m, &a, "activation_alpha") || attr(m, &a, "activation_beta"))
    fail(m, "attributes 'activation_alpha' and 'activation_beta' are not supported");
  int nd = !strcmp(dir, "bidirectional") ? 2 : 1;
  bool reverse = !strcmp(dir, "reverse");
  if (nd == 1 && !reverse && strcmp(dir, "forward"))
    fail(m, "attribute 'direction' = '%.20s' (forward, reverse or bidirectional)", dir);
  check_acts(m, &a, k, nd);
  attrs_done(m, &a);
  if (layout != 0 && layout != 1)
    fail(m, "attribute 'layout' = %" PRId64 " (0 or 1)", layout);
  Val *X = c.X = need(m, 0, "X");
  if (X->konst || X->taxis != (int)layout || X->rank != 3 || X->dim[!layout] != 1)
    fail(m, "X has shape %s; rnnc needs the sequence %s", shape_str(m, X),
         layout ? "[batch, T, input] (layout 1)" : "[T, batch, input]");
  int64_t I = c.I = X->dim[2], G = c.G;
  Val *W = c.W = need_const(m, 1, "W"), *R = c.R = need_const(m, 2, "R"), *B = c.B = in_val(m, 3);
  if (R->rank != 3 || R->dim[0] != nd || R->dim[1] % G || R->dim[1] / G != R->dim[2])
    fail(m, "R has shape %s; rnnc needs [%d, %" PRId64 " * hidden, hidden]", shape_str(m, R), nd,
         G);
  int64_t H = c.H = R->dim[2];
  if (Hattr && Hattr != H)
    fail(m, "attribute 'hidden_size' = %" PRId64 " but R has shape %s", Hattr, shape_str(m, R));
  if (W->rank != 3 || W->dim[0] != nd || W->dim[1] != G * H || W->dim[2] != I)
    fail(m, "W has shape %s; rnnc needs [%d, %" PRId64 ", %" PRId64 "]", shape_str(m, W), nd,
         G * H, I);
  if (B && (!B->konst || B->rank != 2 || B->dim[0] != nd || B->dim[1] != 2 * G * H))
    fail(m, "B has shape %s; rnnc needs a constant [%d, %" PRId64 "]", shape_str(m, B), nd,
         2 * G * H);
  Val *P = c.P = k == CELL_LSTM ? in_val(m, 7) : NULL;
  if (P && (!P->konst || vnumel(m, P) != nd * 3 * H))
    fail(m, "P has shape %s; rnnc needs a constant [%d, %" PRId64 "]", shape_str(m, P), nd,
         3 * H);
  Val *lens = in_val(m, 4);
  if (lens && !lens->konst && !lens->lengths)
    fail(m, "sequence_lens is computed at run time");

  int id = m->ncell++;
  char *pfx = param_name(m, fmt(m, "%s%d", op[k], id));
  c.src = fmt(m, "ONNX %s '%s'", m->node->op_type, safe(m, m->node->name));
  /* Per direction: a cell and a scan (`scan reverse` for the reverse
   * direction), stacking the states by position as ONNX's Y does. */
  int64_t ydim[4] = {SYM_T, 1, 1, H}, hdim[3] = {1, 1, H};
  if (layout)
    ydim[0] = 1, ydim[1] = SYM_T;
  Val *y[2] = {0}, *yc[2] = {0};
  bool rev[2] = {reverse, true};
  for (int d = 0; d < nd; d++) {
    const char *dp = d ? param_name(m, fmt(m, "%s_reverse", pfx)) : pfx;
    const char *cell = rnn_cell(m, &c, dp, d);
    const char *h0 = initial_state(m, 5, H, nd, d, dp, "initial_h");
    const char *c0 = k == CELL_LSTM ? initial_state(m, 6, H, nd, d, dp, "initial_c") : NULL;
    /* Y of one direction: [T, 1, 1, H] (layout 1: [1, T, 1, H]). */
    y[d] = new_let(m, nd == 1 ? out_name(m, 0) : NULL, 4, ydim, (int)layout);
    const char *scan = rev[d] ? "scan reverse" : "scan";
    if (k == CELL_LSTM) {
      yc[d] = new_let(m, NULL, 4, ydim, (int)layout);
      buf_printf(m->out, "%slet %s, %s = %s %s over %s from %s, %s", m->indent, y[d]->expr,
                 yc[d]->expr, scan, cell, X->expr, h0, c0);
    } else {
      buf_printf(m->out, "%slet %s = %s %s over %s from %s", m->indent, y[d]->expr, scan, cell,
                 X->expr, h0);
    }
    buf_printf(m->out, "    # %s%s%s\n", safe(m, out_name(m, 0)),
               nd == 1 ? "" : d ? ", the reverse direction" : ", the forward direction",
               lens ? " (sequence_lens: each sequence runs to its own length)" : "");
  }
  /* The final states: a forward scan's last row, a reverse scan's first. */
  const char *fin[2][2];
  for (int d = 0; d < nd; d++) {
    fin[0][d] = fmt(m, "%s(%s)", rev[d] ? "first" : "last", y[d]->expr);
    fin[1][d] = k == CELL_LSTM ? fmt(m, "%s(%s)", rev[d] ? "first" : "last", yc[d]->expr) : NULL;
  }
  if (nd == 2) {
    /* Y [T, 2, 1, H] (layout 1: [1, T, 2, H]); Y_h, Y_c [2, 1, H] (layout 1:
     * [1, 2, H]): the directions one after the other in each row. */
    ydim[layout ? 2 : 1] = 2;
    hdim[layout ? 1 : 0] = 2;
    if (out_used(m, 0))
      let_val(m, out_name(m, 0), 4, ydim, (int)layout, "concat(%s, %s)", y[0]->expr, y[1]->expr);
    for (int j = 0; j < 2; j++)
      fin[j][0] = fin[j][0] ? fmt(m, "concat(%s, %s)", fin[j][0], fin[j][1]) : NULL;
  }
  if (out_used(m, 1))
    let_val(m, out_name(m, 1), 3, hdim, -1, "%s", fin[0][0]);
  if (k == CELL_LSTM && out_used(m, 2))
    let_val(m, out_name(m, 2), 3, hdim, -1, "%s", fin[1][0]);
}

/* ONNX's Scan (opset 9 on): its body becomes a cell, its states and scan
 * outputs the scan's carried states (a scan output is a state the cell
 * ignores, as rnn.nn's out; the graph language stacks only states), in the
 * cell's order: rows of the scan inputs, the states, the scan outputs. */
static void node(Imp *m, const Onnx__NodeProto *n);

static void node_scan(Imp *m) {
  const Onnx__NodeProto *n = m->node;
  Attrs a = {.n = n};
  const Onnx__AttributeProto *bp = attr(m, &a, "body");
  int64_t nscan = attr_int(m, &a, "num_scan_inputs", 0);
  static const char *const axes[] = {"scan_input_axes", "scan_output_axes"};
  for (size_t i = 0; i < ARRAY_LEN(axes); i++) {
    const Onnx__AttributeProto *p = attr(m, &a, axes[i]);
    for (size_t k = 0; p && k < p->n_ints; k++)
      if (p->ints[k])
        fail(m, "attribute '%s' is not all 0: rnnc scans along axis 0", axes[i]);
  }
  /* Every scan input read forward (0) or every one reversed (1): a scan or
   * a `scan reverse`; the scan outputs stacked the same way (a reverse
   * scan stacks by position: scan_output_directions 1). */
  const Onnx__AttributeProto *din = attr(m, &a, "scan_input_directions"),
                             *dout = attr(m, &a, "scan_output_directions");
  int64_t rev = din && din->n_ints ? din->ints[0] : 0;
  for (size_t k = 0; din && k < din->n_ints; k++)
    if (din->ints[k] != rev || (rev != 0 && rev != 1))
      fail(m, "attribute 'scan_input_directions' is not all 0 or all 1: rnnc scans its inputs "
              "one way");
  attrs_done(m, &a);
  if (m->opset < 9)
    fail(m, "Scan before opset 9 (with a batch axis) is not supported");
  const Onnx__GraphProto *bg = bp ? bp->g : NULL;
  int nin = (int)n->n_input, nstate = nin - (int)nscan, nout = (int)n->n_output;
  if (!bg || nscan < 1 || nstate < 0 || nout < nstate)
    fail(m, "needs a body graph, num_scan_inputs >= 1 and as many outputs as states at least");
  int K = nout - nstate, ncarry = nstate + K;
  if ((int)bg->n_input != nin || (int)bg->n_output != nout)
    fail(m, "the body has %zu inputs and %zu outputs; the node %d and %d", bg->n_input,
         bg->n_output, nin, nout);
  if (ncarry < 1)
    fail(m, "no states and no scan outputs");
  for (int k = 0; k < K; k++)
    if ((dout && (size_t)k < dout->n_ints ? dout->ints[k] : 0) != rev)
      fail(m, "scan output %d is stacked %s, its inputs read %s: rnnc stacks a scan's outputs "
              "in the direction it reads (scan_output_directions %" PRId64 ")",
           k, rev ? "forward" : "in reverse", rev ? "in reverse" : "forward", rev);
  int id = m->ncell++;
  char *cell = fmt(m, "scan%d_cell", id);
  Val **ins = alloc(m, (size_t)nin * sizeof *ins);
  for (int i = 0; i < nin; i++) {
    ins[i] = need(m, i, i < nstate ? "initial state" : "scan input");
    if (i >= nstate && (ins[i]->konst || ins[i]->taxis != 0))
      fail(m, "scan input %d has shape %s; rnnc scans a sequence along T (axis 0)",
           i - nstate, shape_str(m, ins[i]));
    if (i < nstate && !ins[i]->konst && ins[i]->taxis >= 0)
      fail(m, "initial state %d is a sequence", i);
  }
  /* The body, into a cell of its own: its values are local to it. */
  if (m->ncells == (int)ARRAY_LEN(m->cells))
    fail(m, "Scans nested more than %d deep", (int)ARRAY_LEN(m->cells));
  Buf *saved_out = m->out, *text = m->cells[m->ncells++] = alloc(m, sizeof *text);
  const char *saved_indent = m->indent;
  int saved_nvals = m->nvals;
  m->out = text;
  m->indent = "  ";
  char **args = alloc(m, (size_t)(nin + K) * sizeof *args);
  for (int i = 0; i < nin; i++) {
    const Onnx__ValueInfoProto *bi = bg->input[i];
    const Val *src = ins[i];
    int rank = src->rank - (i >= nstate);
    const int64_t *dim = src->dim + (i >= nstate);
    Val *v = new_let(m, bi->name, rank, dim, -1);
    v->onehot = src->onehot;
    args[i < nstate ? nscan + i : i - nstate] = v->expr;
  }
  for (size_t i = 0; i < bg->n_initializer; i++) {
    const Onnx__TensorProto *tp = bg->initializer[i];
    tensor_const(m, tp->name ? tp->name : "", tp)->weight = true;
  }
  for (size_t i = 0; i < bg->n_node; i++)
    node(m, bg->node[i]);
  m->node = n;
  Val **outs = alloc(m, (size_t)nout * sizeof *outs);
  for (int j = 0; j < nout; j++) {
    const char *name = bg->output[j]->name ? bg->output[j]->name : "";
    outs[j] = find(m, name);
    if (!outs[j] || outs[j]->konst || outs[j]->taxis >= 0 || outs[j]->onehot)
      fail(m, "body output '%s' is not a vector computed per step", safe(m, name));
    if (j < nstate && (outs[j]->konst ? vnumel(m, outs[j]) : vfeat(m, outs[j])) !=
                          (ins[j]->konst ? vnumel(m, ins[j]) : vfeat(m, ins[j])))
      fail(m, "state %d: the body's output and the initial state differ in size", j);
  }
  m->nvals = saved_nvals;
  m->out = saved_out;
  m->indent = saved_indent;
  /* The cell: scan inputs' rows, states, scan outputs (ignored as inputs). */
  Buf *d = &m->defs;
  buf_printf(d, "# ONNX Scan '%s': %d scan input%s, %d state%s, %d scan output%s\ndef %s(",
             safe(m, n->name), (int)nscan, nscan == 1 ? "" : "s", nstate, nstate == 1 ? "" : "s",
             K, K == 1 ? "" : "s", cell);
  for (int i = 0; i < nin + K; i++)
    buf_printf(d, "%s%s", i ? ", " : "", i < nin ? args[i] : fmt(m, "v%d", m->nlet++));
  buf_printf(d, ") {\n");
  if (text->len)
    buf_put(d, text->data, text->len);
  buf_printf(d, "  return ");
  for (int j = 0; j < nout; j++)
    buf_printf(d, "%s%s", j ? ", " : "", outs[j]->expr);
  buf_printf(d, "\n}\n\n");
  buf_free(text);
  m->ncells--;
  /* The scan: one stack per carry; a state's final value is its last row. */
  Val **stacks = alloc(m, (size_t)ncarry * sizeof *stacks);
  for (int j = 0; j < ncarry; j++) {
    int64_t dim[MAXR];
    const Val *o = outs[j];
    if (o->rank + 1 > MAXR)
      fail(m, "a scan output of rank %d", o->rank + 1);
    dim[0] = SYM_T;
    memcpy(dim + 1, o->dim, (size_t)o->rank * sizeof *dim);
    stacks[j] = new_let(m, j >= nstate ? out_name(m, j) : NULL, o->rank + 1, dim, 0);
  }
  buf_printf(m->out, "%slet ", m->indent);
  for (int j = 0; j < ncarry; j++)
    buf_printf(m->out, "%s%s", j ? ", " : "", stacks[j]->expr);
  buf_printf(m->out, " = scan %s%s over ", rev ? "reverse " : "", cell);
  for (int i = nstate; i < nin; i++)
    buf_printf(m->out, "%s%s", i > nstate ? ", " : "", ins[i]->expr);
  buf_printf(m->out, " from ");
  for (int j = 0; j < ncarry; j++) {
    int64_t size = vfeat(m, outs[j]);
    const char *init = j < nstate ? initial_state(m, j, size, 1, 0, fmt(m, "scan%d", id),
                                                  fmt(m, "state%d", j))
                                  : fmt(m, "zeros(%" PRId64 ")", size);
    buf_printf(m->out, "%s%s", j ? ", " : "", init);
  }
  buf_printf(m->out, "    # %s\n", safe(m, n->name));
  for (int j = 0; j < nstate; j++)
    if (out_used(m, j))
      let_val(m, out_name(m, j), outs[j]->rank, outs[j]->dim, -1, "%s(%s)",
              rev ? "first" : "last", stacks[j]->expr);
}

/* ------------------------------------------------------------ the nodes */

static void node_gemm(Imp *m) {
  Attrs a = {.n = m->node};
  double alpha = attr_float(m, &a, "alpha", 1), beta = attr_float(m, &a, "beta", 1);
  int64_t ta = attr_int(m, &a, "transA", 0), tb = attr_int(m, &a, "transB", 0);
  attrs_done(m, &a);
  Val *A = need(m, 0, "A"), *Bv = need_const(m, 1, "B"), *C = in_val(m, 2);
  if (A->konst)
    fail(m, "A is a constant and B a weight: nothing runs at run time (rnnc folds only shape "
            "arithmetic of Gemm's kind)");
  if (A->taxis >= 0 || A->onehot || A->rank != 2)
    fail(m, "A has shape %s; rnnc needs a vector [1, K] per sequence", shape_str(m, A));
  int64_t K = A->dim[ta ? 0 : 1];
  if (A->dim[ta ? 1 : 0] != 1)
    fail(m, "A has shape %s (attribute 'transA' = %" PRId64 "); rnnc needs one row per sequence",
         shape_str(m, A), ta);
  if (Bv->rank != 2 || Bv->dim[tb ? 1 : 0] != K)
    fail(m, "B has shape %s, which does not match A %s", shape_str(m, Bv), shape_str(m, A));
  int64_t N = Bv->dim[tb ? 0 : 1];
  const char *init = fmt(m, "linear(%" PRId64 ")", K);
  const char *w = const_param(m, Bv, tb ? N : K, !tb, init);
  const char *e = fmt(m, "%s @ %s", w, A->expr);
  if (alpha != 1) /* (a * W) @ x would be a product of a computed matrix */
    e = fmt(m, "%s * (%s)", number(m, alpha), e);
  if (C && beta != 0) {
    if (!C->konst)
      fail(m, "C is computed at run time");
    int64_t n = vnumel(m, C);
    if (n != 1 && n != N)
      fail(m, "C has shape %s; rnnc needs 1 or %" PRId64 " values", shape_str(m, C), N);
    e = fmt(m, "%s + %s%s%s", e, beta != 1 ? number(m, beta) : "", beta != 1 ? " * " : "",
            n == 1 ? number(m, C->c[0]) : const_param(m, C, 0, false, init));
  }
  int64_t dim[2] = {1, N};
  let_val(m, out_name(m, 0), 2, dim, -1, "%s", e);
}

static void node_matmul(Imp *m) {
  Val *A = need(m, 0, "A"), *Bv = need(m, 1, "B");
  if (A->konst && Bv->konst) {
    fail(m, "a product of two constants (rnnc folds shape arithmetic, not products)");
  }
  if (!A->konst && Bv->konst && Bv->rank == 2 && A->taxis < 0 && !A->onehot &&
      A->dim[A->rank - 1] == Bv->dim[0] && vfeat(m, A) == Bv->dim[0]) {
    /* [.., K] @ [K, N]: the transposed weight times the vector */
    int64_t N = Bv->dim[1];
    const char *w = const_param(m, Bv, Bv->dim[0], true, fmt(m, "linear(%" PRId64 ")", Bv->dim[0]));
    int64_t dim[MAXR];
    memcpy(dim, A->dim, sizeof dim);
    dim[A->rank - 1] = N;
    let_val(m, out_name(m, 0), A->rank, dim, -1, "%s @ %s", w, A->expr);
    return;
  }
  if (A->konst && !Bv->konst && A->rank == 2 && Bv->rank == 1 && Bv->taxis < 0 &&
      Bv->dim[0] == A->dim[1]) {
    const char *w = const_param(m, A, A->dim[0], false, fmt(m, "linear(%" PRId64 ")", A->dim[1]));
    int64_t dim[1] = {A->dim[0]};
    let_val(m, out_name(m, 0), 1, dim, -1, "%s @ %s", w, Bv->expr);
    return;
  }
  fail(m, "a product of %s and %s: rnnc multiplies a constant matrix with a vector per sequence",
       shape_str(m, A), shape_str(m, Bv));
}

static void node_squeeze(Imp *m, bool un) {
  Attrs a = {.n = m->node};
  int64_t na = 0;
  int64_t *axes = axes_of(m, &a, 1, &na);
  attrs_done(m, &a);
  Val *x = need(m, 0, "data");
  int64_t dim[MAXR];
  int r = 0, taxis = -1;
  if (un) {
    int rank = x->rank + (int)na;
    if (rank > MAXR)
      fail(m, "a result of rank %d", rank);
    bool ins[MAXR] = {0};
    for (int64_t i = 0; i < na; i++)
      ins[norm_axis(m, axes[i], rank, "axis")] = true;
    int k = 0;
    for (int i = 0; i < rank; i++) {
      if (ins[i])
        dim[r++] = 1;
      else {
        if (k == x->taxis)
          taxis = r;
        dim[r++] = x->dim[k++];
      }
    }
    if (k != x->rank)
      fail(m, "repeated axes");
  } else {
    bool drop[MAXR] = {0};
    for (int64_t i = 0; i < na; i++)
      drop[norm_axis(m, axes[i], x->rank, "axis")] = true;
    for (int i = 0; i < x->rank; i++) {
      if (!axes)
        drop[i] = x->dim[i] == 1;
      if (drop[i] && x->dim[i] != 1)
        fail(m, "squeezes axis %d of %s, which is not 1", i, shape_str(m, x));
      if (!drop[i]) {
        if (i == x->taxis)
          taxis = r;
        dim[r++] = x->dim[i];
      }
    }
  }
  if (x->konst)
    reshape_const(m, x, r, dim);
  else
    alias(m, out_name(m, 0), x, r, dim, taxis);
}

static void node_reshape(Imp *m, bool flatten) {
  Attrs a = {.n = m->node};
  int64_t fax = flatten ? attr_int(m, &a, "axis", 1) : 0;
  if (!flatten)
    attr_int(m, &a, "allowzero", 0);
  attrs_done(m, &a);
  Val *x = need(m, 0, "data");
  int64_t dim[MAXR], n;
  int r;
  if (flatten) {
    int ax = norm_axis(m, fax, x->rank + 1, "attribute 'axis'");
    dim[0] = dim[1] = 1;
    for (int i = 0; i < x->rank; i++) {
      if (x->dim[i] == SYM_T && (i < ax ? dim[0] : dim[1]) != 1)
        fail(m, "flattens T with another dimension");
      if (x->dim[i] == SYM_T || dim[i < ax ? 0 : 1] == SYM_T)
        dim[i < ax ? 0 : 1] = x->dim[i] == SYM_T ? SYM_T : dim[i < ax ? 0 : 1];
      else
        dim[i < ax ? 0 : 1] *= x->dim[i];
    }
    r = 2;
  } else {
    Val *s = need_const(m, 1, "shape");
    int64_t *sh = ints_of(m, s, &n);
    if (n > MAXR)
      fail(m, "a shape of rank %" PRId64, n);
    r = (int)n;
    int infer = -1;
    int64_t known = 1, total = 1;
    bool has_t = false;
    for (int i = 0; i < x->rank; i++)
      if (x->dim[i] == SYM_T)
        has_t = true;
      else
        total *= x->dim[i];
    for (int i = 0; i < r; i++) {
      dim[i] = sh[i];
      if (sh[i] == 0 && i < x->rank)
        dim[i] = x->dim[i];
      if (dim[i] == -1) {
        if (infer >= 0)
          fail(m, "two -1 dimensions in the shape");
        infer = i;
      } else if (dim[i] == SYM_T) {
        has_t = false;
      } else if (dim[i] < 0) {
        fail(m, "a negative dimension in the shape");
      } else {
        if (dim[i] > 0 && known > MAX_NUMEL / dim[i])
          fail(m, "a shape of %" PRId64 " x ... elements: too large", dim[i]);
        known *= dim[i];
      }
    }
    if (infer >= 0)
      dim[infer] = has_t ? SYM_T : known ? total / known : 0;
  }
  int taxis = -1;
  for (int i = 0; i < r; i++)
    if (dim[i] == SYM_T)
      taxis = i;
  if (x->konst)
    reshape_const(m, x, r, dim);
  else
    alias(m, out_name(m, 0), x, r, dim, taxis);
}

static void node_concat(Imp *m) {
  Attrs a = {.n = m->node};
  int64_t ax = attr_int(m, &a, "axis", 0);
  attrs_done(m, &a);
  int n = (int)m->node->n_input;
  Val *v0 = need(m, 0, "input");
  int axis = norm_axis(m, ax, v0->rank, "attribute 'axis'");
  bool all = true;
  int64_t total = 0;
  /* The inputs, read before the output exists (it may reuse a name). */
  Val **ins = alloc(m, (size_t)n * sizeof *ins);
  for (int i = 0; i < n; i++) {
    Val *v = ins[i] = need(m, i, "input");
    all &= v->konst;
    if (v->rank != v0->rank)
      fail(m, "inputs of ranks %d and %d", v0->rank, v->rank);
    for (int d = 0; d < v->rank; d++)
      if (d != axis && v->dim[d] != v0->dim[d])
        fail(m, "inputs of shapes %s and %s", shape_str(m, v0), shape_str(m, v));
    if (v->dim[axis] == SYM_T)
      fail(m, "concatenates along the sequence (rnnc's values have one length T)");
    total += v->dim[axis];
  }
  int64_t dim[MAXR];
  memcpy(dim, v0->dim, sizeof dim);
  dim[axis] = total;
  if (all) {
    Val *v = new_const(m, out_name(m, 0), v0->rank, dim, v0->isfloat);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++)
      outer *= dim[d];
    for (int d = axis + 1; d < v0->rank; d++)
      inner *= dim[d];
    int64_t o = 0;
    for (int64_t k = 0; k < outer; k++)
      for (int i = 0; i < n; i++) {
        Val *s = ins[i];
        int64_t len = s->dim[axis] * inner;
        memcpy(v->c + o, s->c + k * len, (size_t)len * sizeof(double));
        o += len;
      }
    return;
  }
  /* Runtime values (vectors, or sequences concatenated row by row), in
   * row-major order: for each index of the axes before `axis`, each
   * input's block of its features. */
  int taxis = -1;
  for (int d = 0; d < v0->rank; d++)
    if (dim[d] == SYM_T)
      taxis = d;
  if (taxis > axis)
    fail(m, "concatenates along axis %d, before the sequence's T", axis);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < v0->rank; d++)
    if (d != taxis && d != axis)
      *(d < axis ? &outer : &inner) *= dim[d];
  if (outer * n > 256)
    fail(m, "concatenates %" PRId64 " pieces (rnnc's limit is 256)", outer * n);
  const char *e = "";
  int pieces = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int i = 0; i < n; i++) {
      Val *v = ins[i];
      if (v->onehot && outer > 1)
        fail(m, "concatenates pieces of the one-hot input");
      if (v->konst && taxis >= 0)
        fail(m, "concatenates a constant with a sequence (rnnc concatenates sequences row by "
                "row, and vectors)");
      int64_t len = v->dim[axis] * inner;
      if (!len)
        continue;
      const char *x = v->konst ? const_param(m, v, 0, false, "zeros") : v->expr;
      if (outer > 1)
        x = fmt(m, "%s[%" PRId64 ":%" PRId64 "]", x, o * len, (o + 1) * len);
      e = fmt(m, "%s%s%s", e, pieces++ ? ", " : "", x);
    }
  if (!pieces)
    fail(m, "an empty concatenation");
  let_val(m, out_name(m, 0), v0->rank, dim, taxis, pieces > 1 ? "concat(%s)" : "%s", e);
}

static void node_slice(Imp *m) {
  Val *x = need(m, 0, "data");
  int64_t ns, ne, na = 0, nst = 0, *starts, *ends, *axes = NULL, *steps = NULL;
  Attrs a = {.n = m->node};
  if (m->opset < 10) {
    const Onnx__AttributeProto *s = attr(m, &a, "starts"), *e = attr(m, &a, "ends"),
                               *ax = attr(m, &a, "axes");
    if (!s || !e)
      fail(m, "no 'starts' or 'ends' attribute");
    starts = s->ints, ns = (int64_t)s->n_ints, ends = e->ints, ne = (int64_t)e->n_ints;
    if (ax)
      axes = ax->ints, na = (int64_t)ax->n_ints;
  } else {
    starts = ints_of(m, need_const(m, 1, "starts"), &ns);
    ends = ints_of(m, need_const(m, 2, "ends"), &ne);
    if (in_val(m, 3))
      axes = ints_of(m, need_const(m, 3, "axes"), &na);
    if (in_val(m, 4))
      steps = ints_of(m, need_const(m, 4, "steps"), &nst);
  }
  attrs_done(m, &a);
  if (ns != ne || (axes && na != ns) || (steps && nst != ns))
    fail(m, "starts, ends, axes and steps of different lengths");
  no_T(m, starts, ns, "a start");
  int64_t lo[MAXR], step[MAXR], cnt[MAXR];
  bool touched[MAXR] = {0};
  for (int i = 0; i < x->rank; i++)
    lo[i] = 0, step[i] = 1, cnt[i] = x->dim[i];
  for (int64_t i = 0; i < ns; i++) {
    int ax = norm_axis(m, axes ? axes[i] : i, x->rank, "an axis");
    if (touched[ax])
      fail(m, "axis %d twice", ax);
    touched[ax] = true;
    int64_t st = steps ? steps[i] : 1, d = x->dim[ax];
    if (st != 1 && (st < 1 || x->dim[ax] == SYM_T))
      fail(m, "a step of %" PRId64 " (rnnc slices with step 1, and with positive steps only "
              "constants)",
           st);
    if (d == SYM_T) {
      if (starts[i] == 0 && (ends[i] == SYM_T || ends[i] >= INT32_MAX))
        continue; /* all of T */
      fail(m, "slices the sequence (rnnc's values have one length T)");
    }
    int64_t s = starts[i] < 0 ? starts[i] + d : starts[i];
    int64_t e = ends[i] == SYM_T ? d : ends[i] < 0 ? ends[i] + d : ends[i];
    s = s < 0 ? 0 : s > d ? d : s;
    e = e < 0 ? 0 : e > d ? d : e;
    lo[ax] = s, step[ax] = st;
    cnt[ax] = e > s ? (e - s + st - 1) / st : 0;
  }
  if (x->konst) {
    fold_slice(m, x, lo, step, cnt);
    return;
  }
  x = runtime_in(m, 0, "data");
  int ax = -1;
  for (int i = 0; i < x->rank; i++) {
    if (step[i] != 1)
      fail(m, "a step of %" PRId64 " on a value computed at run time (rnnc slices it with step "
              "1)",
           step[i]);
    if (cnt[i] != x->dim[i]) {
      if (ax >= 0)
        fail(m, "slices axes %d and %d of %s (rnnc slices one axis)", ax, i, shape_str(m, x));
      ax = i;
    }
  }
  if (ax < 0) {
    alias(m, out_name(m, 0), x, x->rank, x->dim, x->taxis);
    return;
  }
  if (cnt[ax] < 1)
    fail(m, "an empty slice");
  let_val(m, out_name(m, 0), x->rank, cnt, x->taxis, "%s", select_expr(m, x, ax, lo[ax], cnt[ax]));
}

static void node_gather(Imp *m) {
  Attrs a = {.n = m->node};
  int64_t ax = attr_int(m, &a, "axis", 0);
  attrs_done(m, &a);
  Val *d = need(m, 0, "data"), *idx = need(m, 1, "indices");
  int axis = norm_axis(m, ax, d->rank, "attribute 'axis'");
  if (d->konst && idx->konst) {
    fold_gather(m, d, idx, axis);
    return;
  }
  if (!idx->konst && idx->onehot && d->konst && d->rank == 2 && axis == 0) {
    /* an embedding: its rows are gathered in the cell that reads them */
    int64_t dim[MAXR];
    if (idx->rank + 1 > MAXR)
      fail(m, "a result of rank %d", idx->rank + 1);
    memcpy(dim, idx->dim, (size_t)idx->rank * sizeof *dim);
    dim[idx->rank] = d->dim[1];
    Val *v = alias(m, out_name(m, 0), idx, idx->rank, idx->dim, idx->taxis);
    v->rank = idx->rank + 1;
    memcpy(v->dim, dim, sizeof dim);
    v->onehot = false;
    v->embed = const_param(m, d, d->dim[0], true, "uniform(1)");
    return;
  }
  if (!idx->konst)
    fail(m, "indices computed at run time (rnnc gathers rows of an embedding by the input's "
            "indices, for a GRU, LSTM or RNN)");
  int64_t n;
  int64_t *ix = ints_of(m, idx, &n);
  if (n != 1 || idx->rank != 0)
    fail(m, "indices of shape %s; rnnc gathers one row (a scalar index)", shape_str(m, idx));
  int64_t dim[MAXR];
  int r = 0, taxis = -1;
  for (int i = 0; i < d->rank; i++)
    if (i != axis) {
      if (i == d->taxis)
        taxis = r;
      dim[r++] = d->dim[i];
    }
  if (axis == d->taxis) {
    if (ix[0] != -1 && ix[0] != 0)
      fail(m, "gathers step %" PRId64 " of the sequence; rnnc takes the first (0) or the last "
              "(-1)",
           ix[0]);
    let_val(m, out_name(m, 0), r, dim, -1, "%s(%s)", ix[0] ? "last" : "first", d->expr);
    return;
  }
  int64_t len = d->dim[axis], at = ix[0] < 0 ? ix[0] + len : ix[0];
  if (at < 0 || at >= len)
    fail(m, "index %" PRId64 " is out of range for axis %d of %s", ix[0], axis, shape_str(m, d));
  if (len == 1) {
    alias(m, out_name(m, 0), d, r, dim, taxis);
    return;
  }
  d = runtime_in(m, 0, "data");
  let_val(m, out_name(m, 0), r, dim, taxis, "%s", select_expr(m, d, axis, at, 1));
}

/* Transpose: of constants, any; of a runtime value, one that keeps the
 * order of its dimensions above 1 (T among them), i.e. moves dimensions
 * of 1 only (torch.onnx.export's [T, 2, batch, H] -> [T, batch, 2, H] of a
 * bidirectional layer's output). */
static void node_transpose(Imp *m) {
  Attrs a = {.n = m->node};
  const Onnx__AttributeProto *p = attr(m, &a, "perm");
  attrs_done(m, &a);
  Val *x = need(m, 0, "data");
  int perm[MAXR];
  bool seen[MAXR] = {0};
  if (p && p->n_ints != (size_t)x->rank)
    fail(m, "attribute 'perm' has %zu axes for a value of rank %d", p->n_ints, x->rank);
  for (int i = 0; i < x->rank; i++) {
    perm[i] = p ? norm_axis(m, p->ints[i], x->rank, "an axis of 'perm'") : x->rank - 1 - i;
    if (seen[perm[i]])
      fail(m, "attribute 'perm' names axis %d twice", perm[i]);
    seen[perm[i]] = true;
  }
  int64_t dim[MAXR];
  int taxis = -1, last = -1;
  bool keeps = true;
  for (int i = 0; i < x->rank; i++) {
    dim[i] = x->dim[perm[i]];
    if (perm[i] == x->taxis)
      taxis = i;
    if (dim[i] != 1) {
      keeps &= perm[i] > last;
      last = perm[i];
    }
  }
  if (x->konst) {
    Val *v = new_const(m, out_name(m, 0), x->rank, dim, x->isfloat);
    v->weight = x->weight;
    int64_t n = vnumel(m, v), stride[MAXR], st = 1;
    for (int k = x->rank - 1; k >= 0; k--)
      stride[k] = st, st *= x->dim[k];
    for (int64_t i = 0; i < n; i++) {
      int64_t rest = i, off = 0;
      for (int k = x->rank - 1; k >= 0; k--) {
        off += rest % dim[k] * stride[perm[k]];
        rest /= dim[k];
      }
      v->c[i] = x->c[off];
    }
    return;
  }
  if (!keeps) {
    Val tmp = {.rank = x->rank};
    memcpy(tmp.dim, dim, sizeof tmp.dim);
    fail(m, "transposes %s to %s: rnnc's values are vectors (or sequences of them) in row-major "
            "order; it moves only dimensions of 1",
         shape_str(m, x), shape_str(m, &tmp));
  }
  alias(m, out_name(m, 0), x, x->rank, dim, taxis);
}

static void node_softmax(Imp *m, bool log) {
  Attrs a = {.n = m->node};
  int64_t ax = attr_int(m, &a, "axis", m->opset >= 13 ? -1 : 1);
  attrs_done(m, &a);
  Val *x = need(m, 0, "input");
  if (x->konst)
    fail(m, "a softmax of a constant");
  x = runtime_in(m, 0, "input");
  int axis = norm_axis(m, ax, x->rank, "attribute 'axis'");
  bool ok = x->taxis < 0;
  if (m->opset >= 13)
    ok &= vfeat(m, x) == x->dim[axis];
  else
    for (int i = 0; i < axis; i++)
      ok &= x->dim[i] == 1;
  if (!ok)
    fail(m, "a softmax over axis %d of %s; rnnc's is over a vector", axis, shape_str(m, x));
  let_val(m, out_name(m, 0), x->rank, x->dim, -1, log ? "log_softmax(%s)" : "exp(log_softmax(%s))",
          x->expr);
}

static void node_constant(Imp *m) {
  const Onnx__NodeProto *n = m->node;
  if (n->n_attribute != 1)
    fail(m, "has %zu attributes (one value)", n->n_attribute);
  const Onnx__AttributeProto *p = n->attribute[0];
  const char *an = p->name ? p->name : "";
  int64_t none[1] = {0}, cnt[1];
  Val *v;
  if (!strcmp(an, "value") && p->t) {
    v = tensor_const(m, out_name(m, 0), p->t);
  } else if (!strcmp(an, "value_float") && p->has_f) {
    v = new_const(m, out_name(m, 0), 0, none, true);
    v->c[0] = p->f;
  } else if (!strcmp(an, "value_int") && p->has_i) {
    v = new_const(m, out_name(m, 0), 0, none, false);
    v->c[0] = (double)p->i;
  } else if (!strcmp(an, "value_floats")) {
    cnt[0] = (int64_t)p->n_floats;
    v = new_const(m, out_name(m, 0), 1, cnt, true);
    for (size_t i = 0; i < p->n_floats; i++)
      v->c[i] = p->floats[i];
  } else if (!strcmp(an, "value_ints")) {
    cnt[0] = (int64_t)p->n_ints;
    v = new_const(m, out_name(m, 0), 1, cnt, false);
    for (size_t i = 0; i < p->n_ints; i++)
      v->c[i] = (double)p->ints[i];
  } else {
    fail(m, "attribute '%.100s' is not supported", an);
  }
  (void)v;
}

static void node_constant_of_shape(Imp *m) {
  Attrs a = {.n = m->node};
  const Onnx__AttributeProto *p = attr(m, &a, "value");
  attrs_done(m, &a);
  int64_t n;
  int64_t *sh = ints_of(m, need_const(m, 0, "shape"), &n);
  no_T(m, sh, n, "the shape");
  if (n > MAXR)
    fail(m, "a shape of rank %" PRId64, n);
  double x = 0;
  bool isfloat = true;
  if (p && p->t) {
    Val *t = tensor_const(m, "", p->t);
    if (vnumel(m, t) != 1)
      fail(m, "attribute 'value' is not one value");
    x = t->c[0];
    isfloat = t->isfloat;
  }
  Val *v = new_const(m, out_name(m, 0), (int)n, sh, isfloat);
  int64_t c = vnumel(m, v);
  for (int64_t i = 0; i < c; i++)
    v->c[i] = x;
}

static void node_expand(Imp *m) {
  Val *x = need(m, 0, "input");
  Val *s = need_const(m, 1, "shape");
  int64_t n;
  int64_t *sh = ints_of(m, s, &n);
  if (n > MAXR)
    fail(m, "a shape of rank %" PRId64, n);
  Val shape = {.rank = (int)n};
  memcpy(shape.dim, sh, (size_t)n * sizeof *sh);
  int r;
  int64_t dim[MAXR];
  if (!broadcast(x, &shape, &r, dim))
    fail(m, "cannot expand %s to %s", shape_str(m, x), shape_str(m, &shape));
  if (x->konst) {
    no_T(m, dim, r, "the shape");
    Val *v = new_const(m, out_name(m, 0), r, dim, x->isfloat);
    int64_t c = vnumel(m, v);
    for (int64_t i = 0; i < c; i++)
      v->c[i] = bcast_at(x, r, dim, i);
    return;
  }
  alias(m, out_name(m, 0), x, r, dim, x->taxis < 0 ? -1 : x->taxis + (r - x->rank));
}

static void node_shape(Imp *m) {
  Attrs a = {.n = m->node};
  Val *x = need(m, 0, "data");
  int64_t s = attr_int(m, &a, "start", 0), e = attr_int(m, &a, "end", x->rank);
  attrs_done(m, &a);
  s = s < 0 ? s + x->rank : s;
  e = e < 0 ? e + x->rank : e;
  s = s < 0 ? 0 : s > x->rank ? x->rank : s;
  e = e < s ? s : e > x->rank ? x->rank : e;
  int64_t dim[1] = {e - s};
  Val *v = new_const(m, out_name(m, 0), 1, dim, false);
  for (int64_t i = s; i < e; i++)
    v->c[i - s] = (double)x->dim[i];
}

static void node_cast(Imp *m) {
  Attrs a = {.n = m->node};
  int64_t to = attr_int(m, &a, "to", 0);
  attrs_done(m, &a);
  Val *x = need(m, 0, "input");
  bool tofloat =
      to == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || to == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
  bool toint =
      to == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 || to == ONNX__TENSOR_PROTO__DATA_TYPE__INT32;
  if (!tofloat && !toint)
    fail(m, "attribute 'to' = %s is not supported", dtype_name((int32_t)to));
  if (x->konst) {
    Val *v = reshape_const(m, x, x->rank, x->dim);
    v->isfloat = tofloat;
    int64_t n = vnumel(m, v);
    for (int64_t i = 0; toint && i < n; i++)
      if (v->c[i] != (double)SYM_T)
        v->c[i] = trunc(v->c[i]);
    return;
  }
  if (!tofloat)
    fail(m, "casts a float value to integers");
  alias(m, out_name(m, 0), x, x->rank, x->dim, x->taxis);
}

static void identity(Imp *m) {
  Val *x = need(m, 0, "input");
  if (x->konst)
    reshape_const(m, x, x->rank, x->dim);
  else
    alias(m, out_name(m, 0), x, x->rank, x->dim, x->taxis);
}

static void node(Imp *m, const Onnx__NodeProto *n) {
  m->node = n;
  const char *op = n->op_type ? n->op_type : "";
  if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx"))
    fail(m, "domain '%.100s' is not supported (the default ONNX domain is)", n->domain);
  bool rec = !strcmp(op, "GRU") || !strcmp(op, "LSTM") || !strcmp(op, "RNN");
  for (size_t i = rec ? 1 : 0; strcmp(op, "Shape") && i < n->n_input; i++) {
    const Val *v = n->input[i][0] ? find(m, n->input[i]) : NULL;
    if (v && v->embed)
      fail(m, "reads an embedding's rows ('%s'): rnnc gathers them only for the X of a GRU, "
              "LSTM or RNN",
           safe(m, v->name));
  }
  if (!strcmp(op, "Add") || !strcmp(op, "Sub") || !strcmp(op, "Mul") || !strcmp(op, "Div"))
    binary(m, op);
  else if (!strcmp(op, "Sigmoid"))
    unary(m, "sigmoid");
  else if (!strcmp(op, "Tanh"))
    unary(m, "tanh");
  else if (!strcmp(op, "Exp"))
    unary(m, "exp");
  else if (!strcmp(op, "Log"))
    unary(m, "log");
  else if (!strcmp(op, "Sqrt"))
    unary(m, "sqrt");
  else if (!strcmp(op, "Neg"))
    unary(m, "-");
  else if (!strcmp(op, "Relu"))
    unary(m, "relu");
  else if (!strcmp(op, "GRU"))
    recurrent(m, CELL_GRU);
  else if (!strcmp(op, "LSTM"))
    recurrent(m, CELL_LSTM);
  else if (!strcmp(op, "RNN"))
    recurrent(m, CELL_RNN);
  else if (!strcmp(op, "Gemm"))
    node_gemm(m);
  else if (!strcmp(op, "Scan"))
    node_scan(m);
  else if (!strcmp(op, "MatMul"))
    node_matmul(m);
  else if (!strcmp(op, "Squeeze") || !strcmp(op, "Unsqueeze"))
    node_squeeze(m, op[0] == 'U');
  else if (!strcmp(op, "Reshape") || !strcmp(op, "Flatten"))
    node_reshape(m, op[0] == 'F');
  else if (!strcmp(op, "Concat"))
    node_concat(m);
  else if (!strcmp(op, "Slice"))
    node_slice(m);
  else if (!strcmp(op, "Gather"))
    node_gather(m);
  else if (!strcmp(op, "Transpose"))
    node_transpose(m);
  else if (!strcmp(op, "Softmax") || !strcmp(op, "LogSoftmax"))
    node_softmax(m, op[0] == 'L');
  else if (!strcmp(op, "Constant"))
    node_constant(m);
  else if (!strcmp(op, "ConstantOfShape"))
    node_constant_of_shape(m);
  else if (!strcmp(op, "Expand"))
    node_expand(m);
  else if (!strcmp(op, "Shape"))
    node_shape(m);
  else if (!strcmp(op, "Cast"))
    node_cast(m);
  else if (!strcmp(op, "Identity") || !strcmp(op, "Dropout"))
    identity(m);
  else
    fail(m, "op %.60s is not supported", op);
  for (size_t i = 0; i < n->n_output; i++)
    if (out_used(m, (int)i) && !find(m, n->output[i]))
      fail(m, "output %zu ('%.200s') is not supported", i, n->output[i]);
  m->node = NULL;
}

/* ---------------------------------------------------------- the model */

static bool is_initializer(const Onnx__GraphProto *g, const char *name) {
  for (size_t i = 0; i < g->n_initializer; i++)
    if (g->initializer[i]->name && !strcmp(g->initializer[i]->name, name))
      return true;
  return false;
}

/* Whether graph input name is read only as sequence_lens (input 4) of
 * recurrent nodes. */
static bool only_lengths(const Onnx__GraphProto *g, const char *name) {
  bool any = false;
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *n = g->node[i];
    bool rec = n->op_type && (!strcmp(n->op_type, "GRU") || !strcmp(n->op_type, "LSTM") ||
                              !strcmp(n->op_type, "RNN"));
    for (size_t k = 0; k < n->n_input; k++)
      if (!strcmp(n->input[k], name)) {
        if (!rec || k != 4)
          return false;
        any = true;
      }
  }
  return any;
}

static const StTensor *bound(const ImportOptions *o, const char *name) {
  for (int i = 0; i < o->nbind; i++)
    if (!strcmp(o->bind[i].name, name))
      return &o->bind[i];
  return NULL;
}

/* A sequence of indices [T, batch] ([batch, T] when the batch dimension is
 * the number 1 and T a symbol), all read by one Gather of an initializer
 * table [V, E] (an embedding): the input is one-hot characters of V. */
static int64_t index_input(Imp *m, const Onnx__GraphProto *g, const Onnx__ValueInfoProto *in,
                           Buf *head) {
  const char *name = in->name;
  int64_t V = 0;
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *n = g->node[i];
    for (size_t k = 0; k < n->n_input; k++)
      if (!strcmp(n->input[k], name)) {
        const Onnx__TensorProto *t = NULL;
        for (size_t j = 0; n->op_type && !strcmp(n->op_type, "Gather") && k == 1 &&
                           j < g->n_initializer;
             j++)
          if (g->initializer[j]->name && !strcmp(g->initializer[j]->name, n->input[0]))
            t = g->initializer[j];
        if (!t || t->n_dims != 2 || t->dims[0] < 1 || t->dims[0] > (1 << 24))
          fail(m, "graph input '%.200s' holds indices, and node '%s' (%s) reads them: rnnc "
                  "reads indices only as rows of an embedding (Gather of a table [V, E])",
               name, safe(m, n->name), safe(m, n->op_type));
        if (V && V != t->dims[0])
          fail(m, "graph input '%.200s' indexes tables of %" PRId64 " and %" PRId64 " rows", name,
               V, t->dims[0]);
        V = t->dims[0];
      }
  }
  if (!V)
    fail(m, "graph input '%.200s' (indices) is not read by any node", name);
  const Onnx__TensorShapeProto__Dimension *d0 = in->type->tensor_type->shape->dim[0],
                                          *d1 = in->type->tensor_type->shape->dim[1];
  bool batch_first = d0->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                     d0->dim_value == 1 &&
                     d1->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
  Val *v = new_val(m, name);
  v->rank = 2;
  v->taxis = batch_first;
  v->dim[batch_first] = SYM_T;
  v->dim[!batch_first] = 1;
  v->expr = "x";
  v->onehot = true;
  buf_printf(head, "input  x : onehot[T, %" PRId64 "]    # ONNX input '%s' %s: indices\n", V,
             safe(m, name), batch_first ? "[batch, T]" : "[T, batch]");
  return V;
}

/* The sequence input: [T, batch, V] (or [batch, T, V] when the recurrent
 * node that reads it has layout 1), or [T, V]. */
static int64_t sequence_input(Imp *m, const Onnx__GraphProto *g, const Onnx__ValueInfoProto *in,
                              Buf *head) {
  const char *name = in->name;
  const Onnx__TypeProto *ty = in->type;
  if (!ty || ty->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !ty->tensor_type)
    fail(m, "graph input '%.200s' is not a tensor", name);
  const Onnx__TypeProto__Tensor *tt = ty->tensor_type;
  const Onnx__TensorShapeProto *sh = tt->shape;
  int rank = sh ? (int)sh->n_dim : 0;
  if ((tt->elem_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ||
       tt->elem_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT32) &&
      rank == 2)
    return index_input(m, g, in, head);
  if (tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
    fail(m, "graph input '%.200s' is %s; rnnc's sequence input is FLOAT (one-hot or not), or "
            "INT64 indices [T, batch] into an embedding",
         name, dtype_name(tt->elem_type));
  if (rank != 2 && rank != 3)
    fail(m, "graph input '%.200s' has rank %d; rnnc's sequence input is [T, batch, width] or "
            "[T, width]",
         name, rank);
  int taxis = 0;
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *n = g->node[i];
    if (n->n_input && !strcmp(n->input[0], name) && n->op_type &&
        (!strcmp(n->op_type, "GRU") || !strcmp(n->op_type, "LSTM") || !strcmp(n->op_type, "RNN")))
      for (size_t k = 0; k < n->n_attribute; k++)
        if (n->attribute[k]->name && !strcmp(n->attribute[k]->name, "layout") &&
            n->attribute[k]->i == 1)
          taxis = 1;
  }
  const Onnx__TensorShapeProto__Dimension *w = sh->dim[rank - 1];
  if (w->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE || w->dim_value < 1 ||
      w->dim_value > (1 << 24))
    fail(m, "graph input '%.200s': its last dimension (the width) must be a number from 1 to "
            "2^24",
         name);
  Val *v = new_val(m, name);
  v->rank = rank;
  for (int i = 0; i < rank; i++)
    v->dim[i] = i == taxis ? SYM_T : 1;
  v->dim[rank - 1] = w->dim_value;
  v->taxis = taxis;
  v->expr = "x";
  v->onehot = m->o->onehot;
  buf_printf(head, "input  x : %s[T, %" PRId64 "]    # ONNX input '%s' %s\n",
             m->o->onehot ? "onehot" : "f32", w->dim_value, safe(m, name),
             rank == 2 ? "[T, width]" : taxis ? "[batch, T, width]" : "[T, batch, width]");
  return w->dim_value;
}

static void import(Imp *m, const Onnx__ModelProto *mp, Imported *out) {
  const Onnx__GraphProto *g = m->graph = mp->graph;
  if (!g)
    fail(m, "the model has no graph");
  for (size_t i = 0; i < mp->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
    if (!o->domain || !o->domain[0] || !strcmp(o->domain, "ai.onnx"))
      m->opset = o->version;
  }
  if (m->opset < 7 || m->opset > 17)
    fail(m, "opset %" PRId64 " of the ONNX domain: rnnc reads opsets 7 to 17", m->opset);
  for (size_t i = 0; i < g->n_initializer; i++) {
    const Onnx__TensorProto *tp = g->initializer[i];
    if (!tp->name || !tp->name[0])
      fail(m, "initializer %zu has no name", i);
    tensor_const(m, tp->name, tp)->weight = true;
  }
  Buf *head = &m->head;
  const Onnx__ValueInfoProto *seq = NULL;
  for (size_t i = 0; i < g->n_input; i++) {
    const Onnx__ValueInfoProto *in = g->input[i];
    if (!in->name || is_initializer(g, in->name))
      continue;
    const StTensor *b = bound(m->o, in->name);
    if (b) {
      Val *v = new_data_const(m, in->name, b->ndim, b->shape, true);
      for (size_t k = 0; k < b->nelem; k++)
        v->c[k] = b->data[k];
      v->weight = true;
      continue;
    }
    if (only_lengths(g, in->name) && (!m->o->input || strcmp(m->o->input, in->name))) {
      new_val(m, in->name)->lengths = true;
      continue;
    }
    if ((m->o->input && strcmp(m->o->input, in->name)) || seq)
      fail(m, "graph input '%.200s' has no value: rnnc needs one sequence input (the others "
              "initializers or bound)",
           in->name);
    seq = in;
  }
  if (!seq)
    fail(m, m->o->input ? "the model has no graph input '%.200s'" : "%sthe model has no sequence "
                                                                    "input",
         m->o->input ? m->o->input : "");
  int64_t V = sequence_input(m, g, seq, head);
  for (size_t i = 0; i < g->n_node; i++)
    node(m, g->node[i]);
  const Onnx__ValueInfoProto *ov = NULL;
  for (size_t i = 0; i < g->n_output; i++)
    if (!ov && g->output[i]->name && (!m->o->output || !strcmp(m->o->output, g->output[i]->name)))
      ov = g->output[i];
  if (!ov)
    fail(m, m->o->output ? "the model has no graph output '%.200s'" : "%sthe model has no output",
         m->o->output ? m->o->output : "");
  Val *y = find(m, ov->name);
  if (!y)
    fail(m, "graph output '%.200s' is not computed by any node", ov->name);
  if (y->konst || y->taxis >= 0 || y->onehot)
    fail(m, "graph output '%.200s' has shape %s%s: rnnc's output is one vector per sequence "
            "(the logits)",
         ov->name, shape_str(m, y), y->konst ? " and is a constant" : "");
  int64_t C = vfeat(m, y);
  out->vocab = (int)V;
  out->onehot = find(m, seq->name) && find(m, seq->name)->onehot;
  out->classes = (int)C;
  Buf *nn = &out->nn;
  buf_printf(nn, "# Imported by rnnc import from %s (ONNX opset %" PRId64 "%s%s).\n#\n",
             m->o->source ? safe(m, m->o->source) : "an ONNX model", m->opset,
             mp->producer_name && mp->producer_name[0] ? ", written by " : "",
             safe(m, mp->producer_name));
  buf_printf(nn, "# Each sequence runs on its own (batch 1); the target, loss and training\n"
                 "# settings below are rnnc's defaults for a classifier, not the model's.\n\n");
  buf_put(nn, head->data, head->len);
  buf_printf(nn, "target y : class[%" PRId64 "]    # ONNX output '%s' %s\n\n", C, safe(m, ov->name),
             shape_str(m, y));
  if (m->params.len)
    buf_put(nn, m->params.data, m->params.len);
  buf_put(nn, "\n", 1);
  if (m->defs.len)
    buf_put(nn, m->defs.data, m->defs.len);
  if (m->body.len)
    buf_put(nn, m->body.data, m->body.len);
  buf_printf(nn, "\noutput %s\nloss -log_softmax(%s)[y]\n\n", y->expr, y->expr);
  buf_printf(nn, "optimizer adam(lr = 0.001, beta1 = 0.9, beta2 = 0.999, eps = 1e-8)\n"
                 "train epochs = 2, batch = 1\n");
  buf_put(nn, "", 1);
  nn->len--;
  if (!m->nts)
    fail(m, "the model has no weights: nothing for rnnc to train or run");
}

int onnx_import(const void *data, size_t len, const ImportOptions *o, Imported *out, Err *e) {
  memset(out, 0, sizeof *out);
  Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, data);
  if (!mp)
    return errf(e, "not an ONNX model (the protobuf does not parse as a ModelProto: a truncated "
                   "or different file?)");
  Imp *m = xcalloc(1, sizeof *m);
  m->e = e;
  m->o = o;
  m->out = &m->body;
  m->indent = "";
  int rc = 0;
  if (setjmp(m->jb))
    rc = -1;
  else
    import(m, mp, out);
  if (rc == 0) {
    out->tensors = m->ts;
    out->ntensors = m->nts;
  } else {
    for (int i = 0; i < m->nts; i++)
      onnx_tensor_free(&m->ts[i]);
    free(m->ts);
    buf_free(&out->nn);
    memset(out, 0, sizeof *out);
  }
  for (int i = 0; i < m->ncells; i++)
    buf_free(m->cells[i]);
  for (int i = 0; i < m->nowned; i++)
    free(m->owned[i]);
  free(m->owned);
  free(m->vals);
  buf_free(&m->head);
  buf_free(&m->params);
  buf_free(&m->defs);
  buf_free(&m->body);
  free(m);
  onnx__model_proto__free_unpacked(mp, NULL);
  return rc;
}

void imported_free(Imported *im) {
  for (int i = 0; i < im->ntensors; i++)
    onnx_tensor_free(&im->tensors[i]);
  free(im->tensors);
  buf_free(&im->nn);
  memset(im, 0, sizeof *im);
}

int onnx_read_tensor(const void *data, size_t len, StTensor *t, Err *e) {
  memset(t, 0, sizeof *t);
  Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, data);
  if (!tp)
    return errf(e, "not an ONNX tensor (TensorProto)");
  int rc = 0;
  size_t n = 1;
  if (tp->n_dims > ST_MAX_DIMS)
    rc = errf(e, "a tensor of %zu dimensions", tp->n_dims);
  for (size_t i = 0; rc == 0 && i < tp->n_dims; i++) {
    if (tp->dims[i] < 0 || (tp->dims[i] > 0 && n > (size_t)MAX_NUMEL / (size_t)tp->dims[i]))
      rc = errf(e, "a tensor of too many elements");
    else
      n *= (size_t)(t->shape[i] = tp->dims[i]);
  }
  double *v = rc ? NULL : xcalloc(n ? n : 1, sizeof *v);
  if (rc == 0)
    rc = tensor_values(tp, (int64_t)n, v, e);
  if (rc == 0) {
    t->ndim = (int)tp->n_dims;
    t->nelem = n;
    t->name = xstrdup(tp->name ? tp->name : "");
    t->data = xcalloc(n ? n : 1, sizeof(float));
    for (size_t i = 0; i < n; i++)
      t->data[i] = (float)v[i];
  }
  free(v);
  onnx__tensor_proto__free_unpacked(tp, NULL);
  return rc;
}

void onnx_tensor_free(StTensor *t) {
  free(t->name);
  free(t->data);
  memset(t, 0, sizeof *t);
}

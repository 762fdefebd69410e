/* onnx_export.c: a graph's forward IR and its weights -> an ONNX model
 * (rnnc export), written with protobuf-c through ONNX's schema.
 *
 * The inference graph: the input, [T, 1, V] float (one-hot characters as
 * PyTorch's names models take them, or the f32 input's rows), squeezed to
 * [T, V]; every node the output depends on, one ONNX node each (opset 14);
 * the output "logits" [C]. A scan becomes an ONNX Scan whose body is the
 * cell: the carried states are the Scan's states, and each is also a scan
 * output (Identity), since the IR reads a scan's results as the stacks of
 * its states; a reverse scan reads and stacks from the last row
 * (scan_input_directions, scan_output_directions 1). Parameters become
 * initializers under their names.
 *
 * What ONNX has no op for is an error naming the node: a random initial
 * state (noise) above all. rnnc import reads the result back (its Scan
 * node), which tests/test_onnx.c checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "rnnc.h"

typedef struct Nodes {
  Onnx__NodeProto **v;
  size_t n, cap;
} Nodes;

typedef struct Ex {
  jmp_buf jb;
  Err *e;
  const Graph *g;
  const float *values;
  void **owned;
  int nowned, capowned;
  char **name;  /* (nnodes) each node's ONNX value name */
  bool *needed; /* (nnodes) */
  Onnx__TensorProto **inits;
  size_t ninits, capinits;
} Ex;

static _Noreturn __attribute__((format(printf, 3, 4))) void fail(Ex *x, const Node *n,
                                                                  const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n && n->pos.line)
    errf(x->e, "%s:%d:%d: %s", x->g->src ? x->g->src->path : "graph", n->pos.line, n->pos.col,
         msg);
  else
    errf(x->e, "%s", msg);
  longjmp(x->jb, 1);
}

static void *own(Ex *x, void *p) {
  if (x->nowned == x->capowned) {
    x->capowned = x->capowned ? 2 * x->capowned : 256;
    x->owned = xrealloc(x->owned, (size_t)x->capowned * sizeof *x->owned);
  }
  return x->owned[x->nowned++] = p;
}

static void *alloc(Ex *x, size_t n) { return own(x, xcalloc(n ? n : 1, 1)); }

static __attribute__((format(printf, 2, 3))) char *fmt(Ex *x, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  char *s = alloc(x, (size_t)n + 1);
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

static void push(Ex *x, void ***v, size_t *n, size_t *cap, void *p) {
  if (*n == *cap) {
    *cap = *cap ? 2 * *cap : 16;
    void **nv = alloc(x, *cap * sizeof *nv);
    if (*n)
      memcpy(nv, *v, *n * sizeof *nv);
    *v = nv;
  }
  (*v)[(*n)++] = p;
}

/* A float or int64 initializer. */
static const char *init_tensor(Ex *x, const char *name, int rank, const int64_t *dims,
                               const float *f, const int64_t *ints, size_t n) {
  Onnx__TensorProto *t = alloc(x, sizeof *t);
  onnx__tensor_proto__init(t);
  t->name = (char *)name;
  t->n_dims = (size_t)rank;
  t->dims = alloc(x, (size_t)(rank ? rank : 1) * sizeof *t->dims);
  memcpy(t->dims, dims, (size_t)rank * sizeof *dims);
  t->has_data_type = 1;
  if (f) {
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->n_float_data = n;
    t->float_data = alloc(x, n * sizeof(float));
    memcpy(t->float_data, f, n * sizeof(float));
  } else {
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    t->n_int64_data = n;
    t->int64_data = alloc(x, n * sizeof(int64_t));
    memcpy(t->int64_data, ints, n * sizeof(int64_t));
  }
  push(x, (void ***)&x->inits, &x->ninits, &x->capinits, t);
  return name;
}

static const char *int_init(Ex *x, const char *name, int64_t v, bool scalar) {
  int64_t one = 1;
  return init_tensor(x, name, scalar ? 0 : 1, &one, NULL, &v, 1);
}

static Onnx__NodeProto *add_node(Ex *x, Nodes *nl, const char *op, const char *name, int nin,
                                 const char *const *in, const char *out) {
  Onnx__NodeProto *n = alloc(x, sizeof *n);
  onnx__node_proto__init(n);
  n->op_type = (char *)op;
  n->name = (char *)name;
  n->n_input = (size_t)nin;
  n->input = alloc(x, (size_t)(nin ? nin : 1) * sizeof *n->input);
  for (int i = 0; i < nin; i++)
    n->input[i] = (char *)in[i];
  n->n_output = 1;
  n->output = alloc(x, sizeof *n->output);
  n->output[0] = (char *)out;
  push(x, (void ***)&nl->v, &nl->n, &nl->cap, n);
  return n;
}

static Onnx__AttributeProto *add_attr(Ex *x, Onnx__NodeProto *n, const char *name) {
  Onnx__AttributeProto *a = alloc(x, sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  a->has_type = 1;
  Onnx__AttributeProto **v2 = alloc(x, (n->n_attribute + 1) * sizeof *v2);
  if (n->n_attribute)
    memcpy(v2, n->attribute, n->n_attribute * sizeof *v2);
  v2[n->n_attribute++] = a;
  n->attribute = v2;
  return a;
}

static void attr_int(Ex *x, Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = add_attr(x, n, name);
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  a->has_i = 1;
  a->i = v;
}

/* An attribute of count integers, all v. */
static void attr_ints(Ex *x, Onnx__NodeProto *n, const char *name, int count, int64_t v) {
  Onnx__AttributeProto *a = add_attr(x, n, name);
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  a->n_ints = (size_t)count;
  a->ints = alloc(x, (size_t)(count ? count : 1) * sizeof *a->ints);
  for (int i = 0; i < count; i++)
    a->ints[i] = v;
}

/* A value's type for graph inputs and outputs: float, with dims (dim < 0:
 * the symbol T). */
static Onnx__ValueInfoProto *value_info(Ex *x, const char *name, int rank, const int *dims) {
  Onnx__ValueInfoProto *vi = alloc(x, sizeof *vi);
  onnx__value_info_proto__init(vi);
  vi->name = (char *)name;
  Onnx__TypeProto *tp = vi->type = alloc(x, sizeof *tp);
  onnx__type_proto__init(tp);
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  Onnx__TypeProto__Tensor *tt = tp->tensor_type = alloc(x, sizeof *tt);
  onnx__type_proto__tensor__init(tt);
  tt->has_elem_type = 1;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  Onnx__TensorShapeProto *sh = tt->shape = alloc(x, sizeof *sh);
  onnx__tensor_shape_proto__init(sh);
  sh->n_dim = (size_t)rank;
  sh->dim = alloc(x, (size_t)(rank ? rank : 1) * sizeof *sh->dim);
  for (int i = 0; i < rank; i++) {
    Onnx__TensorShapeProto__Dimension *d = sh->dim[i] = alloc(x, sizeof *d);
    onnx__tensor_shape_proto__dimension__init(d);
    if (dims[i] < 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = "T";
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i];
    }
  }
  return vi;
}

static Onnx__ValueInfoProto *type_info(Ex *x, const char *name, Type t) {
  int dims[2] = {t.dim[0], t.dim[1]};
  return value_info(x, name, t.rank, dims);
}

static void mark(Ex *x, int id) {
  if (x->needed[id])
    return;
  x->needed[id] = true;
  const Node *n = &x->g->nodes[id];
  for (int i = 0; i < n->nin; i++)
    mark(x, n->in[i]);
  if (n->op == OP_SCAN) {
    const Block *b = &x->g->blocks[n->region];
    for (int i = 0; i < b->n; i++)
      mark(x, b->nodes[i]);
    for (int i = 0; i < b->nyields; i++)
      mark(x, b->yields[i]);
  }
}

static void emit_block(Ex *x, int blk, Nodes *nl);

static void emit_scan(Ex *x, int id, Nodes *nl) {
  const Graph *g = x->g;
  const Node *n = &g->nodes[id];
  const Block *b = &g->blocks[n->region];
  int nseq = n->a, ncarry = n->b;
  if (b->nyields != ncarry)
    fail(x, n, "a scan with per-step values besides its states");
  Nodes body = {0};
  Onnx__GraphProto *bg = alloc(x, sizeof *bg);
  onnx__graph_proto__init(bg);
  bg->name = fmt(x, "cell%d", id);
  /* Body inputs: the states, then the rows of the sequences. */
  for (int i = 0; i < b->nargs; i++)
    x->name[b->args[i]] = fmt(x, "n%d", b->args[i]);
  bg->n_input = (size_t)(ncarry + nseq);
  bg->input = alloc(x, bg->n_input * sizeof *bg->input);
  for (int j = 0; j < ncarry + nseq; j++) {
    int arg = b->args[j < ncarry ? nseq + j : j - ncarry];
    Type t = g->nodes[arg].type;
    if (t.kind == TY_ONEHOT)
      t = (Type){TY_F32, 1, {t.dim[0], 0}};
    bg->input[j] = type_info(x, x->name[arg], t);
  }
  emit_block(x, n->region, &body);
  /* Body outputs: the next states, then each again as a scan output. */
  bg->n_output = (size_t)(2 * ncarry);
  bg->output = alloc(x, bg->n_output * sizeof *bg->output);
  for (int j = 0; j < ncarry; j++) {
    int y = b->yields[j];
    const char *copy = fmt(x, "n%d_step%d", id, j);
    const char *in[1] = {x->name[y]};
    add_node(x, &body, "Identity", fmt(x, "n%d_copy%d", id, j), 1, in, copy);
    bg->output[j] = type_info(x, x->name[y], g->nodes[y].type);
    bg->output[ncarry + j] = type_info(x, copy, g->nodes[y].type);
  }
  bg->n_node = body.n;
  bg->node = body.v;
  /* The Scan: states first, then the sequences. */
  const char **in = alloc(x, (size_t)(nseq + ncarry) * sizeof *in);
  for (int j = 0; j < ncarry; j++)
    in[j] = x->name[n->in[nseq + j]];
  for (int i = 0; i < nseq; i++)
    in[ncarry + i] = x->name[n->in[i]];
  Onnx__NodeProto *s = add_node(x, nl, "Scan", fmt(x, "scan%d", id), nseq + ncarry, in, "");
  s->n_output = (size_t)(2 * ncarry);
  s->output = alloc(x, s->n_output * sizeof *s->output);
  for (int j = 0; j < ncarry; j++) {
    s->output[j] = fmt(x, "n%d_final%d", id, j);
    s->output[ncarry + j] = fmt(x, "n%d_stack%d", id, j);
  }
  attr_int(x, s, "num_scan_inputs", nseq);
  if (n->c) {
    /* A reverse scan: the sequences read from the last row, the stacks
     * written from the last row too (row t: the state after rows T-1..t). */
    attr_ints(x, s, "scan_input_directions", nseq, 1);
    attr_ints(x, s, "scan_output_directions", ncarry, 1);
  }
  Onnx__AttributeProto *a = add_attr(x, s, "body");
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
  a->g = bg;
}

static void emit_node(Ex *x, int id, Nodes *nl) {
  const Graph *g = x->g;
  const Node *n = &g->nodes[id];
  const char *out = x->name[id] = fmt(x, "n%d", id);
  const char *in[4] = {0};
  for (int i = 0; i < n->nin && i < 4; i++)
    in[i] = x->name[n->in[i]];
  const char *nm = fmt(x, "node%d", id);
  static const char *const elem[OP_COUNT] = {
      [OP_ADD] = "Add",   [OP_SUB] = "Sub",         [OP_MUL] = "Mul",   [OP_DIV] = "Div",
      [OP_NEG] = "Neg",   [OP_SIGMOID] = "Sigmoid", [OP_TANH] = "Tanh", [OP_EXP] = "Exp",
      [OP_LOG] = "Log",   [OP_SQRT] = "Sqrt",       [OP_RELU] = "Relu", [OP_DENSE] = "Identity",
      [OP_CONCAT] = "Concat", [OP_LOG_SOFTMAX] = "LogSoftmax", [OP_MATVEC] = "MatMul",
      [OP_SUM] = "ReduceSum"};
  switch (n->op) {
  case OP_ARG:
    return; /* named by its scan's body inputs */
  case OP_LOAD: {
    if (n->b != SLOT_VALUE || n->a == PARAM_ALL)
      fail(x, n, "internal: a load of an optimizer slot in a forward graph");
    const Param *p = &g->params[n->a];
    int64_t dims[2] = {p->type.dim[0], p->type.dim[1]};
    bool done = false; /* one initializer per parameter, however many loads */
    for (size_t i = 0; i < x->ninits; i++)
      done |= !strcmp(x->inits[i]->name, p->name);
    if (!done)
      init_tensor(x, p->name, p->type.rank, dims, x->values + p->offset, NULL,
                  type_numel(p->type));
    x->name[id] = p->name;
    return;
  }
  case OP_INPUT: {
    const char *sq[2] = {"x", int_init(x, "axis1", 1, false)};
    add_node(x, nl, "Squeeze", "rows", 2, sq, out);
    return;
  }
  case OP_CONST: {
    float f = (float)n->f;
    int64_t none = 0;
    init_tensor(x, out, 0, &none, &f, NULL, 1);
    return;
  }
  case OP_ZEROS: {
    size_t c = type_numel(n->type);
    float *z = alloc(x, c * sizeof *z);
    int64_t dims[2] = {n->type.dim[0], n->type.dim[1]};
    init_tensor(x, out, n->type.rank, dims, z, NULL, c);
    return;
  }
  case OP_NOISE:
    fail(x, n, "a random initial state (kaiming_uniform) has no ONNX equivalent: start from "
               "zeros or a buffer to export the graph");
  case OP_SLICE: {
    const char *s[4] = {in[0], int_init(x, fmt(x, "n%d_lo", id), n->a, false),
                        int_init(x, fmt(x, "n%d_hi", id), n->b, false),
                        int_init(x, fmt(x, "n%d_axis", id), -1, false)};
    add_node(x, nl, "Slice", nm, 4, s, out);
    return;
  }
  case OP_LAST:
  case OP_FIRST: {
    const char *s[2] = {in[0], int_init(x, fmt(x, "n%d_row", id), n->op == OP_LAST ? -1 : 0,
                                        true)};
    attr_int(x, add_node(x, nl, "Gather", nm, 2, s, out), "axis", 0);
    return;
  }
  case OP_SCAN:
    emit_scan(x, id, nl);
    return;
  case OP_PROJ:
    x->name[id] = fmt(x, "n%d_stack%d", n->in[0], n->a);
    return;
  case OP_MATVEC: {
    Type w = g->nodes[n->in[0]].type, v = g->nodes[n->in[1]].type;
    if (n->b != 0 || v.rank != 1 || w.dim[1] != v.dim[0])
      fail(x, n, "a product of some of a matrix's columns (not in a graph file's IR)");
    break;
  }
  default:
    break;
  }
  if (!elem[n->op] || n->nin > 2)
    fail(x, n, "%s has no ONNX export yet", op_names[n->op]);
  Onnx__NodeProto *o = add_node(x, nl, elem[n->op], nm, n->nin, in, out);
  if (n->op == OP_CONCAT) /* vectors, or sequences row by row */
    attr_int(x, o, "axis", -1);
  if (n->op == OP_LOG_SOFTMAX)
    attr_int(x, o, "axis", -1);
  if (n->op == OP_SUM)
    attr_int(x, o, "keepdims", 0);
}

static void emit_block(Ex *x, int blk, Nodes *nl) {
  const Block *b = &x->g->blocks[blk];
  for (int i = 0; i < b->n; i++)
    if (x->needed[b->nodes[i]])
      emit_node(x, b->nodes[i], nl);
}

int onnx_export(const Graph *g, const float *values, Buf *out, Err *e) {
  Ex *x = xcalloc(1, sizeof *x);
  x->e = e;
  x->g = g;
  x->values = values;
  x->name = xcalloc((size_t)g->nnodes, sizeof *x->name);
  x->needed = xcalloc((size_t)g->nnodes, sizeof *x->needed);
  int rc = 0;
  if (setjmp(x->jb)) {
    rc = -1;
  } else {
    if (g->output < 0)
      fail(x, NULL, "the graph has no output");
    mark(x, g->output);
    Nodes nl = {0};
    emit_block(x, 0, &nl);
    const char *in[1] = {x->name[g->output]};
    add_node(x, &nl, "Identity", "output", 1, in, "logits");
    Onnx__GraphProto gp;
    onnx__graph_proto__init(&gp);
    gp.name = "rnnc";
    gp.n_node = nl.n;
    gp.node = nl.v;
    gp.n_initializer = x->ninits;
    gp.initializer = x->inits;
    const Node *input = &g->nodes[g->input];
    int idims[3] = {-1, 1, input->type.dim[1]};
    Onnx__ValueInfoProto *gin = value_info(x, "x", 3, idims);
    Onnx__ValueInfoProto *gout = type_info(x, "logits", g->nodes[g->output].type);
    gp.n_input = 1;
    gp.input = &gin;
    gp.n_output = 1;
    gp.output = &gout;
    Onnx__OperatorSetIdProto ops;
    onnx__operator_set_id_proto__init(&ops);
    ops.domain = "";
    ops.has_version = 1;
    ops.version = 14;
    Onnx__OperatorSetIdProto *opsp = &ops;
    Onnx__ModelProto mp;
    onnx__model_proto__init(&mp);
    mp.has_ir_version = 1;
    mp.ir_version = 8;
    mp.producer_name = "rnnc";
    mp.producer_version = RNNC_VERSION;
    mp.n_opset_import = 1;
    mp.opset_import = &opsp;
    mp.graph = &gp;
    size_t n = onnx__model_proto__get_packed_size(&mp);
    uint8_t *bytes = xmalloc(n ? n : 1);
    onnx__model_proto__pack(&mp, bytes);
    buf_put(out, bytes, n);
    free(bytes);
  }
  for (int i = 0; i < x->nowned; i++)
    free(x->owned[i]);
  free(x->owned);
  free(x->name);
  free(x->needed);
  free(x);
  return rc;
}

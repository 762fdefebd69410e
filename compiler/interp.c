/* interp.c: the reference interpreter. It executes any IR, node by node,
 * in float64, or in float32 (every value rounded to float after each op,
 * which is what the generated kernels compute, up to summation order).
 * Every later stage is checked against it; it favours plainness over
 * speed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

struct Interp {
  const Graph *g;
  bool f32;
  double *slot[SLOT_COUNT]; /* (nfloats) each */
  int64_t step;
  Rng *rng;
  bool object, int8_dot; /* interp_set_object */
  double **val; /* node id -> its current value */
  size_t *cap;  /* node id -> allocated doubles */
  int T;
  const int32_t *chars; /* a one-hot input's indices, or */
  const float *x;       /* a float input's rows (T * width) */
  int target;
  Err *err;
  int failed;
};

Interp *interp_new(const Graph *g, bool f32) {
  Interp *I = xcalloc(1, sizeof *I);
  I->g = g;
  I->f32 = f32;
  for (int s = 0; s < SLOT_COUNT; s++)
    I->slot[s] = xcalloc(g->nfloats ? g->nfloats : 1, sizeof(double));
  I->val = xcalloc((size_t)g->nnodes, sizeof *I->val);
  I->cap = xcalloc((size_t)g->nnodes, sizeof *I->cap);
  return I;
}

void interp_free(Interp *I) {
  if (!I)
    return;
  for (int s = 0; s < SLOT_COUNT; s++)
    free(I->slot[s]);
  for (int i = 0; i < I->g->nnodes; i++)
    free(I->val[i]);
  free(I->val);
  free(I->cap);
  free(I);
}

double *interp_slot(Interp *I, int slot) { return I->slot[slot]; }
int64_t *interp_step(Interp *I) { return &I->step; }
void interp_set_rng(Interp *I, Rng *rng) { I->rng = rng; }
void interp_set_object(Interp *I, bool int8_dot) {
  I->object = true;
  I->int8_dot = int8_dot;
}

/* Elements of a value of type t, with T known. One-hot values hold their
 * index (one double per row); a class holds its index. */
static size_t count(const Interp *I, Type t) {
  if (t.kind == TY_CLASS)
    return 1;
  if (t.kind == TY_TUPLE || t.kind == TY_NONE)
    return 0;
  int rank = t.kind == TY_ONEHOT ? t.rank - 1 : t.rank;
  size_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= (size_t)(t.dim[i] == DIM_T ? I->T : t.dim[i]);
  return n;
}

static double *alloc(Interp *I, int id, size_t n) {
  if (I->cap[id] < n) {
    free(I->val[id]);
    I->val[id] = xcalloc(n, sizeof(double));
    I->cap[id] = n;
  }
  return I->val[id];
}

static double R(const Interp *I, double x) { return I->f32 ? (double)(float)x : x; }

/* y = W[:, k0:k0+nv] v as an object of --quantize int8 with integer dot
 * products computes it (interp_set_object): W's rows quantized
 * (quantize_row, whole rows), a one-hot v picking q * scale, a float v
 * quantized too and summed in int32, times the two scales. */
static void matvec_int8(Interp *I, const double *a, int M, int N, int k0, const double *v, int nv,
                        bool onehot, double *y) {
  float *f = xmalloc((size_t)(N > nv ? N : nv) * sizeof *f), *sw = xmalloc((size_t)M * sizeof *sw);
  float sx = 0;
  int8_t *qw = xmalloc((size_t)M * (size_t)N), *qx = xmalloc((size_t)nv);
  for (int r = 0; r < M; r++) {
    for (int k = 0; k < N; k++)
      f[k] = (float)a[(size_t)r * N + k];
    quantize_row(f, (size_t)N, qw + (size_t)r * N, &sw[r]);
  }
  if (!onehot) {
    for (int k = 0; k < nv; k++)
      f[k] = (float)v[k];
    quantize_row(f, (size_t)nv, qx, &sx);
  }
  for (int r = 0; r < M; r++) {
    const int8_t *q = qw + (size_t)r * N + k0;
    if (onehot) {
      y[r] = R(I, (double)q[(size_t)v[0]] * sw[r]);
      continue;
    }
    int32_t dot = 0;
    for (int k = 0; k < nv; k++)
      dot += (int32_t)q[k] * qx[k];
    float scale = sw[r] * sx;
    y[r] = R(I, (double)(float)dot * scale);
  }
  free(f);
  free(sw);
  free(qw);
  free(qx);
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

static double elem(const Interp *I, Op op, double f, double a, double b) {
  switch (op) {
  case OP_DROPOUT: /* as the kernels: threshold and scale in float32 */
    return b >= R(I, 2 * f - 1) ? a * R(I, 1 / (1 - f)) : 0;
  case OP_ADD:
    return a + b;
  case OP_SUB:
    return a - b;
  case OP_MUL:
    return a * b;
  case OP_DIV:
    return a / b;
  case OP_POW:
    return pow(a, b);
  case OP_MIN:
    return a < b ? a : b;
  case OP_NEG:
    return -a;
  case OP_SIGMOID:
    return sigmoid(a);
  case OP_TANH:
    return tanh(a);
  case OP_EXP:
    return exp(a);
  case OP_LOG:
    return log(a);
  case OP_SQRT:
    return sqrt(a);
  case OP_RELU:
    return a > 0 ? a : 0;
  case OP_RELU_GRAD:
    return b > 0 ? a : 0;
  case OP_FLOOR:
    return floor(a);
  case OP_COS:
    return cos(a);
  default:
    abort(); /* only F_ELEM ops come here */
  }
}

static void run_block(Interp *I, int blk);

static void run_scan(Interp *I, int id) {
  const Graph *g = I->g;
  const Node *n = &g->nodes[id];
  const Block *body = &g->blocks[n->region];
  int nseq = n->a, ncarry = n->b, T = I->T;
  /* The scan's value: the stacks of every yield, one after another. */
  size_t total = 0;
  for (int k = 0; k < body->nyields; k++)
    total += (size_t)T * count(I, g->nodes[body->yields[k]].type);
  double *stacks = alloc(I, id, total ? total : 1);
  /* Carries start as the initial values. */
  for (int j = 0; j < ncarry; j++) {
    int arg = body->args[nseq + j];
    size_t c = count(I, g->nodes[arg].type);
    memcpy(alloc(I, arg, c), I->val[n->in[nseq + j]], c * sizeof(double));
  }
  double **next = xmalloc((size_t)ncarry * sizeof *next);
  for (int j = 0; j < ncarry; j++)
    next[j] = xmalloc(count(I, g->nodes[body->args[nseq + j]].type) * sizeof(double));
  for (int s = 0; s < T; s++) {
    int t = n->c ? T - 1 - s : s;
    for (int i = 0; i < nseq; i++) {
      int arg = body->args[i];
      size_t c = count(I, g->nodes[arg].type);
      memcpy(alloc(I, arg, c), I->val[n->in[i]] + (size_t)t * c, c * sizeof(double));
    }
    run_block(I, n->region);
    if (I->failed)
      break;
    size_t off = 0;
    for (int k = 0; k < body->nyields; k++) {
      size_t c = count(I, g->nodes[body->yields[k]].type);
      memcpy(stacks + off + (size_t)t * c, I->val[body->yields[k]], c * sizeof(double));
      off += (size_t)T * c;
    }
    /* Copy through temporaries: a yield may be another carry's argument. */
    for (int j = 0; j < ncarry; j++) {
      size_t c = count(I, g->nodes[body->args[nseq + j]].type);
      memcpy(next[j], I->val[body->yields[j]], c * sizeof(double));
    }
    for (int j = 0; j < ncarry; j++) {
      size_t c = count(I, g->nodes[body->args[nseq + j]].type);
      memcpy(I->val[body->args[nseq + j]], next[j], c * sizeof(double));
    }
  }
  for (int j = 0; j < ncarry; j++)
    free(next[j]);
  free(next);
}

static void eval(Interp *I, int id) {
  const Graph *g = I->g;
  const Node *n = &g->nodes[id];
  Op op = n->op;
  if (op == OP_ARG)
    return; /* set by the scan */
  if (op == OP_SCAN) {
    run_scan(I, id);
    return;
  }
  size_t c = count(I, n->type);
  double *y = c ? alloc(I, id, c) : NULL;
  const double *a = n->nin > 0 ? I->val[n->in[0]] : NULL;
  const double *b = n->nin > 1 ? I->val[n->in[1]] : NULL;
  Type ta = n->nin > 0 ? g->nodes[n->in[0]].type : type_scalar();
  Type tb = n->nin > 1 ? g->nodes[n->in[1]].type : type_scalar();
  const Param *p = (op == OP_ACC || op == OP_ACC_OUTER) ? &g->params[n->a] : NULL;
  if (op_flags[op] & F_ELEM) {
    size_t ca = count(I, ta), cb = n->nin > 1 ? count(I, tb) : 1;
    for (size_t i = 0; i < c; i++)
      y[i] = R(I, elem(I, op, n->f, a[ca == 1 ? 0 : i], n->nin > 1 ? b[cb == 1 ? 0 : i] : 0));
    return;
  }
  switch (op) {
  case OP_LOAD:
    for (size_t i = 0; i < c; i++)
      y[i] = I->slot[n->b][param_offset(g, n->a) + i];
    break;
  case OP_INPUT:
    if (n->type.kind == TY_F32)
      for (size_t i = 0; i < c; i++)
        y[i] = R(I, I->x[i]);
    else
      for (int t = 0; t < I->T; t++)
        y[t] = I->chars[t];
    break;
  case OP_TARGET:
    y[0] = I->target;
    break;
  case OP_CONST:
    y[0] = R(I, n->f);
    break;
  case OP_ZEROS:
    memset(y, 0, c * sizeof *y);
    break;
  case OP_NOISE:
    if (I->object) { /* an object's zero noise buffer */
      for (size_t i = 0; i < c; i++)
        y[i] = 0;
      break;
    }
    if (!I->rng) {
      errf(I->err, "the graph draws noise (e.g. a kaiming_uniform initial state), but no "
                   "generator was given");
      I->failed = 1;
      return;
    }
    /* Draws in U(-1, 1), scaled by the bound, as the kernels do. */
    for (size_t i = 0; i < c; i++)
      y[i] = R(I, (double)rng_uniform(I->rng, -1, 1) * R(I, n->f));
    break;
  case OP_STEP:
    y[0] = (double)I->step;
    break;
  case OP_CONCAT:
  case OP_SLICE:
  case OP_PAD: {
    /* Row by row (a vector is one row): y's row gets a's at column at,
     * then (concat) b's after it; a slice takes a's columns from n->a. */
    size_t rows = c / (size_t)type_width(n->type), wy = (size_t)type_width(n->type);
    size_t wa = (size_t)type_width(ta), at = op == OP_PAD ? (size_t)n->a : 0;
    memset(y, 0, c * sizeof *y);
    for (size_t r = 0; r < rows; r++) {
      if (op == OP_SLICE) {
        memcpy(y + r * wy, a + r * wa + n->a, wy * sizeof *y);
        continue;
      }
      memcpy(y + r * wy + at, a + r * wa, wa * sizeof *y);
      if (op == OP_CONCAT)
        memcpy(y + r * wy + wa, b + r * (wy - wa), (wy - wa) * sizeof *y);
    }
    break;
  }
  case OP_DENSE:
    memset(y, 0, c * sizeof *y);
    y[(size_t)a[0]] = 1;
    break;
  case OP_SUM: {
    double s = 0;
    for (size_t i = 0, ca = count(I, ta); i < ca; i++)
      s += a[i];
    y[0] = R(I, s);
    break;
  }
  case OP_MATVEC: {
    /* y = W[:, k0:k0+n] v; a one-hot v picks a column; a sequence of v
     * gives the sequence of products */
    int M = ta.dim[0], N = ta.dim[1], k0 = n->a;
    bool seq = tb.kind == TY_F32 && tb.rank == 2;
    int rows = seq ? I->T : 1, nv = seq ? tb.dim[1] : tb.dim[0];
    const Node *wn = &I->g->nodes[n->in[0]];
    bool int8 = I->int8_dot && wn->op == OP_LOAD && wn->b == SLOT_VALUE; /* a baked matrix */
    for (int t = 0; t < rows; t++) {
      const double *v = b + (size_t)t * nv;
      double *yt = y + (size_t)t * M;
      if (int8) {
        matvec_int8(I, a, M, N, k0, v, nv, tb.kind == TY_ONEHOT, yt);
        continue;
      }
      for (int r = 0; r < M; r++) {
        const double *w = a + (size_t)r * N + k0;
        if (tb.kind == TY_ONEHOT) {
          yt[r] = w[(size_t)v[0]];
          continue;
        }
        double s = 0;
        for (int k = 0; k < nv; k++)
          s += w[k] * v[k];
        yt[r] = R(I, s);
      }
    }
    break;
  }
  case OP_MATVEC_T: {
    /* y = W[:, k0:k0+n]^T u; a sequence of u gives the sequence of
     * products; a one-hot u picks a row of W */
    int M = ta.dim[0], N = ta.dim[1], k0 = n->a;
    bool seq = tb.rank == 2;
    int rows = seq ? I->T : 1;
    for (int t = 0; t < rows; t++)
      for (int k = 0; k < n->b; k++) {
        if (tb.kind == TY_ONEHOT) {
          y[(size_t)t * n->b + k] = a[(size_t)b[t] * N + k0 + k];
          continue;
        }
        double s = 0;
        for (int r = 0; r < M; r++)
          s += a[(size_t)r * N + k0 + k] * b[(size_t)t * M + r];
        y[(size_t)t * n->b + k] = R(I, s);
      }
    break;
  }
  case OP_LOG_SOFTMAX: {
    double mx = -INFINITY, s = 0;
    for (size_t i = 0; i < c; i++)
      mx = a[i] > mx ? a[i] : mx;
    for (size_t i = 0; i < c; i++)
      s += exp(a[i] - mx);
    double lse = mx + log(s);
    for (size_t i = 0; i < c; i++)
      y[i] = R(I, a[i] - lse);
    break;
  }
  case OP_PICK:
    y[0] = a[(size_t)b[0]];
    break;
  case OP_SCATTER:
    memset(y, 0, c * sizeof *y);
    y[(size_t)b[0]] = a[0];
    break;
  case OP_LAST:
    memcpy(y, a + (size_t)(I->T - 1) * c, c * sizeof *y);
    break;
  case OP_FIRST:
    memcpy(y, a, c * sizeof *y);
    break;
  case OP_PUT_LAST:
  case OP_PUT_FIRST: {
    size_t row = count(I, ta);
    memset(y, 0, c * sizeof *y);
    memcpy(y + (op == OP_PUT_LAST ? (size_t)(I->T - 1) * row : 0), a, row * sizeof *y);
    break;
  }
  case OP_PROJ: {
    /* The scan's value holds the stacks of its yields in order. */
    const Node *s = &g->nodes[n->in[0]];
    const Block *body = &g->blocks[s->region];
    size_t off = 0;
    for (int k = 0; k < n->a; k++)
      off += (size_t)I->T * count(I, g->nodes[body->yields[k]].type);
    memcpy(y, I->val[n->in[0]] + off, c * sizeof *y);
    break;
  }
  case OP_ACC: {
    /* A sequence adds each of its rows. */
    double *gr = I->slot[SLOT_GRAD] + p->offset;
    size_t width = type_numel(p->type), rows = count(I, ta) / width;
    for (size_t t = 0; t < rows; t++)
      for (size_t i = 0; i < width; i++)
        gr[i] = R(I, gr[i] + a[t * width + i]);
    break;
  }
  case OP_ACC_OUTER: {
    /* grad[:, k0:k0+n] += u v^T; a one-hot v adds u to one column, a
     * one-hot u v to one row; two sequences add the outer product of each
     * pair of rows */
    double *gr = I->slot[SLOT_GRAD] + p->offset;
    int M = p->type.dim[0], N = p->type.dim[1], k0 = n->b;
    bool seqs = ta.dim[0] == DIM_T;
    int rows = seqs ? I->T : 1, nv = seqs ? tb.dim[1] : tb.dim[0];
    for (int t = 0; t < rows; t++) {
      if (ta.kind == TY_ONEHOT) {
        double *row = gr + (size_t)a[t] * N + k0;
        for (int k = 0; k < nv; k++)
          row[k] = R(I, row[k] + b[(size_t)t * nv + k]);
        continue;
      }
      const double *u = a + (size_t)t * M;
      for (int r = 0; r < M; r++) {
        double *row = gr + (size_t)r * N + k0;
        if (tb.kind == TY_ONEHOT) {
          size_t col = (size_t)b[t];
          row[col] = R(I, row[col] + u[r]);
          continue;
        }
        const double *v = b + (size_t)t * nv;
        for (int k = 0; k < nv; k++)
          row[k] = R(I, row[k] + R(I, u[r] * v[k]));
      }
    }
    break;
  }
  case OP_STORE:
    memcpy(I->slot[n->b] + param_offset(g, n->a), a, count(I, ta) * sizeof *a);
    break;
  default:
    abort(); /* ARG and SCAN returned above; elementwise ops too */
  }
}

static void run_block(Interp *I, int blk) {
  const Block *b = &I->g->blocks[blk];
  for (int i = 0; i < b->n && !I->failed; i++)
    eval(I, b->nodes[i]);
}

static int check_input(const Graph *g, const int32_t *chars, int len, int target, Err *e) {
  if (len < 1)
    return errf(e, "an empty sequence");
  if ((g->nodes[g->input].type.kind == TY_F32) != !chars)
    return errf(e, chars ? "the graph's input is float vectors, not characters"
                         : "the graph's input is characters, not float vectors");
  for (int t = 0; chars && t < len; t++)
    if (chars[t] < 0 || chars[t] >= g->vocab)
      return errf(e, "character index %d at position %d is outside the vocabulary of %d",
                  chars[t], t, g->vocab);
  if (target < 0 || target >= g->classes)
    return errf(e, "target class %d is outside [0, %d)", target, g->classes);
  return 0;
}

/* One run on characters or on float rows (the graph's input says which). */
static int interp_run_input(Interp *I, const int32_t *chars, const float *x, int len, int target,
                            Err *e) {
  const Graph *g = I->g;
  if (check_input(g, chars, len, target, e))
    return -1;
  I->T = len;
  I->chars = chars;
  I->x = x;
  I->target = target;
  I->err = e;
  I->failed = 0;
  if (g->stage == STAGE_GRAD) {
    memset(I->slot[SLOT_GRAD], 0, g->nfloats * sizeof(double));
    I->step++;
  }
  run_block(I, 0);
  return I->failed ? -1 : 0;
}

int interp_run(Interp *I, const int32_t *chars, int len, int target, Err *e) {
  return interp_run_input(I, chars, NULL, len, target, e);
}

int interp_run_f32(Interp *I, const float *x, int len, int target, Err *e) {
  return interp_run_input(I, NULL, x, len, target, e);
}

/* Block 0's nodes of one phase (graph_mark_update). */
static void run_phase(Interp *I, const bool *upd, bool update) {
  const Block *b = &I->g->blocks[0];
  for (int i = 0; i < b->n && !I->failed; i++)
    if (upd[b->nodes[i]] == update)
      eval(I, b->nodes[i]);
}

int interp_run_batch(Interp *I, const int32_t *const *chars, const int *lens, const int *targets,
                     int n, double *logits, double *losses, Err *e) {
  const Graph *g = I->g;
  if (g->stage != STAGE_GRAD)
    return errf(e, "a batch needs a training graph");
  if (n < 1)
    return errf(e, "an empty batch");
  for (int s = 0; s < n; s++)
    if (check_input(g, chars[s], lens[s], targets[s], e))
      return -1;
  bool *upd = xcalloc((size_t)g->nnodes + 1, sizeof *upd);
  graph_mark_update(g, upd);
  memset(I->slot[SLOT_GRAD], 0, g->nfloats * sizeof(double));
  I->step++;
  I->err = e;
  I->failed = 0;
  for (int s = 0; s < n && !I->failed; s++) {
    I->T = lens[s];
    I->chars = chars[s];
    I->target = targets[s];
    run_phase(I, upd, false);
    if (logits && g->output >= 0)
      memcpy(logits + (size_t)s * g->classes, I->val[g->output], (size_t)g->classes * sizeof *logits);
    if (losses && g->loss >= 0)
      losses[s] = I->val[g->loss][0];
  }
  /* The gradient of the mean loss: the sum over the batch, times 1/n. */
  double scale = R(I, 1.0 / n);
  for (size_t i = 0; i < g->nfloats; i++)
    I->slot[SLOT_GRAD][i] = R(I, I->slot[SLOT_GRAD][i] * scale);
  if (!I->failed)
    run_phase(I, upd, true);
  free(upd);
  return I->failed ? -1 : 0;
}

const double *interp_value(const Interp *I, int node, size_t *n) {
  if (n)
    *n = count(I, I->g->nodes[node].type);
  return I->val[node];
}

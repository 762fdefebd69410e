/* test_grad.c: the grad pass against central finite differences, computed
 * by the reference interpreter in float64.
 *
 * Per op: a small graph, built directly in IR with random shapes, whose
 * loss is sum(r * f(params)) with a fixed random r; every entry of every
 * parameter's gradient is compared with a fourth-order central difference.
 * Whole graph: graphs/rnn.nn, graphs/gru.nn and tests/golden/embgru.nn
 * (an embedding) on a few short names,
 * sampled entries of every parameter. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"
#include "testutil.h"

/* ------------------------------------------------------- building graphs */

typedef struct Builder {
  Graph *g;
  Rng *r;
} Builder;

static int param(Builder *b, const char *name, Type t, bool trainable) {
  Graph *g = b->g;
  g->params = xrealloc(g->params, (size_t)(g->nparams + 1) * sizeof *g->params);
  g->params[g->nparams] =
      (Param){.name = xstrdup(name), .type = t, .trainable = trainable, .offset = g->nfloats};
  g->nfloats = (g->nfloats + type_numel(t) + 15) & ~(size_t)15;
  g->nparams++;
  return ir_add(g, NULL, 0, OP_LOAD, NULL, 0, g->nparams - 1, SLOT_VALUE, 0, (Pos){0, 0});
}

static int op1(Builder *b, int blk, Op op, int x, int a, int bb) {
  return ir_add(b->g, NULL, blk, op, &x, 1, a, bb, 0, (Pos){0, 0});
}

static int op2(Builder *b, int blk, Op op, int x, int y, int a) {
  int in[2] = {x, y};
  return ir_add(b->g, NULL, blk, op, in, 2, a, 0, 0, (Pos){0, 0});
}

static Graph *new_graph(Builder *b, Rng *r) {
  b->g = graph_new();
  b->r = r;
  Graph *g = b->g;
  g->vocab = 5;
  g->classes = 4;
  g->input = ir_leaf(g, 0, OP_INPUT, (Type){TY_ONEHOT, 2, {DIM_T, 5}}, 0, 0, (Pos){0, 0});
  g->target = ir_leaf(g, 0, OP_TARGET, (Type){TY_CLASS, 0, {4, 0}}, 0, 0, (Pos){0, 0});
  g->train = (TrainConfig){.optim = OPTIM_SGD, .lr = 0.1, .epochs = 1, .batch = 1};
  return g;
}

/* loss = sum(r * y) with r a fixed random buffer of y's shape. */
static void finish(Builder *b, int y) {
  Graph *g = b->g;
  Type t = g->nodes[y].type;
  if (t.rank > 0) {
    int r = param(b, "r", t, false);
    y = op1(b, 0, OP_SUM, op2(b, 0, OP_MUL, y, r, 0), 0, 0);
  }
  g->loss = y;
}

static int rdim(Builder *b) { return 1 + (int)rng_below(b->r, 7); }

/* One test case: builds its forward graph with random shapes from r. */
typedef struct Case {
  const char *name;
  void (*build)(Builder *b);
  bool positive; /* parameters drawn from [0.5, 1.5] (log, sqrt, div) */
} Case;

#define V(n) type_vec(n)

static void b_add(Builder *b) {
  int n = rdim(b);
  finish(b, op2(b, 0, OP_ADD, param(b, "a", V(n), 1), param(b, "b", V(n), 1), 0));
}
static void b_add_bcast(Builder *b) {
  int n = rdim(b), m = rdim(b);
  int s = op1(b, 0, OP_SUM, param(b, "s", V(m), 1), 0, 0);
  finish(b, op2(b, 0, OP_ADD, param(b, "a", V(n), 1), s, 0));
}
static void b_sub(Builder *b) {
  int n = rdim(b);
  int s = op1(b, 0, OP_SUM, param(b, "s", V(2), 1), 0, 0);
  int d = op2(b, 0, OP_SUB, param(b, "a", V(n), 1), param(b, "b", V(n), 1), 0);
  finish(b, op2(b, 0, OP_SUB, s, d, 0));
}
static void b_mul(Builder *b) {
  int n = rdim(b);
  int a = param(b, "a", V(n), 1);
  int s = op1(b, 0, OP_SUM, param(b, "s", V(3), 1), 0, 0);
  finish(b, op2(b, 0, OP_MUL, op2(b, 0, OP_MUL, a, param(b, "b", V(n), 1), 0), s, 0));
}
static void b_div(Builder *b) {
  int n = rdim(b);
  int s = op1(b, 0, OP_SUM, param(b, "s", V(2), 1), 0, 0);
  int q = op2(b, 0, OP_DIV, param(b, "a", V(n), 1), param(b, "b", V(n), 1), 0);
  finish(b, op2(b, 0, OP_DIV, q, s, 0));
}
static void b_pow(Builder *b) {
  int n = rdim(b);
  finish(b, op2(b, 0, OP_POW, param(b, "a", V(n), 1), param(b, "b", V(n), 1), 0));
}
static void unary(Builder *b, Op op) { finish(b, op1(b, 0, op, param(b, "a", V(rdim(b)), 1), 0, 0)); }
static void b_neg(Builder *b) { unary(b, OP_NEG); }
static void b_sigmoid(Builder *b) { unary(b, OP_SIGMOID); }
static void b_tanh(Builder *b) { unary(b, OP_TANH); }
static void b_exp(Builder *b) { unary(b, OP_EXP); }
static void b_log(Builder *b) { unary(b, OP_LOG); }
static void b_sqrt(Builder *b) { unary(b, OP_SQRT); }
static void b_relu(Builder *b) { unary(b, OP_RELU); }
static void b_log_softmax(Builder *b) { unary(b, OP_LOG_SOFTMAX); }
static void b_concat(Builder *b) {
  finish(b, op2(b, 0, OP_CONCAT, param(b, "a", V(rdim(b)), 1), param(b, "b", V(rdim(b)), 1), 0));
}
static void b_slice(Builder *b) {
  int n = 2 + rdim(b), lo = (int)rng_below(b->r, (uint32_t)n - 1);
  int hi = lo + 1 + (int)rng_below(b->r, (uint32_t)(n - lo - 1));
  int a = param(b, "a", V(n), 1);
  /* Two overlapping slices of a: pieces that do not tile the vector. */
  int s1 = op1(b, 0, OP_SLICE, a, lo, hi);
  int s2 = op1(b, 0, OP_SLICE, a, 0, hi - lo);
  finish(b, op2(b, 0, OP_MUL, s1, s2, 0));
}
static void b_slice_tiles(Builder *b) {
  /* A GRU's gates: disjoint slices, with a gap; their adjoints concatenate. */
  int n = rdim(b);
  int a = param(b, "a", V(4 * n), 1);
  int s0 = op1(b, 0, OP_SIGMOID, op1(b, 0, OP_SLICE, a, 0, n), 0, 0);
  int s2 = op1(b, 0, OP_TANH, op1(b, 0, OP_SLICE, a, 2 * n, 3 * n), 0, 0);
  int s3 = op1(b, 0, OP_SLICE, a, 3 * n, 4 * n);
  finish(b, op2(b, 0, OP_ADD, op2(b, 0, OP_MUL, s0, s2, 0), s3, 0));
}
static void b_pad(Builder *b) {
  int n = rdim(b), at = (int)rng_below(b->r, 4);
  finish(b, op1(b, 0, OP_PAD, param(b, "a", V(n), 1), at, n + at + (int)rng_below(b->r, 3)));
}
static void b_sum_matrix(Builder *b) {
  int w = param(b, "w", type_mat(rdim(b), rdim(b)), 1);
  finish(b, op1(b, 0, OP_SUM, op2(b, 0, OP_MUL, w, w, 0), 0, 0));
}
static void b_matvec(Builder *b) {
  /* Columns [k0, k0 + n) of a wider matrix (k0 = 0 uses them all). */
  int m = rdim(b), n = rdim(b), k0 = (int)rng_below(b->r, 3);
  int extra = k0 ? (int)rng_below(b->r, 2) : 0;
  int w = param(b, "w", type_mat(m, n + k0 + extra), 1);
  int in[2] = {w, param(b, "v", V(n), 1)};
  finish(b, ir_add(b->g, NULL, 0, OP_MATVEC, in, 2, k0, k0 || extra ? n : 0, 0, (Pos){0, 0}));
}
static void b_matvec_t(Builder *b) {
  int m = rdim(b), n = rdim(b), k0 = (int)rng_below(b->r, 3);
  int w = param(b, "w", type_mat(m, n + k0), 1);
  int in[2] = {w, param(b, "u", V(m), 1)};
  finish(b, ir_add(b->g, NULL, 0, OP_MATVEC_T, in, 2, k0, n, 0, (Pos){0, 0}));
}
static void b_pick_scatter(Builder *b) {
  Graph *g = b->g;
  int ls = op1(b, 0, OP_LOG_SOFTMAX, param(b, "z", V(4), 1), 0, 0);
  int p = op2(b, 0, OP_PICK, ls, g->target, 0);
  int sc = op2(b, 0, OP_SCATTER, op1(b, 0, OP_SUM, param(b, "s", V(2), 1), 0, 0), g->target, 0);
  finish(b, op2(b, 0, OP_ADD, op2(b, 0, OP_MUL, sc, ls, 0), p, 0));
}

/* A scan over the one-hot input with two carries, a matvec that gathers a
 * column, and a second scan (reverse if asked) over the first's states. */
static void scan_case(Builder *b, bool reverse_second) {
  Graph *g = b->g;
  int h = rdim(b), v = g->vocab;
  int wx = param(b, "wx", type_mat(h, v), 1), wh = param(b, "wh", type_mat(h, h), 1);
  int bias = param(b, "bias", V(h), 1), h0 = param(b, "h0", V(h), 1);
  int body = ir_new_block(g, 0);
  int x = ir_block_arg(g, body, (Type){TY_ONEHOT, 1, {v, 0}}, (Pos){0, 0});
  int hp = ir_block_arg(g, body, V(h), (Pos){0, 0});
  int acc = ir_block_arg(g, body, V(h), (Pos){0, 0});
  int pre = op2(b, body, OP_ADD, op2(b, body, OP_MATVEC, wx, x, 0),
                op2(b, body, OP_MATVEC, wh, hp, 0), 0);
  int hn = op1(b, body, OP_TANH, op2(b, body, OP_ADD, pre, bias, 0), 0, 0);
  ir_yield(g, body, hn);
  ir_yield(g, body, op2(b, body, OP_ADD, acc, op2(b, body, OP_MUL, hn, hp, 0), 0));
  int zero = ir_leaf(g, 0, OP_ZEROS, V(h), 0, 0, (Pos){0, 0});
  int seqs[1] = {g->input}, inits[2] = {h0, zero};
  int s = ir_scan(g, NULL, 0, seqs, 1, inits, 2, body, false, (Pos){0, 0});
  int hs = ir_proj(g, 0, s, 0, (Pos){0, 0}), accs = ir_proj(g, 0, s, 1, (Pos){0, 0});
  /* Second layer: a plain cell over the first layer's states. */
  int u = param(b, "u", type_mat(h, h), 1), c0 = param(b, "c0", V(h), 1);
  int body2 = ir_new_block(g, 0);
  int xr = ir_block_arg(g, body2, V(h), (Pos){0, 0});
  int cp = ir_block_arg(g, body2, V(h), (Pos){0, 0});
  int cn = op1(b, body2, OP_SIGMOID,
               op2(b, body2, OP_ADD, op2(b, body2, OP_MATVEC, u, xr, 0), cp, 0), 0, 0);
  ir_yield(g, body2, cn);
  int seqs2[1] = {hs}, inits2[1] = {c0};
  int s2 = ir_scan(g, NULL, 0, seqs2, 1, inits2, 1, body2, reverse_second, (Pos){0, 0});
  int cs = ir_proj(g, 0, s2, 0, (Pos){0, 0});
  int out = op2(b, 0, OP_ADD, op1(b, 0, OP_LAST, cs, 0, 0), op1(b, 0, OP_LAST, accs, 0, 0), 0);
  finish(b, out);
}
static void b_scan(Builder *b) { scan_case(b, false); }
static void b_scan_reverse(Builder *b) { scan_case(b, true); }
static void b_put_last(Builder *b) {
  int a = param(b, "a", V(rdim(b)), 1);
  int pl = op1(b, 0, OP_PUT_LAST, op1(b, 0, OP_TANH, a, 0, 0), 0, 0);
  finish(b, op1(b, 0, OP_LAST, pl, 0, 0));
}

static void b_put_first(Builder *b) {
  int a = param(b, "a", V(rdim(b)), 1);
  int pf = op1(b, 0, OP_PUT_FIRST, op1(b, 0, OP_TANH, a, 0, 0), 0, 0);
  finish(b, op1(b, 0, OP_FIRST, pf, 0, 0));
}

/* A tanh cell h' = tanh(w x + u h) scanned over seq (a sequence of f32
 * rows or the one-hot input), forward or reverse; returns its states. */
static int tanh_scan(Builder *b, const char *w, const char *u, int seq, int h, bool reverse) {
  Graph *g = b->g;
  Type row = g->nodes[seq].type;
  row.rank--;
  row.dim[0] = row.dim[1];
  row.dim[1] = 0;
  int wm = param(b, w, type_mat(h, type_width(row)), 1), um = param(b, u, type_mat(h, h), 1);
  int body = ir_new_block(g, 0);
  int x = ir_block_arg(g, body, row, (Pos){0, 0});
  int hp = ir_block_arg(g, body, V(h), (Pos){0, 0});
  int pre = op2(b, body, OP_ADD, op2(b, body, OP_MATVEC, wm, x, 0), op2(b, body, OP_MATVEC, um, hp, 0), 0);
  ir_yield(g, body, op1(b, body, OP_TANH, pre, 0, 0));
  int h0 = param(b, reverse ? "h0r" : "h0", V(h), 1);
  int s = ir_scan(g, NULL, 0, &seq, 1, &h0, 1, body, reverse, (Pos){0, 0});
  return ir_proj(g, 0, s, 0, (Pos){0, 0});
}

/* A bidirectional layer and ops on whole sequences: a forward and a
 * reverse scan over the input, their states concatenated row by row,
 * sliced, multiplied and added elementwise, scanned by two more layers
 * (so that the sequence's adjoint is a sum), read with first() and
 * last(). */
static void b_sequences(Builder *b) {
  Graph *g = b->g;
  int h = 1 + rdim(b);
  int fw = tanh_scan(b, "wf", "uf", g->input, h, false);
  int bw = tanh_scan(b, "wb", "ub", g->input, h, true);
  int both = op2(b, 0, OP_CONCAT, fw, bw, 0);
  int lo = (int)rng_below(b->r, (uint32_t)h);
  int mid = op1(b, 0, OP_SLICE, both, lo, lo + h);
  int z = op2(b, 0, OP_ADD, op2(b, 0, OP_MUL, mid, fw, 0), op1(b, 0, OP_SIGMOID, bw, 0, 0), 0);
  int up = tanh_scan(b, "w2", "u2", z, h, false);
  int down = tanh_scan(b, "w3", "u3", z, h, true);
  finish(b, op2(b, 0, OP_CONCAT, op1(b, 0, OP_LAST, up, 0, 0), op1(b, 0, OP_FIRST, down, 0, 0), 0));
}

/* An embedding: rows of a [V, e] table (columns k0.. of a wider one)
 * gathered by the one-hot input, as a whole sequence (x @ W, scanned by a
 * cell) and per step inside a cell (W[x]). The name repeats a character:
 * its row's gradient is the sum of two steps' (a scatter-add). */
static void b_embedding(Builder *b) {
  Graph *g = b->g;
  int e = 1 + rdim(b), k0 = (int)rng_below(b->r, 3), v = g->vocab;
  int w = param(b, "table", type_mat(v, e + k0), 1);
  int in[2] = {w, g->input};
  int rows = ir_add(g, NULL, 0, OP_MATVEC_T, in, 2, k0, e, 0, (Pos){0, 0});
  int hs = tanh_scan(b, "w1", "u1", rows, e, false);
  int body = ir_new_block(g, 0);
  int x = ir_block_arg(g, body, (Type){TY_ONEHOT, 1, {v, 0}}, (Pos){0, 0});
  int hp = ir_block_arg(g, body, V(e), (Pos){0, 0});
  int in2[2] = {w, x};
  int row = ir_add(g, NULL, body, OP_MATVEC_T, in2, 2, k0, e, 0, (Pos){0, 0});
  int pre = op2(b, body, OP_ADD, op2(b, body, OP_MUL, row, hp, 0), row, 0);
  ir_yield(g, body, op1(b, body, OP_TANH, pre, 0, 0));
  int h0 = param(b, "c0", V(e), 1);
  int s = ir_scan(g, NULL, 0, &g->input, 1, &h0, 1, body, false, (Pos){0, 0});
  int cs = ir_proj(g, 0, s, 0, (Pos){0, 0});
  finish(b, op2(b, 0, OP_CONCAT, op1(b, 0, OP_LAST, hs, 0, 0), op1(b, 0, OP_LAST, cs, 0, 0), 0));
}

/* Dropout with a fixed mask: its draws are a buffer (never perturbed), so
 * the loss is smooth in the parameter; the dropped entries get no
 * gradient, the kept ones the scaled one. */
static void b_dropout(Builder *b) {
  int n = 1 + rdim(b);
  int u = param(b, "u", V(n), 0); /* draws in U(-1, 1): the mask */
  int in[2] = {op1(b, 0, OP_TANH, param(b, "a", V(n), 1), 0, 0), u};
  double p = 0.1 + 0.2 * (double)rng_below(b->r, 4);
  finish(b, ir_add(b->g, NULL, 0, OP_DROPOUT, in, 2, 0, 0, p, (Pos){0, 0}));
}

static const Case cases[] = {
    {"add", b_add, false},           {"add_broadcast", b_add_bcast, false},
    {"sub", b_sub, false},           {"mul", b_mul, false},
    {"div", b_div, true},            {"pow", b_pow, true},
    {"neg", b_neg, false},           {"sigmoid", b_sigmoid, false},
    {"tanh", b_tanh, false},         {"exp", b_exp, false},
    {"log", b_log, true},            {"sqrt", b_sqrt, true},
    {"relu", b_relu, false},
    {"log_softmax", b_log_softmax, false}, {"concat", b_concat, false},
    {"slice", b_slice, false},       {"slice_tiles", b_slice_tiles, false},
    {"pad", b_pad, false},           {"sum", b_sum_matrix, false},
    {"matvec", b_matvec, false},     {"matvec_t", b_matvec_t, false},
    {"pick_scatter", b_pick_scatter, false}, {"put_last", b_put_last, false},
    {"scan", b_scan, false},         {"scan_reverse", b_scan_reverse, false},
    {"put_first", b_put_first, false}, {"sequences", b_sequences, false},
    {"embedding", b_embedding, false}, {"dropout", b_dropout, false},
};

/* ------------------------------------------------------- the comparison */

static const int32_t name[] = {1, 4, 0, 2, 2, 3};
enum { NAME_LEN = 6, TARGET = 2 };

static double loss_at(Interp *I, const Graph *g) {
  Err e;
  if (interp_run(I, name, NAME_LEN, TARGET, &e))
    fail_msg("%s", e.msg);
  return interp_value(I, g->loss, NULL)[0];
}

/* Max relative error of the analytic gradient over every entry. */
static double check_case(const Case *c, uint64_t seed) {
  Rng r1, r2;
  rng_seed(&r1, seed);
  rng_seed(&r2, seed);
  Builder bf, bg;
  Graph *f = new_graph(&bf, &r1), *g = new_graph(&bg, &r2);
  c->build(&bf);
  c->build(&bg);
  Err e;
  assert_int_equal(graph_verify(f, &e), 0);
  if (grad(g, &e))
    fail_msg("%s: %s", c->name, e.msg);
  Interp *If = interp_new(f, false), *Ig = interp_new(g, false);
  double *wf = interp_slot(If, SLOT_VALUE), *wg = interp_slot(Ig, SLOT_VALUE);
  Rng vals;
  rng_seed(&vals, seed * 31 + 1);
  for (size_t i = 0; i < f->nfloats; i++) {
    double x = c->positive ? 0.5 + (double)rng_uniform(&vals, 0, 1) : rng_uniform(&vals, -1, 1);
    wf[i] = wg[i] = x;
  }
  if (interp_run(Ig, name, NAME_LEN, TARGET, &e))
    fail_msg("%s", e.msg);
  const double *gr = interp_slot(Ig, SLOT_GRAD);
  double worst = 0;
  for (int p = 0; p < f->nparams; p++) {
    if (!f->params[p].trainable)
      continue;
    for (size_t k = 0; k < type_numel(f->params[p].type); k++) {
      size_t i = f->params[p].offset + k;
      double w = wf[i], h = 1e-3;
      double l[4];
      const double at[4] = {-2, -1, 1, 2};
      for (int j = 0; j < 4; j++) {
        wf[i] = w + at[j] * h;
        l[j] = loss_at(If, f);
      }
      wf[i] = w;
      double fd = (8 * (l[2] - l[1]) - (l[3] - l[0])) / (12 * h);
      double err = fabs(fd - gr[i]) / fmax(1e-3, fmax(fabs(fd), fabs(gr[i])));
      if (err > worst)
        worst = err;
    }
  }
  interp_free(If);
  interp_free(Ig);
  graph_free(f);
  graph_free(g);
  return worst;
}

static void test_ops(void **state) {
  for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
    double worst = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
      double err = check_case(&cases[c], seed * 1000 + c);
      worst = err > worst ? err : worst;
    }
    print_message("%-14s max relative error %.2e\n", cases[c].name, worst);
    if (!(worst < 1e-6))
      fail_msg("%s: relative error %.3e above 1e-6", cases[c].name, worst);
  }
}

/* An op without a derivative rule (min: only the update makes it) is an
 * error naming the op, not a silently missing gradient. */
static void test_no_rule(void **state) {
  Rng r;
  rng_seed(&r, 1);
  Builder b;
  Graph *g = new_graph(&b, &r);
  finish(&b, op2(&b, 0, OP_MIN, param(&b, "a", V(3), 1), param(&b, "b", V(3), 1), 0));
  Err e;
  assert_int_equal(grad(g, &e), -1);
  assert_string_equal(e.msg, "<graph>: error: no derivative rule for 'min'");
  graph_free(g);
}

/* A scan nested in a cell has no derivative rule yet: an error, not a
 * silently missing gradient. */
static void test_nested_scan(void **state) {
  /* Build it in IR: an outer scan over x whose cell scans a stack of the
   * layer below. */
  Graph *g = graph_new();
  g->vocab = 3;
  g->classes = 2;
  g->train = (TrainConfig){.optim = OPTIM_SGD, .lr = 0.1, .epochs = 1, .batch = 1};
  Builder b = {g, NULL};
  Rng r;
  rng_seed(&r, 1);
  b.r = &r;
  g->input = ir_leaf(g, 0, OP_INPUT, (Type){TY_ONEHOT, 2, {DIM_T, 3}}, 0, 0, (Pos){0, 0});
  g->target = ir_leaf(g, 0, OP_TARGET, (Type){TY_CLASS, 0, {2, 0}}, 0, 0, (Pos){0, 0});
  int w = param(&b, "w", type_mat(2, 3), 1);
  int base = ir_new_block(g, 0);
  int xa = ir_block_arg(g, base, (Type){TY_ONEHOT, 1, {3, 0}}, (Pos){0, 0});
  int ha = ir_block_arg(g, base, V(2), (Pos){0, 0});
  ir_yield(g, base, op2(&b, base, OP_ADD, op2(&b, base, OP_MATVEC, w, xa, 0), ha, 0));
  int z = ir_leaf(g, 0, OP_ZEROS, V(2), 0, 0, (Pos){0, 0});
  int seqs[1] = {g->input}, inits[1] = {z};
  int s0 = ir_scan(g, NULL, 0, seqs, 1, inits, 1, base, false, (Pos){0, 0});
  int hs = ir_proj(g, 0, s0, 0, (Pos){0, 0});
  int outer = ir_new_block(g, 0);
  int xo = ir_block_arg(g, outer, (Type){TY_ONEHOT, 1, {3, 0}}, (Pos){0, 0});
  int ho = ir_block_arg(g, outer, V(2), (Pos){0, 0});
  int inner = ir_new_block(g, outer);
  int ri = ir_block_arg(g, inner, V(2), (Pos){0, 0});
  int ci = ir_block_arg(g, inner, V(2), (Pos){0, 0});
  ir_yield(g, inner, op1(&b, inner, OP_TANH, op2(&b, inner, OP_ADD, ri, ci, 0), 0, 0));
  int sq[1] = {hs}, in2[1] = {ho};
  int s1 = ir_scan(g, NULL, outer, sq, 1, in2, 1, inner, false, (Pos){7, 3});
  int l1 = op1(&b, outer, OP_LAST, ir_proj(g, outer, s1, 0, (Pos){0, 0}), 0, 0);
  ir_yield(g, outer, op2(&b, outer, OP_ADD, l1, op2(&b, outer, OP_MATVEC, w, xo, 0), 0));
  int s2 = ir_scan(g, NULL, 0, seqs, 1, inits, 1, outer, false, (Pos){0, 0});
  int out = op1(&b, 0, OP_LAST, ir_proj(g, 0, s2, 0, (Pos){0, 0}), 0, 0);
  g->output = out;
  g->loss = op1(&b, 0, OP_NEG, op2(&b, 0, OP_PICK, op1(&b, 0, OP_LOG_SOFTMAX, out, 0, 0), g->target, 0), 0, 0);
  Err e;
  assert_int_equal(graph_verify(g, &e), 0);
  assert_int_equal(grad(g, &e), -1);
  assert_non_null(strstr(e.msg, "cannot differentiate a scan inside a scan's cell"));
  graph_free(g);
}

/* The whole models, on names of a few lengths. */
static void whole_graph(const char *rel, int samples) {
  Err e;
  Graph *f = compile_graph_file(rel, &e), *g = compile_graph_file(rel, &e);
  assert_non_null(f);
  assert_non_null(g);
  assert_int_equal(grad(g, &e), 0);
  Interp *If = interp_new(f, false), *Ig = interp_new(g, false);
  double *wf = interp_slot(If, SLOT_VALUE), *wg = interp_slot(Ig, SLOT_VALUE);
  Rng r;
  rng_seed(&r, 5);
  for (size_t i = 0; i < f->nfloats; i++)
    wf[i] = wg[i] = rng_uniform(&r, -0.2f, 0.2f);
  static const int32_t names[][8] = {{26 + 3, 14, 18, 19, 14, 4, 21, 18}, /* Dostoevs */
                                     {26 + 11, 8}, {26 + 25}};
  static const int lens[] = {8, 2, 1}, targets[] = {14, 4, 9};
  for (int ni = 0; ni < 3; ni++) {
    Rng noise;
    rng_seed(&noise, 77);
    interp_set_rng(Ig, &noise);
    /* The graph's update moved the weights: start from the same point. */
    memcpy(wg, wf, f->nfloats * sizeof *wg);
    if (interp_run(Ig, names[ni], lens[ni], targets[ni], &e))
      fail_msg("%s", e.msg);
    const double *gr = interp_slot(Ig, SLOT_GRAD);
    for (int p = 0; p < f->nparams; p++) {
      double worst = 0;
      size_t n = type_numel(f->params[p].type);
      for (int k = 0; k < samples; k++) {
        size_t i = f->params[p].offset + rng_below(&r, (uint32_t)n);
        double w = wf[i], h = 1e-3, l[4];
        const double at[4] = {-2, -1, 1, 2};
        for (int j = 0; j < 4; j++) {
          wf[i] = w + at[j] * h;
          rng_seed(&noise, 77); /* the same initial-state noise every run */
          interp_set_rng(If, &noise);
          if (interp_run(If, names[ni], lens[ni], targets[ni], &e))
            fail_msg("%s", e.msg);
          l[j] = interp_value(If, f->loss, NULL)[0];
        }
        wf[i] = w;
        double fd = (8 * (l[2] - l[1]) - (l[3] - l[0])) / (12 * h);
        double err = fabs(fd - gr[i]) / fmax(1e-4, fmax(fabs(fd), fabs(gr[i])));
        worst = err > worst ? err : worst;
      }
      if (!(worst < 1e-6))
        fail_msg("%s: %s, name %d: relative error %.3e", rel, f->params[p].name, ni, worst);
      if (ni == 0)
        print_message("%s %-18s max relative error %.2e\n", rel, f->params[p].name, worst);
    }
  }
  interp_free(If);
  interp_free(Ig);
  graph_free(f);
  graph_free(g);
}

static void test_whole_rnn(void **state) { whole_graph("graphs/rnn.nn", 24); }
static void test_whole_gru(void **state) { whole_graph("graphs/gru.nn", 12); }
static void test_whole_embgru(void **state) { whole_graph("tests/golden/embgru.nn", 12); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ops),
      cmocka_unit_test(test_no_rule),
      cmocka_unit_test(test_nested_scan),
      cmocka_unit_test(test_whole_rnn),
      cmocka_unit_test(test_whole_gru),
      cmocka_unit_test(test_whole_embgru),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

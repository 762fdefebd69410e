/* test_opt.c: each rewrite of opt.c on graphs other than rnn.nn and
 * gru.nn, by what it must do to the IR and by what it must not do to the
 * results.
 *
 * Every graph here is checked twice: structurally (the rule fired, or,
 * where its conditions do not hold, did not), and against the graph
 * without any of opt.c's rewrites: the forward graph straight from the
 * front end, differentiated by grad() as it is, run by the reference
 * interpreter in float64 on names of 1 to 9 characters from the same
 * parameters, must give the optimized training graph's loss, every
 * gradient and the parameters after the update (relative 1e-9: the
 * rewrites only reorder sums). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"
#include "testutil.h"

/* ----------------------------------------------------------- graphs */

/* The parts every test graph shares: 5 characters, 3 classes, H = 6. */
#define HEAD                                                                                       \
  "const V = 5\nconst H = 6\nconst C = 3\n"                                                        \
  "input x : onehot[T, V]\ntarget y : class[C]\n"
#define TAIL "loss -log_softmax(logits)[y]\noptimizer adam(lr = 0.01)\n"

/* Two carries, and only the last step of one is read: rnn.nn's shape
 * with tanh, a second weight and the unread carry second. */
static const char two_carries[] = HEAD
    "param w [H, V + H] = linear(V + H)\nparam u [C, H] = linear(H)\nparam b [C] = zeros\n"
    "def cell(x, h, o) {\n"
    "  let c = concat(x, h)\n"
    "  return tanh(w @ c), u @ h + b\n"
    "}\n"
    "let hs, os = scan cell over x from zeros(H), zeros(C)\n"
    "let logits = last(os)\n"
    "output logits\n" TAIL;

/* The same carry in a reverse scan: its last step is t = 0, first(). */
static const char two_carries_reverse[] = HEAD
    "param w [H, V + H] = linear(V + H)\nparam u [C, H] = linear(H)\nparam b [C] = zeros\n"
    "def cell(x, h, o) {\n"
    "  let c = concat(x, h)\n"
    "  return tanh(w @ c), u @ h + b\n"
    "}\n"
    "let hs, os = scan reverse cell over x from zeros(H), zeros(C)\n"
    "let logits = first(os)\n"
    "output logits\n" TAIL;

/* An unread carry whose whole sequence is read (by another scan): it
 * stays. */
static const char carry_read_whole[] = HEAD
    "param w [H, V + H] = linear(V + H)\nparam u [C, H] = linear(H)\nparam v [C, C] = linear(C)\n"
    "def cell(x, h, o) {\n"
    "  return tanh(w @ concat(x, h)), u @ h\n"
    "}\n"
    "def acc(o, s) { return s + v @ o }\n"
    "let hs, os = scan cell over x from zeros(H), zeros(C)\n"
    "let ss = scan acc over os from zeros(C)\n"
    "let logits = last(ss)\n"
    "output logits\n" TAIL;

/* A three-layer stack of tanh cells: layers 1 and 2 read the layer
 * below's rows, whose products leave the recurrence (and, in the
 * backward pass, their transposes). */
static const char three_layers[] = HEAD
    "for l in 0..3 {\n"
    "  param w{l} [H, l == 0 ? V : H] = linear(H)\n"
    "  param u{l} [H, H] = linear(H)\n"
    "  param b{l} [H] = linear(H)\n"
    "}\n"
    "param fc [C, H] = linear(H)\n"
    "def cell[l](x, h) { return tanh(w{l} @ x + u{l} @ h + b{l}) }\n"
    "let hs = x\n"
    "for l in 0..3 { let hs = scan cell[l] over hs from zeros(H) }\n"
    "let logits = fc @ last(hs)\n"
    "output logits\n" TAIL;

/* A bidirectional layer over a bidirectional layer: the products of the
 * upper reverse scan leave it too, and the concatenation of the lower
 * layer's directions, which the upper cells no longer read, is dropped. */
static const char bidirectional[] = HEAD
    "param wf [H, V] = linear(H)\nparam uf [H, H] = linear(H)\n"
    "param wb [H, V] = linear(H)\nparam ub [H, H] = linear(H)\n"
    "param w2 [H, 2 * H] = linear(H)\nparam u2 [H, H] = linear(H)\n"
    "param w3 [H, 2 * H] = linear(H)\nparam u3 [H, H] = linear(H)\n"
    "param fc [C, 2 * H] = linear(H)\n"
    "def cell(w, u, x, h) { return tanh(w @ x + u @ h) }\n"
    "def f0(x, h) { return cell(wf, uf, x, h) }\n"
    "def b0(x, h) { return cell(wb, ub, x, h) }\n"
    "def f1(x, h) { return cell(w2, u2, x, h) }\n"
    "def b1(x, h) { return cell(w3, u3, x, h) }\n"
    "let f = scan f0 over x from zeros(H)\n"
    "let r = scan reverse b0 over x from zeros(H)\n"
    "let hs = concat(f, r)\n"
    "let fw = scan f1 over hs from zeros(H)\n"
    "let bw = scan reverse b1 over hs from zeros(H)\n"
    "let logits = fc @ concat(last(fw), first(bw))\n"
    "output logits\n" TAIL;

/* An LSTM-shaped cell: two carries, both read by the cell; one input
 * product and one hidden product, four gates sliced from their sum. */
static const char lstm_cell[] = HEAD
    "param w_ih [4 * H, V] = linear(H)\nparam w_hh [4 * H, H] = linear(H)\n"
    "param b_ih [4 * H] = linear(H)\nparam b_hh [4 * H] = linear(H)\n"
    "param fc [C, H] = linear(H)\n"
    "def lstm(x, h, c) {\n"
    "  let g = w_ih @ x + b_ih + w_hh @ h + b_hh\n"
    "  let i = sigmoid(g[0:H])\n"
    "  let f = sigmoid(g[H:2*H])\n"
    "  let n = tanh(g[2*H:3*H])\n"
    "  let o = sigmoid(g[3*H:4*H])\n"
    "  let c2 = f * c + i * n\n"
    "  return o * tanh(c2), c2\n"
    "}\n"
    "let hs, cs = scan lstm over x from zeros(H), zeros(H)\n"
    "let logits = fc @ last(hs)\n"
    "output logits\n" TAIL;

/* An embedding table read per step in the cell: row x of emb, then a
 * product of that row. */
static const char embedding[] = HEAD
    "const E = 4\n"
    "param emb [V, E] = normal(1)\nparam w [H, E] = linear(E)\nparam u [H, H] = linear(H)\n"
    "param fc [C, H] = linear(H)\n"
    "def cell(x, h) { return tanh(w @ emb[x] + u @ h) }\n"
    "let hs = scan cell over x from zeros(H)\n"
    "let logits = fc @ last(hs)\n"
    "output logits\n" TAIL;

/* Every local rewrite's shape: a product of a concatenation with a one-hot
 * part, gates sliced from a sum of a product and a bias, and after the
 * scan a slice of a sum of sequences (one a vector-matrix product). */
static const char gates[] = HEAD
    "param w [4 * H, V + H] = linear(H)\nparam b [4 * H] = linear(H)\n"
    "param p [H, H] = linear(H)\nparam fc [C, 3] = linear(3)\n"
    "def cell(x, h) {\n"
    "  let g = w @ concat(x, h) + b\n"
    "  return sigmoid(g[0:H]) * tanh(g[2*H:3*H]) + sigmoid(g[H:2*H]) * h\n"
    "}\n"
    "let hs = scan cell over x from zeros(H)\n"
    "let z = hs @ p + hs\n"
    "let logits = fc @ last(z[0:3])\n"
    "output logits\n" TAIL;

/* ------------------------------------------------------------ helpers */

static Graph *compile_text(const char *name, const char *text) {
  Err e;
  Graph *g = compile_graph(name, text, strlen(text), &e);
  if (!g)
    fail_msg("%s", e.msg);
  return g;
}

/* The training graph after every pass. */
static Graph *optimized(const char *name, const char *text) {
  Graph *g = compile_text(name, text);
  Err e;
  if (graph_passes(g, true, PASSES_ALL, &e))
    fail_msg("%s", e.msg);
  return g;
}

static int count_in(const Graph *g, int blk, Op op, bool seq) {
  int n = 0;
  const Block *b = &g->blocks[blk];
  for (int i = 0; i < b->n; i++) {
    const Node *x = &g->nodes[b->nodes[i]];
    n += x->op == op && (!seq || type_is_seq(x->type));
  }
  return n;
}

/* Nodes of op in block 0 (seq: only those of a sequence type). */
static int top(const Graph *g, Op op, bool seq) { return count_in(g, 0, op, seq); }

/* Nodes of op in the bodies of the top-level scans. */
static int in_bodies(const Graph *g, Op op) {
  int n = 0;
  const Block *b = &g->blocks[0];
  for (int i = 0; i < b->n; i++)
    if (g->nodes[b->nodes[i]].op == OP_SCAN)
      n += count_in(g, g->nodes[b->nodes[i]].region, op, false);
  return n;
}

/* The k-th top-level scan (in block order). */
static const Node *scan_k(const Graph *g, int k) {
  const Block *b = &g->blocks[0];
  for (int i = 0; i < b->n; i++)
    if (g->nodes[b->nodes[i]].op == OP_SCAN && k-- == 0)
      return &g->nodes[b->nodes[i]];
  fail_msg("no scan %d", k);
  return NULL;
}

static void close_enough(const char *what, double got, double want) {
  if (!(fabs(got - want) <= 1e-9 * fmax(1, fabs(want))))
    fail_msg("%s: optimized %.17g, unoptimized %.17g", what, got, want);
}

/* The optimized training graph of text against the unoptimized one, as
 * the comment at the top says. */
static void same_results(const char *name, const char *text) {
  Graph *ref = compile_text(name, text), *opt = optimized(name, text);
  Err e;
  if (grad(ref, &e))
    fail_msg("%s", e.msg);
  Interp *Ir = interp_new(ref, false), *Io = interp_new(opt, false);
  Rng r;
  rng_seed(&r, 3);
  for (size_t i = 0; i < ref->nfloats; i++)
    interp_slot(Ir, SLOT_VALUE)[i] = interp_slot(Io, SLOT_VALUE)[i] = rng_uniform(&r, -0.5f, 0.5f);
  for (int len = 1; len <= 9; len++) {
    int32_t chars[9];
    for (int t = 0; t < len; t++)
      chars[t] = (int32_t)rng_below(&r, (uint32_t)ref->vocab);
    int target = (int)rng_below(&r, (uint32_t)ref->classes);
    Rng n1, n2;
    rng_seed(&n1, 9 + (uint64_t)len);
    rng_seed(&n2, 9 + (uint64_t)len);
    interp_set_rng(Ir, &n1);
    interp_set_rng(Io, &n2);
    if (interp_run(Ir, chars, len, target, &e) || interp_run(Io, chars, len, target, &e))
      fail_msg("%s", e.msg);
    char what[128];
    snprintf(what, sizeof what, "%s, T = %d: the loss", name, len);
    close_enough(what, interp_value(Io, opt->loss, NULL)[0], interp_value(Ir, ref->loss, NULL)[0]);
    for (int s = 0; s < SLOT_COUNT; s++)
      for (int p = 0; p < ref->nparams; p++) {
        const Param *pa = &ref->params[p];
        for (size_t k = 0; k < type_numel(pa->type); k++) {
          snprintf(what, sizeof what, "%s, T = %d: slot %d of %s[%zu]", name, len, s, pa->name, k);
          close_enough(what, interp_slot(Io, s)[pa->offset + k], interp_slot(Ir, s)[pa->offset + k]);
        }
      }
  }
  interp_free(Ir);
  interp_free(Io);
  graph_free(ref);
  graph_free(opt);
}

/* ---------------------------------------------------- sink_last_carries */

static void test_sink_last_carries(void **state) {
  Graph *g = optimized("two_carries", two_carries);
  /* the forward scan keeps h; o is computed once, after it */
  assert_int_equal(scan_k(g, 0)->b, 1);
  graph_free(g);
  same_results("two_carries", two_carries);

  g = optimized("two_carries_reverse", two_carries_reverse);
  assert_true(scan_k(g, 0)->c);
  assert_int_equal(scan_k(g, 0)->b, 1);
  graph_free(g);
  same_results("two_carries_reverse", two_carries_reverse);

  /* not when the whole sequence of the carry is read */
  g = optimized("carry_read_whole", carry_read_whole);
  assert_int_equal(scan_k(g, 0)->b, 2);
  graph_free(g);
  same_results("carry_read_whole", carry_read_whole);

  /* not when the cell reads the carry (an LSTM's c) */
  g = optimized("lstm_cell", lstm_cell);
  assert_int_equal(scan_k(g, 0)->b, 2);
  graph_free(g);
}

/* ----------------------------------------------------------- hoisting */

static void test_hoist_products(void **state) {
  Graph *g = optimized("three_layers", three_layers);
  /* Forward: layers 1 and 2 take W x_t out of the recurrence (layer 0's
   * one-hot product is a column gather and stays). Backward: the
   * transposed products that flow down to layers 0 and 1 leave the
   * reverse scans of layers 2 and 1. */
  int before = 0, after = 0;
  const Block *b = &g->blocks[0];
  for (int i = 0; i < b->n; i++) {
    const Node *n = &g->nodes[b->nodes[i]];
    before += n->op == OP_MATVEC && type_is_seq(n->type);
    after += n->op == OP_MATVEC_T && type_is_seq(n->type);
  }
  assert_int_equal(before, 2);
  assert_int_equal(after, 2);
  /* and no weight gradient accumulates inside a scan */
  assert_int_equal(in_bodies(g, OP_ACC) + in_bodies(g, OP_ACC_OUTER), 0);
  graph_free(g);
  same_results("three_layers", three_layers);
}

static void test_hoist_from_reverse_scan(void **state) {
  Graph *g = optimized("bidirectional", bidirectional);
  /* the upper layer's forward and reverse scans: the products of both
   * halves of each row leave them (four products over sequences) */
  assert_int_equal(top(g, OP_MATVEC, true), 4);
  const Node *up_rev = scan_k(g, 3);
  assert_true(up_rev->c);
  assert_int_equal(count_in(g, up_rev->region, OP_MATVEC, false), 1); /* u3 @ h only */
  graph_free(g);
  same_results("bidirectional", bidirectional);
}

static void test_hoist_accs_lstm(void **state) {
  Graph *g = optimized("lstm_cell", lstm_cell);
  assert_int_equal(in_bodies(g, OP_ACC) + in_bodies(g, OP_ACC_OUTER), 0);
  /* w_ih's update (one-hot columns), w_hh's and fc's; both biases */
  assert_int_equal(top(g, OP_ACC_OUTER, false), 3);
  assert_int_equal(top(g, OP_ACC, false), 2);
  graph_free(g);
  same_results("lstm_cell", lstm_cell);
}

/* An embedding's row gather leaves the cell (a gather of every step's
 * row before the scan), then the product that reads it, and in the
 * backward pass the transposed product that flows to the rows; the
 * forward scan then reads the product's rows only, and yields no copy of
 * a sequence it scans (drop_seq_yields). */
static void test_hoist_embedding(void **state) {
  Graph *g = optimized("embedding", embedding);
  assert_int_equal(count_in(g, scan_k(g, 0)->region, OP_MATVEC_T, false), 0);
  assert_int_equal(in_bodies(g, OP_MATVEC_T), 1); /* u^T, the backward recurrence */
  assert_int_equal(top(g, OP_MATVEC, true), 1);
  assert_int_equal(top(g, OP_MATVEC_T, true), 2); /* emb's rows; w^T of the adjoints */
  assert_int_equal(in_bodies(g, OP_ACC) + in_bodies(g, OP_ACC_OUTER), 0);
  const Node *fw = scan_k(g, 0);
  assert_int_equal(fw->a, 1);
  const Block *b = &g->blocks[fw->region];
  for (int k = fw->b; k < b->nyields; k++) {
    const Node *y = &g->nodes[b->yields[k]];
    assert_false(y->op == OP_ARG && y->a < fw->a);
  }
  graph_free(g);
  same_results("embedding", embedding);
}

/* ------------------------------------------------- local rewrites, cse */

/* Nodes of op anywhere in g with an operand of op `of`. */
static int count_of(const Graph *g, Op op, Op of) {
  int n = 0;
  for (int b = 0; b < g->nblocks; b++)
    for (int i = 0; i < g->blocks[b].n; i++) {
      const Node *x = &g->nodes[g->blocks[b].nodes[i]];
      bool hit = false;
      for (int k = 0; k < x->nin && x->op == op; k++)
        hit |= g->nodes[x->in[k]].op == of;
      n += hit;
    }
  return n;
}

/* No two pure nodes of a block are the same computation (cse's result). */
static void no_duplicates(const char *name, const Graph *g) {
  for (int b = 0; b < g->nblocks; b++) {
    const Block *bl = &g->blocks[b];
    for (int i = 0; i < bl->n; i++)
      for (int j = 0; j < i; j++) {
        const Node *x = &g->nodes[bl->nodes[i]], *y = &g->nodes[bl->nodes[j]];
        if (x->op != y->op || x->nin != y->nin || !x->nin || x->a != y->a || x->b != y->b ||
            x->c != y->c || x->f != y->f || !type_eq(x->type, y->type) || x->op == OP_SCAN ||
            (op_flags[x->op] & F_EFFECT))
          continue;
        bool same = true;
        for (int k = 0; k < x->nin; k++)
          same &= x->in[k] == y->in[k];
        if (same)
          fail_msg("%s: %s nodes %d and %d compute the same", name, op_names[x->op], bl->nodes[j],
                   bl->nodes[i]);
      }
  }
}

static void test_local_rewrites(void **state) {
  Graph *g = optimized("gates", gates);
  /* the product of the concatenation: one per part, the one-hot part a
   * column gather (no dense), and its gradient's update the same */
  const Op products[] = {OP_MATVEC, OP_ACC_OUTER};
  for (size_t k = 0; k < ARRAY_LEN(products); k++) {
    assert_int_equal(count_of(g, products[k], OP_CONCAT), 0);
    assert_int_equal(count_of(g, products[k], OP_DENSE), 0);
  }
  assert_int_equal(count_of(g, OP_MATVEC, OP_ARG), 2); /* w's parts: x_t and h */
  /* the slice of a sum of sequences became a sum of slices, and the slice
   * of the product a product of the columns (the gates' slices of a sum
   * read three times stay) */
  assert_int_equal(count_of(g, OP_SLICE, OP_ADD), 3);
  assert_int_equal(count_of(g, OP_SLICE, OP_MATVEC_T), 0);
  assert_int_equal(top(g, OP_MATVEC_T, true), 1);
  graph_free(g);
  same_results("gates", gates);
}

static void test_cse(void **state) {
  struct {
    const char *name, *text;
  } graphs[] = {{"two_carries", two_carries}, {"three_layers", three_layers},
                {"bidirectional", bidirectional}, {"lstm_cell", lstm_cell},
                {"embedding", embedding}, {"gates", gates}};
  for (size_t i = 0; i < ARRAY_LEN(graphs); i++) {
    Graph *g = optimized(graphs[i].name, graphs[i].text);
    no_duplicates(graphs[i].name, g);
    graph_free(g);
  }
}

/* --------------------------------------------------- drop_unused_seqs */

static void test_drop_unused_seqs(void **state) {
  Graph *g = optimized("bidirectional", bidirectional);
  /* the upper scans read only their hoisted products' rows: the
   * concatenation of the lower directions is read by no one */
  assert_int_equal(top(g, OP_CONCAT, true), 0);
  for (int k = 2; k <= 3; k++)
    assert_int_equal(scan_k(g, k)->a, 1);
  graph_free(g);
  /* a scan keeps one sequence even when its cell reads none */
  static const char none_read[] = HEAD
      "param w [C, C] = linear(C)\nparam b [C] = zeros\n"
      "def count(x, s) { return w @ s + b }\n"
      "let ss = scan count over x from zeros(C)\n"
      "let logits = last(ss)\noutput logits\n" TAIL;
  g = optimized("none_read", none_read);
  assert_int_equal(scan_k(g, 0)->a, 1);
  graph_free(g);
  same_results("none_read", none_read);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sink_last_carries),
      cmocka_unit_test(test_hoist_products),
      cmocka_unit_test(test_hoist_from_reverse_scan),
      cmocka_unit_test(test_hoist_accs_lstm),
      cmocka_unit_test(test_hoist_embedding),
      cmocka_unit_test(test_drop_unused_seqs),
      cmocka_unit_test(test_local_rewrites),
      cmocka_unit_test(test_cse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

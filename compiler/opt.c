/* opt.c: IR-to-IR optimizations, run after grad, before codegen.
 *
 * require: a verified graph (forward, or with its backward pass).
 *
 * Local rewrites, to a fixpoint:
 *   matvec W, concat(a, b)        -> matvec W, a  +  matvec W, b col na
 *   acc_outer W, u, concat(a, b)  -> acc_outer W, u, a;  acc_outer W, u, b col na
 *   matvec / acc_outer of dense(x) -> the one-hot x itself: a column gather
 *                                     or a column update, not 58 zeros
 *   slice(add(a, b))              -> add(slice a, slice b)   (add used once; vectors
 *                                     or sequences, row by row)
 *   slice(matvec_t W, u)          -> matvec_t W, u over the slice's columns
 * the weight-gradient updates in a scan's body move after the scan, over
 * stacks (hoist_accs); a carry of which only the last step is read leaves
 * the scan (sink_last_carries); products of a scanned row move before the
 * scan and transposed ones after it (hoist_products, _after); a per-step
 * output that is a scanned row is the sequence itself (drop_seq_yields),
 * and sequences a cell no longer reads leave the scan (drop_unused_seqs);
 * equal pure nodes merge (cse); then dead code elimination, and
 * renumbering so ids stay dense. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

static Node *nd(Graph *g, int id) { return &g->nodes[id]; }

/* Moves node id (just appended to its block) to before anchor. */
static void place_before(Graph *g, int id, int anchor) {
  Block *b = &g->blocks[g->nodes[id].block];
  if (b->nodes[b->n - 1] != id)
    abort(); /* place_before takes the node ir_add just appended */
  int at = 0;
  while (at < b->n && b->nodes[at] != anchor)
    at++;
  memmove(&b->nodes[at + 1], &b->nodes[at], (size_t)(b->n - 1 - at) * sizeof *b->nodes);
  b->nodes[at] = id;
}

static int add_before(Graph *g, int anchor, Op op, int x, int y, int nin, int a, int bb) {
  int in[2] = {x, y};
  const Node *an = nd(g, anchor);
  int id = ir_add(g, NULL, an->block, op, in, nin, a, bb, 0, an->pos);
  place_before(g, id, anchor);
  return id;
}

/* Every use of old now reads new. */
static void replace_uses(Graph *g, int old, int new) {
  for (int i = 0; i < g->nnodes; i++)
    for (int k = 0; k < g->nodes[i].nin; k++)
      if (g->nodes[i].in[k] == old)
        g->nodes[i].in[k] = new;
  for (int b = 0; b < g->nblocks; b++)
    for (int k = 0; k < g->blocks[b].nyields; k++)
      if (g->blocks[b].yields[k] == old)
        g->blocks[b].yields[k] = new;
  int *roots[] = {&g->output, &g->loss, &g->grad_norm};
  for (size_t i = 0; i < ARRAY_LEN(roots); i++)
    if (*roots[i] == old)
      *roots[i] = new;
}

/* Takes an effect out of its block (compaction then drops it). */
static void remove_node(Graph *g, int id) {
  Block *b = &g->blocks[g->nodes[id].block];
  int at = 0;
  while (at < b->n && b->nodes[at] != id)
    at++;
  memmove(&b->nodes[at], &b->nodes[at + 1], (size_t)(b->n - at - 1) * sizeof *b->nodes);
  b->n--;
}

static int count_uses(const Graph *g, int id) {
  int n = 0;
  for (int i = 0; i < g->nnodes; i++)
    for (int k = 0; k < g->nodes[i].nin; k++)
      n += g->nodes[i].in[k] == id;
  for (int b = 0; b < g->nblocks; b++)
    for (int k = 0; k < g->blocks[b].nyields; k++)
      n += g->blocks[b].yields[k] == id;
  return n + (g->output == id) + (g->loss == id) + (g->grad_norm == id);
}

static bool listed(const Graph *g, int id) {
  const Block *b = &g->blocks[g->nodes[id].block];
  for (int i = 0; i < b->n; i++)
    if (b->nodes[i] == id)
      return true;
  return false;
}

/* One rewrite at node id; returns true if it changed the graph. */
static bool rewrite(Graph *g, int id) {
  Node n = *nd(g, id);
  if (n.op == OP_MATVEC || n.op == OP_ACC_OUTER) {
    int v = n.in[1], w = n.in[0];
    int k0 = n.op == OP_MATVEC ? n.a : n.b;
    const Node *vn = nd(g, v);
    if (vn->op == OP_DENSE) {
      nd(g, id)->in[1] = vn->in[0];
      return true;
    }
    if (vn->op == OP_CONCAT) {
      int a = vn->in[0], b = vn->in[1];
      int na = type_width(nd(g, a)->type);
      if (n.op == OP_MATVEC) {
        int nb = type_width(nd(g, b)->type);
        int ma = add_before(g, id, OP_MATVEC, w, a, 2, k0, na);
        int mb = add_before(g, id, OP_MATVEC, w, b, 2, k0 + na, nb);
        replace_uses(g, id, add_before(g, id, OP_ADD, ma, mb, 2, 0, 0));
      } else {
        add_before(g, id, OP_ACC_OUTER, w, a, 2, n.a, k0);
        add_before(g, id, OP_ACC_OUTER, w, b, 2, n.a, k0 + na);
        remove_node(g, id);
      }
      return true;
    }
  }
  if (n.op == OP_ACC_OUTER && nd(g, n.in[1])->op == OP_DENSE) {
    nd(g, id)->in[1] = nd(g, n.in[1])->in[0];
    return true;
  }
  if (n.op == OP_SLICE) {
    Node x = *nd(g, n.in[0]);
    /* (a vector, or a sequence sliced row by row; not a broadcast scalar) */
    if (x.op == OP_ADD && x.block == n.block && count_uses(g, n.in[0]) == 1 &&
        type_eq(nd(g, x.in[0])->type, x.type) && type_eq(nd(g, x.in[1])->type, x.type)) {
      int sa = add_before(g, id, OP_SLICE, x.in[0], -1, 1, n.a, n.b);
      int sb = add_before(g, id, OP_SLICE, x.in[1], -1, 1, n.a, n.b);
      replace_uses(g, id, add_before(g, id, OP_ADD, sa, sb, 2, 0, 0));
      return true;
    }
    if (x.op == OP_MATVEC_T && x.block == n.block) {
      int t = add_before(g, id, OP_MATVEC_T, x.in[0], x.in[1], 2, x.a + n.a, n.b - n.a);
      replace_uses(g, id, t);
      return true;
    }
  }
  return false;
}

/* ---------------------------------------- products out of the recurrence */

/* A product of an outer matrix with a row of a scanned sequence (W x_t, or
 * x_t @ W) does not depend on the carried state: compute it for every t
 * before the scan, as one product with the whole sequence (each row of W
 * read once, not T times), and scan its rows instead. gru.nn's second
 * layer reads its input weights this way. A one-hot row's x_t @ W (an
 * embedding's row, W[x_t]) becomes a gather of every step's row before
 * the scan, so the products that read it move out in turn; W x_t of a
 * one-hot x_t (a column of W) stays, a gather no dearer in the cell. Runs
 * after grad, which would otherwise see the sequence form where it need
 * not. */
static bool hoist_products(Graph *g) {
  bool changed = false;
  for (int i = 0; i < g->blocks[0].n; i++) {
    int s = g->blocks[0].nodes[i];
    if (nd(g, s)->op != OP_SCAN)
      continue;
    int body = nd(g, s)->region;
    int n0 = g->blocks[body].n;
    int *list = xmalloc((size_t)(n0 ? n0 : 1) * sizeof *list);
    memcpy(list, g->blocks[body].nodes, (size_t)n0 * sizeof *list);
    for (int j = 0; j < n0; j++) {
      Node n = *nd(g, list[j]);
      if ((n.op != OP_MATVEC && n.op != OP_MATVEC_T) || nd(g, n.in[0])->block != 0)
        continue;
      const Node *arg = nd(g, n.in[1]);
      int nseq = nd(g, s)->a;
      if (arg->op != OP_ARG || arg->block != body || arg->a >= nseq)
        continue;
      TypeKind kind = nd(g, nd(g, s)->in[arg->a])->type.kind;
      if (kind != TY_F32 && !(kind == TY_ONEHOT && n.op == OP_MATVEC_T))
        continue;
      /* Y = W X before the scan. */
      int in[2] = {n.in[0], nd(g, s)->in[arg->a]};
      int y = ir_add(g, NULL, 0, n.op, in, 2, n.a, n.b, 0, n.pos);
      place_before(g, y, s);
      i++; /* s moved one place on */
      /* Y becomes the scan's next sequence operand, its row a new argument. */
      Node *sn = nd(g, s);
      sn->in = xrealloc(sn->in, (size_t)(sn->nin + 1) * sizeof *sn->in);
      memmove(&sn->in[nseq + 1], &sn->in[nseq], (size_t)(sn->nin - nseq) * sizeof *sn->in);
      sn->in[nseq] = y;
      sn->nin++;
      sn->a++;
      int row = ir_block_arg(g, body, n.type, n.pos);
      Block *b = &g->blocks[body];
      memmove(&b->args[nseq + 1], &b->args[nseq], (size_t)(b->nargs - 1 - nseq) * sizeof *b->args);
      b->args[nseq] = row;
      for (int k = 0; k < b->nargs; k++)
        nd(g, b->args[k])->a = k;
      memmove(&b->nodes[1], &b->nodes[0], (size_t)(b->n - 1) * sizeof *b->nodes);
      b->nodes[0] = row;
      replace_uses(g, list[j], row);
      changed = true;
    }
    free(list);
  }
  return changed;
}

/* ------------------------------------------------ common subexpressions */

static bool same_node(const Node *a, const Node *b) {
  if (a->op != b->op || a->nin != b->nin || a->a != b->a || a->b != b->b || a->c != b->c ||
      a->block != b->block || !type_eq(a->type, b->type))
    return false;
  if (a->f != b->f) /* a constant's value, dropout's p */
    return false;
  for (int k = 0; k < a->nin; k++)
    if (a->in[k] != b->in[k])
      return false;
  return true;
}

/* A pure node equal to an earlier one in its block (same op, operands and
 * attributes) is replaced by it: the backward pass builds the same gate
 * adjoints for two products, and every cell its own constants. Loads are
 * left alone (a store may come between two), as are noise draws, block
 * arguments, scans and effects. */
static bool cse(Graph *g) {
  bool changed = false;
  for (int bi = 0; bi < g->nblocks; bi++) {
    Block *b = &g->blocks[bi];
    for (int i = 0; i < b->n; i++) {
      int id = b->nodes[i];
      const Node *n = nd(g, id);
      if (n->op == OP_LOAD || n->op == OP_NOISE || n->op == OP_ARG || n->op == OP_SCAN ||
          n->op == OP_INPUT || n->op == OP_TARGET || (op_flags[n->op] & F_EFFECT))
        continue;
      for (int j = 0; j < i; j++) {
        int prev = b->nodes[j];
        if (same_node(nd(g, prev), n)) {
          replace_uses(g, id, prev);
          changed = true;
          break;
        }
      }
    }
  }
  return changed;
}

/* ------------------------------------------ weight gradients out of scans */

/* Moves node id (just appended to block 0) to right after anchor. */
static void place_after(Graph *g, int id, int anchor) {
  Block *b = &g->blocks[0];
  if (b->nodes[b->n - 1] != id)
    abort(); /* place_after takes the node ir_add just appended */
  int at = 0;
  while (at < b->n && b->nodes[at] != anchor)
    at++;
  memmove(&b->nodes[at + 2], &b->nodes[at + 1], (size_t)(b->n - 2 - at) * sizeof *b->nodes);
  b->nodes[at + 1] = id;
}

/* The [T, ...] stack of body value x of scan s, in block 0: the scanned
 * sequence itself for a row argument, else a result of the scan (the body
 * yields x if it did not already). *anchor: where block-0 nodes go. */
static int stack_of(Graph *g, int s, int x, int *anchor) {
  const Node *xn = nd(g, x);
  if (xn->op == OP_ARG && xn->a < nd(g, s)->a)
    return nd(g, s)->in[xn->a];
  Block *body = &g->blocks[nd(g, s)->region];
  int k = 0;
  while (k < body->nyields && body->yields[k] != x)
    k++;
  if (k == body->nyields)
    ir_yield(g, nd(g, s)->region, x);
  /* One projection per result: reuse one placed between s and the anchor. */
  const Block *b0 = &g->blocks[0];
  int i = 0;
  while (b0->nodes[i] != s)
    i++;
  for (; b0->nodes[i] != *anchor; i++) {
    const Node *pn = nd(g, b0->nodes[i + 1]);
    if (pn->op == OP_PROJ && pn->in[0] == s && pn->a == k)
      return b0->nodes[i + 1];
  }
  int p = ir_proj(g, 0, s, k, nd(g, s)->pos);
  place_after(g, p, *anchor);
  *anchor = p;
  return p;
}

/* An acc or acc_outer in a scan's body adds to a weight gradient at every
 * step: T passes over the gradient. Stack its per-step operands instead
 * and accumulate once after the scan (the sum over t of u_t v_t^T), one
 * pass over the gradient. */
static bool hoist_accs(Graph *g) {
  bool changed = false;
  for (int i = 0; i < g->blocks[0].n; i++) {
    int s = g->blocks[0].nodes[i];
    if (nd(g, s)->op != OP_SCAN)
      continue;
    int body = nd(g, s)->region, anchor = s;
    Block *B = &g->blocks[body];
    int n0 = B->n;
    int *list = xmalloc((size_t)(n0 ? n0 : 1) * sizeof *list);
    memcpy(list, B->nodes, (size_t)n0 * sizeof *list);
    for (int j = 0; j < n0; j++) {
      Node n = *nd(g, list[j]);
      if (n.op != OP_ACC && n.op != OP_ACC_OUTER)
        continue;
      bool inside = true;
      for (int k = 0; k < n.nin; k++)
        inside &= nd(g, n.in[k])->block == body;
      if (!inside)
        continue; /* an operand fixed over t: leave it */
      int in[2];
      for (int k = 0; k < n.nin; k++)
        in[k] = stack_of(g, s, n.in[k], &anchor);
      int acc = ir_add(g, NULL, 0, n.op, in, n.nin, n.a, n.b, 0, n.pos);
      place_after(g, acc, anchor);
      anchor = acc;
      remove_node(g, list[j]);
      changed = true;
    }
    free(list);
  }
  return changed;
}

/* Removes result k of scan s (its body's yield k), whose projections
 * nothing reads any more: they leave block 0, and those of later results
 * move down one. */
static void drop_result(Graph *g, int s, int k) {
  Block *B = &g->blocks[nd(g, s)->region];
  memmove(&B->yields[k], &B->yields[k + 1], (size_t)(B->nyields - k - 1) * sizeof *B->yields);
  B->nyields--;
  for (int p = 0; p < g->nnodes; p++) {
    Node *pn = nd(g, p);
    if (pn->op != OP_PROJ || pn->in[0] != s || !listed(g, p))
      continue;
    if (pn->a == k)
      remove_node(g, p);
    else if (pn->a > k)
      pn->a--;
  }
}

/* ---------------------------------------- carries only the last step of */

typedef struct Sink {
  int s, body, anchor;
  Op final; /* the row of a stack at the last step: OP_LAST, or OP_FIRST (a reverse scan) */
  int *map; /* body node -> its clone at the last step, or -1 */
} Sink;

/* Whether x, a body value, can be computed after the scan for the last
 * step: pure nodes of the body (no noise, no scan, no effect). */
static bool sinkable(Graph *g, Sink *k, int x) {
  const Node *n = nd(g, x);
  if (n->block != k->body || n->op == OP_ARG)
    return true;
  if (n->op == OP_NOISE || n->op == OP_SCAN || (op_flags[n->op] & F_EFFECT) || n->nin > 8)
    return false;
  for (int i = 0; i < n->nin; i++)
    if (!sinkable(g, k, n->in[i]))
      return false;
  return true;
}

static void place(Graph *g, Sink *k, int id) {
  place_after(g, id, k->anchor);
  k->anchor = id;
}

/* x's value at the last step, in block 0 after the scan: a sequence's
 * row is last(sequence); a carry's input is last(the stack of its input)
 * (its value before the last step); other nodes are cloned. (A reverse
 * scan's last step is t = 0: first() instead of last().) */
static int sink(Graph *g, Sink *k, int x) {
  Node n = *nd(g, x); /* a copy: adding nodes moves g->nodes */
  if (n.block != k->body)
    return x;
  if (k->map[x] >= 0)
    return k->map[x];
  int r;
  if (n.op == OP_ARG) {
    int nseq = nd(g, k->s)->a;
    int stack = n.a < nseq ? nd(g, k->s)->in[n.a] : stack_of(g, k->s, x, &k->anchor);
    r = ir_add(g, NULL, 0, k->final, &stack, 1, 0, 0, 0, n.pos);
  } else if (n.nin == 0) {
    r = ir_leaf(g, 0, n.op, n.type, n.f, n.a, n.pos);
  } else {
    int in[8];
    for (int i = 0; i < n.nin; i++)
      in[i] = sink(g, k, n.in[i]);
    r = ir_add(g, NULL, 0, n.op, in, n.nin, n.a, n.b, n.c, n.pos);
  }
  place(g, k, r);
  return k->map[x] = r;
}

/* A carry that the cell never reads (rnn.nn's `out`: each step computes
 * it afresh from x_t and h_{t-1}) and of which only the last step's value
 * is used (last(), or first() of a reverse scan) is dropped from the scan
 * and computed once, after it, from the last step's inputs. Before grad:
 * the backward pass then has no such carry either. */
static bool sink_last_carries(Graph *g) {
  bool changed = false;
  for (int i = 0; i < g->blocks[0].n; i++) {
    int s = g->blocks[0].nodes[i];
    const Node *sn = nd(g, s);
    if (sn->op != OP_SCAN)
      continue;
    Op final = sn->c ? OP_FIRST : OP_LAST;
    int body = sn->region, nseq = sn->a;
    for (int k = 0; k < nd(g, s)->b; k++) {
      Block *B = &g->blocks[body];
      int arg = B->args[nseq + k], y = B->yields[k];
      if (count_uses(g, arg) != 0 || nd(g, y)->op == OP_ARG)
        continue;
      /* every use of the carry's results: last(proj #k) (first() if reverse) */
      bool only_last = true, any = false;
      for (int p = 0; p < g->nnodes && only_last; p++) {
        const Node *pn = nd(g, p);
        if (pn->op != OP_PROJ || pn->in[0] != s || pn->a != k || !listed(g, p))
          continue;
        for (int u = 0; u < g->nnodes; u++)
          for (int q = 0; q < nd(g, u)->nin; q++)
            if (nd(g, u)->in[q] == p && listed(g, u)) {
              any = true;
              only_last &= nd(g, u)->op == final;
            }
        only_last &= count_uses(g, p) == 0 || (g->output != p && g->loss != p);
      }
      Sink sk = {.s = s, .body = body, .anchor = s, .final = final};
      if (!only_last || !any || !sinkable(g, &sk, y))
        continue;
      sk.map = xmalloc((size_t)g->nnodes * 2 * sizeof *sk.map);
      for (int m = 0; m < g->nnodes * 2; m++)
        sk.map[m] = -1;
      int v = sink(g, &sk, y);
      free(sk.map);
      /* last(proj #k) reads v; the carry leaves the scan. */
      for (int p = 0; p < g->nnodes; p++)
        if (nd(g, p)->op == OP_PROJ && nd(g, p)->in[0] == s && nd(g, p)->a == k && listed(g, p))
          for (int u = 0; u < g->nnodes; u++)
            if (nd(g, u)->op == final && nd(g, u)->in[0] == p && listed(g, u))
              replace_uses(g, u, v);
      drop_result(g, s, k);
      B = &g->blocks[body];
      memmove(&B->args[nseq + k], &B->args[nseq + k + 1], (size_t)(B->nargs - nseq - k - 1) * sizeof *B->args);
      B->nargs--;
      remove_node(g, arg);
      for (int a = 0; a < B->nargs; a++)
        nd(g, B->args[a])->a = a;
      Node *scn = nd(g, s);
      memmove(&scn->in[nseq + k], &scn->in[nseq + k + 1], (size_t)(scn->nin - nseq - k - 1) * sizeof *scn->in);
      scn->nin--;
      scn->b--;
      changed = true;
      k--;
    }
  }
  return changed;
}

/* A transposed product in a scan's body whose result the body only yields
 * as a per-step output (the backward of a layer's input product: the
 * gradient that flows to the layer below) waits for nothing but its own
 * step. Compute it after the scan over the stack of its operand, as one
 * product with a [T, m] operand, and drop the yield: gru.nn's W_ih_l1 is
 * then read once per name in the backward pass too. */
static bool hoist_products_after(Graph *g) {
  bool changed = false;
  for (int i = 0; i < g->blocks[0].n; i++) {
    int s = g->blocks[0].nodes[i];
    if (nd(g, s)->op != OP_SCAN)
      continue;
    int body = nd(g, s)->region;
    for (int k = nd(g, s)->b; k < g->blocks[body].nyields; k++) {
      int x = g->blocks[body].yields[k];
      Node n = *nd(g, x);
      if (n.op != OP_MATVEC_T || n.block != body || nd(g, n.in[0])->block != 0 ||
          nd(g, n.in[1])->op == OP_ARG || count_uses(g, x) != 1)
        continue;
      int anchor = s;
      int u = stack_of(g, s, n.in[1], &anchor);
      int in[2] = {n.in[0], u};
      int y = ir_add(g, NULL, 0, OP_MATVEC_T, in, 2, n.a, n.b, 0, n.pos);
      place_after(g, y, anchor);
      for (int p = 0; p < g->nnodes; p++)
        if (nd(g, p)->op == OP_PROJ && nd(g, p)->in[0] == s && nd(g, p)->a == k && listed(g, p))
          replace_uses(g, p, y);
      drop_result(g, s, k);
      changed = true;
      k--;
    }
  }
  return changed;
}

/* A sequence a scan's cell no longer reads (its products were moved out
 * of the recurrence, hoist_products) is dropped from the scan's operands:
 * what only the scan kept alive (bigru.nn's concat of the layer below's
 * directions) then dies. A scan keeps one sequence (its length). */
static bool drop_unused_seqs(Graph *g) {
  bool changed = false;
  for (int i = 0; i < g->blocks[0].n; i++) {
    int s = g->blocks[0].nodes[i];
    if (nd(g, s)->op != OP_SCAN)
      continue;
    Block *B = &g->blocks[nd(g, s)->region];
    for (int k = nd(g, s)->a - 1; k >= 0 && nd(g, s)->a > 1; k--) {
      int arg = B->args[k];
      if (count_uses(g, arg))
        continue;
      Node *sn = nd(g, s);
      memmove(&sn->in[k], &sn->in[k + 1], (size_t)(sn->nin - k - 1) * sizeof *sn->in);
      sn->nin--;
      sn->a--;
      memmove(&B->args[k], &B->args[k + 1], (size_t)(B->nargs - k - 1) * sizeof *B->args);
      B->nargs--;
      remove_node(g, arg);
      for (int a = 0; a < B->nargs; a++)
        nd(g, B->args[a])->a = a;
      changed = true;
    }
  }
  return changed;
}

/* A per-step output that is the row of a scanned sequence (a stack the
 * backward pass asked for of a value since moved before the scan,
 * hoist_products) is that sequence again: its readers read the sequence,
 * and the scan stops copying it. */
static bool drop_seq_yields(Graph *g) {
  bool changed = false;
  for (int i = 0; i < g->blocks[0].n; i++) {
    int s = g->blocks[0].nodes[i];
    if (nd(g, s)->op != OP_SCAN)
      continue;
    int body = nd(g, s)->region;
    for (int k = nd(g, s)->b; k < g->blocks[body].nyields; k++) {
      const Node *y = nd(g, g->blocks[body].yields[k]);
      if (y->op != OP_ARG || y->block != body || y->a >= nd(g, s)->a)
        continue;
      int seq = nd(g, s)->in[y->a];
      for (int p = 0; p < g->nnodes; p++)
        if (nd(g, p)->op == OP_PROJ && nd(g, p)->in[0] == s && nd(g, p)->a == k && listed(g, p))
          replace_uses(g, p, seq);
      drop_result(g, s, k);
      changed = true;
      k--;
    }
  }
  return changed;
}

/* ----------------------------------------------------- dead code, compaction */

static void mark(const Graph *g, char *live, int id);

static void mark_block_effects(const Graph *g, char *live, int blk) {
  const Block *b = &g->blocks[blk];
  for (int i = 0; i < b->n; i++) {
    const Node *n = &g->nodes[b->nodes[i]];
    if (op_flags[n->op] & F_EFFECT)
      mark(g, live, b->nodes[i]);
  }
}

static bool has_effects(const Graph *g, int blk) {
  const Block *b = &g->blocks[blk];
  for (int i = 0; i < b->n; i++) {
    const Node *n = &g->nodes[b->nodes[i]];
    if (op_flags[n->op] & F_EFFECT)
      return true;
    if (n->op == OP_SCAN && has_effects(g, n->region))
      return true;
  }
  return false;
}

static void mark(const Graph *g, char *live, int id) {
  if (id < 0 || live[id])
    return;
  live[id] = 1;
  const Node *n = &g->nodes[id];
  for (int k = 0; k < n->nin; k++)
    mark(g, live, n->in[k]);
  if (n->op == OP_SCAN) {
    const Block *b = &g->blocks[n->region];
    for (int k = 0; k < b->nargs; k++)
      live[b->args[k]] = 1;
    for (int k = 0; k < b->nyields; k++)
      mark(g, live, b->yields[k]);
    mark_block_effects(g, live, n->region);
  }
  if (n->op == OP_PROJ)
    mark(g, live, n->in[0]);
}

/* Removes what nothing reads, then renumbers the nodes densely. */
void graph_dce(Graph *g) {
  char *live = xcalloc((size_t)g->nnodes + 1, 1);
  mark(g, live, g->output);
  mark(g, live, g->loss);
  mark(g, live, g->grad_norm);
  mark(g, live, g->input);
  mark(g, live, g->target);
  mark_block_effects(g, live, 0);
  const Block *b0 = &g->blocks[0];
  for (int i = 0; i < b0->n; i++) /* scans whose bodies have effects */
    if (g->nodes[b0->nodes[i]].op == OP_SCAN && has_effects(g, g->nodes[b0->nodes[i]].region))
      mark(g, live, b0->nodes[i]);
  for (int i = 0; i < g->nnodes; i++)
    if (live[i] && !listed(g, i))
      live[i] = 0; /* removed effects */
  int *map = xmalloc((size_t)g->nnodes * sizeof *map);
  int n = 0;
  for (int i = 0; i < g->nnodes; i++) {
    map[i] = live[i] ? n++ : -1;
    if (!live[i])
      free(g->nodes[i].in);
  }
  for (int i = 0; i < g->nnodes; i++)
    if (live[i]) {
      Node x = g->nodes[i];
      for (int k = 0; k < x.nin; k++)
        x.in[k] = map[x.in[k]];
      g->nodes[map[i]] = x;
    }
  for (int bi = 0; bi < g->nblocks; bi++) {
    Block *b = &g->blocks[bi];
    int k = 0;
    for (int i = 0; i < b->n; i++)
      if (live[b->nodes[i]])
        b->nodes[k++] = map[b->nodes[i]];
    b->n = k;
    bool dead = false;
    for (int i = 0; i < b->nargs; i++)
      dead |= (b->args[i] = map[b->args[i]]) < 0;
    for (int i = 0; i < b->nyields; i++)
      dead |= (b->yields[i] = map[b->yields[i]]) < 0;
    if (dead) /* the body of a scan that died */
      b->n = b->nargs = b->nyields = 0;
  }
  int *roots[] = {&g->input, &g->target, &g->output, &g->loss, &g->grad_norm};
  for (size_t i = 0; i < ARRAY_LEN(roots); i++)
    if (*roots[i] >= 0)
      *roots[i] = map[*roots[i]];
  g->nnodes = n;
  free(map);
  free(live);
}

void graph_inference(Graph *g) {
  for (int id = 0; id < g->nnodes; id++)
    if (g->nodes[id].op == OP_DROPOUT && listed(g, id))
      replace_uses(g, id, g->nodes[id].in[0]);
  graph_dce(g);
}

int graph_optimize(Graph *g, bool late, Err *e) {
  bool changed = true;
  for (int round = 0; changed && round < 100; round++) {
    changed = false;
    for (int id = 0; id < g->nnodes; id++)
      if (listed(g, id) && rewrite(g, id))
        changed = true;
    if (hoist_accs(g))
      changed = true;
    if (!late && sink_last_carries(g))
      changed = true;
    if (late && hoist_products(g))
      changed = true;
    if (late && hoist_products_after(g))
      changed = true;
    if (drop_seq_yields(g))
      changed = true;
    if (drop_unused_seqs(g))
      changed = true;
    if (cse(g))
      changed = true;
    graph_dce(g);
    if (graph_verify(g, e))
      return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- phases */

void graph_mark_update(const Graph *g, bool *upd) {
  /* Operands come before their users (SSA order by id), and the update
   * lives in block 0, so one pass in id order sees every operand first. */
  for (int id = 0; id < g->nnodes; id++) {
    const Node *n = &g->nodes[id];
    bool u = n->op == OP_STORE || n->op == OP_STEP || (n->op == OP_LOAD && n->b != SLOT_VALUE);
    for (int k = 0; !u && k < n->nin; k++)
      u = upd[n->in[k]];
    upd[id] = u;
  }
}

void graph_keep_phase(Graph *g, Phase p) {
  assert(g->stage == STAGE_GRAD);
  bool *upd = xcalloc((size_t)g->nnodes + 1, sizeof *upd);
  graph_mark_update(g, upd);
  Block *b0 = &g->blocks[0];
  int k = 0;
  for (int i = 0; i < b0->n; i++) {
    const Node *n = &g->nodes[b0->nodes[i]];
    bool drop = p == PHASE_STEP ? n->op == OP_STORE
                                : n->op == OP_ACC || n->op == OP_ACC_OUTER ||
                                      (n->op == OP_SCAN && has_effects(g, n->region));
    if (!drop)
      b0->nodes[k++] = b0->nodes[i];
  }
  b0->n = k;
  if (p == PHASE_STEP) {
    if (g->grad_norm >= 0 && upd[g->grad_norm])
      g->grad_norm = -1;
  } else {
    g->output = g->loss = -1;
  }
  free(upd);
  graph_dce(g);
}

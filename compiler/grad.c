/* grad.c: reverse-mode differentiation, IR to IR.
 *
 * require: a verified forward graph (stage FORWARD) with a scalar loss.
 * result:  the same graph with, appended to block 0, the backward graph of
 *          the loss with respect to every trainable parameter (gradients
 *          accumulate into the parameters' grad slots through acc and
 *          acc_outer), then the update the graph declares: optional
 *          global-norm clipping and Adam (or SGD), as ordinary IR.
 *
 * The walk is ggml's: forward nodes in reverse order, each node's
 * derivative rule (one case of vjp()) adding contributions to its
 * operands' adjoints. A node's adjoint is materialized when the walk
 * reaches it, when all its users have contributed; contributions that are
 * disjoint slices (a GRU's three gates) become one concat, not a sum of
 * padded vectors.
 *
 * A scan is differentiated into a reverse scan. Its body is the vjp of the
 * forward body; the forward values it needs at step t are read from
 * stacks that the forward scan is made to save (an extra yield each), or,
 * for the rows of a scanned sequence, from the sequence itself. The
 * reverse scan carries the adjoints of the carried states, and stacks the
 * adjoints of the sequence rows for the layer below. */
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

typedef struct Contrib Contrib;
struct Contrib {
  int value;  /* node id in the current backward block */
  int offset; /* piece: where the value sits in the adjoint */
  bool piece; /* a slice of the adjoint, not the whole */
  Contrib *next;
};

typedef struct ScanCtx {
  int scan;      /* the forward SCAN node */
  int body;      /* its body block */
  int rbody;     /* the reverse scan's body block */
  int *saved;    /* forward body node -> its value in rbody, or -1 */
  int *seqs;     /* the reverse scan's sequence operands (block 0) */
  int *seqargs;  /* their ARG nodes in rbody */
  int nseqs, capseqs;
} ScanCtx;

typedef struct Grad {
  Graph *g;
  Diag *d;
  Arena a;
  int nfwd;          /* nodes 0..nfwd-1 are the forward graph */
  Contrib **contrib; /* (nfwd) pending contributions per forward node */
  int *adj;          /* (nfwd) materialized adjoint, or -1 */
  bool *needs;       /* (nfwd) depends on a trainable parameter */
  int *owner;        /* block -> the SCAN node whose body it is, or -1 */
  int *order;        /* block 0's forward nodes, walked backwards */
  int bb;            /* the block backward nodes go to */
  ScanCtx *sc;       /* the scan being differentiated, or NULL */
} Grad;

/* ----------------------------------------------------------- node helpers */

static Node *node(Grad *G, int id) { return &G->g->nodes[id]; }

static int add1(Grad *G, Op op, int x, int a, int b, Pos pos) {
  return ir_add(G->g, NULL, G->bb, op, &x, 1, a, b, 0, pos);
}

static int add2(Grad *G, Op op, int x, int y, int a, int b, Pos pos) {
  int in[2] = {x, y};
  return ir_add(G->g, NULL, G->bb, op, in, 2, a, b, 0, pos);
}

static int cnst(Grad *G, int blk, double x, Pos pos) {
  return ir_leaf(G->g, blk, OP_CONST, type_scalar(), x, 0, pos);
}

static int zeros(Grad *G, int blk, Type t, Pos pos) {
  return ir_leaf(G->g, blk, OP_ZEROS, t, 0, 0, pos);
}

static Type row_of(Type t) {
  Type r = t;
  r.rank--;
  r.dim[0] = t.dim[1];
  r.dim[1] = 0;
  return r;
}

/* -------------------------------------------------------- requires grad */

/* needs[x]: x depends on a trainable parameter. A fixpoint over the whole
 * graph, since a scan's carried state depends on its own yield. */
static void compute_needs(Grad *G) {
  Graph *g = G->g;
  bool changed = true;
  while (changed) {
    changed = false;
    for (int id = 0; id < G->nfwd; id++) {
      Node *n = &g->nodes[id];
      bool need = false;
      switch (n->op) {
      case OP_LOAD:
        need = n->b == SLOT_VALUE && g->params[n->a].trainable;
        break;
      case OP_ARG: {
        int s = G->owner[n->block];
        if (s < 0)
          break;
        Node *sn = &g->nodes[s];
        need = G->needs[sn->in[n->a]];
        if (n->a >= sn->a) /* a carried state: also its next value */
          need |= G->needs[g->blocks[n->block].yields[n->a - sn->a]];
        break;
      }
      case OP_PROJ: {
        Node *sn = &g->nodes[n->in[0]];
        need = G->needs[g->blocks[sn->region].yields[n->a]];
        break;
      }
      case OP_SCAN:
        break; /* read through proj */
      case OP_DENSE:
        break;
      default:
        for (int k = 0; k < n->nin; k++)
          need |= G->needs[n->in[k]];
      }
      if (need && !G->needs[id]) {
        G->needs[id] = true;
        changed = true;
      }
    }
  }
}

/* ------------------------------------------------------------ the mapping */

/* A sequence operand of the reverse scan; returns its row's ARG. */
static int add_seq(Grad *G, int seq, Pos pos) {
  ScanCtx *sc = G->sc;
  if (sc->nseqs == sc->capseqs) {
    int cap = sc->capseqs ? 2 * sc->capseqs : 8;
    int *seqs = arena_alloc(&G->a, (size_t)cap * sizeof *seqs);
    int *args = arena_alloc(&G->a, (size_t)cap * sizeof *args);
    if (sc->nseqs) {
      memcpy(seqs, sc->seqs, (size_t)sc->nseqs * sizeof *seqs);
      memcpy(args, sc->seqargs, (size_t)sc->nseqs * sizeof *args);
    }
    sc->seqs = seqs;
    sc->seqargs = args;
    sc->capseqs = cap;
  }
  int arg = ir_block_arg(G->g, sc->rbody, row_of(node(G, seq)->type), pos);
  sc->seqs[sc->nseqs] = seq;
  sc->seqargs[sc->nseqs++] = arg;
  return arg;
}

/* The value of forward node id where backward code is being emitted. In
 * block 0 that is id itself; in a reverse scan body, a forward body value
 * is re-made (constants), read from the scanned sequence (its rows), or
 * saved by the forward scan and read from the stack. */
static int fwd(Grad *G, int id) {
  ScanCtx *sc = G->sc;
  if (!sc || node(G, id)->block != sc->body)
    return id;
  if (sc->saved[id] >= 0)
    return sc->saved[id];
  Node n = *node(G, id);
  int r;
  if (n.op == OP_CONST) {
    r = cnst(G, sc->rbody, n.f, n.pos);
  } else if (n.op == OP_ZEROS) {
    r = zeros(G, sc->rbody, n.type, n.pos);
  } else if (n.op == OP_ARG && n.a < node(G, sc->scan)->a) {
    r = add_seq(G, node(G, sc->scan)->in[n.a], n.pos);
  } else {
    /* Stack it: reuse the scan's result if the body already yields it. */
    Block *b = &G->g->blocks[sc->body];
    int k = 0;
    while (k < b->nyields && b->yields[k] != id)
      k++;
    if (k == b->nyields)
      ir_yield(G->g, sc->body, id);
    int stack = ir_proj(G->g, 0, sc->scan, k, n.pos);
    r = add_seq(G, stack, n.pos);
  }
  sc->saved[id] = r;
  return r;
}

/* ---------------------------------------------------------- contributions */

static void contrib_piece(Grad *G, int x, int v, int offset, bool piece) {
  Graph *g = G->g;
  if (x >= G->nfwd || !G->needs[x])
    return;
  Node *xn = &g->nodes[x];
  if (xn->op == OP_LOAD) {
    /* A trainable parameter: accumulate into its grad slot. */
    int p = xn->a;
    Pos pos = xn->pos;
    if (piece)
      v = add1(G, OP_PAD, v, offset, (int)type_numel(g->params[p].type), pos);
    ir_add(g, NULL, G->bb, OP_ACC, &v, 1, p, 0, 0, pos);
    return;
  }
  if (G->sc && xn->block != G->sc->body)
    error_at(G->d, xn->pos,
             "cannot differentiate: a cell uses this value, computed outside it; pass it to "
             "the cell as a sequence or a carried state");
  Contrib *c = arena_alloc(&G->a, sizeof *c);
  *c = (Contrib){v, offset, piece, G->contrib[x]};
  G->contrib[x] = c;
}

static void contrib(Grad *G, int x, int v) { contrib_piece(G, x, v, 0, false); }

static int cmp_offset(const void *a, const void *b) {
  const Contrib *x = *(Contrib *const *)a, *y = *(Contrib *const *)b;
  return (x->offset > y->offset) - (x->offset < y->offset);
}

/* The adjoint of x, built from its contributions, or -1 if none. */
static int adjoint(Grad *G, int x) {
  if (G->adj[x] >= 0 || !G->contrib[x])
    return G->adj[x];
  Graph *g = G->g;
  Pos pos = g->nodes[x].pos;
  Type t = g->nodes[x].type;
  int full = -1, npieces = 0;
  for (Contrib *c = G->contrib[x]; c; c = c->next) {
    if (c->piece)
      npieces++;
    else
      full = full < 0 ? c->value : add2(G, OP_ADD, full, c->value, 0, 0, pos);
  }
  if (npieces) {
    Contrib **p = xmalloc((size_t)npieces * sizeof *p);
    int k = 0;
    for (Contrib *c = G->contrib[x]; c; c = c->next)
      if (c->piece)
        p[k++] = c;
    qsort(p, (size_t)npieces, sizeof *p, cmp_offset);
    /* (Slices of a sequence are slices of every row: widths are rows'.) */
    bool disjoint = true;
    for (int i = 1; i < npieces; i++)
      disjoint &= p[i]->offset >= p[i - 1]->offset + type_width(g->nodes[p[i - 1]->value].type);
    if (full < 0 && disjoint) {
      /* Disjoint slices: concatenate them, zeros in the gaps. */
      int acc = -1, at = 0, size = type_width(t);
      for (int i = 0; i <= npieces; i++) {
        int off = i < npieces ? p[i]->offset : size;
        if (off > at) {
          int z = zeros(G, G->bb, type_with_width(t, off - at), pos);
          acc = acc < 0 ? z : add2(G, OP_CONCAT, acc, z, 0, 0, pos);
        }
        if (i < npieces) {
          acc = acc < 0 ? p[i]->value : add2(G, OP_CONCAT, acc, p[i]->value, 0, 0, pos);
          at = off + type_width(g->nodes[p[i]->value].type);
        }
      }
      full = acc;
    } else {
      for (int i = 0; i < npieces; i++) {
        int v = add1(G, OP_PAD, p[i]->value, p[i]->offset, type_width(t), pos);
        full = full < 0 ? v : add2(G, OP_ADD, full, v, 0, 0, pos);
      }
    }
    free(p);
  }
  G->adj[x] = full;
  return full;
}

/* Sums a vector cotangent for an operand that was a broadcast scalar. */
static int unbroadcast(Grad *G, int v, int operand, Pos pos) {
  if (G->g->nodes[operand].type.rank == 0 && G->g->nodes[v].type.rank > 0)
    return add1(G, OP_SUM, v, 0, 0, pos);
  return v;
}

/* ------------------------------------------------------------ vjp rules */

static void vjp_scan(Grad *G, int s);

/* One case per op: given the adjoint gy of node id, contribute to the
 * operands' adjoints. */
static void vjp(Grad *G, int id, int gy) {
  Node n = *node(G, id);
  int a = n.nin > 0 ? n.in[0] : -1, b = n.nin > 1 ? n.in[1] : -1;
  Pos pos = n.pos;
#define NEEDS(x) ((x) >= 0 && (x) < G->nfwd && G->needs[x])
  switch (n.op) {
  case OP_ADD:
    if (NEEDS(a))
      contrib(G, a, unbroadcast(G, gy, a, pos));
    if (NEEDS(b))
      contrib(G, b, unbroadcast(G, gy, b, pos));
    break;
  case OP_SUB:
    if (NEEDS(a))
      contrib(G, a, unbroadcast(G, gy, a, pos));
    if (NEEDS(b))
      contrib(G, b, unbroadcast(G, add1(G, OP_NEG, gy, 0, 0, pos), b, pos));
    break;
  case OP_MUL:
    if (NEEDS(a))
      contrib(G, a, unbroadcast(G, add2(G, OP_MUL, gy, fwd(G, b), 0, 0, pos), a, pos));
    if (NEEDS(b))
      contrib(G, b, unbroadcast(G, add2(G, OP_MUL, gy, fwd(G, a), 0, 0, pos), b, pos));
    break;
  case OP_DIV: {
    /* y = a / b: da = gy / b, db = -gy * y / b */
    int fb = fwd(G, b);
    if (NEEDS(a))
      contrib(G, a, unbroadcast(G, add2(G, OP_DIV, gy, fb, 0, 0, pos), a, pos));
    if (NEEDS(b)) {
      int t = add2(G, OP_MUL, gy, add2(G, OP_DIV, fwd(G, id), fb, 0, 0, pos), 0, 0, pos);
      contrib(G, b, unbroadcast(G, add1(G, OP_NEG, t, 0, 0, pos), b, pos));
    }
    break;
  }
  case OP_NEG:
    contrib(G, a, add1(G, OP_NEG, gy, 0, 0, pos));
    break;
  case OP_SIGMOID: {
    /* s' = s (1 - s) */
    int s = fwd(G, id);
    int one_minus = add2(G, OP_SUB, cnst(G, G->bb, 1, pos), s, 0, 0, pos);
    contrib(G, a, add2(G, OP_MUL, gy, add2(G, OP_MUL, s, one_minus, 0, 0, pos), 0, 0, pos));
    break;
  }
  case OP_TANH: {
    /* t' = 1 - t^2 */
    int t = fwd(G, id);
    int d = add2(G, OP_SUB, cnst(G, G->bb, 1, pos), add2(G, OP_MUL, t, t, 0, 0, pos), 0, 0, pos);
    contrib(G, a, add2(G, OP_MUL, gy, d, 0, 0, pos));
    break;
  }
  case OP_EXP:
    contrib(G, a, add2(G, OP_MUL, gy, fwd(G, id), 0, 0, pos));
    break;
  case OP_LOG:
    contrib(G, a, add2(G, OP_DIV, gy, fwd(G, a), 0, 0, pos));
    break;
  case OP_SQRT: {
    /* (sqrt x)' = 0.5 / sqrt x */
    int h = add2(G, OP_DIV, cnst(G, G->bb, 0.5, pos), fwd(G, id), 0, 0, pos);
    contrib(G, a, add2(G, OP_MUL, gy, h, 0, 0, pos));
    break;
  }
  case OP_RELU:
    /* relu' = (x > 0): the adjoint where the result is positive */
    contrib(G, a, add2(G, OP_RELU_GRAD, gy, fwd(G, id), 0, 0, pos));
    break;
  case OP_CONCAT: {
    int na = type_width(node(G, a)->type), nb = type_width(node(G, b)->type);
    if (NEEDS(a))
      contrib(G, a, add1(G, OP_SLICE, gy, 0, na, pos));
    if (NEEDS(b))
      contrib(G, b, add1(G, OP_SLICE, gy, na, na + nb, pos));
    break;
  }
  case OP_SLICE:
    contrib_piece(G, a, gy, n.a, true);
    break;
  case OP_PAD:
    contrib(G, a, add1(G, OP_SLICE, gy, n.a, n.a + type_width(node(G, a)->type), pos));
    break;
  case OP_SUM:
    /* Broadcast the scalar back: zeros + gy. */
    contrib(G, a, add2(G, OP_ADD, zeros(G, G->bb, node(G, a)->type, pos), gy, 0, 0, pos));
    break;
  case OP_MATVEC: {
    /* y = W[:, k0:k0+n] v: dW[:, k0:] += gy v^T, dv = W[:, k0:k0+n]^T gy */
    Node *w = node(G, a);
    if (w->op == OP_LOAD && NEEDS(a)) {
      int in[2] = {gy, fwd(G, b)};
      ir_add(G->g, NULL, G->bb, OP_ACC_OUTER, in, 2, w->a, n.a, 0, pos);
    } else if (NEEDS(a)) {
      error_at(G->d, pos, "cannot differentiate a product with a computed matrix");
    }
    if (NEEDS(b))
      contrib(G, b, add2(G, OP_MATVEC_T, a, gy, n.a, type_width(node(G, b)->type), pos));
    break;
  }
  case OP_MATVEC_T: {
    /* y = W[:, k0:k0+n]^T u: du = W[:, k0:k0+n] gy, dW[:, k0:] += u gy^T */
    Node *w = node(G, a);
    if (w->op == OP_LOAD && NEEDS(a)) {
      int in[2] = {fwd(G, b), gy};
      ir_add(G->g, NULL, G->bb, OP_ACC_OUTER, in, 2, w->a, n.a, 0, pos);
    } else if (NEEDS(a)) {
      error_at(G->d, pos, "cannot differentiate a product with a computed matrix");
    }
    if (NEEDS(b))
      contrib(G, b, add2(G, OP_MATVEC, a, gy, n.a, n.a || n.b != node(G, a)->type.dim[1] ? n.b : 0, pos));
    break;
  }
  case OP_DROPOUT:
    /* y = a kept and scaled where the draw b says: da = gy masked the same
     * way; b is noise (nothing to differentiate) */
    if (NEEDS(a))
      contrib(G, a, ir_add(G->g, NULL, G->bb, OP_DROPOUT, (int[]){gy, fwd(G, b)}, 2, 0, 0, n.f, pos));
    break;
  case OP_POW: {
    /* y = a^b: da = gy b a^(b-1), db = gy y log a */
    if (NEEDS(a)) {
      int bm1 = add2(G, OP_SUB, fwd(G, b), cnst(G, G->bb, 1, pos), 0, 0, pos);
      int d = add2(G, OP_MUL, fwd(G, b), add2(G, OP_POW, fwd(G, a), bm1, 0, 0, pos), 0, 0, pos);
      contrib(G, a, unbroadcast(G, add2(G, OP_MUL, gy, d, 0, 0, pos), a, pos));
    }
    if (NEEDS(b)) {
      int d = add2(G, OP_MUL, fwd(G, id), add1(G, OP_LOG, fwd(G, a), 0, 0, pos), 0, 0, pos);
      contrib(G, b, unbroadcast(G, add2(G, OP_MUL, gy, d, 0, 0, pos), b, pos));
    }
    break;
  }
  case OP_SCATTER:
    contrib(G, a, add2(G, OP_PICK, gy, fwd(G, b), 0, 0, pos));
    break;
  case OP_PUT_LAST:
    contrib(G, a, add1(G, OP_LAST, gy, 0, 0, pos));
    break;
  case OP_PUT_FIRST:
    contrib(G, a, add1(G, OP_FIRST, gy, 0, 0, pos));
    break;
  case OP_LOG_SOFTMAX: {
    /* y = x - logsumexp(x): dx = gy - exp(y) sum(gy) */
    int p = add1(G, OP_EXP, fwd(G, id), 0, 0, pos);
    int s = add1(G, OP_SUM, gy, 0, 0, pos);
    contrib(G, a, add2(G, OP_SUB, gy, add2(G, OP_MUL, p, s, 0, 0, pos), 0, 0, pos));
    break;
  }
  case OP_PICK:
    contrib(G, a, add2(G, OP_SCATTER, gy, fwd(G, b), 0, 0, pos));
    break;
  case OP_LAST:
    contrib(G, a, add1(G, OP_PUT_LAST, gy, 0, 0, pos));
    break;
  case OP_FIRST:
    contrib(G, a, add1(G, OP_PUT_FIRST, gy, 0, 0, pos));
    break;
  case OP_PROJ:
    break; /* the scan reads its projections' adjoints */
  case OP_SCAN:
    if (G->sc)
      error_at(G->d, pos, "cannot differentiate a scan inside a scan's cell");
    vjp_scan(G, id);
    break;
  case OP_LOAD:
  case OP_INPUT:
  case OP_TARGET:
  case OP_CONST:
  case OP_ZEROS:
  case OP_NOISE:
  case OP_ARG:
  case OP_DENSE:
    break; /* leaves: parameters took their gradient in contrib() */
  default:
    error_at(G->d, pos, "no derivative rule for '%s'", op_names[n.op]);
  }
#undef NEEDS
}

/* The reverse scan of forward scan s (see the comment at the top). */
static void vjp_scan(Grad *G, int s) {
  Graph *g = G->g;
  Node S = *node(G, s);
  int nseq = S.a, ncarry = S.b;
  Pos pos = S.pos;
  int nyield0 = g->blocks[S.region].nyields;

  /* The adjoints of the scan's stacked results, from its projections. */
  /* Temporaries live in the arena: an error longjmps out of here. */
  int *out_adj = arena_alloc(&G->a, (size_t)(nyield0 + 1) * sizeof *out_adj);
  for (int k = 0; k < nyield0; k++)
    out_adj[k] = -1;
  for (int p = s + 1; p < G->nfwd; p++) {
    Node *pn = &g->nodes[p];
    if (pn->op == OP_PROJ && pn->in[0] == s && G->adj[p] >= 0) {
      int k = pn->a;
      out_adj[k] = out_adj[k] < 0 ? G->adj[p] : add2(G, OP_ADD, out_adj[k], G->adj[p], 0, 0, pos);
    }
  }
  bool any = false;
  for (int k = 0; k < nyield0; k++)
    any |= out_adj[k] >= 0;
  if (!any)
    return; /* no result of this scan reaches the loss */

  ScanCtx sc = {.scan = s, .body = S.region};
  sc.rbody = ir_new_block(g, 0);
  sc.saved = arena_alloc(&G->a, (size_t)G->nfwd * sizeof *sc.saved);
  for (int i = 0; i < G->nfwd; i++)
    sc.saved[i] = -1;
  G->sc = &sc;
  G->bb = sc.rbody;

  /* Carried adjoints: d(carry j) flowing back from step t+1. */
  int *carg = arena_alloc(&G->a, (size_t)ncarry * sizeof *carg);
  for (int j = 0; j < ncarry; j++)
    carg[j] = ir_block_arg(g, sc.rbody, node(G, S.in[nseq + j])->type, pos);

  /* Seed: the carried adjoint plus this step's row of the results' adjoints. */
  for (int k = 0; k < nyield0; k++) {
    int y = g->blocks[S.region].yields[k];
    int seed = k < ncarry ? carg[k] : -1;
    if (out_adj[k] >= 0) {
      int row = add_seq(G, out_adj[k], pos);
      seed = seed < 0 ? row : add2(G, OP_ADD, seed, row, 0, 0, pos);
    }
    if (seed >= 0)
      contrib(G, y, seed);
  }

  /* The body, backwards. */
  int nbody = g->blocks[S.region].n;
  for (int i = nbody - 1; i >= 0; i--) {
    int id = g->blocks[S.region].nodes[i];
    if (node(G, id)->op == OP_ARG || !G->needs[id])
      continue;
    int gy = adjoint(G, id);
    if (gy >= 0)
      vjp(G, id, gy);
  }

  /* Yields: the adjoints of the carried states at step t-1, then of each
   * differentiable sequence row. */
  for (int j = 0; j < ncarry; j++) {
    int arg = g->blocks[S.region].args[nseq + j];
    int v = G->needs[arg] ? adjoint(G, arg) : -1;
    ir_yield(g, sc.rbody, v >= 0 ? v : zeros(G, sc.rbody, node(G, arg)->type, pos));
  }
  int *seq_out = arena_alloc(&G->a, (size_t)nseq * sizeof *seq_out);
  int nout = 0;
  for (int i = 0; i < nseq; i++) {
    seq_out[i] = -1;
    if (!G->needs[S.in[i]])
      continue;
    int arg = g->blocks[S.region].args[i];
    int v = adjoint(G, arg);
    ir_yield(g, sc.rbody, v >= 0 ? v : zeros(G, sc.rbody, node(G, arg)->type, pos));
    seq_out[i] = ncarry + nout++;
  }

  /* Arguments in scan order: sequence rows first, then the carries. */
  Block *rb = &g->blocks[sc.rbody];
  int k = 0;
  for (int i = 0; i < sc.nseqs; i++)
    rb->args[k++] = sc.seqargs[i];
  for (int j = 0; j < ncarry; j++)
    rb->args[k++] = carg[j];
  for (int i = 0; i < rb->nargs; i++)
    g->nodes[rb->args[i]].a = i;

  G->sc = NULL;
  G->bb = 0;
  int *inits = arena_alloc(&G->a, (size_t)ncarry * sizeof *inits);
  for (int j = 0; j < ncarry; j++)
    inits[j] = zeros(G, 0, node(G, S.in[nseq + j])->type, pos);
  int rs = ir_scan(g, G->d, 0, sc.seqs, sc.nseqs, inits, ncarry, sc.rbody, !S.c, pos);

  /* The carried stack's row for the step processed last (row 0 when the
   * forward scan ran forwards) is the adjoint of the initial state; the
   * sequence adjoints flow to the layer below. */
  for (int j = 0; j < ncarry; j++)
    if (G->needs[S.in[nseq + j]])
      contrib(G, S.in[nseq + j],
              add1(G, S.c ? OP_LAST : OP_FIRST, ir_proj(g, 0, rs, j, pos), 0, 0, pos));
  for (int i = 0; i < nseq; i++)
    if (seq_out[i] >= 0)
      contrib(G, S.in[i], ir_proj(g, 0, rs, seq_out[i], pos));
}

/* ---------------------------------------------------------------- update */

/* max(x, 0), which the IR writes with min. */
static int relu(Grad *G, int x, Pos pos) {
  int z = cnst(G, 0, 0, pos);
  return add1(G, OP_NEG, add2(G, OP_MIN, z, add1(G, OP_NEG, x, 0, 0, pos), 0, 0, pos), 0, 0, pos);
}

/* The learning rate at step t (1-based; the rate is a constant without a
 * schedule). After `warmup` steps of linear warmup, lr * min(1, t / warmup),
 * d = max(0, t - 1 - warmup) steps of decay have passed: step, lr *
 * gamma^floor(d / decay) (PyTorch's StepLR); cosine, min_lr + (lr - min_lr)
 * (1 + cos(pi min(1, d / decay))) / 2 (CosineAnnealingLR, held at min_lr
 * after `decay` steps). The warmup factor multiplies the decayed rate. */
static int scheduled_lr(Grad *G, int step, Pos pos) {
  const TrainConfig *t = &G->g->train;
  int lr = cnst(G, 0, t->lr, pos);
  int one = cnst(G, 0, 1, pos);
  if (t->sched != SCHED_CONSTANT) {
    int d = add2(G, OP_SUB, step, cnst(G, 0, 1.0 + t->warmup, pos), 0, 0, pos);
    if (t->warmup)
      d = relu(G, d, pos);
    int frac = add2(G, OP_DIV, d, cnst(G, 0, t->decay, pos), 0, 0, pos);
    if (t->sched == SCHED_STEP) {
      int k = add1(G, OP_FLOOR, frac, 0, 0, pos);
      lr = add2(G, OP_MUL, lr, add2(G, OP_POW, cnst(G, 0, t->gamma, pos), k, 0, 0, pos), 0, 0, pos);
    } else {
      int prog = add2(G, OP_MIN, frac, one, 0, 0, pos);
      int angle = add2(G, OP_MUL, prog, cnst(G, 0, 3.14159265358979323846, pos), 0, 0, pos);
      int c = add1(G, OP_COS, angle, 0, 0, pos);
      int half = add2(G, OP_MUL, add2(G, OP_ADD, one, c, 0, 0, pos), cnst(G, 0, 0.5, pos), 0, 0, pos);
      int span = cnst(G, 0, t->lr - t->min_lr, pos);
      lr = add2(G, OP_ADD, cnst(G, 0, t->min_lr, pos), add2(G, OP_MUL, span, half, 0, 0, pos), 0, 0, pos);
    }
  }
  if (t->warmup) {
    int w = add2(G, OP_DIV, step, cnst(G, 0, t->warmup, pos), 0, 0, pos);
    lr = add2(G, OP_MUL, lr, add2(G, OP_MIN, w, one, 0, 0, pos), 0, 0, pos);
  }
  return lr;
}

/* Clipping and the optimizer step as PyTorch 1.13 computes them
 * (torch.nn.utils.clip_grad_norm_, torch.optim.Adam, AdamW and SGD with
 * foreach=False): the same operations in the same order. Both run over the
 * whole flat buffer at once (PARAM_ALL): buffers and padding have zero
 * gradients and zero moments, so the update leaves them exactly as they
 * are (weight decay too: it scales or adds zero). */
static void emit_update(Grad *G) {
  Graph *g = G->g;
  const TrainConfig *t = &g->train;
  Pos pos = {0, 0};
  G->bb = 0;
  /* The global L2 norm of all gradients, only where clipping needs it: it
   * is a pass of its own over the gradients (9% of a gru.nn step). */
  int gr = ir_add(g, NULL, 0, OP_LOAD, NULL, 0, PARAM_ALL, SLOT_GRAD, 0, pos);
  if (t->clip_norm > 0) {
    int total = add1(G, OP_SUM, add2(G, OP_MUL, gr, gr, 0, 0, pos), 0, 0, pos);
    g->grad_norm = add1(G, OP_SQRT, total, 0, 0, pos);
    /* clip_coef = max_norm / (total_norm + 1e-6), clamped to 1 */
    int den = add2(G, OP_ADD, g->grad_norm, cnst(G, 0, 1e-6, pos), 0, 0, pos);
    int c = add2(G, OP_DIV, cnst(G, 0, t->clip_norm, pos), den, 0, 0, pos);
    int coef = add2(G, OP_MIN, c, cnst(G, 0, 1, pos), 0, 0, pos);
    gr = add2(G, OP_MUL, gr, coef, 0, 0, pos);
  }
  /* (in this order: the nodes of a graph without the options below are
   * those of before, so are its IR and its kernels) */
  bool sched = t->sched != SCHED_CONSTANT || t->warmup;
  int lr = sched ? -1 : cnst(G, 0, t->lr, pos);
  int w = ir_add(g, NULL, 0, OP_LOAD, NULL, 0, PARAM_ALL, SLOT_VALUE, 0, pos);
  int step = -1;
  if (t->optim != OPTIM_SGD || sched || t->dampening > 0)
    step = ir_leaf(g, 0, OP_STEP, type_scalar(), 0, 0, pos);
  if (sched)
    lr = scheduled_lr(G, step, pos);
  int gr0 = gr; /* the gradient itself, for the NaN check below */
  /* L2 weight decay (Adam, SGD): grad += weight_decay * w */
  if (t->weight_decay > 0 && t->optim != OPTIM_ADAMW)
    gr = add2(G, OP_ADD, gr, add2(G, OP_MUL, w, cnst(G, 0, t->weight_decay, pos), 0, 0, pos), 0, 0, pos);
  int nw;
  if (t->optim == OPTIM_ADAM || t->optim == OPTIM_ADAMW) {
    /* AdamW's decoupled decay first: w = w * (1 - lr * weight_decay) */
    if (t->optim == OPTIM_ADAMW && t->weight_decay > 0) {
      int f = add2(G, OP_MUL, lr, cnst(G, 0, t->weight_decay, pos), 0, 0, pos);
      w = add2(G, OP_MUL, w, add2(G, OP_SUB, cnst(G, 0, 1, pos), f, 0, 0, pos), 0, 0, pos);
    }
    /* bias_correction1 = 1 - beta1^t; step_size = lr / bias_correction1;
     * bias_correction2_sqrt = sqrt(1 - beta2^t) */
    int one = cnst(G, 0, 1, pos);
    int b1 = cnst(G, 0, t->beta1, pos), b2 = cnst(G, 0, t->beta2, pos);
    int bc1 = add2(G, OP_SUB, one, add2(G, OP_POW, b1, step, 0, 0, pos), 0, 0, pos);
    int bc2 = add2(G, OP_SUB, one, add2(G, OP_POW, b2, step, 0, 0, pos), 0, 0, pos);
    int step_size = add2(G, OP_DIV, lr, bc1, 0, 0, pos);
    int bc2_sqrt = add1(G, OP_SQRT, bc2, 0, 0, pos);
    /* m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g g
     * w = w - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps) */
    int m = ir_add(g, NULL, 0, OP_LOAD, NULL, 0, PARAM_ALL, SLOT_M, 0, pos);
    int v = ir_add(g, NULL, 0, OP_LOAD, NULL, 0, PARAM_ALL, SLOT_V, 0, pos);
    int m2 = add2(G, OP_ADD, add2(G, OP_MUL, m, b1, 0, 0, pos),
                  add2(G, OP_MUL, gr, cnst(G, 0, 1 - t->beta1, pos), 0, 0, pos), 0, 0, pos);
    int gg = add2(G, OP_MUL, gr, gr, 0, 0, pos);
    int v2 = add2(G, OP_ADD, add2(G, OP_MUL, v, b2, 0, 0, pos),
                  add2(G, OP_MUL, gg, cnst(G, 0, 1 - t->beta2, pos), 0, 0, pos), 0, 0, pos);
    ir_add(g, NULL, 0, OP_STORE, &m2, 1, PARAM_ALL, SLOT_M, 0, pos);
    ir_add(g, NULL, 0, OP_STORE, &v2, 1, PARAM_ALL, SLOT_V, 0, pos);
    int denom = add2(G, OP_ADD, add2(G, OP_DIV, add1(G, OP_SQRT, v2, 0, 0, pos), bc2_sqrt, 0, 0, pos),
                     cnst(G, 0, t->eps, pos), 0, 0, pos);
    /* PyTorch's addcdiv takes step_size * (m / denom); multiplying first
     * changes the update by at most an ulp and leaves one division. */
    int upd = add2(G, OP_DIV, add2(G, OP_MUL, m2, step_size, 0, 0, pos), denom, 0, 0, pos);
    nw = add2(G, OP_SUB, w, upd, 0, 0, pos);
  } else {
    /* SGD with momentum: buf = momentum buf + (1 - dampening) g (buf = g
     * at the first step, as PyTorch's clone); nesterov: g + momentum buf,
     * else buf; then w - lr g */
    if (t->momentum > 0) {
      int m = ir_add(g, NULL, 0, OP_LOAD, NULL, 0, PARAM_ALL, SLOT_M, 0, pos);
      int keep = gr;
      if (t->dampening > 0) {
        /* 1 - dampening, or 1 at step 1: 1 - dampening min(1, t - 1) */
        int later = add2(G, OP_MIN, add2(G, OP_SUB, step, cnst(G, 0, 1, pos), 0, 0, pos),
                         cnst(G, 0, 1, pos), 0, 0, pos);
        int c = add2(G, OP_SUB, cnst(G, 0, 1, pos),
                     add2(G, OP_MUL, later, cnst(G, 0, t->dampening, pos), 0, 0, pos), 0, 0, pos);
        keep = add2(G, OP_MUL, gr, c, 0, 0, pos);
      }
      int buf = add2(G, OP_ADD, add2(G, OP_MUL, m, cnst(G, 0, t->momentum, pos), 0, 0, pos), keep, 0, 0, pos);
      ir_add(g, NULL, 0, OP_STORE, &buf, 1, PARAM_ALL, SLOT_M, 0, pos);
      int ahead = add2(G, OP_MUL, buf, cnst(G, 0, t->momentum, pos), 0, 0, pos);
      gr = t->nesterov ? add2(G, OP_ADD, gr, ahead, 0, 0, pos) : buf;
    }
    nw = add2(G, OP_SUB, w, add2(G, OP_MUL, gr, lr, 0, 0, pos), 0, 0, pos);
  }
  ir_add(g, NULL, 0, OP_STORE, &nw, 1, PARAM_ALL, SLOT_VALUE, 0, pos);
  /* Without clipping, grad_norm is sum(g * 0): 0 while every gradient is
   * finite, NaN as soon as one is not, so the runtime stops at the step
   * that made it (the next name's loss would take the blame). Last in the
   * block, it joins the update's loop group, which reads every gradient
   * anyway (not a pass of its own, as clipping's norm is); exact, unlike a
   * norm, which overflows on gradients that are only large. */
  if (t->clip_norm <= 0)
    g->grad_norm = add1(G, OP_SUM, add2(G, OP_MUL, gr0, cnst(G, 0, 0, pos), 0, 0, pos), 0, 0,
                        pos);
}

/* ------------------------------------------------------------ entry point */

int grad(Graph *g, Err *e) {
  if (g->stage != STAGE_FORWARD || g->loss < 0)
    return errf(e, "grad: needs a forward graph with a loss");
  Grad *const G = xcalloc(1, sizeof *G);
  Diag d = {.err = e, .src = g->src};
  G->g = g;
  G->d = &d;
  G->nfwd = g->nnodes;
  int nblocks = g->nblocks;
  G->contrib = xcalloc((size_t)G->nfwd, sizeof *G->contrib);
  G->adj = xmalloc((size_t)G->nfwd * sizeof *G->adj);
  G->needs = xcalloc((size_t)G->nfwd, sizeof *G->needs);
  G->owner = xmalloc((size_t)nblocks * sizeof *G->owner);
  int rc = 0;
  if (setjmp(d.jb)) {
    rc = -1;
    goto done;
  }
  for (int i = 0; i < G->nfwd; i++)
    G->adj[i] = -1;
  for (int b = 0; b < nblocks; b++)
    G->owner[b] = -1;
  for (int i = 0; i < G->nfwd; i++) {
    if (g->nodes[i].op != OP_SCAN)
      continue;
    G->owner[g->nodes[i].region] = i;
    if (g->nodes[i].block != 0)
      error_at(&d, g->nodes[i].pos, "cannot differentiate a scan inside a scan's cell");
  }
  compute_needs(G);
  if (!G->needs[g->loss])
    error_at(&d, g->nodes[g->loss].pos, "the loss does not depend on any trainable parameter");

  /* Seed d(loss)/d(loss) = 1 and walk block 0 backwards. */
  G->bb = 0;
  contrib(G, g->loss, cnst(G, 0, 1, g->nodes[g->loss].pos));
  int n0 = g->blocks[0].n;
  G->order = xmalloc((size_t)n0 * sizeof *G->order);
  memcpy(G->order, g->blocks[0].nodes, (size_t)n0 * sizeof *G->order);
  for (int i = n0 - 1; i >= 0; i--) {
    int id = G->order[i];
    if (g->nodes[id].op == OP_SCAN) {
      vjp(G, id, -1); /* reads its projections' adjoints */
      continue;
    }
    if (id >= G->nfwd || !G->needs[id])
      continue;
    int gy = adjoint(G, id);
    if (gy >= 0)
      vjp(G, id, gy);
  }
  emit_update(G);
  g->stage = STAGE_GRAD;
  rc = graph_verify(g, e);
done:
  arena_free(&G->a);
  free(G->contrib);
  free(G->adj);
  free(G->needs);
  free(G->owner);
  free(G->order);
  free(G);
  return rc;
}

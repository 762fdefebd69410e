/* lower.c: AST -> IR. Lowering evaluates the program: compile-time numbers
 * fold, `for` loops unroll, user functions are inlined at each call (so a
 * cell is generic in its shapes), and every tensor operation becomes an IR
 * node with its shape checked where it is written. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

typedef enum ValKind { V_NUM, V_TENSOR, V_TUPLE, V_FUNC, V_PARAM } ValKind;

typedef struct Value {
  ValKind kind;
  double num;  /* V_NUM */
  int node;    /* V_TENSOR: node id; V_PARAM: param index */
  int *nodes;  /* V_TUPLE (arena) */
  int n;       /* V_TUPLE size */
  Stmt *func;  /* V_FUNC */
} Value;

typedef struct Binding Binding;
struct Binding {
  const char *name; /* arena copy, NUL-terminated */
  Value v;
  Pos pos;
  bool rebindable; /* bound by let or for: a later let may rebind it */
  Binding *next;
};

typedef struct Scope Scope;
struct Scope {
  Binding *head;
  Scope *parent;
};

typedef struct Lower {
  Graph *g;
  Diag *d;
  DataSizes sizes; /* data.vocab, data.classes (0: no data) */
  Arena a;
  Scope global;
  int blk;         /* the block nodes are added to */
  int *param_load; /* param index -> its LOAD node in block 0, or -1 */
  int call_depth;
  Pos *param_pos;
  long work; /* work done so far, in 1/STEP steps (see spend) */
  bool looped, called; /* a loop ran, a call was inlined: for spend's message */
  int depth; /* eval and loop recursion, across inlined calls (see enter) */
  bool scheduled; /* a schedule statement was seen */
} Lower;

/* Lowering runs the program, and `for` loops and inlined calls multiply:
 * three nested 1024-iteration loops, or a chain of functions each calling
 * the next twice, would run for hours and build billions of nodes. So all
 * work is charged to one budget: a statement, a loop iteration or an
 * expression (each adds at most a node or two) costs a step; a binding a
 * name lookup passes or a parameter the duplicate check compares (cheap,
 * but quadratic in the parameters a loop declares) costs 1/STEP of one.
 * Any input then lowers in bounded time and memory. gru.nn takes about
 * 360 steps, its L = 256 variant 4.8 * 10^5; L = 300 is over the limit. */
enum { STEP_LIMIT = 1 << 19, STEP = 16 };

static void spend(Lower *L, long n, Pos pos) {
  L->work += n;
  if (L->work > (long)STEP_LIMIT * STEP)
    error_at(L->d, pos, "the graph is too big to lower: %s over %d steps",
             L->looped && L->called ? "unrolling its loops and inlining its calls takes"
             : L->looped            ? "unrolling its loops takes"
             : L->called            ? "inlining its calls takes"
                                    : "its statements and expressions take",
             STEP_LIMIT);
}

/* The parser bounds nesting within one function, but calls are inlined up
 * to 64 deep, so lowering's recursion (eval, and exec_for for loops) could
 * reach 64 times that and overflow the stack. Bound it as a whole. */
enum { DEPTH_LIMIT = 2000 };

static void enter(Lower *L, Pos pos) {
  if (++L->depth > DEPTH_LIMIT)
    error_at(L->d, pos,
             "expressions, loops and calls nested too deeply (over %d levels once calls are "
             "inlined)",
             DEPTH_LIMIT);
}

/* --------------------------------------------------------------- helpers */

static Value num_val(double x) { return (Value){.kind = V_NUM, .num = x}; }
static Value tensor_val(int node) { return (Value){.kind = V_TENSOR, .node = node}; }

static const char *kind_name(ValKind k) {
  switch (k) {
  case V_NUM:
    return "a number";
  case V_TENSOR:
    return "a tensor";
  case V_TUPLE:
    return "several values";
  case V_FUNC:
    return "a function";
  case V_PARAM:
    return "a parameter";
  }
  return "?";
}

/* Scopes are lists: each binding visited is charged to L->work (checked by
 * the next spend), since the global scope grows with the parameters a loop
 * declares. */
static Binding *lookup(Lower *L, Scope *s, const char *name) {
  for (; s; s = s->parent)
    for (Binding *b = s->head; b; b = b->next, L->work++)
      if (!strcmp(b->name, name))
        return b;
  return NULL;
}

static Binding *lookup_local(Lower *L, Scope *s, const char *name) {
  for (Binding *b = s->head; b; b = b->next, L->work++)
    if (!strcmp(b->name, name))
      return b;
  return NULL;
}

static const char *const builtins[] = {"sigmoid", "tanh", "exp", "log", "sqrt", "relu", "concat",
                                       "last", "first", "log_softmax", "sum", "zeros",
                                       "kaiming_uniform", "dropout"};

static bool is_builtin(const char *name) {
  for (size_t i = 0; i < ARRAY_LEN(builtins); i++)
    if (!strcmp(builtins[i], name))
      return true;
  return false;
}

static void bind(Lower *L, Scope *s, const char *name, Value v, Pos pos, bool rebindable) {
  Binding *old = lookup_local(L, s, name);
  if (old) {
    if (old->rebindable && rebindable) {
      old->v = v;
      old->pos = pos;
      return;
    }
    error_at(L->d, pos, "'%s' is already defined (at %d:%d)", name, old->pos.line, old->pos.col);
  }
  if (is_builtin(name))
    error_at(L->d, pos, "'%s' is a built-in operation and cannot be redefined", name);
  Binding *b = arena_alloc(&L->a, sizeof *b);
  b->name = arena_strndup(&L->a, name, strlen(name));
  b->v = v;
  b->pos = pos;
  b->rebindable = rebindable;
  b->next = s->head;
  s->head = b;
}

static Value eval(Lower *L, Scope *s, Expr *e);

/* Evaluates to a compile-time number or reports what it was instead. */
static double eval_num(Lower *L, Scope *s, Expr *e, const char *what) {
  Value v = eval(L, s, e);
  if (v.kind != V_NUM)
    error_at(L->d, e->pos, "%s must be a compile-time number, not %s", what, kind_name(v.kind));
  return v.num;
}

static int eval_int(Lower *L, Scope *s, Expr *e, const char *what, int min) {
  double x = eval_num(L, s, e, what);
  if (x == floor(x) && x > 1 << 24)
    error_at(L->d, e->pos, "%s of %.15g is too large (at most %d)", what, x, 1 << 24);
  if (x != floor(x) || x < min)
    error_at(L->d, e->pos, "%s must be an integer >= %d, not %.9g", what, min, x);
  return (int)x;
}

/* Expands {name} interpolations in an identifier with compile-time
 * integers from the scope. */
static char *expand_name(Lower *L, Scope *s, Ident id) {
  Buf b = {0};
  for (int i = 0; i < id.len;) {
    if (id.s[i] != '{') {
      buf_put(&b, &id.s[i], 1);
      i++;
      continue;
    }
    int j = i + 1;
    while (id.s[j] != '}')
      j++;
    char var[256];
    snprintf(var, sizeof var, "%.*s", j - i - 1, id.s + i + 1);
    Binding *bd = lookup(L, s, var);
    Pos pos = {id.pos.line, id.pos.col + i};
    if (!bd) {
      buf_free(&b);
      error_at(L->d, pos, "unknown name '%s' in '{%s}'", var, var);
    }
    if (bd->v.kind != V_NUM || bd->v.num != floor(bd->v.num) || fabs(bd->v.num) > 1e9) {
      buf_free(&b);
      error_at(L->d, pos, "'{%s}' needs a compile-time integer", var);
    }
    buf_printf(&b, "%d", (int)bd->v.num);
    i = j + 1;
  }
  buf_put(&b, "", 1);
  char *name = arena_strndup(&L->a, b.data, b.len - 1);
  buf_free(&b);
  return name;
}

static int add_node(Lower *L, Op op, Pos pos, int a, int b, double f, int n, ...) {
  int in[4];
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++)
    in[i] = va_arg(ap, int);
  va_end(ap);
  return ir_add(L->g, L->d, L->blk, op, in, n, a, b, f, pos);
}

static int param_node(Lower *L, int p) {
  if (L->param_load[p] < 0)
    L->param_load[p] = ir_add(L->g, NULL, 0, OP_LOAD, NULL, 0, p, SLOT_VALUE, 0,
                              L->g->params[p].pos);
  return L->param_load[p];
}

/* A value used as a tensor: numbers become CONST scalars. */
static int as_tensor(Lower *L, Value v, Expr *e) {
  switch (v.kind) {
  case V_TENSOR:
    return v.node;
  case V_PARAM:
    return param_node(L, v.node);
  case V_NUM:
    return ir_leaf(L->g, L->blk, OP_CONST, type_scalar(), v.num, 0, e->pos);
  default:
    error_at(L->d, e->pos, "expected a tensor here, not %s", kind_name(v.kind));
  }
}

/* A float operand: one-hot vectors are made dense. */
static int as_float(Lower *L, Value v, Expr *e) {
  int id = as_tensor(L, v, e);
  const Type *t = &L->g->nodes[id].type;
  if (t->kind == TY_ONEHOT && t->rank == 1)
    return add_node(L, OP_DENSE, e->pos, 0, 0, 0, 1, id);
  if (t->kind != TY_F32) {
    char b[64];
    error_at(L->d, e->pos, "expected a float tensor, not %s", type_str(*t, b, sizeof b));
  }
  return id;
}

/* ------------------------------------------------------------ expressions */

static Value call_user(Lower *L, Scope *s, Expr *call, Stmt *def, Value *args, int nargs);

static Value eval_binary(Lower *L, Scope *s, Expr *e) {
  Value l = eval(L, s, e->l), r = eval(L, s, e->r);
  if (l.kind == V_NUM && r.kind == V_NUM) {
    double a = l.num, b = r.num;
    switch (e->op) {
    case '+':
      return num_val(a + b);
    case '-':
      return num_val(a - b);
    case '*':
      return num_val(a * b);
    case '/':
      if (b == 0)
        error_at(L->d, e->pos, "division by zero");
      return num_val(a / b);
    case '%':
      if (b == 0 || a != floor(a) || b != floor(b))
        error_at(L->d, e->pos, "'%%' needs integers and a non-zero divisor");
      return num_val(fmod(a, b));
    case '@':
      error_at(L->d, e->pos, "'@' needs a matrix and a vector, not two numbers");
    case BIN_EQ:
      return num_val(a == b);
    case BIN_NE:
      return num_val(a != b);
    case BIN_LT:
      return num_val(a < b);
    case BIN_LE:
      return num_val(a <= b);
    case BIN_GT:
      return num_val(a > b);
    case BIN_GE:
      return num_val(a >= b);
    }
  }
  if (e->op >= BIN_EQ || e->op == '%')
    error_at(L->d, e->pos, "comparisons and '%%' are for compile-time numbers only");
  if (e->op == '@') {
    /* v @ W with v a vector (or a sequence of them, one-hot or not) and W
     * a parameter: W^T v, PyTorch's matmul of a vector by a matrix. With
     * a one-hot v it is row v of W: nn.Embedding's lookup in its [V, E]
     * table. */
    Type lt = l.kind == V_PARAM    ? L->g->params[l.node].type
              : l.kind == V_TENSOR ? L->g->nodes[l.node].type
                                   : type_scalar();
    bool rows = (lt.rank == 1 && lt.dim[0] != DIM_T) || (lt.rank == 2 && lt.dim[0] == DIM_T);
    if ((l.kind == V_PARAM || l.kind == V_TENSOR) && rows && lt.kind != TY_CLASS) {
      Type rt = r.kind == V_PARAM ? L->g->params[r.node].type : type_scalar();
      if (r.kind != V_PARAM || rt.rank != 2)
        error_at(L->d, e->r->pos,
                 "the right operand of a vector @ matrix product must be a matrix parameter "
                 "(products with computed matrices are not supported)");
      int w = as_tensor(L, r, e->r), v = as_tensor(L, l, e->l);
      return tensor_val(add_node(L, OP_MATVEC_T, e->pos, 0, rt.dim[1], 0, 2, w, v));
    }
    if (l.kind != V_PARAM && l.kind != V_TENSOR)
      error_at(L->d, e->l->pos, "the left operand of @ must be a matrix, not %s",
               kind_name(l.kind));
    if (l.kind != V_PARAM)
      error_at(L->d, e->l->pos,
               "the left operand of @ must be a parameter (products of computed matrices are "
               "not supported)");
    int w = as_tensor(L, l, e->l);
    int v = as_tensor(L, r, e->r);
    return tensor_val(add_node(L, OP_MATVEC, e->pos, 0, 0, 0, 2, w, v));
  }
  Op op = e->op == '+' ? OP_ADD : e->op == '-' ? OP_SUB : e->op == '*' ? OP_MUL : OP_DIV;
  int a = as_float(L, l, e->l), b = as_float(L, r, e->r);
  return tensor_val(add_node(L, op, e->pos, 0, 0, 0, 2, a, b));
}

static Value eval_index(Lower *L, Scope *s, Expr *e) {
  Value base = eval(L, s, e->l);
  if (!e->c) {
    Value ix = eval(L, s, e->r);
    int v = as_tensor(L, base, e->l);
    Type it = ix.kind == V_TENSOR ? L->g->nodes[ix.node].type : type_scalar();
    if (it.kind == TY_CLASS)
      return tensor_val(add_node(L, OP_PICK, e->pos, 0, 0, 0, 2, v, ix.node));
    /* W[x], a [V, E] parameter and a one-hot x (a sequence of them): row x
     * of W, nn.Embedding's lookup; the same node as x @ W. */
    if (it.kind == TY_ONEHOT && base.kind == V_PARAM && L->g->params[base.node].type.rank == 2)
      return tensor_val(add_node(L, OP_MATVEC_T, e->pos, 0, L->g->params[base.node].type.dim[1],
                                 0, 2, v, ix.node));
    error_at(L->d, e->r->pos,
             "an index must be the class target (v[y]) or, for a matrix parameter, a one-hot "
             "character (W[x], its row x); for a part of a vector write v[lo:hi]");
  }
  int lo = eval_int(L, s, e->r, "a slice bound", 0);
  int hi = eval_int(L, s, e->c, "a slice bound", 0);
  int v = as_float(L, base, e->l);
  return tensor_val(add_node(L, OP_SLICE, e->pos, lo, hi, 0, 1, v));
}

static void check_nargs(Lower *L, Expr *e, int want) {
  if (e->nargs != want)
    error_at(L->d, e->pos, "'%.*s' takes %d argument%s, got %d", e->name.len, e->name.s, want,
             want == 1 ? "" : "s", e->nargs);
  if (e->ntargs)
    error_at(L->d, e->pos, "'%.*s' takes no compile-time arguments", e->name.len, e->name.s);
}

static double relu(double x) { return x > 0 ? x : 0; }

static Value eval_builtin(Lower *L, Scope *s, Expr *e, const char *name) {
  if (e->keys)
    error_at(L->d, e->keys[0].pos, "'%s' takes no named arguments", name);
  if (e->ntargs)
    error_at(L->d, e->pos, "'%s' takes no compile-time arguments", name);
  static const struct {
    const char *name;
    Op op;
    double (*fold)(double);
  } unary[] = {{"sigmoid", OP_SIGMOID, NULL}, {"tanh", OP_TANH, tanh}, {"exp", OP_EXP, exp},
               {"log", OP_LOG, log},          {"sqrt", OP_SQRT, sqrt},  {"relu", OP_RELU, relu}};
  for (size_t i = 0; i < ARRAY_LEN(unary); i++) {
    if (strcmp(name, unary[i].name))
      continue;
    check_nargs(L, e, 1);
    Value x = eval(L, s, e->args[0]);
    if (x.kind == V_NUM) {
      double r = unary[i].fold ? unary[i].fold(x.num) : 1 / (1 + exp(-x.num));
      if (!isfinite(r))
        error_at(L->d, e->pos, "%s(%g) is not a finite number", name, x.num);
      return num_val(r);
    }
    return tensor_val(add_node(L, unary[i].op, e->pos, 0, 0, 0, 1, as_float(L, x, e->args[0])));
  }
  if (!strcmp(name, "concat")) {
    if (e->nargs < 2)
      error_at(L->d, e->pos, "'concat' takes two or more vectors, got %d", e->nargs);
    int acc = as_float(L, eval(L, s, e->args[0]), e->args[0]);
    for (int i = 1; i < e->nargs; i++) {
      int next = as_float(L, eval(L, s, e->args[i]), e->args[i]);
      acc = add_node(L, OP_CONCAT, e->pos, 0, 0, 0, 2, acc, next);
    }
    return tensor_val(acc);
  }
  if (!strcmp(name, "last") || !strcmp(name, "first") || !strcmp(name, "log_softmax") ||
      !strcmp(name, "sum")) {
    check_nargs(L, e, 1);
    Op op = name[0] == 'l' ? (name[1] == 'a' ? OP_LAST : OP_LOG_SOFTMAX)
                           : name[0] == 'f' ? OP_FIRST : OP_SUM;
    int x = as_tensor(L, eval(L, s, e->args[0]), e->args[0]);
    return tensor_val(add_node(L, op, e->pos, 0, 0, 0, 1, x));
  }
  if (!strcmp(name, "zeros") || !strcmp(name, "kaiming_uniform")) {
    /* zeros(n): a vector of zeros; kaiming_uniform(n): U(-sqrt(6/n),
     * sqrt(6/n)) noise, drawn afresh every time the kernel runs. */
    check_nargs(L, e, 1);
    int n = eval_int(L, s, e->args[0], "a size", 1);
    if (name[0] == 'z')
      return tensor_val(ir_leaf(L->g, L->blk, OP_ZEROS, type_vec(n), 0, 0, e->pos));
    return tensor_val(ir_leaf(L->g, L->blk, OP_NOISE, type_vec(n), sqrt(6.0 / n), 0, e->pos));
  }
  if (!strcmp(name, "dropout")) {
    /* dropout(v, p): in training, each element of v zeroed with
     * probability p and the rest scaled by 1/(1-p), from noise the runtime
     * draws for every name; the identity in inference (graph_passes). */
    check_nargs(L, e, 2);
    int v = as_float(L, eval(L, s, e->args[0]), e->args[0]);
    Value p = eval(L, s, e->args[1]);
    if (p.kind != V_NUM || !(p.num >= 0 && p.num < 1))
      error_at(L->d, e->args[1]->pos, "dropout's probability must be a number in [0, 1)");
    Type t = L->g->nodes[v].type;
    if (t.rank != 1 || type_is_seq(t))
      error_at(L->d, e->args[0]->pos,
               "dropout takes a vector (its noise is drawn once per name); a sequence or a "
               "matrix is not supported");
    if (L->blk != 0)
      error_at(L->d, e->pos,
               "dropout inside a scan's cell is not supported (its noise is drawn once per "
               "name, not per step): apply it to a vector outside the scan");
    int u = ir_leaf(L->g, 0, OP_NOISE, t, 1, 0, e->pos);
    return tensor_val(add_node(L, OP_DROPOUT, e->pos, 0, 0, p.num, 2, v, u));
  }
  abort(); /* is_builtin and this function list the same names */
}

static Value eval_call(Lower *L, Scope *s, Expr *e) {
  char name[256];
  snprintf(name, sizeof name, "%.*s", e->name.len, e->name.s);
  if (is_builtin(name))
    return eval_builtin(L, s, e, name);
  Binding *b = lookup(L, s, name);
  if (!b)
    error_at(L->d, e->pos, "unknown function '%s'", name);
  if (b->v.kind != V_FUNC)
    error_at(L->d, e->pos, "'%s' is %s, not a function", name, kind_name(b->v.kind));
  if (e->keys)
    error_at(L->d, e->pos, "named arguments are only for the optimizer");
  Value *args = arena_alloc(&L->a, (size_t)(e->nargs + 1) * sizeof *args);
  for (int i = 0; i < e->nargs; i++)
    args[i] = eval(L, s, e->args[i]);
  return call_user(L, s, e, b->v.func, args, e->nargs);
}

static Value eval_scan(Lower *L, Scope *s, Expr *e) {
  char name[256];
  snprintf(name, sizeof name, "%.*s", e->name.len, e->name.s);
  Binding *b = lookup(L, s, name);
  if (!b || b->v.kind != V_FUNC)
    error_at(L->d, e->name.pos, "'%s' is not a function defined with 'def'%s", name,
             strcmp(name, "reverse") ? "" : " ('scan reverse CELL over ...' scans backwards)");
  Stmt *def = b->v.func;
  int nseq = e->nover, ncarry = e->nargs - e->nover;
  if (def->nnames != e->nargs)
    error_at(L->d, e->name.pos,
             "'%s' takes %d argument%s, but the scan passes %d (%d sequence%s and %d state%s)",
             name, def->nnames, def->nnames == 1 ? "" : "s", e->nargs, nseq, nseq == 1 ? "" : "s",
             ncarry, ncarry == 1 ? "" : "s");
  int *ops = arena_alloc(&L->a, (size_t)e->nargs * sizeof *ops);
  for (int i = 0; i < e->nargs; i++) {
    Value v = eval(L, s, e->args[i]);
    if (v.kind == V_NUM)
      error_at(L->d, e->args[i]->pos, "a scan's %s must be a tensor, not a number",
               i < nseq ? "sequence" : "initial state");
    ops[i] = as_tensor(L, v, e->args[i]);
    Type t = L->g->nodes[ops[i]].type;
    char tb[64];
    if (i < nseq && !(t.rank >= 1 && t.dim[0] == DIM_T))
      error_at(L->d, e->args[i]->pos, "'over' needs a sequence [T, ...], not %s",
               type_str(t, tb, sizeof tb));
    if (i >= nseq && (t.kind != TY_F32 || t.rank != 1 || t.dim[0] == DIM_T))
      error_at(L->d, e->args[i]->pos, "an initial state must be a vector, not %s",
               type_str(t, tb, sizeof tb));
  }
  /* The body: one argument per sequence row and per carried state. */
  int outer = L->blk;
  int body = ir_new_block(L->g, outer);
  Value *args = arena_alloc(&L->a, (size_t)e->nargs * sizeof *args);
  for (int i = 0; i < e->nargs; i++) {
    Type t = L->g->nodes[ops[i]].type;
    if (i < nseq) {
      t.rank--;
      t.dim[0] = t.dim[1];
      t.dim[1] = 0;
    }
    args[i] = tensor_val(ir_block_arg(L->g, body, t, e->args[i]->pos));
  }
  L->blk = body;
  Expr call = *e;
  call.kind = E_CALL;
  Value r = call_user(L, s, &call, def, args, e->nargs);
  int nres = r.kind == V_TUPLE ? r.n : 1;
  if (nres != ncarry)
    error_at(L->d, e->name.pos, "'%s' returns %d value%s for %d carried state%s", name, nres,
             nres == 1 ? "" : "s", ncarry, ncarry == 1 ? "" : "s");
  for (int i = 0; i < ncarry; i++) {
    Value ri = r.kind == V_TUPLE ? tensor_val(r.nodes[i]) : r;
    int y = as_tensor(L, ri, e);
    Type yt = L->g->nodes[y].type, it = L->g->nodes[ops[nseq + i]].type;
    if (!type_eq(yt, it)) {
      char b0[64], b1[64];
      error_at(L->d, e->args[nseq + i]->pos,
               "'%s' returns %s for state %d, which starts as %s: they must match", name,
               type_str(yt, b0, sizeof b0), i + 1, type_str(it, b1, sizeof b1));
    }
    ir_yield(L->g, body, y);
  }
  L->blk = outer;
  int scan = ir_scan(L->g, L->d, outer, ops, nseq, ops + nseq, ncarry, body, e->reverse, e->pos);
  if (ncarry == 1)
    return tensor_val(ir_proj(L->g, outer, scan, 0, e->pos));
  Value t = {.kind = V_TUPLE, .n = ncarry};
  t.nodes = arena_alloc(&L->a, (size_t)ncarry * sizeof *t.nodes);
  for (int i = 0; i < ncarry; i++)
    t.nodes[i] = ir_proj(L->g, outer, scan, i, e->pos);
  return t;
}

static Value eval_expr(Lower *L, Scope *s, Expr *e) {
  switch (e->kind) {
  case E_NUM:
    return num_val(e->num);
  case E_NAME: {
    char *name = expand_name(L, s, e->name);
    Binding *b = lookup(L, s, name);
    if (!b && (!strcmp(name, "data.vocab") || !strcmp(name, "data.classes"))) {
      bool v = name[5] == 'v';
      int n = v ? L->sizes.vocab : L->sizes.classes;
      if (n <= 0)
        error_at(L->d, e->pos,
                 "'%s' is the data set's %s, which this command does not have (train, eval, "
                 "predict and build take it from the data or the checkpoint, rnnc compile from "
                 "%s)",
                 name, v ? "vocabulary size" : "number of labels", v ? "--vocab-size" : "--classes");
      return num_val(n);
    }
    if (!b)
      error_at(L->d, e->pos, "unknown name '%s'", name);
    if (b->v.kind == V_FUNC)
      error_at(L->d, e->pos, "'%s' is a function: call it, or scan it with 'scan %s over ...'",
               name, name);
    return b->v;
  }
  case E_BIN:
    return eval_binary(L, s, e);
  case E_NEG: {
    Value v = eval(L, s, e->l);
    if (v.kind == V_NUM)
      return num_val(-v.num);
    return tensor_val(add_node(L, OP_NEG, e->pos, 0, 0, 0, 1, as_float(L, v, e->l)));
  }
  case E_CALL:
    return eval_call(L, s, e);
  case E_INDEX:
    return eval_index(L, s, e);
  case E_COND:
    return eval_num(L, s, e->c, "the condition of '?:'") != 0 ? eval(L, s, e->l)
                                                                : eval(L, s, e->r);
  case E_SCAN:
    error_at(L->d, e->pos, "'scan' can only be the right-hand side of 'let'");
  }
  abort();
}

static Value eval(Lower *L, Scope *s, Expr *e) {
  spend(L, STEP, e->pos);
  enter(L, e->pos);
  Value v = eval_expr(L, s, e);
  L->depth--;
  return v;
}

/* ------------------------------------------------------------- statements */

static bool exec_body(Lower *L, Scope *s, Stmt **body, int n, Value *ret);

static void exec_let(Lower *L, Scope *s, Stmt *st) {
  Value v = st->value->kind == E_SCAN ? eval_scan(L, s, st->value) : eval(L, s, st->value);
  int nv = v.kind == V_TUPLE ? v.n : 1;
  if (nv != st->nnames)
    error_at(L->d, st->names[0].pos, "%d name%s bound to %d value%s", st->nnames,
             st->nnames == 1 ? "" : "s", nv, nv == 1 ? "" : "s");
  for (int i = 0; i < st->nnames; i++) {
    char *name = arena_strndup(&L->a, st->names[i].s, (size_t)st->names[i].len);
    Value vi = v.kind == V_TUPLE ? tensor_val(v.nodes[i]) : v;
    bind(L, s, name, vi, st->names[i].pos, true);
  }
}

/* for l in lo..hi { body }: the body runs once per value, in the
 * enclosing scope (so a let in it rebinds the enclosing name). */
static bool exec_for(Lower *L, Scope *s, Stmt *st, Value *ret, bool top);

static Value call_user(Lower *L, Scope *s, Expr *call, Stmt *def, Value *args, int nargs) {
  char name[256];
  snprintf(name, sizeof name, "%.*s", def->name.len, def->name.s);
  if (nargs != def->nnames)
    error_at(L->d, call->pos, "'%s' takes %d argument%s, got %d", name, def->nnames,
             def->nnames == 1 ? "" : "s", nargs);
  if (call->ntargs != def->ntparams)
    error_at(L->d, call->pos, "'%s' takes %d compile-time argument%s in [], got %d", name,
             def->ntparams, def->ntparams == 1 ? "" : "s", call->ntargs);
  if (L->call_depth > 64)
    error_at(L->d, call->pos, "calls nested more than 64 deep (is '%s' recursive?)", name);
  /* Functions are inlined, so a recursive call could never end. */
  if (def->active)
    error_at(L->d, call->pos, "recursive call to '%s' (functions are inlined: recursion cannot "
                              "end)", name);
  Scope fs = {NULL, &L->global};
  for (int i = 0; i < call->ntargs; i++) {
    double x = eval_num(L, s, call->targs[i], "a compile-time argument");
    char *pn = arena_strndup(&L->a, def->tparams[i].s, (size_t)def->tparams[i].len);
    bind(L, &fs, pn, num_val(x), def->tparams[i].pos, false);
  }
  for (int i = 0; i < nargs; i++) {
    char *pn = arena_strndup(&L->a, def->names[i].s, (size_t)def->names[i].len);
    bind(L, &fs, pn, args[i], def->names[i].pos, true);
  }
  def->active = true;
  L->called = true;
  L->call_depth++;
  Value ret = {0};
  bool returned = exec_body(L, &fs, def->body, def->nbody, &ret);
  L->call_depth--;
  def->active = false;
  if (!returned)
    error_at(L->d, def->name.pos, "function '%s' ends without 'return'", name);
  return ret;
}

/* Runs statements; returns true when a return statement ran (and sets *ret). */
static bool exec_body(Lower *L, Scope *s, Stmt **body, int n, Value *ret) {
  for (int i = 0; i < n; i++) {
    Stmt *st = body[i];
    spend(L, STEP, st->pos);
    switch (st->kind) {
    case S_LET:
      exec_let(L, s, st);
      break;
    case S_FOR:
      if (exec_for(L, s, st, ret, false)) {
        if (i + 1 < n)
          error_at(L->d, body[i + 1]->pos, "unreachable statement after 'return'");
        return true;
      }
      break;
    case S_RETURN: {
      if (st->nexprs == 1) {
        *ret = eval(L, s, st->exprs[0]);
        if (ret->kind == V_FUNC)
          error_at(L->d, st->exprs[0]->pos, "a function cannot return a function");
        return true;
      }
      ret->kind = V_TUPLE;
      ret->n = st->nexprs;
      ret->nodes = arena_alloc(&L->a, (size_t)st->nexprs * sizeof *ret->nodes);
      for (int k = 0; k < st->nexprs; k++)
        ret->nodes[k] = as_tensor(L, eval(L, s, st->exprs[k]), st->exprs[k]);
      return true;
    }
    default:
      error_at(L->d, st->pos, "only 'let', 'for' and 'return' can appear in a function");
    }
  }
  return false;
}

static void exec_top(Lower *L, Stmt *st);

static bool exec_for(Lower *L, Scope *s, Stmt *st, Value *ret, bool top) {
  int lo = eval_int(L, s, st->lo, "a loop bound", 0);
  int hi = eval_int(L, s, st->hi, "a loop bound", 0);
  if (hi - lo > 1024)
    error_at(L->d, st->lo->pos, "a loop of %d iterations (at most 1024)", hi - lo);
  char *var = arena_strndup(&L->a, st->name.s, (size_t)st->name.len);
  enter(L, st->pos);
  for (int i = lo; i < hi; i++) {
    L->looped = true;
    spend(L, STEP, st->pos);
    bind(L, s, var, num_val(i), st->name.pos, true);
    if (top) {
      for (int k = 0; k < st->nbody; k++)
        exec_top(L, st->body[k]);
    } else if (exec_body(L, s, st->body, st->nbody, ret)) {
      L->depth--;
      return true;
    }
  }
  L->depth--;
  return false;
}

static Init init_kind(Lower *L, Expr *e, double *arg, Scope *s) {
  char name[64];
  snprintf(name, sizeof name, "%.*s", e->name.len, e->name.s);
  static const struct {
    const char *name;
    Init init;
    int nargs;
  } inits[] = {{"zeros", INIT_ZEROS, 0},
               {"uniform", INIT_UNIFORM, 1},
               {"linear", INIT_LINEAR, 1},
               {"kaiming_uniform", INIT_KAIMING_UNIFORM, 1},
               {"normal", INIT_NORMAL, 1}};
  for (size_t i = 0; i < ARRAY_LEN(inits); i++) {
    if (strcmp(name, inits[i].name))
      continue;
    if (e->nargs != inits[i].nargs)
      error_at(L->d, e->pos, "initializer '%s' takes %d argument%s, got %d", name,
               inits[i].nargs, inits[i].nargs == 1 ? "" : "s", e->nargs);
    *arg = 0;
    if (e->nargs) {
      *arg = eval_num(L, s, e->args[0], "an initializer's argument");
      if (!(*arg > 0) || !isfinite(*arg))
        error_at(L->d, e->args[0]->pos, "initializer '%s' needs a positive argument, not %g", name,
                 *arg);
    }
    return inits[i].init;
  }
  error_at(L->d, e->pos,
           "unknown initializer '%s' (zeros, uniform(bound), linear(fan_in), "
           "kaiming_uniform(fan_in), normal(std))",
           name);
}

static void exec_param(Lower *L, Scope *s, Stmt *st) {
  Graph *g = L->g;
  char *name = expand_name(L, s, st->name);
  spend(L, g->nparams, st->name.pos); /* the duplicate check below is linear */
  for (int i = 0; i < g->nparams; i++)
    if (!strcmp(g->params[i].name, name))
      error_at(L->d, st->name.pos, "duplicate parameter '%s' (first declared at %d:%d)", name,
               g->params[i].pos.line, g->params[i].pos.col);
  if (st->nexprs > 2)
    error_at(L->d, st->exprs[2]->pos, "a parameter has one or two dimensions, not %d",
             st->nexprs);
  int dims[2];
  for (int i = 0; i < st->nexprs; i++)
    dims[i] = eval_int(L, s, st->exprs[i], "a dimension", 1);
  Param p = {.pos = st->name.pos, .trainable = st->trainable};
  p.type = st->nexprs == 1 ? type_vec(dims[0]) : type_mat(dims[0], dims[1]);
  p.init = init_kind(L, st->init, &p.init_arg, s);
  size_t numel = type_numel(p.type);
  if (g->nfloats + numel > ((size_t)1 << 30))
    error_at(L->d, st->pos, "parameters exceed 2^30 floats");
  p.name = xstrdup(name);
  /* Each tensor starts on a 64-byte boundary of the flat buffer. */
  p.offset = g->nfloats;
  g->nfloats = (g->nfloats + numel + 15) & ~(size_t)15;
  g->params = xrealloc(g->params, (size_t)(g->nparams + 1) * sizeof *g->params);
  g->params[g->nparams] = p;
  L->param_load = xrealloc(L->param_load, (size_t)(g->nparams + 1) * sizeof *L->param_load);
  L->param_load[g->nparams] = -1;
  g->nparams++;
  bind(L, &L->global, name, (Value){.kind = V_PARAM, .node = g->nparams - 1}, st->name.pos, false);
}

static void exec_optimizer(Lower *L, Stmt *st) {
  Expr *e = st->value;
  TrainConfig *t = &L->g->train;
  char name[64];
  snprintf(name, sizeof name, "%.*s", e->name.len, e->name.s);
  if (t->optim != OPTIM_NONE)
    error_at(L->d, st->pos, "a second 'optimizer' statement");
  bool adam = !strcmp(name, "adam") || !strcmp(name, "adamw");
  if (adam) {
    t->optim = name[4] ? OPTIM_ADAMW : OPTIM_ADAM;
    t->lr = 1e-3;
    t->beta1 = 0.9;
    t->beta2 = 0.999;
    t->eps = 1e-8;
    t->weight_decay = name[4] ? 1e-2 : 0; /* PyTorch's defaults */
  } else if (!strcmp(name, "sgd")) {
    t->optim = OPTIM_SGD;
    t->lr = 1e-2;
  } else {
    error_at(L->d, e->pos, "unknown optimizer '%s' (adam, adamw, sgd)", name);
  }
  if (e->nargs && !e->keys)
    error_at(L->d, e->pos, "optimizer settings are named: %s(lr = 0.001, ...)", name);
  double nesterov = 0;
  for (int i = 0; i < e->nargs; i++) {
    char key[64];
    snprintf(key, sizeof key, "%.*s", e->keys[i].len, e->keys[i].s);
    double x = eval_num(L, &L->global, e->args[i], "an optimizer setting");
    bool sgd = t->optim == OPTIM_SGD;
    double *slot = !strcmp(key, "lr")                             ? &t->lr
                   : !strcmp(key, "weight_decay")                 ? &t->weight_decay
                   : adam && !strcmp(key, "beta1")                ? &t->beta1
                   : adam && !strcmp(key, "beta2")                ? &t->beta2
                   : adam && !strcmp(key, "eps")                  ? &t->eps
                   : sgd && !strcmp(key, "momentum")              ? &t->momentum
                   : sgd && !strcmp(key, "dampening")             ? &t->dampening
                   : sgd && !strcmp(key, "nesterov")              ? &nesterov
                                                                  : NULL;
    if (!slot)
      error_at(L->d, e->keys[i].pos, "unknown %s setting '%s'", name, key);
    bool ok = !strcmp(key, "lr") || !strcmp(key, "eps") ? x > 0 && isfinite(x)
              : !strcmp(key, "weight_decay")           ? x >= 0 && x < 1
              : !strcmp(key, "nesterov")               ? x == 0 || x == 1
                                                       : x >= 0 && x < 1;
    if (!ok)
      error_at(L->d, e->args[i]->pos, "%s = %g is out of range", key, x);
    if (x > 0 && (!((float)x > 0) || isinf((float)x))) /* training computes in float32 */
      error_at(L->d, e->args[i]->pos, "%s = %g is %s in float32, the precision of training", key,
               x, (float)x > 0 ? "infinite" : "0");
    *slot = x;
  }
  t->nesterov = nesterov == 1;
  if (t->nesterov && (t->momentum == 0 || t->dampening != 0))
    error_at(L->d, e->pos, "nesterov momentum needs momentum > 0 and dampening = 0 (as PyTorch's)");
}

/* schedule = "schedule" NAME "(" settings ")": the learning rate over the
 * optimizer's steps (grad.c's scheduled_lr). */
static void exec_schedule(Lower *L, Stmt *st) {
  Expr *e = st->value;
  TrainConfig *t = &L->g->train;
  char name[64];
  snprintf(name, sizeof name, "%.*s", e->name.len, e->name.s);
  if (L->scheduled)
    error_at(L->d, st->pos, "a second 'schedule' statement");
  L->scheduled = true;
  SchedKind k = !strcmp(name, "constant") ? SCHED_CONSTANT
                : !strcmp(name, "step")   ? SCHED_STEP
                : !strcmp(name, "cosine") ? SCHED_COSINE
                                          : (SchedKind)-1;
  if ((int)k < 0)
    error_at(L->d, e->pos, "unknown schedule '%s' (constant, step, cosine)", name);
  if (e->nargs && !e->keys)
    error_at(L->d, e->pos, "schedule settings are named: %s(warmup = 100, ...)", name);
  t->sched = k;
  t->gamma = 0.1; /* StepLR's default */
  const char *decay = k == SCHED_STEP ? "every" : k == SCHED_COSINE ? "steps" : NULL;
  bool has_decay = false;
  for (int i = 0; i < e->nargs; i++) {
    char key[64];
    snprintf(key, sizeof key, "%.*s", e->keys[i].len, e->keys[i].s);
    double x = eval_num(L, &L->global, e->args[i], "a schedule setting");
    if (!strcmp(key, "warmup") || (decay && !strcmp(key, decay))) {
      bool w = key[0] == 'w';
      if (x != floor(x) || x < (w ? 0 : 1) || x > (1 << 30))
        error_at(L->d, e->args[i]->pos, "%s = %g is out of range (a whole number of steps%s)", key,
                 x, w ? "" : ", at least 1");
      *(w ? &t->warmup : &t->decay) = (int)x;
      has_decay |= !w;
    } else if (k == SCHED_STEP && !strcmp(key, "gamma")) {
      if (!(x > 0 && x <= 1))
        error_at(L->d, e->args[i]->pos, "gamma = %g is out of range (0, 1]", x);
      t->gamma = x;
    } else if (k == SCHED_COSINE && !strcmp(key, "min_lr")) {
      if (!(x >= 0 && isfinite(x)))
        error_at(L->d, e->args[i]->pos, "min_lr = %g is out of range", x);
      t->min_lr = x;
    } else {
      error_at(L->d, e->keys[i].pos, "unknown %s schedule setting '%s'", name, key);
    }
  }
  if (decay && !has_decay)
    error_at(L->d, e->pos, "the %s schedule needs '%s' (%s(%s = 1000))", name, decay, name, decay);
}

static void exec_top(Lower *L, Stmt *st) {
  Graph *g = L->g;
  Scope *s = &L->global;
  spend(L, STEP, st->pos);
  switch (st->kind) {
  case S_CONST: {
    char *name = arena_strndup(&L->a, st->name.s, (size_t)st->name.len);
    bind(L, s, name, num_val(eval_num(L, s, st->value, "a constant")), st->name.pos, false);
    break;
  }
  case S_INPUT:
  case S_TARGET: {
    bool in = st->kind == S_INPUT;
    if ((in ? g->input : g->target) >= 0)
      error_at(L->d, st->pos, "a second '%s' statement (a graph has one)", in ? "input" : "target");
    int n = eval_int(L, s, st->value,
                     !in ? "the class count" : st->trainable ? "the input width" : "the vocabulary size",
                     1);
    Type t = !in           ? (Type){TY_CLASS, 0, {n, 0}}
             : st->trainable ? (Type){TY_F32, 2, {DIM_T, n}}
                             : (Type){TY_ONEHOT, 2, {DIM_T, n}};
    int id = ir_leaf(g, 0, in ? OP_INPUT : OP_TARGET, t, 0, 0, st->name.pos);
    *(in ? &g->input : &g->target) = id;
    *(in ? &g->vocab : &g->classes) = n;
    char *name = arena_strndup(&L->a, st->name.s, (size_t)st->name.len);
    bind(L, s, name, tensor_val(id), st->name.pos, false);
    break;
  }
  case S_PARAM:
    exec_param(L, s, st);
    break;
  case S_DEF: {
    char *name = arena_strndup(&L->a, st->name.s, (size_t)st->name.len);
    bind(L, s, name, (Value){.kind = V_FUNC, .func = st}, st->name.pos, false);
    break;
  }
  case S_LET:
    exec_let(L, s, st);
    break;
  case S_FOR:
    exec_for(L, s, st, NULL, true);
    break;
  case S_RETURN:
    error_at(L->d, st->pos, "'return' outside a function");
  case S_OUTPUT:
  case S_LOSS: {
    bool out = st->kind == S_OUTPUT;
    if ((out ? g->output : g->loss) >= 0)
      error_at(L->d, st->pos, "a second '%s' statement", out ? "output" : "loss");
    int id = as_tensor(L, eval(L, s, st->value), st->value);
    Type t = g->nodes[id].type;
    char tb[64];
    if (out && (t.kind != TY_F32 || t.rank != 1 || t.dim[0] == DIM_T))
      error_at(L->d, st->value->pos, "the output must be a vector of logits, not %s",
               type_str(t, tb, sizeof tb));
    if (!out && !type_eq(t, type_scalar()))
      error_at(L->d, st->value->pos, "the loss must be a scalar, not %s",
               type_str(t, tb, sizeof tb));
    *(out ? &g->output : &g->loss) = id;
    break;
  }
  case S_OPTIMIZER:
    exec_optimizer(L, st);
    break;
  case S_SCHEDULE:
    exec_schedule(L, st);
    break;
  case S_CLIP: {
    double x = eval_num(L, s, st->value, "the clipping norm");
    if (!(x > 0) || !isfinite(x))
      error_at(L->d, st->value->pos, "the clipping norm must be positive, not %g", x);
    if (g->train.clip_norm > 0)
      error_at(L->d, st->pos, "a second 'clip_grad_norm' statement");
    g->train.clip_norm = x;
    break;
  }
  case S_TRAIN:
    for (int i = 0; i < st->nnames; i++) {
      char key[64];
      snprintf(key, sizeof key, "%.*s", st->names[i].len, st->names[i].s);
      int *slot = !strcmp(key, "epochs") ? &g->train.epochs
                  : !strcmp(key, "batch") ? &g->train.batch
                                          : NULL;
      if (!slot)
        error_at(L->d, st->names[i].pos, "unknown training setting '%s' (epochs, batch)", key);
      *slot = eval_int(L, s, st->exprs[i], key, 1);
    }
    break;
  }
}

Graph *lower(Program *prog, const Src *src, const DataSizes *sizes, Diag *d) {
  Graph *g = graph_new();
  g->train.epochs = 1;
  g->train.batch = 1;
  /* An error longjmps through d: free what lowering owns, then pass it on.
   * (L is on the heap: locals changed after setjmp are lost by longjmp.) */
  Lower *const L = xcalloc(1, sizeof *L);
  L->g = g;
  if (sizes)
    L->sizes = *sizes;
  Diag inner = {.err = d->err, .src = d->src};
  L->d = &inner;
  if (setjmp(inner.jb)) {
    arena_free(&L->a);
    free(L->param_load);
    free(L);
    graph_free(g);
    longjmp(d->jb, 1);
  }
  for (int i = 0; i < prog->nstmts; i++)
    exec_top(L, prog->stmts[i]);
  static const char *const missing[] = {"input", "target", "output", "loss"};
  const int roots[] = {g->input, g->target, g->output, g->loss};
  for (int i = 0; i < 4; i++)
    if (roots[i] < 0)
      error_at(L->d, (Pos){0, 0}, "the graph has no '%s' statement", missing[i]);
  if (g->nodes[g->output].type.dim[0] != g->classes)
    error_at(L->d, g->nodes[g->output].pos, "the output has %d values but the target has %d classes",
             g->nodes[g->output].type.dim[0], g->classes);
  if (g->train.optim == OPTIM_NONE)
    error_at(L->d, (Pos){0, 0}, "the graph has no 'optimizer' statement");
  bool any = false;
  for (int i = 0; i < g->nparams; i++)
    any |= g->params[i].trainable;
  if (!any)
    error_at(L->d, (Pos){0, 0}, "the graph has no trainable 'param'");
  arena_free(&L->a);
  free(L->param_load);
  free(L);
  return g;
}

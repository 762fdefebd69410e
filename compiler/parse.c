/* parse.c: tokens -> AST (Program). Recursive descent; each function has
 * its grammar rule above it. The full grammar is in docs/dsl.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

typedef struct Parser {
  Token *tok;
  Diag *d;
  Arena *a;
  int depth; /* expression and block nesting, bounded so no input overflows the stack */
} Parser;

static bool is_punct(const Token *t, const char *p) {
  return t->kind == TK_PUNCT && t->len == (int)strlen(p) && !memcmp(t->s, p, (size_t)t->len);
}

static bool is_word(const Token *t, const char *w) {
  return t->kind == TK_IDENT && t->len == (int)strlen(w) && !memcmp(t->s, w, (size_t)t->len);
}

static const char *tok_desc(const Token *t, char *buf, size_t n) {
  switch (t->kind) {
  case TK_EOF:
    return "end of file";
  case TK_NL:
    return "end of line";
  default:
    snprintf(buf, n, "'%.*s'", t->len > 40 ? 40 : t->len, t->s);
    return buf;
  }
}

static _Noreturn void expected(Parser *p, const char *what) {
  char buf[64];
  error_at(p->d, p->tok->pos, "expected %s, found %s", what, tok_desc(p->tok, buf, sizeof buf));
}

static bool accept(Parser *p, const char *punct) {
  if (is_punct(p->tok, punct)) {
    p->tok++;
    return true;
  }
  return false;
}

static void expect(Parser *p, const char *punct) {
  if (!accept(p, punct)) {
    char what[16];
    snprintf(what, sizeof what, "'%s'", punct);
    expected(p, what);
  }
}

static const char *const keywords[] = {
    "const", "input", "target", "param", "buffer", "def", "let", "for", "in", "return",
    "output", "loss", "optimizer", "schedule", "clip_grad_norm", "train", "scan", "over", "from"};

static bool is_keyword(const Token *t) {
  for (size_t i = 0; i < ARRAY_LEN(keywords); i++)
    if (is_word(t, keywords[i]))
      return true;
  return false;
}

static Ident ident(Parser *p, const char *what) {
  if (p->tok->kind != TK_IDENT || is_keyword(p->tok))
    expected(p, what);
  Ident id = {p->tok->s, p->tok->len, p->tok->pos};
  p->tok++;
  return id;
}

/* A plain name: no dots or interpolations (constants, variables, functions). */
static Ident simple_ident(Parser *p, const char *what) {
  Token *t = p->tok;
  Ident id = ident(p, what);
  for (int i = 0; i < id.len; i++)
    if (id.s[i] == '.' || id.s[i] == '{')
      error_at(p->d, t->pos, "'%.*s' is not a plain name ('.' and '{}' are only for parameter names)",
               id.len, id.s);
  return id;
}

static void end_of_stmt(Parser *p) {
  if (p->tok->kind == TK_NL) {
    p->tok++;
    return;
  }
  if (is_punct(p->tok, "}"))
    return;
  expected(p, "end of line");
}

static void skip_newlines(Parser *p) {
  while (p->tok->kind == TK_NL)
    p->tok++;
}

static Expr *new_expr(Parser *p, ExprKind k, Pos pos) {
  Expr *e = arena_alloc(p->a, sizeof *e);
  e->kind = k;
  e->pos = pos;
  return e;
}

/* Growable arrays of pointers in the arena. */
typedef struct PtrVec {
  void **v;
  int n, cap;
} PtrVec;

static void vec_push(Parser *p, PtrVec *v, void *x) {
  if (v->n == v->cap) {
    int cap = v->cap ? 2 * v->cap : 4;
    void **grown = arena_alloc(p->a, (size_t)cap * sizeof *grown);
    if (v->n)
      memcpy(grown, v->v, (size_t)v->n * sizeof *grown);
    v->v = grown;
    v->cap = cap;
  }
  v->v[v->n++] = x;
}

static Expr *expr(Parser *p);

/* args = [expr ("," expr)*]  -- up to the closing bracket, not consumed.
 * With keys, each argument may be "name = expr". */
static void args(Parser *p, const char *close, Expr *e, bool named) {
  PtrVec v = {0}, keys = {0};
  if (!is_punct(p->tok, close)) {
    do {
      if (named) {
        Ident *k = arena_alloc(p->a, sizeof *k);
        *k = simple_ident(p, "an argument name");
        expect(p, "=");
        vec_push(p, &keys, k);
      }
      vec_push(p, &v, expr(p));
    } while (accept(p, ","));
  }
  e->args = (Expr **)v.v;
  e->nargs = v.n;
  if (named) {
    e->keys = arena_alloc(p->a, (size_t)(v.n ? v.n : 1) * sizeof *e->keys);
    for (int i = 0; i < v.n; i++)
      e->keys[i] = *(Ident *)keys.v[i];
  }
}

/* Named-argument calls: only the optimizer statement uses them. */
static bool named_args_here(Parser *p) {
  return p->tok[0].kind == TK_IDENT && is_punct(&p->tok[1], "=") && !is_punct(&p->tok[1], "==");
}

/* primary = NUM | "(" expr ")"
 *         | NAME [ "[" args "]" ] "(" args ")"     (a call)
 *         | NAME */
static Expr *primary(Parser *p) {
  Token *t = p->tok;
  if (t->kind == TK_NUM) {
    p->tok++;
    Expr *e = new_expr(p, E_NUM, t->pos);
    e->num = t->num;
    return e;
  }
  if (accept(p, "(")) {
    Expr *e = expr(p);
    expect(p, ")");
    return e;
  }
  if (t->kind != TK_IDENT || is_keyword(t))
    expected(p, "an expression");
  Ident name = ident(p, "a name");
  /* name[targs](args): a call with compile-time arguments. Look past the
   * brackets to tell it from an index. */
  if (is_punct(p->tok, "[")) {
    int depth = 0;
    Token *q = p->tok;
    for (; q->kind != TK_EOF; q++) {
      if (is_punct(q, "["))
        depth++;
      else if (is_punct(q, "]") && --depth == 0)
        break;
    }
    if (q->kind != TK_EOF && is_punct(q + 1, "(")) {
      Expr *e = new_expr(p, E_CALL, name.pos);
      e->name = name;
      expect(p, "[");
      Expr tmp = {0};
      args(p, "]", &tmp, false);
      expect(p, "]");
      e->targs = tmp.args;
      e->ntargs = tmp.nargs;
      expect(p, "(");
      args(p, ")", e, false);
      expect(p, ")");
      return e;
    }
  }
  if (accept(p, "(")) {
    Expr *e = new_expr(p, E_CALL, name.pos);
    e->name = name;
    args(p, ")", e, named_args_here(p));
    expect(p, ")");
    return e;
  }
  Expr *e = new_expr(p, E_NAME, name.pos);
  e->name = name;
  return e;
}

/* postfix = primary ("[" expr [":" expr] "]")* */
static Expr *postfix(Parser *p) {
  Expr *e = primary(p);
  while (is_punct(p->tok, "[")) {
    Pos pos = p->tok->pos;
    p->tok++;
    Expr *ix = new_expr(p, E_INDEX, pos);
    ix->l = e;
    ix->r = expr(p);
    if (accept(p, ":"))
      ix->c = expr(p);
    expect(p, "]");
    e = ix;
  }
  return e;
}

/* unary = "-" unary | postfix */
static Expr *unary(Parser *p) {
  if (is_punct(p->tok, "-")) {
    Pos pos = p->tok->pos;
    p->tok++;
    if (++p->depth > 200)
      error_at(p->d, pos, "expression nested too deeply");
    Expr *e = new_expr(p, E_NEG, pos);
    e->l = unary(p);
    p->depth--;
    return e;
  }
  return postfix(p);
}

static Expr *binary(Parser *p, int op, Pos pos, Expr *l, Expr *r) {
  Expr *e = new_expr(p, E_BIN, pos);
  e->op = op;
  e->l = l;
  e->r = r;
  return e;
}

/* mul = unary (("*" | "/" | "%" | "@") unary)* */
static Expr *mul(Parser *p) {
  Expr *e = unary(p);
  for (;;) {
    Token *t = p->tok;
    if (is_punct(t, "*") || is_punct(t, "/") || is_punct(t, "%") || is_punct(t, "@")) {
      p->tok++;
      e = binary(p, *t->s, t->pos, e, unary(p));
    } else {
      return e;
    }
  }
}

/* add = mul (("+" | "-") mul)* */
static Expr *add(Parser *p) {
  Expr *e = mul(p);
  for (;;) {
    Token *t = p->tok;
    if (is_punct(t, "+") || is_punct(t, "-")) {
      p->tok++;
      e = binary(p, *t->s, t->pos, e, mul(p));
    } else {
      return e;
    }
  }
}

/* compare = add [("==" | "!=" | "<" | "<=" | ">" | ">=") add] */
static Expr *compare(Parser *p) {
  static const struct {
    const char *s;
    int op;
  } ops[] = {{"==", BIN_EQ}, {"!=", BIN_NE}, {"<=", BIN_LE},
             {">=", BIN_GE}, {"<", BIN_LT},  {">", BIN_GT}};
  Expr *e = add(p);
  for (size_t i = 0; i < ARRAY_LEN(ops); i++) {
    if (is_punct(p->tok, ops[i].s)) {
      Pos pos = p->tok->pos;
      p->tok++;
      return binary(p, ops[i].op, pos, e, add(p));
    }
  }
  return e;
}

/* expr = compare ["?" expr ":" expr] */
static Expr *expr(Parser *p) {
  if (++p->depth > 200)
    error_at(p->d, p->tok->pos, "expression nested too deeply");
  Expr *e = compare(p);
  if (is_punct(p->tok, "?")) {
    Expr *c = new_expr(p, E_COND, p->tok->pos);
    p->tok++;
    c->c = e;
    c->l = expr(p);
    expect(p, ":");
    c->r = expr(p);
    e = c;
  }
  p->depth--;
  return e;
}

/* scan = "scan" ["reverse"] NAME ["[" args "]"] "over" expr ("," expr)*
 *        "from" expr ("," expr)*
 * ("reverse" is a modifier only where a cell's name follows it.) */
static Expr *scan_expr(Parser *p) {
  Expr *e = new_expr(p, E_SCAN, p->tok->pos);
  p->tok++;
  if (is_word(p->tok, "reverse") && p->tok[1].kind == TK_IDENT && !is_keyword(&p->tok[1])) {
    e->reverse = true;
    p->tok++;
  }
  e->name = simple_ident(p, "the name of a cell function after 'scan'");
  if (accept(p, "[")) {
    Expr tmp = {0};
    args(p, "]", &tmp, false);
    expect(p, "]");
    e->targs = tmp.args;
    e->ntargs = tmp.nargs;
  }
  if (!is_word(p->tok, "over"))
    expected(p, "'over' and the sequence to scan");
  p->tok++;
  PtrVec v = {0};
  do
    vec_push(p, &v, expr(p));
  while (accept(p, ","));
  e->nover = v.n;
  if (!is_word(p->tok, "from"))
    expected(p, "'from' and the initial state");
  p->tok++;
  do
    vec_push(p, &v, expr(p));
  while (accept(p, ","));
  e->args = (Expr **)v.v;
  e->nargs = v.n;
  return e;
}

static Stmt *stmt(Parser *p, bool top);

/* block = "{" NL* (stmt)* "}" */
static void block(Parser *p, Stmt *s, bool top) {
  /* Blocks nest by recursion, here and in lowering: bound them (with the
   * expressions they sit in) so that no input overflows the stack (20000
   * nested 'for' loops did: tests/errors/deep_blocks.nn). */
  if (++p->depth > 200)
    error_at(p->d, p->tok->pos, "blocks nested too deeply");
  expect(p, "{");
  skip_newlines(p);
  PtrVec v = {0};
  while (!is_punct(p->tok, "}")) {
    if (p->tok->kind == TK_EOF)
      expected(p, "'}'");
    if (v.n && ((Stmt *)v.v[v.n - 1])->kind == S_RETURN)
      error_at(p->d, p->tok->pos, "unreachable statement after 'return'");
    vec_push(p, &v, stmt(p, top));
    skip_newlines(p);
  }
  p->tok++;
  s->body = (Stmt **)v.v;
  s->nbody = v.n;
  p->depth--;
}

static Ident *ident_list(Parser *p, int *n, const char *what, bool allow_empty, const char *close) {
  PtrVec v = {0};
  if (!(allow_empty && is_punct(p->tok, close))) {
    do {
      Ident *id = arena_alloc(p->a, sizeof *id);
      *id = simple_ident(p, what);
      for (int i = 0; i < v.n; i++) {
        const Ident *prev = v.v[i];
        if (prev->len == id->len && !memcmp(prev->s, id->s, (size_t)id->len))
          error_at(p->d, id->pos, "'%.*s' appears twice in this list", id->len, id->s);
      }
      vec_push(p, &v, id);
    } while (accept(p, ","));
  }
  Ident *out = arena_alloc(p->a, (size_t)(v.n ? v.n : 1) * sizeof *out);
  for (int i = 0; i < v.n; i++)
    out[i] = *(Ident *)v.v[i];
  *n = v.n;
  return out;
}

static Stmt *stmt(Parser *p, bool top) {
  Token *t = p->tok;
  Stmt *s = arena_alloc(p->a, sizeof *s);
  s->pos = t->pos;
  if (is_word(t, "let")) {
    /* let = "let" NAME ("," NAME)* "=" (scan | expr) */
    p->tok++;
    s->kind = S_LET;
    s->names = ident_list(p, &s->nnames, "a name to bind", false, NULL);
    expect(p, "=");
    s->value = is_word(p->tok, "scan") ? scan_expr(p) : expr(p);
  } else if (is_word(t, "return")) {
    /* return = "return" expr ("," expr)* */
    if (top)
      error_at(p->d, t->pos, "'return' outside a function");
    p->tok++;
    s->kind = S_RETURN;
    PtrVec v = {0};
    do
      vec_push(p, &v, expr(p));
    while (accept(p, ","));
    s->exprs = (Expr **)v.v;
    s->nexprs = v.n;
  } else if (is_word(t, "for")) {
    /* for = "for" NAME "in" expr ".." expr block */
    p->tok++;
    s->kind = S_FOR;
    s->name = simple_ident(p, "a loop variable");
    if (!is_word(p->tok, "in"))
      expected(p, "'in'");
    p->tok++;
    s->lo = add(p);
    expect(p, "..");
    s->hi = add(p);
    block(p, s, top);
  } else if (!top) {
    expected(p, "'let', 'return' or 'for' in a function body");
  } else if (is_word(t, "const")) {
    /* const = "const" NAME "=" expr */
    p->tok++;
    s->kind = S_CONST;
    s->name = simple_ident(p, "a constant name");
    expect(p, "=");
    s->value = expr(p);
  } else if (is_word(t, "input")) {
    /* input = "input" NAME ":" ( "onehot" | "f32" ) "[" "T" "," expr "]" */
    p->tok++;
    s->kind = S_INPUT;
    s->name = simple_ident(p, "the input's name");
    expect(p, ":");
    if (!is_word(p->tok, "onehot") && !is_word(p->tok, "f32"))
      expected(p, "'onehot' (a sequence of one-hot characters) or 'f32' (of float vectors)");
    s->trainable = is_word(p->tok, "f32"); /* S_INPUT: a float input */
    p->tok++;
    expect(p, "[");
    if (!is_word(p->tok, "T"))
      expected(p, "'T' (the sequence length) as the first dimension");
    p->tok++;
    expect(p, ",");
    s->value = expr(p);
    expect(p, "]");
  } else if (is_word(t, "target")) {
    /* target = "target" NAME ":" "class" "[" expr "]" */
    p->tok++;
    s->kind = S_TARGET;
    s->name = simple_ident(p, "the target's name");
    expect(p, ":");
    if (!is_word(p->tok, "class"))
      expected(p, "'class'");
    p->tok++;
    expect(p, "[");
    s->value = expr(p);
    expect(p, "]");
  } else if (is_word(t, "param") || is_word(t, "buffer")) {
    /* param = ("param" | "buffer") PNAME "[" expr ("," expr)* "]" "=" init
     * init  = NAME ["(" args ")"] */
    p->tok++;
    s->kind = S_PARAM;
    s->trainable = is_word(t, "param");
    s->name = ident(p, "a parameter name");
    expect(p, "[");
    PtrVec v = {0};
    do
      vec_push(p, &v, expr(p));
    while (accept(p, ","));
    expect(p, "]");
    s->exprs = (Expr **)v.v;
    s->nexprs = v.n;
    expect(p, "=");
    Ident init = simple_ident(p, "an initializer (zeros, uniform, linear, kaiming_uniform, normal)");
    Expr *e = new_expr(p, E_CALL, init.pos);
    e->name = init;
    if (accept(p, "(")) {
      args(p, ")", e, false);
      expect(p, ")");
    }
    s->init = e;
  } else if (is_word(t, "def")) {
    /* def = "def" NAME ["[" NAME ("," NAME)* "]"] "(" [NAME ("," NAME)*] ")" block */
    p->tok++;
    s->kind = S_DEF;
    s->name = simple_ident(p, "a function name");
    if (accept(p, "[")) {
      s->tparams = ident_list(p, &s->ntparams, "a compile-time parameter", false, NULL);
      expect(p, "]");
    }
    expect(p, "(");
    s->names = ident_list(p, &s->nnames, "a parameter name", true, ")");
    expect(p, ")");
    block(p, s, false);
  } else if (is_word(t, "output") || is_word(t, "loss") || is_word(t, "clip_grad_norm")) {
    /* output = "output" expr;  loss = "loss" expr;  clip = "clip_grad_norm" expr */
    p->tok++;
    s->kind = is_word(t, "output") ? S_OUTPUT : is_word(t, "loss") ? S_LOSS : S_CLIP;
    s->value = expr(p);
  } else if (is_word(t, "optimizer") || is_word(t, "schedule")) {
    /* optimizer = "optimizer" NAME "(" [NAME "=" expr ("," NAME "=" expr)*] ")"
     * schedule  = "schedule" NAME "(" [NAME "=" expr ("," NAME "=" expr)*] ")" */
    p->tok++;
    bool opt = is_word(t, "optimizer");
    s->kind = opt ? S_OPTIMIZER : S_SCHEDULE;
    Ident name = simple_ident(p, opt ? "an optimizer (adam, adamw, sgd)"
                                     : "a schedule (constant, step, cosine)");
    Expr *e = new_expr(p, E_CALL, name.pos);
    e->name = name;
    expect(p, "(");
    args(p, ")", e, true);
    expect(p, ")");
    s->value = e;
  } else if (is_word(t, "train")) {
    /* train = "train" NAME "=" expr ("," NAME "=" expr)* */
    p->tok++;
    s->kind = S_TRAIN;
    Expr tmp = {0};
    args(p, "\n", &tmp, true);
    s->names = tmp.keys;
    s->nnames = tmp.nargs;
    s->exprs = tmp.args;
    s->nexprs = tmp.nargs;
  } else {
    expected(p, "a statement (const, input, target, param, buffer, def, let, for, output, "
                "loss, optimizer, schedule, clip_grad_norm, train)");
  }
  end_of_stmt(p);
  return s;
}

/* program = NL* (stmt NL*)* EOF */
Program *parse(Token *toks, Diag *d, Arena *a) {
  Parser p = {.tok = toks, .d = d, .a = a};
  PtrVec v = {0};
  skip_newlines(&p);
  while (p.tok->kind != TK_EOF) {
    if (is_punct(p.tok, "}"))
      error_at(d, p.tok->pos, "unmatched '}'");
    vec_push(&p, &v, stmt(&p, true));
    skip_newlines(&p);
  }
  Program *prog = arena_alloc(a, sizeof *prog);
  prog->stmts = (Stmt **)v.v;
  prog->nstmts = v.n;
  return prog;
}

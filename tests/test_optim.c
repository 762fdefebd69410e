/* test_optim.c: the optimizers (adam with L2 weight decay, adamw, sgd with
 * momentum, dampening, nesterov and weight decay) and the learning-rate
 * schedules (warmup, step, cosine).
 *
 * - The schedules' rates: plain SGD's step divided by the gradient gives
 *   the rate at every step, which must be the values worked out by hand
 *   below (from the formulas of docs/dsl.md, section 7).
 * - The updates: the interpreter (float64) trains a small graph for 9
 *   steps; after each one, every parameter and optimizer buffer must be
 *   what this file's own transcription of PyTorch 1.13's algorithms
 *   (torch.optim.Adam, AdamW and SGD, foreach=False) computes from the
 *   same gradients (relative 1e-12).
 * - The kernels: the JIT's training kernel (batch 1) and its minibatch
 *   update kernel against the interpreter in float32, 6 steps each (each
 *   step from the kernel's state, as test_batch does). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

static const double PI = 3.14159265358979323846;

/* A small RNN whose every parameter gets a gradient; the optimizer and
 * schedule lines come from each case. */
static char *graph_text(const char *optim) {
  return xasprintf("const V = 5\nconst H = 6\nconst C = 3\n"
                   "input x : onehot[T, V]\ntarget y : class[C]\n"
                   "param w [H, V + H] = linear(V + H)\nparam b [H] = linear(H)\n"
                   "param fc [C, H] = linear(H)\n"
                   "def cell(x, h) { return tanh(w @ concat(x, h) + b) }\n"
                   "let hs = scan cell over x from zeros(H)\n"
                   "let logits = fc @ last(hs)\n"
                   "output logits\nloss -log_softmax(logits)[y]\n%s\n",
                   optim);
}

static Graph *train_graph(const char *optim) {
  char *text = graph_text(optim);
  Err e;
  Graph *g = compile_graph("optim", text, strlen(text), &e);
  if (!g)
    fail_msg("%s", e.msg);
  free(text);
  if (graph_passes(g, true, PASSES_ALL, &e))
    fail_msg("%s", e.msg);
  return g;
}

static const int32_t name[] = {1, 4, 0, 2, 3};

/* The graph lines on one line, for messages. */
static const char *label(const char *optim) {
  static char buf[256];
  snprintf(buf, sizeof buf, "%s", optim);
  for (char *c = buf; *c; c++)
    if (*c == '\n')
      *c = ';';
  return buf;
}

/* ------------------------------------------------------------ schedules */

/* Plain SGD under a schedule: lr_t = (w_before - w_after) / g. */
static void check_rates(const char *optim, const double *want, int steps) {
  Graph *g = train_graph(optim);
  Interp *I = interp_new(g, false);
  double *w = interp_slot(I, SLOT_VALUE);
  const double *gr = interp_slot(I, SLOT_GRAD);
  Rng r;
  rng_seed(&r, 2);
  for (size_t i = 0; i < g->nfloats; i++)
    w[i] = rng_uniform(&r, -0.5f, 0.5f);
  size_t k = g->params[0].offset; /* the first weight */
  for (int s = 0; s < steps; s++) {
    double before = w[k];
    Err e;
    if (interp_run(I, name, 5, 1, &e))
      fail_msg("%s", e.msg);
    double lr = (before - w[k]) / gr[k];
    if (!(fabs(lr - want[s]) <= 1e-9 * fmax(1, want[s])))
      fail_msg("%s, step %d: rate %.12g, by hand %.12g", optim, s + 1, lr, want[s]);
  }
  print_message("%-72s %d steps: the rates worked out by hand\n", label(optim), steps);
  interp_free(I);
  graph_free(g);
}

static void test_schedules(void **state) {
  (void)state;
  /* the IR's header prints the settings */
  Graph *g = train_graph("optimizer adamw(lr = 0.02, beta1 = 0.8)\nschedule cosine(steps = 5, warmup = 2)");
  Buf b = {0};
  graph_print(g, &b);
  buf_put(&b, "", 1);
  assert_contains(b.data, "optimizer adamw(lr = 0.02, beta1 = 0.8, beta2 = 0.999, eps = 1e-08, "
                          "weight_decay = 0.01)\nschedule cosine(warmup = 2, steps = 5, min_lr = 0)\n");
  buf_free(&b);
  graph_free(g);
  /* warmup 3: t/3 up to step 3, then 1 */
  static const double warm[] = {1 / 3., 2 / 3., 1, 1, 1};
  check_rates("optimizer sgd(lr = 1)\nschedule constant(warmup = 3)", warm, 5);
  /* step: 0.5 every 2 steps after a warmup of 1 (d = t - 2, at least 0) */
  static const double step[] = {1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125};
  check_rates("optimizer sgd(lr = 1)\nschedule step(every = 2, gamma = 0.5, warmup = 1)", step, 8);
  /* cosine over 4 steps to 0.2 after a warmup of 2: d = max(0, t - 3),
   * 0.2 + 0.8 (1 + cos(pi min(1, d / 4))) / 2, times min(1, t / 2) */
  double c1 = 0.2 + 0.4 * (1 + cos(PI / 4)), c3 = 0.2 + 0.4 * (1 + cos(3 * PI / 4));
  const double cosine[] = {0.5, 1, 1, c1, 0.6, c3, 0.2, 0.2, 0.2};
  check_rates("optimizer sgd(lr = 1)\nschedule cosine(steps = 4, min_lr = 0.2, warmup = 2)", cosine, 9);
}

/* ----------------------------------------------------- the algorithms */

typedef struct Ref {
  const char *optim; /* the graph's lines */
  int kind;          /* 0 adam, 1 adamw, 2 sgd */
  double lr, b1, b2, eps, wd, momentum, dampening;
  bool nesterov;
  int warmup, cosine_steps, every; /* every: a step schedule's, gamma 0.5 */
} Ref;

static const Ref refs[] = {
    {"optimizer adam(lr = 0.01, weight_decay = 0.05)", 0, 0.01, 0.9, 0.999, 1e-8, 0.05, 0, 0, false, 0, 0, 0},
    {"optimizer adamw(lr = 0.02, beta1 = 0.8, weight_decay = 0.1)\n"
     "schedule cosine(steps = 5, warmup = 2)",
     1, 0.02, 0.8, 0.999, 1e-8, 0.1, 0, 0, false, 2, 5, 0},
    {"optimizer sgd(lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 0.01)", 2, 0.1, 0, 0,
     0, 0.01, 0.9, 0.1, false, 0, 0, 0},
    {"optimizer sgd(lr = 0.1, momentum = 0.8, nesterov = 1)\nschedule constant(warmup = 3)", 2, 0.1,
     0, 0, 0, 0, 0.8, 0, true, 3, 0, 0},
    {"optimizer sgd(lr = 0.1)\nschedule step(every = 2, gamma = 0.5, warmup = 1)", 2, 0.1, 0, 0, 0,
     0, 0, 0, false, 1, 0, 2},
};

/* The case's rate at step t: warmup and cosine (min_lr 0) as above. */
static double ref_lr(const Ref *c, int t) {
  double lr = c->lr;
  if (c->cosine_steps) {
    double d = fmax(0, t - 1 - c->warmup);
    lr *= (1 + cos(PI * fmin(1, d / c->cosine_steps))) / 2;
  }
  if (c->every)
    lr *= pow(0.5, floor(fmax(0, t - 1 - c->warmup) / c->every));
  return c->warmup ? lr * fmin(1, (double)t / c->warmup) : lr;
}

/* One step of PyTorch's algorithm on n values. */
static void ref_step(const Ref *c, int t, double *p, const double *grad, double *m, double *v,
                     size_t n) {
  double lr = ref_lr(c, t);
  for (size_t i = 0; i < n; i++) {
    double g = grad[i];
    if (c->kind != 1)
      g += c->wd * p[i]; /* Adam, SGD: grad = grad.add(param, alpha=weight_decay) */
    if (c->kind == 2) {
      if (c->momentum > 0) {
        m[i] = t == 1 ? g : c->momentum * m[i] + (1 - c->dampening) * g;
        g = c->nesterov ? g + c->momentum * m[i] : m[i];
      }
      p[i] -= lr * g;
      continue;
    }
    if (c->kind == 1)
      p[i] *= 1 - lr * c->wd; /* AdamW: param.mul_(1 - lr * weight_decay) */
    m[i] = c->b1 * m[i] + (1 - c->b1) * g;
    v[i] = c->b2 * v[i] + (1 - c->b2) * g * g;
    double bc1 = 1 - pow(c->b1, t), bc2 = 1 - pow(c->b2, t);
    p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + c->eps);
  }
}

static void same_as(const char *what, const double *got, const double *want, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= 1e-12 * fmax(1, fabs(want[i]))))
      fail_msg("%s[%zu]: interpreter %.17g, PyTorch's algorithm %.17g", what, i, got[i], want[i]);
}

static void test_algorithms(void **state) {
  (void)state;
  for (size_t c = 0; c < ARRAY_LEN(refs); c++) {
    Graph *g = train_graph(refs[c].optim);
    Interp *I = interp_new(g, false);
    size_t n = g->nfloats;
    double *w = interp_slot(I, SLOT_VALUE);
    Rng r;
    rng_seed(&r, 3 + c);
    for (size_t i = 0; i < n; i++)
      w[i] = rng_uniform(&r, -0.5f, 0.5f);
    double *p = xmalloc(n * sizeof *p), *m = xcalloc(n, sizeof *m), *v = xcalloc(n, sizeof *v);
    memcpy(p, w, n * sizeof *p);
    for (int t = 1; t <= 9; t++) {
      Err e;
      if (interp_run(I, name, 5 - t % 3, t % 3, &e))
        fail_msg("%s", e.msg);
      ref_step(&refs[c], t, p, interp_slot(I, SLOT_GRAD), m, v, n);
      same_as("parameter", w, p, n);
      same_as("first buffer (exp_avg, momentum_buffer)", interp_slot(I, SLOT_M), m, n);
      same_as("exp_avg_sq", interp_slot(I, SLOT_V), v, n);
    }
    print_message("%-96s 9 steps as PyTorch's algorithm\n", label(refs[c].optim));
    free(p);
    free(m);
    free(v);
    interp_free(I);
    graph_free(g);
  }
}

/* ------------------------------------------------------------ kernels */

static void compare(const char *what, const float *got, const double *want, size_t n) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < n; i++) {
    scale = fmax(scale, fabs(want[i]));
    diff = fmax(diff, fabs(got[i] - want[i]));
  }
  if (!(diff <= 1e-5 * fmax(scale, 1e-30) + 1e-7))
    fail_msg("%s: max |diff| %.3e of the largest magnitude %.3e", what, diff, scale);
}

static void check_kernels(const Ref *c, int batch) {
  char *text = graph_text(c->optim), *path = tmp_path("optim.nn");
  write_text(path, text);
  free(text);
  Model m;
  Err e;
  ModelOptions mo = {.batch = batch};
  if (model_compile(&m, path, &mo, &e))
    fail_msg("%s", e.msg);
  Model ref; /* its training graph: forward, backward, update in one */
  ModelOptions mo1 = {.batch = 1};
  if (model_compile(&ref, path, &mo1, &e))
    fail_msg("%s", e.msg);
  Interp *I = interp_new(ref.train, true);
  Rng r;
  rng_seed(&r, 4);
  for (size_t i = 0; i < m.nfloats; i++)
    m.state[i] = rng_uniform(&r, -0.5f, 0.5f);
  for (int t = 1; t <= 6; t++) {
    for (int s = 0; s < SLOT_COUNT; s++)
      for (size_t i = 0; i < m.nfloats; i++)
        interp_slot(I, s)[i] = m.state[s * m.nfloats + i];
    *interp_step(I) = m.step;
    int32_t text4[4][5];
    const int32_t *chars[4];
    int32_t lens[4], targets[4];
    int ilens[4], itargets[4];
    for (int b = 0; b < 4; b++) {
      lens[b] = ilens[b] = 1 + (int)rng_below(&r, 5);
      targets[b] = itargets[b] = (int)rng_below(&r, 3);
      for (int k = 0; k < lens[b]; k++)
        text4[b][k] = (int32_t)rng_below(&r, 5);
      chars[b] = text4[b];
    }
    float mean, gnorm;
    int n = batch == 1 ? 1 : 4;
    model_train_batch(&m, chars, lens, targets, n, NULL, &mean, &gnorm);
    if (interp_run_batch(I, chars, ilens, itargets, n, NULL, NULL, &e))
      fail_msg("%s", e.msg);
    char what[320];
    for (int s = 0; s < SLOT_COUNT; s++) {
      if (s == SLOT_GRAD)
        continue;
      snprintf(what, sizeof what, "%s, batch %d, step %d, slot %d", label(c->optim), batch, t, s);
      compare(what, m.state + s * m.nfloats, interp_slot(I, s), m.nfloats);
    }
  }
  print_message("%-96s batch %d: 6 steps as the interpreter\n", label(c->optim), batch);
  interp_free(I);
  model_free(&m);
  model_free(&ref);
  free(path);
}

static void test_kernels(void **state) {
  (void)state;
  for (size_t c = 0; c < ARRAY_LEN(refs); c++) {
    check_kernels(&refs[c], 1);
    check_kernels(&refs[c], 4);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schedules),
      cmocka_unit_test(test_algorithms),
      cmocka_unit_test(test_kernels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_dropout.c: dropout(v, p), in training only.
 *
 * - The masks: through the reference interpreter, the share of elements
 *   kept over 4,000 draws is 1 - p within 5 standard deviations, and each
 *   kept element is v / (1 - p) (the masks come from a seeded generator:
 *   the test is deterministic).
 * - Training is reproducible from the seed: the same noise seed gives the
 *   same parameters and optimizer state bit for bit, at batch 1 and in
 *   minibatches on 1 and 2 threads; another seed gives others.
 * - Absent at inference: the forward graph (the JIT's and rnnc build's)
 *   has no dropout and draws no noise, and its logits, one by one and
 *   batched, are those of the same graph written without dropout, bit for
 *   bit.
 * Finite differences with a fixed mask are in test_grad; JIT = interpreter
 * in training in test_jit and test_batch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

/* tests/golden/embgru.nn with dropout on the last state, before the head. */
static char *dropout_graph(const char *p) {
  char to[64];
  snprintf(to, sizeof to, "fc.weight @ dropout(last(hs), %s)", p);
  return graph_variant("tests/golden/embgru.nn", "fc.weight @ last(hs)", to, NULL);
}

/* ------------------------------------------------------------- masks */

static void test_masks(void **state) {
  (void)state;
  static const char text[] = "const V = 4\nconst C = 1000\n"
                             "input x : onehot[T, V]\ntarget y : class[C]\n"
                             "param b [C] = zeros\nparam w [C, V] = zeros\n"
                             "def cell(x, h) { return h + w @ x }\n"
                             "let hs = scan cell over x from zeros(C)\n"
                             "let logits = dropout(b + last(hs), 0.25)\n"
                             "output logits\nloss -log_softmax(logits)[y]\noptimizer sgd(lr = 0.1)\n";
  Err e;
  Graph *g = compile_graph("masks", text, strlen(text), &e);
  if (!g)
    fail_msg("%s", e.msg);
  Interp *I = interp_new(g, true);
  double *w = interp_slot(I, SLOT_VALUE);
  for (int i = 0; i < 1000; i++)
    w[g->params[0].offset + (size_t)i] = 1 + i % 7;
  Rng r;
  rng_seed(&r, 1);
  interp_set_rng(I, &r);
  const int32_t chars[] = {0, 1};
  long kept = 0, total = 0;
  for (int run = 0; run < 4; run++) {
    if (interp_run(I, chars, 2, 0, &e))
      fail_msg("%s", e.msg);
    const double *y = interp_value(I, g->output, NULL);
    for (int i = 0; i < 1000; i++, total++) {
      if (y[i] == 0)
        continue;
      kept++;
      assert_true(y[i] == (double)(float)((1 + i % 7) * (double)(float)(1 / 0.75)));
    }
  }
  double share = (double)kept / (double)total, sd = sqrt(0.75 * 0.25 / (double)total);
  print_message("p = 0.25: %ld of %ld kept (%.4f; 1 - p within %.1f standard deviations)\n", kept,
                total, share, fabs(share - 0.75) / sd);
  assert_true(fabs(share - 0.75) < 5 * sd);
  interp_free(I);
  graph_free(g);
}

/* ------------------------------------------------------ reproducibility */

enum { NAMES = 24, MAXLEN = 9 };

typedef struct Names {
  int32_t text[NAMES][MAXLEN];
  const int32_t *chars[NAMES];
  int32_t lens[NAMES], targets[NAMES];
} Names;

static void make_names(Names *nm, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  for (int i = 0; i < NAMES; i++) {
    nm->lens[i] = 1 + (int)rng_below(&r, MAXLEN);
    nm->targets[i] = (int)rng_below(&r, 18);
    for (int t = 0; t < nm->lens[i]; t++)
      nm->text[i][t] = (int32_t)rng_below(&r, 59);
    nm->chars[i] = nm->text[i];
  }
}

/* Three optimizer steps (batch 1: three names) from the same initial
 * parameters with noise seed `seed`; the parameter and optimizer slots. */
static float *train(const char *path, int batch, int threads, uint64_t seed, size_t *bytes) {
  Model m;
  Err e;
  ModelOptions mo = {.batch = batch, .threads = threads};
  if (model_compile(&m, path, &mo, &e))
    fail_msg("%s", e.msg);
  model_init_params(&m, 42);
  model_seed_noise(&m, seed);
  Names nm;
  make_names(&nm, 5);
  for (int s = 0; s < 3; s++) {
    float mean, gnorm;
    if (batch == 1)
      model_train_step(&m, nm.chars[s], nm.lens[s], nm.targets[s], &mean, &gnorm);
    else
      model_train_batch(&m, nm.chars + 8 * s, nm.lens + 8 * s, nm.targets + 8 * s, 8, NULL, &mean,
                        &gnorm);
  }
  *bytes = SLOT_COUNT * m.nfloats * sizeof(float);
  float *copy = xmalloc(*bytes);
  memcpy(copy, m.state, *bytes);
  for (size_t i = 0; i < m.nfloats; i++) /* the grad slot is scratch between steps */
    copy[SLOT_GRAD * m.nfloats + i] = 0;
  model_free(&m);
  return copy;
}

static void test_reproducible(void **state) {
  (void)state;
  char *path = dropout_graph("0.5");
  for (int batch = 1; batch <= 8; batch += 7) {
    size_t bytes;
    float *a = train(path, batch, 1, 7, &bytes), *b = train(path, batch, batch > 1 ? 2 : 1, 7, &bytes);
    float *c = train(path, batch, 1, 8, &bytes);
    assert_memory_equal(a, b, bytes);
    assert_memory_not_equal(a, c, bytes);
    print_message("batch %d: the same seed, the same bytes%s; another seed, other values\n", batch,
                  batch > 1 ? " on 1 and 2 threads" : "");
    free(a);
    free(b);
    free(c);
  }
  free(path);
}

/* ------------------------------------------------------------ inference */

static void test_inference(void **state) {
  (void)state;
  char *path = dropout_graph("0.5");
  char *plain = graph_variant("tests/golden/embgru.nn", NULL);
  Model m, ref;
  Err e;
  ModelOptions mo = {.batch = 8};
  if (model_compile(&m, path, &mo, &e) || model_compile(&ref, plain, &mo, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(model_noise_per_name(&m), 0);
  for (int id = 0; id < m.fwd->nnodes; id++) {
    assert_int_not_equal(m.fwd->nodes[id].op, OP_DROPOUT);
    assert_int_not_equal(m.fwd->nodes[id].op, OP_NOISE);
  }
  model_init_params(&m, 3);
  memcpy(ref.state, m.state, m.nfloats * sizeof(float));
  Names nm;
  make_names(&nm, 6);
  float got[NAMES * 18], want[NAMES * 18];
  for (int i = 0; i < NAMES; i++) {
    model_forward(&m, nm.chars[i], nm.lens[i], got + 18 * i);
    model_forward(&ref, nm.chars[i], nm.lens[i], want + 18 * i);
  }
  assert_memory_equal(got, want, sizeof got);
  model_forward_batch(&m, nm.chars, nm.lens, NAMES, got);
  model_forward_batch(&ref, nm.chars, nm.lens, NAMES, want);
  assert_memory_equal(got, want, sizeof got);
  print_message("inference: no noise; logits of %d names equal to the graph without dropout, one "
                "by one and batched\n",
                NAMES);
  model_free(&m);
  model_free(&ref);
  free(path);
  free(plain);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_masks),
      cmocka_unit_test(test_reproducible),
      cmocka_unit_test(test_inference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

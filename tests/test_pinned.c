/* test_pinned.c: batch-1 training keeps its results bit for bit.
 *
 * The seed recipe (data/names, seed 42, the split, the initialization,
 * epoch 1's order and noise) on rnn.nn and gru.nn, through the runtime's
 * training step: the first steps' losses (and rnn.nn's gradient norms
 * before clipping) must equal, bit for bit, what the kernels computed when
 * this test was written (main at 9a0bd3b), before batched training was
 * added, with one change since: Adam's 1 / sqrt(1 - beta2^t) is exact
 * (jit.c's no_estimates; it was an rsqrtss estimate, whose bits differ
 * between CPUs). Kernels are compiled for named CPUs (haswell: AVX2 and
 * FMA; x86-64: SSE2), not the host, so the numbers are the same on every
 * machine that can run them. Set RNNC_PIN_PRINT=1 to print the values
 * instead. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "testutil.h"
#include "train.h"
#include "util.h"

enum { STEPS = 24 };

typedef struct Pin {
  const char *graph, *cpu;
  uint32_t loss[STEPS], gnorm[STEPS];
} Pin;

/* clang-format off */
static const Pin pins[] = {
#include "pinned_losses.inc"
};
/* clang-format on */

static uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static void run(const char *graph, const char *cpu, uint32_t *loss, uint32_t *gnorm) {
  char *gpath = src_path(graph), *dpath = src_path("data/names");
  Err e;
  Model m;
  ModelOptions mo = {.cpu = cpu};
  if (model_compile(&m, gpath, &mo, &e))
    fail_msg("%s", e.msg);
  model_init_params(&m, 42);
  Dataset ds = {0};
  if (data_load(&ds, dpath, NULL, 0, VOCAB_NAMES, NULL, &e) || data_split(&ds, 0.1, 42, &e))
    fail_msg("%s", e.msg);
  uint32_t *order = xmalloc(ds.ntrain * sizeof *order);
  train_epoch_begin(&m, &ds, 42, 0, order);
  model_reserve(&m, 32);
  for (int i = 0; i < STEPS; i++) {
    const Name *nm = &ds.names[order[i]];
    float l, g;
    model_train_step(&m, nm->chars, nm->len, nm->label, &l, &g);
    loss[i] = bits(l);
    gnorm[i] = bits(g);
  }
  free(order);
  data_free(&ds);
  model_free(&m);
  free(gpath);
  free(dpath);
}

static void print_pin(const char *graph, const char *cpu, const uint32_t *loss, const uint32_t *gnorm) {
  printf("    {\"%s\", \"%s\",\n     {", graph, cpu);
  for (int i = 0; i < STEPS; i++)
    printf("0x%08x%s", loss[i], i + 1 < STEPS ? (i % 6 == 5 ? ",\n      " : ", ") : "},\n     {");
  for (int i = 0; i < STEPS; i++)
    printf("0x%08x%s", gnorm[i], i + 1 < STEPS ? (i % 6 == 5 ? ",\n      " : ", ") : "}},\n");
}

static void test_pinned(void **state) {
  (void)state;
  bool print = getenv("RNNC_PIN_PRINT") != NULL;
  bool avx2 = host_has("avx2") && host_has("fma");
  int checked = 0;
  for (size_t k = 0; k < ARRAY_LEN(pins); k++) {
    const Pin *p = &pins[k];
    if (!strcmp(p->cpu, "haswell") && !avx2) {
      print_message("%s on %s: skipped (the host has no AVX2 and FMA)\n", p->graph, p->cpu);
      continue;
    }
    uint32_t loss[STEPS], gnorm[STEPS];
    run(p->graph, p->cpu, loss, gnorm);
    if (print) {
      print_pin(p->graph, p->cpu, loss, gnorm);
      continue;
    }
    int bad = 0;
    for (int i = 0; i < STEPS; i++) {
      float want, got;
      memcpy(&want, &p->loss[i], 4);
      memcpy(&got, &loss[i], 4);
      if (loss[i] != p->loss[i] || gnorm[i] != p->gnorm[i]) {
        print_message("%s on %s, step %d: loss %.9g (0x%08x), pinned %.9g (0x%08x); norm 0x%08x, "
                      "pinned 0x%08x\n",
                      p->graph, p->cpu, i + 1, got, loss[i], want, p->loss[i], gnorm[i], p->gnorm[i]);
        bad++;
      }
    }
    print_message("%s on %s: %d steps, %d differ from the pinned values\n", p->graph, p->cpu, STEPS,
                  bad);
    assert_int_equal(bad, 0);
    checked++;
  }
  if (!print)
    assert_true(checked > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_pinned)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

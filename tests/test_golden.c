/* test_golden.c: parity with PyTorch. the files in tests/golden hold, for
 * rnn.nn, gru.nn, lstm.nn and the graphs beside the goldens (embgru.nn:
 * an embedding table; bigru.nn: bidirectional layers), PyTorch's weights,
 * the logits of 20 names, the loss of one training name, every
 * parameter's gradient, and every parameter after one optimizer step (see
 * tests/golden/README.md). The reference interpreter, in float32, must
 * match them within the tolerances that README gives: logits and loss
 * 1e-4 absolute, gradients 1e-4 relative to the tensor's largest
 * magnitude, parameters after the step 1e-6 absolute (plus, for the few
 * weights whose gradient is as small as Adam's eps, the step's own
 * amplification of float32 rounding; see check_step). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"
#include "runtime.h"
#include "safetensors.h"
#include "testutil.h"

typedef struct Golden {
  StFile st;
  Graph *g; /* the model, forward only or with its update */
} Golden;

static char *replace_once(char *text, const char *from, const char *to) {
  char *at = strstr(text, from);
  assert_non_null(at);
  char *r = xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
  free(text);
  return r;
}

/* graphs/rnn.nn starts from noise; the golden file used one stored draw,
 * h0: the same model with its initial state switched to a buffer (the
 * small edit docs/dsl.md describes). */
static char *graph_text(const char *model) {
  /* graphs/'s models, and the DSL's others beside their goldens */
  char rel[64];
  bool beside = !strcmp(model, "embgru") || !strcmp(model, "bigru");
  snprintf(rel, sizeof rel, beside ? "tests/golden/%s.nn" : "graphs/%s.nn", model);
  char *path = src_path(rel);
  Err e;
  char *text = read_file(path, NULL, &e);
  assert_non_null(text);
  free(path);
  if (!strcmp(model, "rnn")) {
    text = replace_once(text, "from kaiming_uniform(H), zeros(C)", "from h0, zeros(C)");
    text = replace_once(text, "# One step", "buffer h0 [H] = kaiming_uniform(H)\n# One step");
  }
  return text;
}

static Graph *model_graph(const char *model, bool train) {
  char *text = graph_text(model);
  Err e;
  Graph *g = compile_graph(model, text, strlen(text), &e);
  if (!g)
    fail_msg("%s", e.msg);
  free(text);
  if (graph_passes(g, train, PASSES_ALL, &e))
    fail_msg("%s", e.msg);
  return g;
}

static void load_golden(StFile *st, const char *model) {
  char rel[128];
  snprintf(rel, sizeof rel, "tests/golden/%s_seed42.safetensors", model);
  char *path = src_path(rel);
  Err e;
  if (st_load(st, path, &e))
    fail_msg("%s", e.msg);
  free(path);
}

static const StTensor *need(const StFile *st, const char *name) {
  const StTensor *t = st_find(st, name);
  if (!t)
    fail_msg("golden file has no tensor %s", name);
  return t;
}

/* Parameter values (and buffers) from the golden file into a slot. */
static void set_params(const Graph *g, const StFile *st, double *values) {
  for (int p = 0; p < g->nparams; p++) {
    const StTensor *t = need(st, g->params[p].name);
    assert_int_equal(t->nelem, type_numel(g->params[p].type));
    for (size_t i = 0; i < t->nelem; i++)
      values[g->params[p].offset + i] = t->data[i];
  }
}

/* A name as vocabulary indices (the golden names are plain ASCII). */
static int encode(const char *s, int32_t *out) {
  int n = 0;
  for (; *s; s++) {
    const char *at = strchr(VOCAB_CHARS, *s);
    assert_non_null(at);
    out[n++] = (int32_t)(at - VOCAB_CHARS);
  }
  return n;
}

static int label_index(const StFile *st, const char *label) {
  const char *labels = st_meta(st, "labels");
  assert_non_null(labels);
  int i = 0;
  for (const char *p = labels; *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == strlen(label) && !strncmp(p, label, len))
      return i;
    i++;
    if (!end)
      break;
    p = end + 1;
  }
  fail_msg("label %s not in the golden file", label);
  return -1;
}

static void check_logits(const char *model) {
  StFile st;
  load_golden(&st, model);
  Graph *g = model_graph(model, false);
  Interp *I = interp_new(g, true);
  set_params(g, &st, interp_slot(I, SLOT_VALUE));
  char *names = xstrdup(st_meta(&st, "names"));
  double worst = 0;
  int i = 0;
  for (char *save, *name = strtok_r(names, "\n", &save); name; name = strtok_r(NULL, "\n", &save), i++) {
    int32_t chars[64];
    int len = encode(name, chars);
    Err e;
    if (interp_run(I, chars, len, 0, &e))
      fail_msg("%s", e.msg);
    char tn[32];
    snprintf(tn, sizeof tn, "logits.%d", i);
    const StTensor *want = need(&st, tn);
    size_t n;
    const double *got = interp_value(I, g->output, &n);
    assert_int_equal(n, want->nelem);
    for (size_t k = 0; k < n; k++)
      worst = fmax(worst, fabs(got[k] - want->data[k]));
  }
  assert_int_equal(i, 20);
  print_message("%s: 20 names, logits max |diff| %.2e\n", model, worst);
  assert_true(worst < 1e-4);
  free(names);
  interp_free(I);
  graph_free(g);
  st_free(&st);
}

static void check_step(const char *model) {
  StFile st;
  load_golden(&st, model);
  Graph *g = model_graph(model, true);
  Interp *I = interp_new(g, true);
  set_params(g, &st, interp_slot(I, SLOT_VALUE));
  int32_t chars[64];
  int len = encode(st_meta(&st, "train_name"), chars);
  int target = label_index(&st, st_meta(&st, "train_label"));
  Err e;
  if (interp_run(I, chars, len, target, &e))
    fail_msg("%s", e.msg);
  double loss = interp_value(I, g->loss, NULL)[0];
  double want_loss = need(&st, "loss")->data[0];
  print_message("%s: loss %.7f (PyTorch %.7f)\n", model, loss, want_loss);
  assert_true(fabs(loss - want_loss) < 1e-4);
  const StTensor *gn = st_find(&st, "grad_norm");
  if (gn) {
    double got = interp_value(I, g->grad_norm, NULL)[0];
    print_message("%s: gradient norm %.6f (PyTorch %.6f)\n", model, got, gn->data[0]);
    assert_true(fabs(got - gn->data[0]) < 1e-4 * fmax(1, gn->data[0]));
  }
  const double *grads = interp_slot(I, SLOT_GRAD), *values = interp_slot(I, SLOT_VALUE);
  for (int p = 0; p < g->nparams; p++) {
    const Param *pa = &g->params[p];
    if (!pa->trainable)
      continue;
    char tn[128];
    snprintf(tn, sizeof tn, "grad.%s", pa->name);
    const StTensor *gw = need(&st, tn);
    snprintf(tn, sizeof tn, "step1.%s", pa->name);
    const StTensor *sw = need(&st, tn);
    /* Adam's first step moves a weight by lr * g / (|g| + eps): where |g| is
     * near eps it amplifies a gradient difference dg by up to lr / eps. So
     * each weight must match within 1e-6 plus that amplification of its own
     * gradient's float32 rounding difference. */
    double ratio = g->train.lr / g->train.eps;
    double scale = 0, gdiff = 0, sdiff = 0, excess = 0;
    int sensitive = 0;
    for (size_t i = 0; i < gw->nelem; i++) {
      double dg = fabs(grads[pa->offset + i] - gw->data[i]);
      double d = fabs(values[pa->offset + i] - sw->data[i]);
      scale = fmax(scale, fabs(gw->data[i]));
      gdiff = fmax(gdiff, dg);
      sdiff = fmax(sdiff, d);
      sensitive += d > 1e-6;
      excess = fmax(excess, d - (1e-6 + ratio * dg));
    }
    print_message("%s: %-18s grad max diff %.2e (rel %.2e); step max diff %.2e, %d weight%s "
                  "past 1e-6 where |g| ~ eps\n",
                  model, pa->name, gdiff, gdiff / scale, sdiff, sensitive, sensitive == 1 ? "" : "s");
    assert_true(gdiff <= 1e-4 * scale);
    assert_true(excess <= 0);
    assert_true(sensitive <= 4); /* a handful at most, never a systematic error */
  }
  interp_free(I);
  graph_free(g);
  st_free(&st);
}

static void test_rnn_logits(void **state) { check_logits("rnn"); }
static void test_gru_logits(void **state) { check_logits("gru"); }
static void test_rnn_step(void **state) { check_step("rnn"); }
static void test_gru_step(void **state) { check_step("gru"); }
static void test_lstm_logits(void **state) { check_logits("lstm"); }
static void test_lstm_step(void **state) { check_step("lstm"); }
static void test_embgru_logits(void **state) { check_logits("embgru"); }
static void test_embgru_step(void **state) { check_step("embgru"); }
static void test_bigru_logits(void **state) { check_logits("bigru"); }
static void test_bigru_step(void **state) { check_step("bigru"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn_logits),
      cmocka_unit_test(test_gru_logits),
      cmocka_unit_test(test_rnn_step),
      cmocka_unit_test(test_gru_step),
      cmocka_unit_test(test_lstm_logits),
      cmocka_unit_test(test_lstm_step),
      cmocka_unit_test(test_embgru_logits),
      cmocka_unit_test(test_embgru_step),
      cmocka_unit_test(test_bigru_logits),
      cmocka_unit_test(test_bigru_step),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_batch_golden.c: minibatch training against PyTorch.
 *
 * tests/golden/{rnn,gru,lstm}_batch.safetensors (made by
 * make_batch_golden.py and make_lstm_golden.py; see tests/golden/README.md):
 * from the seed-42 parameters, two Adam steps, each on its own batch of
 * names of mixed lengths (1 to 20 characters), packed sequences, the mean
 * cross entropy, rnn.nn clipped on the gradient of the mean, with a kaiming
 * h0 per name (fed to rnnc as its noise draws).
 * Checked through the runtime's batched kernels: each name's logits and
 * loss, the mean loss, the gradient norm, every gradient, Adam's moments
 * and the parameters after each step, within the README's float32
 * tolerances (parameters: 1e-6 + (lr/eps) dg1 after step 1, 2e-6 + (lr/eps)
 * (2.25 dg1 + 1.25 dg2) after step 2, per weight). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"

static const StTensor *need(const StFile *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const StTensor *need(const StFile *f, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const StTensor *t = st_find(f, name);
  if (!t)
    fail_msg("the golden file has no tensor '%s'", name);
  return t;
}

/* max |got - want| <= tol * (relative ? max |want| : 1) */
static void close_to(const char *what, const float *got, const float *want, size_t n, double tol,
                     bool relative) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < n; i++) {
    scale = fmax(scale, fabs(want[i]));
    diff = fmax(diff, fabs((double)got[i] - want[i]));
  }
  double lim = relative ? tol * scale : tol;
  print_message("  %-40s max |diff| %.3g (limit %.3g)\n", what, diff, lim);
  if (!(diff <= lim))
    fail_msg("%s: max |diff| %.3e over the limit %.3e", what, diff, lim);
}

typedef struct Step {
  int n;
  const int32_t **chars;
  int32_t *lens, *targets;
  int32_t *text;
  float *noise;
} Step;

static Step load_step(const StFile *f, int k, const Model *m, float bound) {
  const StTensor *ch = need(f, "step%d.chars", k), *ln = need(f, "step%d.lengths", k),
                 *tg = need(f, "step%d.targets", k);
  assert_true(ch->i32 && ln->i32 && tg->i32);
  Step s = {.n = (int)ln->nelem};
  s.chars = xmalloc((size_t)s.n * sizeof *s.chars);
  s.lens = xmalloc((size_t)s.n * sizeof *s.lens);
  s.targets = xmalloc((size_t)s.n * sizeof *s.targets);
  s.text = xmalloc(ch->nelem * sizeof *s.text);
  for (size_t i = 0; i < ch->nelem; i++)
    s.text[i] = ch->idata[i];
  size_t at = 0;
  for (int i = 0; i < s.n; i++) {
    s.lens[i] = ln->idata[i];
    s.targets[i] = tg->idata[i];
    s.chars[i] = s.text + at;
    at += (size_t)s.lens[i];
  }
  assert_int_equal(at, ch->nelem);
  size_t per = model_noise_per_name(m);
  if (per) { /* h0 = draw * bound: the draws that give PyTorch's h0 */
    const StTensor *h0 = need(f, "step%d.h0", k);
    assert_int_equal(h0->nelem, (size_t)s.n * per);
    s.noise = xmalloc(h0->nelem * sizeof *s.noise);
    for (size_t i = 0; i < h0->nelem; i++)
      s.noise[i] = h0->data[i] / bound;
  }
  return s;
}

static void free_step(Step *s) {
  free(s->chars);
  free(s->lens);
  free(s->targets);
  free(s->text);
  free(s->noise);
}

/* The bound of the graph's noise node (rnn.nn's kaiming h0), 1 without. */
static float noise_bound(const Model *m) {
  for (int i = 0; i < m->fwd->nnodes; i++)
    if (m->fwd->nodes[i].op == OP_NOISE)
      return (float)m->fwd->nodes[i].f;
  return 1;
}

static void check_model(const char *graph, const char *init, const char *golden, double lr) {
  char *gpath = src_path(graph), *ipath = src_path(init), *fpath = src_path(golden);
  Err e;
  Model m;
  ModelOptions mo = {.batch = 32, .lr = lr, .threads = 2, .batched_forward = true};
  if (model_compile(&m, gpath, &mo, &e))
    fail_msg("%s", e.msg);
  if (!m.bstep_fn || !m.bfwd_fn)
    fail_msg("%s: no batched kernels: %s", graph, m.unbatched);
  char **labels;
  int nlabels;
  if (ckpt_load(&m, ipath, false, &labels, &nlabels, &e))
    fail_msg("%s", e.msg);
  for (int i = 0; i < nlabels; i++)
    free(labels[i]);
  free(labels);
  StFile f;
  if (st_load(&f, fpath, &e))
    fail_msg("%s", e.msg);
  const Graph *g = m.fwd;
  int C = g->classes;
  float bound = noise_bound(&m);
  double ratio = lr / 1e-8;
  float *g1 = xcalloc(m.nfloats, sizeof *g1); /* step 1's gradient differences */
  for (int k = 1; k <= 2; k++) {
    Step s = load_step(&f, k, &m, bound);
    print_message("%s, step %d: %d names\n", graph, k, s.n);
    float *logits = xmalloc((size_t)s.n * (size_t)C * sizeof *logits);
    if (s.noise)
      model_feed_noise(&m, s.noise, (size_t)s.n * model_noise_per_name(&m));
    model_forward_batch(&m, s.chars, s.lens, s.n, logits);
    close_to("logits", logits, need(&f, "step%d.logits", k)->data, (size_t)s.n * (size_t)C, 1e-4, false);
    float *losses = xmalloc((size_t)s.n * sizeof *losses), mean, gnorm;
    if (s.noise)
      model_feed_noise(&m, s.noise, (size_t)s.n * model_noise_per_name(&m));
    model_train_batch(&m, s.chars, s.lens, s.targets, s.n, losses, &mean, &gnorm);
    close_to("losses", losses, need(&f, "step%d.losses", k)->data, (size_t)s.n, 1e-4, false);
    close_to("mean loss", &mean, need(&f, "step%d.loss", k)->data, 1, 1e-4, false);
    const StTensor *gn = st_find(&f, "step1.grad_norm");
    if (gn)
      close_to("gradient norm", &gnorm, need(&f, "step%d.grad_norm", k)->data, 1, 1e-4, true);
    /* The grad slot holds the step's gradient of the mean, before clipping. */
    const float *grads = m.state + SLOT_GRAD * m.nfloats;
    for (int p = 0; p < g->nparams; p++) {
      const Param *pa = &g->params[p];
      size_t n = type_numel(pa->type);
      const float *want = need(&f, "step%d.grad.%s", k, pa->name)->data;
      char what[160];
      snprintf(what, sizeof what, "gradient of %s", pa->name);
      close_to(what, grads + pa->offset, want, n, 1e-4, true);
      char pname[200];
      snprintf(pname, sizeof pname, "step%d.%s", k, pa->name);
      const StTensor *pt = st_find(&f, pname);
      double worst = 0;
      for (size_t i = 0; i < n; i++) {
        size_t o = pa->offset + i;
        double dg = fabs((double)grads[o] - want[i]);
        double lim = k == 1 ? 1e-6 + ratio * dg : 2e-6 + ratio * (2.25 * g1[o] + 1.25 * dg);
        if (k == 1)
          g1[o] = (float)dg;
        if (!pt)
          continue;
        double d = fabs((double)m.state[o] - pt->data[i]);
        worst = fmax(worst, d / lim);
        if (!(d <= lim))
          fail_msg("%s[%zu] after step %d: %.9g, PyTorch %.9g (limit %.3g)", pa->name, i, k,
                   m.state[o], pt->data[i], lim);
      }
      if (pt)
        print_message("  %-40s after step %d: within %.2f of the bound\n", pa->name, k, worst);
      if (k == 2 && st_find(&f, "exp_avg.in2hidden.weight")) {
        snprintf(what, sizeof what, "exp_avg of %s", pa->name);
        close_to(what, m.state + SLOT_M * m.nfloats + pa->offset,
                 need(&f, "exp_avg.%s", pa->name)->data, n, 1e-4, true);
        snprintf(what, sizeof what, "exp_avg_sq of %s", pa->name);
        close_to(what, m.state + SLOT_V * m.nfloats + pa->offset,
                 need(&f, "exp_avg_sq.%s", pa->name)->data, n, 1e-4, true);
      }
    }
    free(logits);
    free(losses);
    free_step(&s);
  }
  free(g1);
  st_free(&f);
  model_free(&m);
  free(gpath);
  free(ipath);
  free(fpath);
}

static void test_rnn(void **state) {
  (void)state;
  check_model("graphs/rnn.nn", "tests/golden/rnn_seed42.safetensors",
              "tests/golden/rnn_batch.safetensors", 1e-3);
}

static void test_gru(void **state) {
  (void)state;
  check_model("graphs/gru.nn", "tests/golden/gru_seed42.safetensors",
              "tests/golden/gru_batch.safetensors", 2e-3);
}

static void test_lstm(void **state) {
  (void)state;
  check_model("graphs/lstm.nn", "tests/golden/lstm_seed42.safetensors",
              "tests/golden/lstm_batch.safetensors", 2e-3);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_rnn), cmocka_unit_test(test_gru),
                                     cmocka_unit_test(test_lstm)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

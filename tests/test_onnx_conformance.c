/* test_onnx_conformance: ONNX's own backend node tests of GRU, LSTM and
 * RNN (Debian's libonnx-testdata: data/node/test_gru_*, test_lstm_*,
 * test_rnn_seq_length, test_simple_rnn_*), imported and run.
 *
 * Each test is a model.onnx with one node and its inputs (X, W, R, B,
 * sequence_lens, initial states, P) and outputs (Y_h, and Y for the
 * batchwise ones) as TensorProto files. rnnc runs one sequence at a time,
 * so for each batch element b the model is imported with every input but
 * X bound to its value (the initial states' row b), and the graph runs in
 * the reference interpreter on X's row b, truncated to sequence_lens[b].
 * Y_h[b] is the graph's output; Y[t][b] is the output on the first t + 1
 * steps (a forward scan's state after step t). ONNX's tolerances: |rnnc -
 * expected| <= 1e-7 + 1e-3 |expected|. One line per test on stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_import.h"
#include "rnnc.h"
#include "testutil.h"

#define TESTDATA "/usr/share/libonnx-testdata/data/node"

static const char *const tests[] = {
    "test_gru_batchwise",         "test_gru_defaults",
    "test_gru_seq_length",        "test_gru_with_initial_bias",
    "test_lstm_batchwise",        "test_lstm_defaults",
    "test_lstm_with_initial_bias", "test_lstm_with_peepholes",
    "test_rnn_seq_length",        "test_simple_rnn_batchwise",
    "test_simple_rnn_defaults",   "test_simple_rnn_with_initial_bias",
};

typedef struct Case {
  char *model;
  size_t model_len;
  StTensor in[8], out[2];
  int nin, nout;
  bool batchwise; /* layout 1: X [B, T, I], Y [B, T, 1, H], Y_h [B, 1, H] */
} Case;

static void read_tensor(const char *path, StTensor *t) {
  Err e;
  size_t len;
  char *bytes = read_file(path, &len, &e);
  if (!bytes)
    fail_msg("%s", e.msg);
  if (onnx_read_tensor(bytes, len, t, &e))
    fail_msg("%s: %s", path, e.msg);
  free(bytes);
}

static void load_case(const char *name, Case *c) {
  memset(c, 0, sizeof *c);
  char path[512];
  Err e;
  snprintf(path, sizeof path, TESTDATA "/%s/model.onnx", name);
  c->model = read_file(path, &c->model_len, &e);
  if (!c->model)
    fail_msg("%s (install libonnx-testdata: sh scripts/install-deps --test)", e.msg);
  for (int i = 0; i < 8; i++) {
    snprintf(path, sizeof path, TESTDATA "/%s/test_data_set_0/input_%d.pb", name, i);
    FILE *f = fopen(path, "rb");
    if (!f)
      break;
    fclose(f);
    read_tensor(path, &c->in[c->nin++]);
  }
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, TESTDATA "/%s/test_data_set_0/output_%d.pb", name, i);
    FILE *f = fopen(path, "rb");
    if (!f)
      break;
    fclose(f);
    read_tensor(path, &c->out[c->nout++]);
  }
  c->batchwise = strstr(name, "batchwise") != NULL;
}

static void free_case(Case *c) {
  for (int i = 0; i < c->nin; i++)
    onnx_tensor_free(&c->in[i]);
  for (int i = 0; i < c->nout; i++)
    onnx_tensor_free(&c->out[i]);
  free(c->model);
}

static const StTensor *tensor(const Case *c, const char *name) {
  for (int i = 0; i < c->nin; i++)
    if (!strcmp(c->in[i].name, name))
      return &c->in[i];
  for (int i = 0; i < c->nout; i++)
    if (!strcmp(c->out[i].name, name))
      return &c->out[i];
  return NULL;
}

/* The imported graph of batch element b, ready to run. */
typedef struct Run {
  Graph *g;
  Interp *I;
  int H;
} Run;

static Run import_one(const Case *c, int b, const char *name) {
  /* Every input but X and sequence_lens, bound; the initial states' row b. */
  StTensor bind[8];
  float *rows[8] = {0};
  int nb = 0;
  for (int i = 0; i < c->nin; i++) {
    const StTensor *t = &c->in[i];
    if (!strcmp(t->name, "X") || !strcmp(t->name, "sequence_lens"))
      continue;
    bind[nb] = *t;
    if (!strcmp(t->name, "initial_h") || !strcmp(t->name, "initial_c")) {
      /* [1, B, H] (batchwise: [B, 1, H]) -> [1, 1, H] */
      int64_t B = t->shape[c->batchwise ? 0 : 1], H = t->shape[2];
      rows[nb] = malloc((size_t)H * sizeof(float));
      memcpy(rows[nb], t->data + b * H, (size_t)H * sizeof(float));
      (void)B;
      bind[nb].data = rows[nb];
      bind[nb].shape[0] = bind[nb].shape[1] = 1;
      bind[nb].nelem = (size_t)H;
    }
    nb++;
  }
  ImportOptions o = {.input = "X", .output = "Y_h", .bind = bind, .nbind = nb, .source = name};
  Imported im;
  Err e;
  if (onnx_import(c->model, c->model_len, &o, &im, &e))
    fail_msg("%s: import: %s", name, e.msg);
  for (int i = 0; i < nb; i++)
    free(rows[i]);
  Run r = {0};
  r.g = compile_graph(name, im.nn.data, im.nn.len, &e);
  if (!r.g)
    fail_msg("%s: the imported graph:\n%s\n%s", name, im.nn.data, e.msg);
  r.I = interp_new(r.g, false);
  double *values = interp_slot(r.I, SLOT_VALUE);
  for (int p = 0; p < r.g->nparams; p++) {
    const Param *pa = &r.g->params[p];
    const StTensor *t = NULL;
    for (int i = 0; i < im.ntensors; i++)
      if (!strcmp(im.tensors[i].name, pa->name))
        t = &im.tensors[i];
    assert_non_null(t);
    assert_int_equal(t->nelem, type_numel(pa->type));
    for (size_t k = 0; k < t->nelem; k++)
      values[pa->offset + k] = t->data[k];
  }
  r.H = r.g->classes;
  imported_free(&im);
  return r;
}

/* Runs r on X's row b, steps [0, len); returns the output (H doubles). */
static const double *run(const Run *r, const Case *c, int b, int len) {
  const StTensor *X = tensor(c, "X");
  int64_t T = X->shape[c->batchwise ? 1 : 0], B = X->shape[c->batchwise ? 0 : 1],
          I = X->shape[2];
  float *x = malloc((size_t)(len * I) * sizeof *x);
  for (int t = 0; t < len; t++)
    memcpy(x + t * I, X->data + (c->batchwise ? (b * T + t) * I : (t * B + b) * I),
           (size_t)I * sizeof *x);
  Err e;
  if (interp_run_f32(r->I, x, len, 0, &e))
    fail_msg("run: %s", e.msg);
  free(x);
  return interp_value(r->I, r->g->output, NULL);
}

static double check(const char *name, const char *what, const double *got, const float *want,
                    int n) {
  double worst = 0;
  for (int i = 0; i < n; i++) {
    double d = fabs(got[i] - want[i]);
    if (!(d <= 1e-7 + 1e-3 * fabs(want[i])))
      fail_msg("%s: %s[%d] = %.9g, ONNX's %.9g", name, what, i, got[i], (double)want[i]);
    if (d > worst)
      worst = d;
  }
  return worst;
}

static void conformance(void **state) {
  (void)state;
  for (size_t k = 0; k < ARRAY_LEN(tests); k++) {
    const char *name = tests[k];
    Case c;
    load_case(name, &c);
    const StTensor *X = tensor(&c, "X"), *Yh = tensor(&c, "Y_h"), *Y = tensor(&c, "Y"),
                   *lens = tensor(&c, "sequence_lens");
    assert_non_null(X);
    assert_non_null(Yh);
    int64_t T = X->shape[c.batchwise ? 1 : 0], B = X->shape[c.batchwise ? 0 : 1];
    double worst = 0;
    int checked = 0;
    for (int b = 0; b < B; b++) {
      Run r = import_one(&c, b, name);
      int len = lens ? (int)lens->data[b] : (int)T;
      const double *h = run(&r, &c, b, len);
      /* Y_h: [1, B, H] (batchwise [B, 1, H]): row b either way */
      double w = check(name, "Y_h", h, Yh->data + b * r.H, r.H);
      worst = w > worst ? w : worst;
      checked += r.H;
      for (int t = 0; Y && t < T; t++) {
        const double *y = run(&r, &c, b, t + 1);
        /* Y: [T, 1, B, H] (batchwise [B, T, 1, H]) */
        const float *want = Y->data + (c.batchwise ? (b * T + t) : (t * B + b)) * r.H;
        w = check(name, "Y", y, want, r.H);
        worst = w > worst ? w : worst;
        checked += r.H;
      }
      interp_free(r.I);
      graph_free(r.g);
    }
    printf("%-36s ok: %d values, max |diff| %.3g\n", name, checked, worst);
    free_case(&c);
  }
}

int main(void) {
  const struct CMUnitTest t[] = {cmocka_unit_test(conformance)};
  return cmocka_run_group_tests(t, NULL, NULL);
}

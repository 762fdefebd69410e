/* test_onnx.c: rnnc import as a user meets it, its Scan node, and rnnc
 * export (read back by the import and by ONNX's checker).
 *
 * - Round trip with PyTorch: tests/onnx/gru.onnx (the seed's GRU),
 *   lstm.onnx, emb.onnx, bigru.onnx and bilstm.onnx (bidirectional
 *   layers), exported by torch.onnx.export (tests/onnx/make_onnx.py), and
 *   revgru.onnx (a GRU node with direction 'reverse' and a Relu), imported
 *   with --onehot; rnnc predict --logits gives PyTorch's logits
 *   (tests/onnx/logits.safetensors) within 1e-5; rnnc build makes an AOT
 *   object of the import.
 * - Refusals: exit 1 and a message naming the node, its op and the
 *   attribute (the models in tests/onnx/errors), truncated and non-ONNX files, a
 *   float-input graph given to train; usage errors exit 2.
 * - The fuzzer's kept corpus (tests/fuzz/onnx_corpus, fuzz_onnx.c):
 *   every input imports to a graph that compiles, or fails with a message. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "onnx_import.h"
#include "rnnc.h"
#include "safetensors.h"
#include "testutil.h"

/* rnnc predict --logits's numbers: each "  Label  value" line's value. */
static int parse_logits(const char *out, float *v, int max) {
  int n = 0;
  for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (p[0] != ' ')
      continue;
    const char *end = strchr(p, '\n');
    const char *sp = end ? end : p + strlen(p);
    while (sp > p && sp[-1] != ' ')
      sp--;
    if (n < max)
      v[n] = strtof(sp, NULL);
    n++;
  }
  return n;
}

static void round_trip(const char *model, const char *key) {
  char *dir = tmp_path("onnx");
  char *onnx = src_path(model), *out = xasprintf("%s/%s", dir, key);
  char *nn = xasprintf("%s.nn", out), *ckpt = xasprintf("%s.safetensors", out);
  char *data = src_path("data/names");
  assert_int_equal(sh("mkdir -p '%s'", dir), 0);
  free(rnnc_expect(0, (const char *const[]){"import", onnx, "-o", out, "--onehot", "--data", data,
                                            NULL}));
  free(data);
  StFile f;
  Err e;
  char *golden = src_path("tests/onnx/logits.safetensors");
  if (st_load(&f, golden, &e))
    fail_msg("%s", e.msg);
  const StTensor *want = st_find(&f, key);
  assert_non_null(want);
  char *names = xstrdup(st_meta(&f, "names"));
  const char *argv[16] = {"predict", nn, ckpt, "--logits"};
  int argc = 4;
  for (char *s = strtok(names, ","); s && argc < 15; s = strtok(NULL, ","))
    argv[argc++] = s;
  argv[argc] = NULL;
  int n = argc - 4, C = (int)want->shape[1];
  assert_int_equal(want->shape[0], n);
  char *text = rnnc_expect(0, argv);
  float *got = xcalloc((size_t)n * C, sizeof *got);
  assert_int_equal(parse_logits(text, got, n * C), n * C);
  double worst = 0;
  for (int i = 0; i < n * C; i++) {
    double d = fabs((double)got[i] - want->data[i]);
    if (d > 1e-5)
      fail_msg("%s: name %d, logit %d: rnnc %.9g, PyTorch %.9g", model, i / C, i % C, got[i],
               want->data[i]);
    worst = d > worst ? d : worst;
  }
  print_message("%s: %d names, logits within %.3g of PyTorch's\n", model, n, worst);
  free(text);
  free(got);
  free(names);
  st_free(&f);
  free(golden);
  free(onnx);
  free(out);
  free(nn);
  free(ckpt);
  free(dir);
}

static void gru_round_trip(void **state) {
  (void)state;
  round_trip("tests/onnx/gru.onnx", "gru");
}

static void lstm_round_trip(void **state) {
  (void)state;
  round_trip("tests/onnx/lstm.onnx", "lstm");
}

/* rnnc build on an import: the object and the header; and the import
 * trains: rnnc check's finite differences agree with its gradients. */
/* An embedding model: its int64 indices become one-hot characters. */
static void embedding_round_trip(void **state) {
  (void)state;
  round_trip("tests/onnx/emb.onnx", "emb");
}

/* Bidirectional layers as torch.onnx.export writes them: a GRU node with
 * direction 'bidirectional', its Y [T, 2, 1, H] transposed and reshaped
 * to [T, 1, 2H]; h_n[-2] and h_n[-1] concatenated (bigru), two stacked
 * layers and out[-1] (bilstm). A reverse GRU node, Y_h and Y's row 0, and
 * a Relu (revgru). */
static void bidirectional_round_trip(void **state) {
  (void)state;
  round_trip("tests/onnx/bigru.onnx", "bigru");
  round_trip("tests/onnx/bilstm.onnx", "bilstm");
  round_trip("tests/onnx/revgru.onnx", "revgru");
}

static void build_import(void **state) {
  (void)state;
  char *dir = tmp_path("onnx_build");
  char *onnx = src_path("tests/onnx/lstm.onnx"), *out = xasprintf("%s/lstm", dir);
  char *nn = xasprintf("%s.nn", out), *ckpt = xasprintf("%s.safetensors", out);
  char *obj = xasprintf("%s/lstm_model.o", dir), *hdr = xasprintf("%s/lstm_model.h", dir);
  assert_int_equal(sh("mkdir -p '%s'", dir), 0);
  /* 17 labels for 18 classes, then 18. */
  const char *labels = "L0,L1,L2,L3,L4,L5,L6,L7,L8,L9,L10,L11,L12,L13,L14,L15,L16,Last";
  char *text = rnnc_expect(1, (const char *const[]){"import", onnx, "-o", out, "--onehot",
                                                    "--labels", labels + 3, NULL});
  assert_contains(text, "17 labels, but the model's output has 18 classes");
  free(text);
  /* 18 labels, one of them twice, or one empty: nothing written. */
  text = rnnc_expect(1, (const char *const[]){"import", onnx, "-o", out, "--onehot", "--labels",
                                              "L0,L1,L2,L3,L4,L5,L6,L7,L8,L9,L10,L11,L12,L13,L14,L15,L16,L1",
                                              NULL});
  assert_contains(text, "the labels: \"L1\" names two classes");
  free(text);
  text = rnnc_expect(1, (const char *const[]){"import", onnx, "-o", out, "--onehot", "--labels",
                                              "L0,L1,L2,L3,L4,L5,L6,L7,L8,L9,L10,L11,L12,L13,,L15,L16,L17",
                                              NULL});
  assert_contains(text, "the labels: label 15 of 18 is empty");
  free(text);
  assert_int_equal(access(ckpt, F_OK), -1);
  free(rnnc_expect(0, (const char *const[]){"import", onnx, "-o", out, "--onehot", "--labels",
                                            labels, NULL}));
  free(rnnc_expect(0, (const char *const[]){"build", nn, ckpt, "-o", obj, NULL}));
  char *check = rnnc_expect(0, (const char *const[]){"check", nn, "--names", "Abc,Li", "--samples",
                                                     "20", NULL});
  assert_contains(check, "lstm0.W");
  assert_contains(check, "ok (tolerance");
  free(check);
  char *h = read_text(hdr);
  assert_contains(h, "lstm_model_predict");
  assert_contains(h, "17 Last");
  assert_int_equal(sh("nm '%s' | grep -q ' T lstm_model_forward'", obj), 0);
  free(h);
  free(onnx);
  free(out);
  free(nn);
  free(ckpt);
  free(obj);
  free(hdr);
  free(dir);
}

static void refuses(const char *model, const char *const *fragments) {
  char *dir = tmp_path("onnx_err");
  char *out = xasprintf("%s/m", dir), *nn = xasprintf("%s.nn", out);
  char *text = rnnc_expect(1, (const char *const[]){"import", model, "-o", out, NULL});
  for (int i = 0; fragments[i]; i++)
    assert_contains(text, fragments[i]);
  FILE *f = fopen(nn, "r");
  assert_null(f); /* nothing written */
  free(text);
  free(out);
  free(nn);
  free(dir);
}

static void errors(void **state) {
  (void)state;
  static const struct {
    const char *file;
    const char *want[4];
  } cases[] = {
      {"unsupported_op", {"node 'leaky' (LeakyRelu)", "op LeakyRelu is not supported", NULL}},
      {"activations",
       {"node 'gru_relu' (GRU)", "attribute 'activations': function 0 is not Sigmoid", NULL}},
      {"clip", {"node 'gru_clip' (GRU)", "attribute 'clip' is not supported", NULL}},
      {"transpose",
       {"node 'interleave' (Transpose)", "transposes [T, 2, 1, 3] to [T, 3, 1, 2]", NULL}},
      {"unknown_attribute", {"node 'soft' (Softmax)", "attribute 'temperature'", NULL}},
      {"dynamic_shape",
       {"node 'zeros_T' (ConstantOfShape)", "depends on the sequence length T", NULL}},
      {"float16", {"tensor 'half'", "data type FLOAT16 is not supported", NULL}},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char rel[128];
    snprintf(rel, sizeof rel, "tests/onnx/errors/%s.onnx", cases[i].file);
    char *p = src_path(rel);
    refuses(p, cases[i].want);
    free(p);
  }
  /* Not ONNX; the seed GRU cut short at several places. */
  char *nn = src_path("graphs/gru.nn");
  refuses(nn, (const char *const[]){"not an ONNX model", NULL});
  free(nn);
  char *gru = src_path("tests/onnx/gru.onnx");
  size_t len;
  Err e;
  char *bytes = read_file(gru, &len, &e);
  assert_non_null(bytes);
  const size_t cuts[] = {0, 1, 17, 200, 4096, 1000000, 2574000};
  for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
    char *cut = tmp_path("cut.onnx");
    FILE *f = fopen(cut, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, cuts[i] < len ? cuts[i] : len, f), cuts[i] < len ? cuts[i] : len);
    fclose(f);
    char *dir = tmp_path("onnx_cut");
    char *out = xasprintf("%s/m", dir);
    char *text = rnnc_expect(1, (const char *const[]){"import", cut, "-o", out, NULL});
    assert_contains(text, "rnnc import: ");
    free(text);
    free(out);
    free(dir);
    free(cut);
  }
  free(bytes);
  free(gru);
  /* Usage errors. */
  free(rnnc_expect(2, (const char *const[]){"import", NULL}));
  free(rnnc_expect(2, (const char *const[]){"import", "m.onnx", NULL}));
  free(rnnc_expect(2, (const char *const[]){"import", "m.onnx", "-o", "x", "--data", "d",
                                            "--labels", "a", NULL}));
  char *help = rnnc_expect(0, (const char *const[]){"import", "--help", NULL});
  assert_contains(help, "usage: rnnc import MODEL.onnx -o DIR/NAME");
  free(help);
}

/* A float-input import: the interpreter's only; train says so. */
static void float_input_refused_by_kernels(void **state) {
  (void)state;
  char *dir = tmp_path("onnx_float");
  char *onnx = src_path("tests/onnx/lstm.onnx"), *out = xasprintf("%s/lstm", dir);
  char *nn = xasprintf("%s.nn", out);
  assert_int_equal(sh("mkdir -p '%s'", dir), 0);
  free(rnnc_expect(0, (const char *const[]){"import", onnx, "-o", out, NULL}));
  char *g = read_text(nn);
  assert_contains(g, "input  x : f32[T, 59]");
  free(g);
  char *text = rnnc_expect(1, (const char *const[]){"train", nn, "--epochs", "1", NULL});
  assert_contains(text, "float vectors (f32[T, 59])");
  assert_contains(text, "rnnc import --onehot");
  free(text);
  free(onnx);
  free(out);
  free(nn);
  free(dir);
}

/* An ONNX Scan (tests/onnx/scan.onnx, an Elman RNN; scan_reverse.onnx,
 * the same reading X from its last row): imported with a float input, run
 * in the interpreter, against numpy's output. */
static void scan_model(const char *model, const char *ref_rel, const char *want_line) {
  char *path = src_path(model), *ref = src_path(ref_rel);
  size_t len;
  Err e;
  char *bytes = read_file(path, &len, &e);
  assert_non_null(bytes);
  ImportOptions o = {.source = model};
  Imported im;
  if (onnx_import(bytes, len, &o, &im, &e))
    fail_msg("%s", e.msg);
  if (!strstr(im.nn.data, want_line))
    fail_msg("%s: no '%s' in\n%s", model, want_line, im.nn.data);
  Graph *g = compile_graph("scan.nn", im.nn.data, im.nn.len, &e);
  if (!g)
    fail_msg("%s\n%s", im.nn.data, e.msg);
  Interp *I = interp_new(g, false);
  double *values = interp_slot(I, SLOT_VALUE);
  for (int p = 0; p < g->nparams; p++)
    for (int i = 0; i < im.ntensors; i++)
      if (!strcmp(im.tensors[i].name, g->params[p].name))
        for (size_t k = 0; k < im.tensors[i].nelem; k++)
          values[g->params[p].offset + k] = im.tensors[i].data[k];
  StFile f;
  if (st_load(&f, ref, &e))
    fail_msg("%s", e.msg);
  const StTensor *X = st_find(&f, "X"), *want = st_find(&f, "out");
  assert_non_null(X);
  assert_non_null(want);
  if (interp_run_f32(I, X->data, (int)X->shape[0], 0, &e))
    fail_msg("%s", e.msg);
  size_t n;
  const double *got = interp_value(I, g->output, &n);
  assert_int_equal(n, want->nelem);
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs(got[i] - want->data[i]);
    if (d > 1e-5)
      fail_msg("%s: out[%zu]: rnnc %.9g, numpy %.9g", model, i, got[i], want->data[i]);
    worst = d > worst ? d : worst;
  }
  print_message("%s: within %.3g of numpy's\n", model, worst);
  st_free(&f);
  interp_free(I);
  graph_free(g);
  imported_free(&im);
  free(bytes);
  free(path);
  free(ref);
}

/* Bidirectional GRU (linear_before_reset 0) and LSTM (peepholes, layout
 * 1) nodes with every input given, against numpy's transcription of
 * ONNX's equations: Y_h (Y_c), and Y's first and last rows. */
static void bidirectional_nodes(void **state) {
  (void)state;
  scan_model("tests/onnx/bigru_node.onnx", "tests/onnx/bigru_node.safetensors",
             "scan reverse gru0_reverse_cell over x from gru0_reverse.initial_h");
  scan_model("tests/onnx/bilstm_node.onnx", "tests/onnx/bilstm_node.safetensors",
             "scan reverse lstm0_reverse_cell over x from lstm0_reverse.initial_h, "
             "lstm0_reverse.initial_c");
}

static void scan_node(void **state) {
  (void)state;
  scan_model("tests/onnx/scan.onnx", "tests/onnx/scan.safetensors",
             "= scan scan0_cell over x from zeros(3), zeros(3)");
  scan_model("tests/onnx/scan_reverse.onnx", "tests/onnx/scan_reverse.safetensors",
             "= scan reverse scan0_cell over x from zeros(3), zeros(3)");
}

/* rnnc export of graph with checkpoint ckpt: ONNX's checker (python3-onnx)
 * accepts it, and imported back (labels from data, a names data
 * directory) it predicts the same logits for four names. */
static void export_and_back(const char *graph, const char *ckpt, const char *data, int C) {
  char *dir = tmp_path("onnx_export");
  char *model = xasprintf("%s/m.onnx", dir), *back = xasprintf("%s/back", dir);
  char *nn = xasprintf("%s.nn", back), *st = xasprintf("%s.safetensors", back);
  assert_int_equal(sh("mkdir -p '%s'", dir), 0);
  free(rnnc_expect(0, (const char *const[]){"export", graph, ckpt, "-o", model, NULL}));
  if (sh("/usr/bin/python3 -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]))' "
         "'%s'",
         model))
    fail_msg("ONNX's checker refuses %s (python3-onnx: sh scripts/install-deps --test)", model);
  free(rnnc_expect(0, (const char *const[]){"import", model, "-o", back, "--onehot", "--data",
                                            data, NULL}));
  const char *names[] = {"Dostoevsky", "Nakamura", "O'Brien", "Li"};
  char *a = rnnc_expect(0, (const char *const[]){"predict", graph, ckpt, "--logits", names[0],
                                                 names[1], names[2], names[3], NULL});
  char *b = rnnc_expect(0, (const char *const[]){"predict", nn, st, "--logits", names[0], names[1],
                                                 names[2], names[3], NULL});
  int n = 4 * C;
  float *la = xcalloc((size_t)n, sizeof *la), *lb = xcalloc((size_t)n, sizeof *lb);
  assert_int_equal(parse_logits(a, la, n), n);
  assert_int_equal(parse_logits(b, lb, n), n);
  double worst = 0;
  for (int i = 0; i < n; i++) {
    double d = fabs((double)la[i] - lb[i]);
    if (d > 1e-5)
      fail_msg("%s: logit %d: %.9g, exported and imported %.9g", graph, i, la[i], lb[i]);
    worst = d > worst ? d : worst;
  }
  print_message("%s exported and imported back: logits within %.3g\n", graph, worst);
  free(la);
  free(lb);
  free(a);
  free(b);
  free(model);
  free(back);
  free(nn);
  free(st);
  free(dir);
}

/* gru.nn and tests/golden/bigru.nn (reverse scans, sequences
 * concatenated) with PyTorch's golden weights; examples/relu_rnn.nn (relu)
 * and rnn.nn started from zeros (the one-hot character concatenated with
 * the state) trained for an epoch; rnn.nn's random initial state is
 * refused. */
static void export_round_trip(void **state) {
  (void)state;
  char *data = src_path("data/names");
  char *graph = src_path("graphs/gru.nn"), *ckpt = src_path("tests/golden/gru_seed42.safetensors");
  export_and_back(graph, ckpt, data, 18);
  char *bigru = src_path("tests/golden/bigru.nn");
  char *bickpt = src_path("tests/golden/bigru_seed42.safetensors");
  export_and_back(bigru, bickpt, data, 18);
  char *small = make_data_dir((const char *const[]){"Chinese", "Greek", "Japanese"},
                              (const int[]){8, 8, 8}, 3);
  char *relu = graph_variant("examples/relu_rnn.nn", "const H = 64", "const H = 16",
                             "const C = 18", "const C = 3", NULL);
  char *dir = tmp_path("onnx_relu"), *rckpt = xasprintf("%s/relu.safetensors", dir);
  assert_int_equal(sh("mkdir -p '%s'", dir), 0);
  free(rnnc_expect(0, (const char *const[]){"train", relu, "--data", small, "--epochs", "1",
                                            "--out", rckpt, NULL}));
  export_and_back(relu, rckpt, small, 3);
  /* rnn.nn from zeros: concat(x, h) of the one-hot character and the state */
  char *zrnn = graph_variant("graphs/rnn.nn", "const H = 256", "const H = 16", "const C = 18",
                             "const C = 3", "from kaiming_uniform(H), zeros(C)",
                             "from zeros(H), zeros(C)", NULL);
  char *zckpt = xasprintf("%s/zrnn.safetensors", dir);
  free(rnnc_expect(0, (const char *const[]){"train", zrnn, "--data", small, "--epochs", "1",
                                            "--out", zckpt, NULL}));
  export_and_back(zrnn, zckpt, small, 3);
  free(zckpt);
  free(zrnn);
  char *rnn = src_path("graphs/rnn.nn"), *rnnckpt = src_path("tests/golden/rnn_seed42.safetensors");
  char *model = xasprintf("%s/rnn.onnx", dir);
  char *text = rnnc_expect(1, (const char *const[]){"export", rnn, rnnckpt, "-o", model, NULL});
  assert_contains(text, "rnn.nn:28:38: a random initial state (kaiming_uniform)");
  free(text);
  free(model);
  free(rnn);
  free(rnnckpt);
  free(rckpt);
  free(dir);
  free(relu);
  free(small);
  free(bigru);
  free(bickpt);
  free(graph);
  free(ckpt);
  free(data);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void fuzz_corpus(void **state) {
  (void)state;
  char *dir = src_path("tests/fuzz/onnx_corpus");
  DIR *d = opendir(dir);
  if (!d)
    fail_msg("cannot open %s", dir);
  char **names = NULL;
  int n = 0, imported = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    if (ent->d_name[0] == '.')
      continue;
    names = xrealloc(names, (size_t)(n + 1) * sizeof *names);
    names[n++] = xstrdup(ent->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  assert_true(n >= 20);
  for (int i = 0; i < n; i++) {
    char *path = xasprintf("%s/%s", dir, names[i]);
    size_t len;
    Err e;
    char *bytes = read_file(path, &len, &e);
    if (!bytes)
      fail_msg("%s", e.msg);
    ImportOptions o = {.onehot = len > 0 && (bytes[0] & 1)};
    Imported im;
    e.msg[0] = '\0';
    if (onnx_import(bytes, len, &o, &im, &e) == 0) {
      Graph *g = compile_graph(names[i], im.nn.data, im.nn.len, &e);
      if (!g)
        fail_msg("%s: the imported graph does not compile: %s", path, e.msg);
      graph_free(g);
      imported_free(&im);
      imported++;
    } else if (!e.msg[0]) {
      fail_msg("%s: refused without a message", path);
    }
    free(bytes);
    free(path);
    free(names[i]);
  }
  print_message("onnx fuzz corpus: %d files, %d imported\n", n, imported);
  assert_true(imported > 0);
  free(names);
  free(dir);
}

int main(void) {
  const struct CMUnitTest t[] = {
      cmocka_unit_test(gru_round_trip),
      cmocka_unit_test(lstm_round_trip),
      cmocka_unit_test(embedding_round_trip),
      cmocka_unit_test(bidirectional_round_trip),
      cmocka_unit_test(build_import),
      cmocka_unit_test(errors),
      cmocka_unit_test(float_input_refused_by_kernels),
      cmocka_unit_test(scan_node),
      cmocka_unit_test(bidirectional_nodes),
      cmocka_unit_test(export_round_trip),
      cmocka_unit_test(fuzz_corpus),
  };
  return cmocka_run_group_tests(t, NULL, NULL);
}

/* test_jit.c: the JIT-compiled kernels against the reference interpreter
 * (float32) and against PyTorch's golden tensors.
 *
 * For rnn.nn, gru.nn and their 3-layer / 512-wide variants, lstm.nn, and at
 * every length 1..9 their 37-, 24- and 32-wide variants (lstm.nn: 37 and
 * 32; the products' unblocked paths, and the blocked ones' tuples of
 * steps): the forward kernel's
 * logits, and after one training step the loss, the gradient norm, every
 * gradient, Adam's moments and the updated parameters, all within float32
 * tolerance of the interpreter (gradients 1e-4 relative to
 * the tensor's largest magnitude; parameters 1e-6 plus Adam's own
 * amplification lr/eps of the gradient's rounding difference). */
#include <llvm-c/Core.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"

static char *variant(const char *rel, const char *from, const char *to) {
  return from ? graph_variant(rel, from, to, NULL) : graph_variant(rel, NULL);
}

static const int32_t name[] = {29, 14, 18, 19, 14, 4, 21, 18, 10, 24}; /* Dostoevsky */

static void compare(const char *what, const float *got, const double *want, size_t n,
                    double tol_rel) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < n; i++) {
    scale = fmax(scale, fabs(want[i]));
    diff = fmax(diff, fabs(got[i] - want[i]));
  }
  if (!(diff <= tol_rel * fmax(scale, 1e-30)))
    fail_msg("%s: max |diff| %.3e, %.3e of the largest magnitude %.3e", what, diff,
             diff / scale, scale);
}

/* The forward kernel and one training step of model m on the first len
 * characters of name, from the same parameters, against the interpreter. */
static void check_step(Model *m, const char *label, int len) {
  Err e;
  const Graph *g = m->train;
  Rng r;
  rng_seed(&r, 11);
  memset(m->state, 0, SLOT_COUNT * m->nfloats * sizeof *m->state);
  m->step = 0;
  for (size_t i = 0; i < m->nfloats; i++)
    m->state[i] = rng_uniform(&r, -0.15f, 0.15f);
  /* The interpreter starts from the same values and draws the same noise. */
  Interp *I = interp_new(g, true), *If = interp_new(m->fwd, true);
  double *w = interp_slot(I, SLOT_VALUE), *wf = interp_slot(If, SLOT_VALUE);
  for (size_t i = 0; i < m->nfloats; i++)
    w[i] = wf[i] = m->state[i];
  Rng noise;
  rng_seed(&noise, 5);
  interp_set_rng(If, &noise);
  model_seed_noise(m, 5);
  int C = g->classes;
  float *logits = xmalloc((size_t)C * sizeof *logits);
  model_forward(m, name, len, logits);
  if (interp_run(If, name, len, 3, &e))
    fail_msg("%s", e.msg);
  compare("forward logits", logits, interp_value(If, m->fwd->output, NULL), (size_t)C, 1e-5);

  /* A kernel writes every gradient afresh (the first accumulation into a
   * parameter stores, the rest of the slot is zeroed): what the slot held
   * before the step must not matter, NaN included. */
  for (size_t i = 0; i < m->nfloats; i++)
    m->state[SLOT_GRAD * m->nfloats + i] = NAN;
  rng_seed(&noise, 6);
  interp_set_rng(I, &noise);
  model_seed_noise(m, 6);
  float loss, gnorm;
  model_train_step(m, name, len, 3, &loss, &gnorm);
  if (interp_run(I, name, len, 3, &e))
    fail_msg("%s", e.msg);
  double want_loss = interp_value(I, g->loss, NULL)[0];
  double want_norm = g->grad_norm >= 0 ? interp_value(I, g->grad_norm, NULL)[0] : 0;
  assert_true(fabs(loss - want_loss) <= 1e-5 * fmax(1, fabs(want_loss)));
  /* The norm sums the squares of every gradient (2.5 million for the
   * 512-wide GRU) in float32 lanes; the interpreter sums in float64. */
  if (!(fabs(gnorm - want_norm) <= 1e-4 * want_norm))
    fail_msg("%s: gradient norm %.7g, interpreter %.7g", label, gnorm, want_norm);
  float *grads = m->state + SLOT_GRAD * m->nfloats;
  const double *ig = interp_slot(I, SLOT_GRAD), *iv = interp_slot(I, SLOT_VALUE);
  double ratio = g->train.lr / g->train.eps;
  for (int p = 0; p < g->nparams; p++) {
    const Param *pa = &g->params[p];
    size_t n = type_numel(pa->type);
    char what[160];
    snprintf(what, sizeof what, "%s: gradient of %s", label, pa->name);
    compare(what, grads + pa->offset, ig + pa->offset, n, 1e-4);
    for (size_t i = 0; i < n; i++) {
      size_t k = pa->offset + i;
      double dg = fabs(grads[k] - ig[k]);
      if (!(fabs(m->state[k] - iv[k]) <= 1e-6 + ratio * dg))
        fail_msg("%s: %s[%zu] after the step: %.9g, interpreter %.9g", label, pa->name, i,
                 m->state[k], iv[k]);
    }
  }
  free(logits);
  interp_free(I);
  interp_free(If);
}

/* check_step for names of tmin..tmax characters. */
static void check_graph_lengths(const char *path, const char *label, int tmin, int tmax) {
  Model m;
  Err e;
  ModelOptions mo = {.batch = 1}; /* the fused training kernel, whatever the graph's batch */
  if (model_compile(&m, path, &mo, &e))
    fail_msg("%s", e.msg);
  char what[96];
  for (int len = tmin; len <= tmax; len++) {
    snprintf(what, sizeof what, "%s, T = %d", label, len);
    check_step(&m, what, len);
  }
  print_message("%-24s T = %d..%d: logits, loss, all gradients and the step match\n", label, tmin,
                tmax);
  model_free(&m);
}

static void check_graph(const char *path, const char *label) {
  check_graph_lengths(path, label, (int)ARRAY_LEN(name), (int)ARRAY_LEN(name));
}

static void test_rnn(void **state) {
  char *p = variant("graphs/rnn.nn", NULL, NULL);
  check_graph(p, "rnn.nn");
  free(p);
}

static void test_gru(void **state) {
  char *p = variant("graphs/gru.nn", NULL, NULL);
  check_graph(p, "gru.nn");
  free(p);
}

static void test_gru_3_layers(void **state) {
  char *p = variant("graphs/gru.nn", "const L = 2", "const L = 3");
  check_graph(p, "gru.nn, L = 3");
  free(p);
}

static void test_rnn_512(void **state) {
  char *p = variant("graphs/rnn.nn", "const H = 256", "const H = 512");
  check_graph(p, "rnn.nn, H = 512");
  free(p);
}

/* H = 37 and 24: no product is a multiple of 16 (or 24 is of 8 only), so
 * every product takes the unblocked paths, at every length the blocked
 * ones handle in tuples of 4, 2 and 1 steps. */
static void test_rnn_odd(void **state) {
  for (int k = 0; k < 2; k++) {
    char *p = variant("graphs/rnn.nn", "const H = 256", k ? "const H = 24" : "const H = 37");
    check_graph_lengths(p, k ? "rnn.nn, H = 24" : "rnn.nn, H = 37", 1, 9);
    free(p);
  }
}

static void test_gru_odd(void **state) {
  for (int k = 0; k < 2; k++) {
    char *p = variant("graphs/gru.nn", "const H = 256", k ? "const H = 24" : "const H = 37");
    check_graph_lengths(p, k ? "gru.nn, H = 24" : "gru.nn, H = 37", 1, 9);
    free(p);
  }
}

/* H = 16, 32: every product blocked, at every length 1..9. */
static void test_gru_blocked_lengths(void **state) {
  char *p = variant("graphs/gru.nn", "const H = 256", "const H = 32");
  check_graph_lengths(p, "gru.nn, H = 32", 1, 9);
  free(p);
}

static void test_lstm(void **state) {
  char *p = variant("graphs/lstm.nn", NULL, NULL);
  check_graph(p, "lstm.nn");
  free(p);
}

/* Two carried states, four gates: the unblocked (37) and blocked (32)
 * products at every length 1..9. */
static void test_lstm_odd(void **state) {
  const char *widths[] = {"const H = 37", "const H = 32"};
  for (size_t k = 0; k < ARRAY_LEN(widths); k++) {
    char *p = variant("graphs/lstm.nn", "const H = 256", widths[k]);
    char label[64];
    snprintf(label, sizeof label, "lstm.nn, H = %s", widths[k] + strlen("const H = "));
    check_graph_lengths(p, label, 1, 9);
    free(p);
  }
}

static void test_gru_512(void **state) {
  char *p = variant("graphs/gru.nn", "const H = 256", "const H = 512");
  check_graph(p, "gru.nn, H = 512");
  free(p);
}

/* examples/bigru.nn: reverse scans, sequences concatenated row by row,
 * first() of a reverse scan's states; 16 wide (blocked products) and 13
 * (unblocked), every length 1..9. */
static void test_bigru(void **state) {
  for (int k = 0; k < 2; k++) {
    char *p = variant("examples/bigru.nn", "const H = 128", k ? "const H = 13" : "const H = 16");
    check_graph_lengths(p, k ? "bigru.nn, H = 13" : "bigru.nn, H = 16", 1, 9);
    free(p);
  }
}

/* examples/relu_rnn.nn: relu in a cell and in the head (its adjoint,
 * relu_grad, in the training kernel); 16 wide and 13, every length 1..9. */
static void test_relu(void **state) {
  for (int k = 0; k < 2; k++) {
    char *p = variant("examples/relu_rnn.nn", "const H = 64", k ? "const H = 13" : "const H = 16");
    check_graph_lengths(p, k ? "relu_rnn.nn, H = 13" : "relu_rnn.nn, H = 16", 1, 9);
    free(p);
  }
}

/* Embeddings: rows of a [V, E] table gathered per step in the cell
 * (tests/golden/embgru.nn's W[x]) or for the whole sequence before the
 * scan (examples/embed_gru.nn's x @ W), every length 1..9. */
static void test_embedding(void **state) {
  check_graph_lengths("tests/golden/embgru.nn", "embgru.nn", 1, 9);
  char *p = graph_variant("examples/embed_gru.nn", "const H = 128", "const H = 24",
                          "const E = 32", "const E = 13", NULL);
  check_graph_lengths(p, "embed_gru.nn, E = 13, H = 24", 1, 9);
  free(p);
}

/* Dropout on the last state: the training kernel's masks are the
 * interpreter's (the same draws), its forward kernel has none. */
static void test_dropout(void **state) {
  char *p = variant("tests/golden/embgru.nn", "fc.weight @ last(hs)",
                    "fc.weight @ dropout(last(hs), 0.4)");
  check_graph_lengths(p, "embgru.nn with dropout", 1, 9);
  free(p);
}

/* PyTorch's golden tensors through the JIT path: the logits of 20 names,
 * and one training step (loss, gradients, parameters). */
static void golden(const char *model, const char *graph_rel, const char *from, const char *to) {
  char rel[128];
  snprintf(rel, sizeof rel, "tests/golden/%s_seed42.safetensors", model);
  char *ckpt = src_path(rel), *path = variant(graph_rel, from, to);
  if (from) { /* rnn: the stored h0 as a buffer declared before the cell */
    char *p2 = variant(graph_rel, from, to);
    Err e;
    char *text = read_file(p2, NULL, &e);
    char *at = strstr(text, "# One step");
    char *t2 = xasprintf("%.*sbuffer h0 [H] = kaiming_uniform(H)\n%s", (int)(at - text), text, at);
    write_text(path, t2);
    free(t2);
    free(text);
    free(p2);
  }
  Model m;
  Err e;
  ModelOptions mo = {0};
  char **labels;
  int nl;
  if (model_compile(&m, path, &mo, &e) || ckpt_load(&m, ckpt, false, &labels, &nl, &e))
    fail_msg("%s", e.msg);
  StFile st;
  assert_int_equal(st_load(&st, ckpt, &e), 0);
  char *names = xstrdup(st_meta(&st, "names"));
  float logits[64];
  double worst = 0;
  int i = 0;
  for (char *sv, *nm = strtok_r(names, "\n", &sv); nm; nm = strtok_r(NULL, "\n", &sv), i++) {
    int32_t chars[64];
    int len = 0;
    for (const char *c = nm; *c; c++)
      chars[len++] = (int32_t)(strchr(VOCAB_CHARS, *c) - VOCAB_CHARS);
    model_forward(&m, chars, len, logits);
    char tn[32];
    snprintf(tn, sizeof tn, "logits.%d", i);
    const StTensor *t = st_find(&st, tn);
    for (size_t k = 0; k < t->nelem; k++)
      worst = fmax(worst, fabs(logits[k] - t->data[k]));
  }
  assert_int_equal(i, 20);
  assert_true(worst < 1e-4);
  int32_t chars[16];
  int len = 0;
  for (const char *c = st_meta(&st, "train_name"); *c; c++)
    chars[len++] = (int32_t)(strchr(VOCAB_CHARS, *c) - VOCAB_CHARS);
  float loss, gnorm;
  model_train_step(&m, chars, len, 14 /* Russian */, &loss, &gnorm);
  assert_true(fabs(loss - st_find(&st, "loss")->data[0]) < 1e-4);
  double gworst = 0, sworst = 0;
  int sensitive = 0;
  for (int p = 0; p < m.train->nparams; p++) {
    const Param *pa = &m.train->params[p];
    if (!pa->trainable)
      continue;
    char tn[128];
    snprintf(tn, sizeof tn, "grad.%s", pa->name);
    const StTensor *gt = st_find(&st, tn);
    snprintf(tn, sizeof tn, "step1.%s", pa->name);
    const StTensor *s1 = st_find(&st, tn);
    double scale = 0, gd = 0;
    for (size_t k = 0; k < gt->nelem; k++) {
      float gv = m.state[SLOT_GRAD * m.nfloats + pa->offset + k];
      double d = fabs(gv - gt->data[k]), sd = fabs(m.state[pa->offset + k] - s1->data[k]);
      scale = fmax(scale, fabs(gt->data[k]));
      gd = fmax(gd, d);
      sworst = fmax(sworst, sd);
      sensitive += sd > 1e-6;
      assert_true(sd <= 1e-6 + 1e5 * d); /* lr / eps amplification, as in test_golden */
    }
    gworst = fmax(gworst, gd / scale);
    assert_true(gd <= 1e-4 * scale);
  }
  assert_true(sensitive <= 4);
  print_message("%s via JIT: logits %.1e, loss %.7f, gradients %.1e relative, step %.1e (%d past "
                "1e-6 where |g| ~ eps)\n",
                model, worst, loss, gworst, sworst, sensitive);
  for (int k = 0; k < nl; k++)
    free(labels[k]);
  free(labels);
  free(names);
  st_free(&st);
  model_free(&m);
  free(ckpt);
  free(path);
}

static void test_golden_rnn(void **state) {
  golden("rnn", "graphs/rnn.nn", "from kaiming_uniform(H), zeros(C)", "from h0, zeros(C)");
}
static void test_golden_gru(void **state) { golden("gru", "graphs/gru.nn", NULL, NULL); }
static void test_golden_embgru(void **state) {
  golden("embgru", "tests/golden/embgru.nn", NULL, NULL);
}
static void test_golden_bigru(void **state) { golden("bigru", "tests/golden/bigru.nn", NULL, NULL); }
static void test_golden_lstm(void **state) { golden("lstm", "graphs/lstm.nn", NULL, NULL); }

/* Issue 12, item 14: the runtime checks T, the characters and the target
 * before a kernel runs (T = 0 read row -1 of the generated loops). A call
 * out of range returns -1 and changes nothing. */
static void test_inputs_checked(void **state) {
  char *path = make_rnn_graph(16, 3);
  Model m;
  Err e;
  ModelOptions mo = {0};
  if (model_compile(&m, path, &mo, &e))
    fail_msg("%s", e.msg);
  model_init_params(&m, 3);
  size_t bytes = SLOT_COUNT * m.nfloats * sizeof(float);
  float *before = xmalloc(bytes);
  memcpy(before, m.state, bytes);
  int32_t *chars = xcalloc(NAME_MAX_CHARS + 1, sizeof *chars);
  int32_t bad_char[] = {0, 59, 1}; /* 59: one past the vocabulary */
  float logits[3], loss = -1, gnorm = -1;
  assert_int_equal(model_forward(&m, chars, 0, logits), -1);
  assert_int_equal(model_forward(&m, chars, -1, logits), -1);
  assert_int_equal(model_forward(&m, chars, NAME_MAX_CHARS + 1, logits), -1);
  assert_int_equal(model_forward(&m, bad_char, 3, logits), -1);
  assert_int_equal(model_train_step(&m, chars, 0, 0, &loss, &gnorm), -1);
  assert_int_equal(model_train_step(&m, bad_char, 3, 0, &loss, &gnorm), -1);
  assert_int_equal(model_train_step(&m, chars, 3, -1, &loss, &gnorm), -1);
  assert_int_equal(model_train_step(&m, chars, 3, 3, &loss, &gnorm), -1);
  assert_true(loss == -1 && gnorm == -1);
  assert_int_equal(m.step, 0);
  assert_memory_equal(m.state, before, bytes);
  /* In range, at the edges: they run. */
  assert_int_equal(model_forward(&m, chars, NAME_MAX_CHARS, logits), 0);
  chars[0] = 58;
  assert_int_equal(model_train_step(&m, chars, 1, 2, &loss, &gnorm), 0);
  assert_int_equal(m.step, 1);
  assert_true(isfinite(loss));
  free(chars);
  free(before);
  model_free(&m);
  free(path);
}

/* The graphs of the kernels `want` of the graph at rel (a path in the
 * source tree), for 59 characters and 18 classes, in ks; returns the
 * graph's text, for the caller to free after kernels_free. */
static char *prepare_kernels(const char *rel, unsigned want, Kernels *ks) {
  char *path = src_path(rel);
  size_t len;
  Err e;
  char *text = read_graph(path, &len, &e);
  assert_non_null(text);
  DataSizes sizes = {59, 18};
  if (kernels_prepare(ks, path, text, len, want, 0, &sizes, &e))
    fail_msg("%s", e.msg);
  free(path);
  return text;
}

/* The kernel kind of graph g, compiled whole and cut in `parts`
 * (CodegenOptions.parts), named name: its function; *nfns: how many
 * functions codegen made of it (fewer than parts where it found no cut:
 * a float scalar read across every balanced point). */
static void *kernel_in_parts(Jit *j, KernelKind kind, const Graph *g, int parts, const char *fname,
                             KernelAbi *abi, int *nfns) {
  Err e;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(fname, ctx);
  CodegenOptions co = {.simd = jit_simd(j), .accumulate = kind == KERNEL_STEP, .parts = parts};
  Buf obj = {0};
  JitTimes t = {0};
  bool batched = kind == KERNEL_STEP_BATCH || kind == KERNEL_FORWARD_BATCH;
  if ((batched ? codegen_batch : codegen)(g, mod, fname, &co, abi, &e))
    fail_msg("%s in %d parts: %s", fname, parts, e.msg);
  int defined = 0; /* the parts codegen made: fname, fname.part1, ... */
  size_t flen = strlen(fname);
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    size_t len;
    const char *fn = LLVMGetValueName2(f, &len);
    defined += !LLVMIsDeclaration(f) && !strncmp(fn, fname, flen) &&
               (!fn[flen] || !strncmp(fn + flen, ".part", 5));
  }
  if (parts == 1 ? defined != 1 : defined < 1 || defined > parts)
    fail_msg("%s: %d functions for %d parts", fname, defined, parts);
  *nfns = defined;
  if (jit_compile(j, mod, &obj, &t, &e) || jit_add_object(j, obj.data, obj.len, &e))
    fail_msg("%s in %d parts: %s", fname, parts, e.msg);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  buf_free(&obj);
  void *fn = jit_lookup(j, fname, &e);
  if (!fn)
    fail_msg("%s", e.msg);
  return fn;
}

/* The batched kernel kind of g (step_batch, forward_batch), whole and in
 * `parts`, on one batch of 13 names of lengths 9 down to 1 (packed,
 * longest first) from the same weights: the same bits of every logit,
 * loss and gradient. */
static void check_batched_parts(Jit *j, KernelKind kind, const Graph *g, int parts,
                                const char *label) {
  char names[2][64];
  snprintf(names[0], sizeof names[0], "%s_whole_%d", kernel_name(kind), parts);
  snprintf(names[1], sizeof names[1], "%s_cut%d", kernel_name(kind), parts);
  KernelAbi abi[2] = {{0}, {0}};
  BatchKernelFn f[2];
  int nfns;
  for (int v = 0; v < 2; v++)
    f[v] = (BatchKernelFn)kernel_in_parts(j, kind, g, v ? parts : 1, names[v], &abi[v], &nfns);
  if (nfns < 2 && !strstr(label, "scalar_cut"))
    fail_msg("%s, %s in %d parts: not cut", label, kernel_name(kind), parts);
  assert_int_equal(abi[0].packed, abi[1].packed);
  assert_int_equal(abi[0].noise, abi[1].noise);
  enum { B = 13, TMAX = 9 };
  Rng r;
  rng_seed(&r, 3);
  int32_t lens[B], bs[TMAX], off[TMAX + 1], targets[B], chars[B * TMAX];
  for (int b = 0; b < B; b++)
    lens[b] = TMAX - b * TMAX / B; /* non-increasing, 9 down to 1 */
  off[0] = 0;
  for (int t = 0; t < TMAX; t++) {
    bs[t] = 0;
    while (bs[t] < B && lens[bs[t]] > t)
      bs[t]++;
    off[t + 1] = off[t] + bs[t];
  }
  for (int i = 0; i < off[TMAX]; i++)
    chars[i] = (int32_t)rng_below(&r, (uint32_t)g->vocab);
  for (int b = 0; b < B; b++)
    targets[b] = (int32_t)rng_below(&r, (uint32_t)g->classes);
  size_t nf = g->nfloats, nout = (size_t)B * (size_t)(g->classes + 1);
  float *st = xcalloc(nf, sizeof(float));
  for (size_t i = 0; i < nf; i++)
    st[i] = rng_uniform(&r, -0.3f, 0.3f);
  float *noise = xcalloc(B * abi[0].noise + 1, sizeof(float));
  for (size_t i = 0; i < B * abi[0].noise; i++)
    noise[i] = rng_uniform(&r, -1, 1);
  float *out[2], *grad[2];
  for (int v = 0; v < 2; v++) {
    const KernelAbi *a = &abi[v];
    size_t scratch = a->scratch_fixed + B * a->scratch_per_b + (size_t)off[TMAX] * a->scratch_per_t;
    float *packs = xcalloc(a->packed + 1, sizeof(float)), *sc = xcalloc(scratch + 1, sizeof(float));
    out[v] = xcalloc(nout, sizeof(float));
    grad[v] = xcalloc(nf, sizeof(float));
    if (a->packed) {
      char pname[80];
      snprintf(pname, sizeof pname, "%s_pack", names[v]);
      Err e;
      BatchPackFn pack = (BatchPackFn)jit_lookup(j, pname, &e);
      if (!pack)
        fail_msg("%s", e.msg);
      pack(st, packs, 0, 1);
    }
    f[v](st, packs, grad[v], chars, lens, bs, off, TMAX, B, targets, noise, sc, out[v]);
    free(packs);
    free(sc);
  }
  if (memcmp(out[0], out[1], nout * sizeof(float)) ||
      (kind == KERNEL_STEP_BATCH && memcmp(grad[0], grad[1], nf * sizeof(float))))
    fail_msg("%s, %s in %d parts: not the bits of the one function", label, kernel_name(kind),
             parts);
  print_message("%s, %s: the same bits in 1 and %d parts (%d functions)\n", label, kernel_name(kind),
                parts, nfns);
  free(st);
  free(noise);
  for (int v = 0; v < 2; v++) {
    free(out[v]);
    free(grad[v]);
  }
}

/* CodegenOptions.parts: a kernel cut in 2, 3 or 5 functions (what the
 * JIT compiles at once, each on a thread) gives the bits of the one
 * function, for the train, forward and step kernels of graphs of every
 * shape the examples have (the values one part leaves the next: buffers,
 * views, loaded indices, scalars such as the loss), at lengths 1 to 9,
 * and for their batched kernels (step_batch, forward_batch; the packs'
 * pointers too) on a batch of lengths 9 to 1. */
static void test_parts_same_bits(void **state) {
  (void)state;
  const char *graphs[] = {"graphs/rnn.nn",         "graphs/gru.nn",         "graphs/lstm.nn",
                          "examples/bigru.nn",     "examples/embed_gru.nn", "examples/relu_rnn.nn",
                          "tests/graphs/tied_init.nn", "tests/graphs/shared_buffers.nn",
                          "tests/graphs/scalar_cut.nn"};
  const KernelKind kinds[] = {KERNEL_TRAIN, KERNEL_FORWARD, KERNEL_STEP};
  const int cuts[] = {2, 3, 5};
  enum { TMAX = 9 };
  for (size_t gi = 0; gi < ARRAY_LEN(graphs); gi++) {
    Kernels ks;
    char *text = prepare_kernels(graphs[gi], KERNEL_BIT(KERNEL_TRAIN) | KERNEL_BIT(KERNEL_FORWARD) |
                                                 KERNEL_BIT(KERNEL_STEP) | KERNEL_BIT(KERNEL_STEP_BATCH) |
                                                 KERNEL_BIT(KERNEL_FORWARD_BATCH),
                                 &ks);
    Err e;
    Jit *j = jit_new(NULL, &e);
    if (!j)
      fail_msg("%s", e.msg);
    for (size_t ci = 0; ci < ARRAY_LEN(cuts); ci++) {
      check_batched_parts(j, KERNEL_STEP_BATCH, ks.graph[KERNEL_STEP_BATCH], cuts[ci], graphs[gi]);
      check_batched_parts(j, KERNEL_FORWARD_BATCH, ks.graph[KERNEL_FORWARD_BATCH], cuts[ci],
                          graphs[gi]);
    }
    for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
      const Graph *g = ks.graph[kinds[k]];
      size_t nf = g->nfloats, nstate = SLOT_COUNT * nf;
      for (size_t ci = 0; ci < ARRAY_LEN(cuts); ci++) {
        char name0[64], name1[64];
        snprintf(name0, sizeof name0, "%s_whole_%zu", kernel_name(kinds[k]), ci);
        snprintf(name1, sizeof name1, "%s_cut%d", kernel_name(kinds[k]), cuts[ci]);
        KernelAbi a0, a1;
        int n0, n1;
        void *f0 = kernel_in_parts(j, kinds[k], g, 1, name0, &a0, &n0);
        void *f1 = kernel_in_parts(j, kinds[k], g, cuts[ci], name1, &a1, &n1);
        /* every kernel cut; scalar_cut.nn's train kernel at least (its
         * scalar crosses every balanced point of the forward kernels) */
        if (n1 < 2 && (kinds[k] == KERNEL_TRAIN || !strstr(graphs[gi], "scalar_cut")))
          fail_msg("%s, %s in %d parts: not cut", graphs[gi], kernel_name(kinds[k]), cuts[ci]);
        assert_int_equal(a0.noise, a1.noise);
        size_t scratch = (a0.scratch_fixed > a1.scratch_fixed ? a0.scratch_fixed : a1.scratch_fixed) +
                         TMAX * a0.scratch_per_t;
        assert_int_equal(a0.scratch_per_t, a1.scratch_per_t);
        float *st[2], *sc[2], *grad[2], out[2][64];
        for (int v = 0; v < 2; v++) {
          st[v] = xcalloc(nstate, sizeof(float));
          sc[v] = xcalloc(scratch + 1, sizeof(float));
          grad[v] = xcalloc(nf, sizeof(float));
        }
        float *noise = xcalloc(a0.noise + 1, sizeof(float));
        Rng r;
        rng_seed(&r, 7);
        for (int T = 1; T <= TMAX; T++) {
          for (size_t i = 0; i < nstate; i++)
            st[0][i] = st[1][i] = i < nf ? rng_uniform(&r, -0.3f, 0.3f) : rng_uniform(&r, 0, 0.01f);
          for (size_t i = 0; i < a0.noise; i++)
            noise[i] = rng_uniform(&r, -1, 1);
          memset(grad[0], 0, nf * sizeof(float));
          memset(grad[1], 0, nf * sizeof(float));
          int32_t chars[TMAX];
          for (int t = 0; t < T; t++)
            chars[t] = (int32_t)rng_below(&r, (uint32_t)g->vocab);
          int target = (int)rng_below(&r, (uint32_t)g->classes);
          memset(out, 0, sizeof out);
          for (int v = 0; v < 2; v++) {
            void *f = v ? f1 : f0;
            if (kinds[k] == KERNEL_STEP)
              ((StepKernelFn)f)(st[v], grad[v], chars, T, target, noise, sc[v], TMAX, 3, out[v]);
            else
              ((KernelFn)f)(st[v], chars, T, target, noise, sc[v], TMAX, 3, out[v]);
          }
          if (memcmp(out[0], out[1], sizeof out[0]) || memcmp(st[0], st[1], nstate * sizeof(float)) ||
              memcmp(grad[0], grad[1], nf * sizeof(float)))
            fail_msg("%s, %s in %d parts, T = %d: not the bits of the one function", graphs[gi],
                     kernel_name(kinds[k]), cuts[ci], T);
        }
        print_message("%s, %s: the same bits in 1 and %d parts (%d functions)\n", graphs[gi],
                      kernel_name(kinds[k]), cuts[ci], n1);
        for (int v = 0; v < 2; v++) {
          free(st[v]);
          free(sc[v]);
          free(grad[v]);
        }
        free(noise);
      }
    }
    jit_free(j);
    kernels_free(&ks);
    free(text);
  }
}

/* A module with one empty function, fname, in j's context. */
/* The object of a module with one empty function, fname, compiled by j. */
static void object_with(Jit *j, const char *fname, Buf *obj) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(fname, ctx);
  LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0);
  LLVMValueRef fn = LLVMAddFunction(mod, fname, fty);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  JitTimes t = {0};
  Err e;
  if (jit_compile(j, mod, obj, &t, &e))
    fail_msg("%s", e.msg);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
}

/* The JIT's batched kernels (jit_kernel: its halves, begin and finish)
 * are byte for byte what rnnc compile --emit makes of the same module
 * (jit_compile), for rnn.nn, gru.nn, lstm.nn and the bidirectional GRU on
 * the host's CPU and for gru.nn on haswell (AVX2, 16 vector registers).
 * (A shorter pipeline for them, kernel_pipeline less 14 passes, gave the
 * same objects on the first three graphs and not on the fourth.) */
static void test_batched_kernels_same_objects(void **state) {
  (void)state;
  const char *graphs[] = {"graphs/rnn.nn", "graphs/gru.nn", "graphs/lstm.nn", "examples/bigru.nn",
                          "graphs/gru.nn"};
  const char *cpus[] = {NULL, NULL, NULL, NULL, "haswell"};
  const KernelKind kinds[] = {KERNEL_STEP_BATCH, KERNEL_FORWARD_BATCH};
  for (size_t gi = 0; gi < ARRAY_LEN(graphs); gi++) {
    Kernels ks;
    char *text = prepare_kernels(graphs[gi], KERNEL_BIT(kinds[0]) | KERNEL_BIT(kinds[1]), &ks);
    Err e;
    Jit *j = jit_new(cpus[gi], &e);
    if (!j)
      fail_msg("%s", e.msg);
    Simd simd = jit_simd(j);
    for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
      const Graph *g = ks.graph[kinds[k]];
      Buf got = {0}, want = {0};
      KernelAbi abi;
      JitTimes t = {0};
      if (jit_kernel(j, kinds[k], g, simd, NULL, &got, &abi, &t, &e))
        fail_msg("%s: %s", kernel_name(kinds[k]), e.msg);
      LLVMContextRef ctx = LLVMContextCreate();
      LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(kernel_name(kinds[k]), ctx);
      if (kernel_emit_simd(kinds[k], g, mod, simd, &abi, &e) || jit_compile(j, mod, &want, &t, &e))
        fail_msg("%s: %s", kernel_name(kinds[k]), e.msg);
      LLVMDisposeModule(mod);
      LLVMContextDispose(ctx);
      if (got.len != want.len || memcmp(got.data, want.data, got.len))
        fail_msg("%s, %s, %s: the JIT's object (%zu bytes) is not jit_compile's (%zu)",
                 graphs[gi], cpus[gi] ? cpus[gi] : "host", kernel_name(kinds[k]), got.len,
                 want.len);
      print_message("%s, %s, %s: the same %zu bytes\n", graphs[gi], cpus[gi] ? cpus[gi] : "host",
                    kernel_name(kinds[k]), got.len);
      buf_free(&got);
      buf_free(&want);
    }
    jit_free(j);
    kernels_free(&ks);
    free(text);
  }
}

/* Issue 12, item 15: code the JIT refuses (here: a second definition of a
 * symbol) is the JIT's to free; jit_add_module freed the module again (the
 * kernel cache's jit_add_object, which replaced it, must not either). */
static void test_jit_refused_module(void **state) {
  Err e;
  Jit *j = jit_new(NULL, &e);
  if (!j)
    fail_msg("%s", e.msg);
  Buf obj = {0};
  object_with(j, "f", &obj);
  assert_int_equal(jit_add_object(j, obj.data, obj.len, &e), 0);
  e.msg[0] = '\0';
  assert_int_equal(jit_add_object(j, obj.data, obj.len, &e), -1);
  assert_non_null(strstr(e.msg, "adding a kernel to the JIT"));
  print_message("refused: %s\n", e.msg);
  assert_non_null(jit_lookup(j, "f", &e)); /* the first one still works */
  buf_free(&obj);
  jit_free(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn),        cmocka_unit_test(test_gru),
      cmocka_unit_test(test_gru_3_layers), cmocka_unit_test(test_rnn_512),
      cmocka_unit_test(test_gru_512),    cmocka_unit_test(test_rnn_odd),
      cmocka_unit_test(test_gru_odd),    cmocka_unit_test(test_gru_blocked_lengths),
      cmocka_unit_test(test_bigru),      cmocka_unit_test(test_relu),
      cmocka_unit_test(test_embedding),
      cmocka_unit_test(test_dropout),
      cmocka_unit_test(test_lstm),       cmocka_unit_test(test_lstm_odd),
      cmocka_unit_test(test_golden_rnn), cmocka_unit_test(test_golden_gru),
      cmocka_unit_test(test_golden_lstm), cmocka_unit_test(test_golden_embgru),
      cmocka_unit_test(test_golden_bigru), cmocka_unit_test(test_inputs_checked),
      cmocka_unit_test(test_jit_refused_module),
      cmocka_unit_test(test_batched_kernels_same_objects),
      cmocka_unit_test(test_parts_same_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_batch.c: minibatch training through the JIT against the reference
 * interpreter, and its determinism.
 *
 * For rnn.nn and gru.nn: batches of 1, 3, 8 and 37 names of mixed lengths
 * (1 to 15 characters), for lstm.nn 40 wide one of 37, two optimizer
 * steps each from the same random weights: every name's loss, the mean
 * loss, the gradient norm, every gradient of the mean loss (the grad slot
 * after the step), Adam's moments and the parameters after each step,
 * against interp_run_batch in float32 (gradients within 1e-4 of the
 * tensor's largest magnitude; parameters within 1e-6 plus Adam's
 * amplification lr/eps of the gradient's rounding difference; each step
 * starts the interpreter from the kernel's state). The same for a
 * bidirectional GRU and two embedding models (one with dropout), and a
 * recurrent matrix that also makes the initial state, and shared vectors
 * (a zeros initial state beside a parameter one) in scratch. Names of
 * one character with NaN recurrent matrices: the zero rows of batch.c
 * never read them (gru.nn, lstm.nn).
 * Then the same training on 1 and 2 threads, and twice on 2
 * threads: the parameter and optimizer buffers must be equal bit for bit
 * (on 2 and 3 threads the second update runs without model.c's
 * drop_other_copies and the third with it, as model.c's drop_now times
 * them).
 * The weights packed in one call or in parts, the same floats; the
 * update on ranges of the slots (update_range) and on the whole, the same.
 * And how a batch is cut into chunks (model_chunk_names): every name once,
 * longest first in its chunk, the K longest names one in each chunk, and
 * the chunks' total lengths within one name's length of each other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

enum { MAXB = 37, MAXLEN = 15 };

typedef struct Names {
  int32_t text[MAXB][MAXLEN];
  const int32_t *chars[MAXB];
  int32_t lens[MAXB], targets[MAXB];
  int ilens[MAXB], itargets[MAXB];
} Names;

static void make_names(Names *nm, int n, int vocab, int classes, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  for (int i = 0; i < n; i++) {
    /* every length 1..15 appears in a batch of 15 or more */
    nm->lens[i] = nm->ilens[i] = n >= MAXLEN ? i % MAXLEN + 1 : (int)rng_below(&r, MAXLEN) + 1;
    nm->targets[i] = nm->itargets[i] = (int)rng_below(&r, (uint32_t)classes);
    for (int t = 0; t < nm->lens[i]; t++)
      nm->text[i][t] = (int32_t)rng_below(&r, (uint32_t)vocab);
    nm->chars[i] = nm->text[i];
  }
}

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

/* rel: a path in the source tree, or an absolute one (a scratch graph). */
static void compile_with(Model *m, const char *rel, const ModelOptions *mo) {
  char *path = rel[0] == '/' ? xstrdup(rel) : src_path(rel);
  Err e;
  if (model_compile(m, path, mo, &e))
    fail_msg("%s", e.msg);
  free(path);
}

static void compile(Model *m, const char *rel, int batch, int threads, bool one_by_one) {
  ModelOptions mo = {.batch = batch, .threads = threads, .no_batched = one_by_one};
  compile_with(m, rel, &mo);
}

static void random_weights(Model *m, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  for (size_t i = 0; i < m->nfloats; i++)
    m->state[i] = rng_uniform(&r, -0.15f, 0.15f);
}

/* Two steps on batches of n names: JIT against the interpreter. The
 * interpreter runs the whole training graph of the batch-1 compile. */
static void check_batches(const char *rel, const char *label, int n, bool one_by_one) {
  Model m, ref;
  compile(&m, rel, MAXB, 1, one_by_one);
  compile(&ref, rel, 1, 1, false); /* its training graph: forward, backward, update in one */
  if (!one_by_one && !m.bstep_fn)
    fail_msg("%s has no batched kernel: %s", label, m.unbatched);
  const Graph *g = ref.train;
  random_weights(&m, 11);
  Interp *I = interp_new(g, true);
  double *iv = interp_slot(I, SLOT_VALUE);
  for (size_t i = 0; i < m.nfloats; i++)
    iv[i] = m.state[i];
  Rng noise;
  rng_seed(&noise, 5);
  interp_set_rng(I, &noise);
  model_seed_noise(&m, 5);
  double ratio = g->train.lr / g->train.eps;
  for (int step = 1; step <= 2; step++) {
    Names nm;
    make_names(&nm, n, g->vocab, g->classes, 100 * (uint64_t)n + (uint64_t)step);
    float losses[MAXB], mean, gnorm;
    double ilosses[MAXB];
    /* what the grad slot held before must not matter */
    for (size_t i = 0; i < m.nfloats; i++)
      m.state[SLOT_GRAD * m.nfloats + i] = NAN;
    model_train_batch(&m, nm.chars, nm.lens, nm.targets, n, losses, &mean, &gnorm);
    Err e;
    if (interp_run_batch(I, nm.chars, nm.ilens, nm.itargets, n, NULL, ilosses, &e))
      fail_msg("%s", e.msg);
    char what[200];
    snprintf(what, sizeof what, "%s, batch of %d, step %d: the names' losses", label, n, step);
    compare(what, losses, ilosses, (size_t)n, 1e-5);
    double want_mean = 0;
    for (int i = 0; i < n; i++)
      want_mean += ilosses[i];
    want_mean /= n;
    if (!(fabs(mean - want_mean) <= 1e-5 * fmax(1, fabs(want_mean))))
      fail_msg("%s: mean loss %.7g, interpreter %.7g", what, mean, want_mean);
    double want_norm = g->grad_norm >= 0 ? interp_value(I, g->grad_norm, NULL)[0] : 0;
    if (!(fabs(gnorm - want_norm) <= 1e-4 * want_norm))
      fail_msg("%s: gradient norm %.7g, interpreter %.7g", what, gnorm, want_norm);
    const float *grads = m.state + SLOT_GRAD * m.nfloats;
    const double *ig = interp_slot(I, SLOT_GRAD);
    for (int p = 0; p < g->nparams; p++) {
      const Param *pa = &g->params[p];
      size_t cnt = type_numel(pa->type);
      snprintf(what, sizeof what, "%s, batch of %d, step %d: gradient of %s", label, n, step,
               pa->name);
      compare(what, grads + pa->offset, ig + pa->offset, cnt, 1e-4);
      for (int s = SLOT_M; s <= SLOT_V; s++) {
        snprintf(what, sizeof what, "%s, batch of %d, step %d: %s of %s", label, n, step,
                 s == SLOT_M ? "exp_avg" : "exp_avg_sq", pa->name);
        compare(what, m.state + s * m.nfloats + pa->offset, interp_slot(I, s) + pa->offset, cnt,
                s == SLOT_M ? 1e-4 : 2e-4);
      }
      for (size_t i = 0; i < cnt; i++) {
        size_t k = pa->offset + i;
        double dg = fabs(grads[k] - ig[k]);
        if (!(fabs(m.state[k] - iv[k]) <= 1e-6 + ratio * dg))
          fail_msg("%s, batch of %d: %s[%zu] after step %d: %.9g, interpreter %.9g", label, n,
                   pa->name, i, step, m.state[k], iv[k]);
      }
    }
    print_message("%-14s batch %2d, step %d, %s: mean loss %.6f (interpreter %.6f), norm %.5g, "
                  "all gradients, moments and parameters match\n",
                  label, n, step, one_by_one ? "one by one" : "batched  ", mean, want_mean, gnorm);
    /* The next step starts both from the kernel's state, so each step's
     * tolerance is its own (Adam's lr/eps amplification does not compound). */
    for (int s = 0; s < SLOT_COUNT; s++)
      if (s != SLOT_GRAD)
        for (size_t i = 0; i < m.nfloats; i++)
          interp_slot(I, s)[i] = m.state[s * m.nfloats + i];
  }
  assert_int_equal(m.step, 2);
  interp_free(I);
  model_free(&m);
  model_free(&ref);
}

static void test_rnn_batches(void **state) {
  (void)state;
  int sizes[] = {1, 3, 8, 37};
  for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
    check_batches("graphs/rnn.nn", "rnn.nn", sizes[k], false);
    check_batches("graphs/rnn.nn", "rnn.nn", sizes[k], true);
  }
}

static void test_gru_batches(void **state) {
  (void)state;
  int sizes[] = {1, 3, 8, 37};
  for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
    check_batches("graphs/gru.nn", "gru.nn", sizes[k], false);
    check_batches("graphs/gru.nn", "gru.nn", sizes[k], true);
  }
}

/* A variant of graph rel ("const H = ..." from -> to) in batches of 3 and
 * 37, packed and one by one. */
static void narrow_batches(const char *rel, const char *from, const char *to, const char *label) {
  char *p = graph_variant(rel, from, to, NULL);
  int sizes[] = {3, 37};
  for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
    check_batches(p, label, sizes[k], false);
    check_batches(p, label, sizes[k], true);
  }
  free(p);
}

/* examples/bigru.nn: reverse scans over packed sequences of different
 * lengths, sequences concatenated row by row, first() of a reverse scan. */
static void test_bigru_batches(void **state) {
  (void)state;
  narrow_batches("examples/bigru.nn", "const H = 128", "const H = 16", "bigru.nn, H = 16");
}

/* gru.nn one unit wide: every vector of a row one float (the gates'
 * slices of a 3-float row). */
static void test_gru_h1_batches(void **state) {
  (void)state;
  narrow_batches("graphs/gru.nn", "const H = 256", "const H = 1", "gru.nn, H = 1");
}

/* examples/relu_rnn.nn: relu and its adjoint over packed sequences. */
static void test_relu_batches(void **state) {
  (void)state;
  narrow_batches("examples/relu_rnn.nn", "const H = 64", "const H = 16", "relu_rnn.nn, H = 16");
}

/* Embeddings over packed sequences: the table's rows gathered per step
 * in the cell (tests/golden/embgru.nn) or for every packed row before the
 * scan (examples/embed_gru.nn), and their gradients scatter-added. */
static void test_embedding_batches(void **state) {
  (void)state;
  char *p = graph_variant("examples/embed_gru.nn", "const H = 128", "const H = 24",
                          "const E = 32", "const E = 13", NULL);
  int sizes[] = {3, 37};
  for (size_t k = 0; k < ARRAY_LEN(sizes); k++)
    for (int one = 0; one < 2; one++)
      check_batches("tests/golden/embgru.nn", "embgru.nn", sizes[k], one);
  check_batches(p, "embed_gru.nn", 37, false);
  free(p);
  /* dropout: every name's mask from its own draws, as the interpreter's */
  p = graph_variant("tests/golden/embgru.nn", "fc.weight @ last(hs)",
                    "fc.weight @ dropout(last(hs), 0.4)", NULL);
  for (int one = 0; one < 2; one++)
    check_batches(p, "embgru.nn, dropout", 37, one);
  free(p);
}

/* Two carried states, four gates, 40 wide (the products' remainder
 * columns): one batch of 37 names (every length 1..15), batched kernels
 * only. lstm.nn itself is checked against PyTorch's batches in
 * test_batch_golden. */
static void test_lstm_batches(void **state) {
  (void)state;
  char *g = make_graph("graphs/lstm.nn", 40, 18);
  check_batches(g, "lstm.nn, H = 40", 37, false);
  free(g);
}

/* tests/graphs/tied_init.nn: the recurrent matrix also makes the initial
 * state before the scan, so its gradient is two outer products, and the
 * one that writes it (plan_grad) must be the one emitted first, not the
 * one with the lower node id (the other was added by opt.c after the
 * backward pass and runs before it). */
static void test_tied_init(void **state) {
  (void)state;
  int sizes[] = {1, 3, 37};
  for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
    check_batches("tests/graphs/tied_init.nn", "tied_init.nn", sizes[k], false);
    check_batches("tests/graphs/tied_init.nn", "tied_init.nn", sizes[k], true);
  }
}

/* tests/graphs/shared_buffers.nn: vectors the same for every name
 * (zeros(K) as a scan's initial state, the backward scans' zeros) each
 * in scratch of their own, not over per-name buffers: two steps against
 * the interpreter. */
static void test_shared_buffers(void **state) {
  (void)state;
  int sizes[] = {1, 3, 37};
  for (size_t k = 0; k < ARRAY_LEN(sizes); k++)
    check_batches("tests/graphs/shared_buffers.nn", "shared_buffers.nn", sizes[k], false);
}

/* Names of one character, with every recurrent matrix (weight_hh) NaN:
 * the state starts from zeros, so batch.c's zero rows never read those
 * matrices (the products of step 0 are zeros, the weight gradients' sums
 * skip step 0's rows, the backward's products at its last step are not
 * computed). Losses, logits and every gradient must be those of the same
 * weights with the matrices zero, bit for bit; computing any of those
 * products would make them NaN. On gru.nn and on lstm.nn (two carries,
 * 40 wide). */
static void check_zero_state(const char *rel, const char *label) {
  enum { NB = 8 };
  float loss[2][NB], logit[2][NB * 64], *grad[2];
  for (int run = 0; run < 2; run++) {
    Model m;
    compile_with(&m, rel, &(ModelOptions){.batch = NB, .threads = 2, .batched_forward = true});
    if (!m.bstep_fn)
      fail_msg("%s has no batched kernels: %s", label, m.unbatched);
    random_weights(&m, 21);
    int nhh = 0;
    for (int p = 0; p < m.train->nparams; p++) {
      const Param *pa = &m.train->params[p];
      if (!strstr(pa->name, "weight_hh"))
        continue;
      nhh++;
      for (size_t i = 0; i < type_numel(pa->type); i++)
        m.state[pa->offset + i] = run ? NAN : 0.0f;
    }
    assert_true(nhh > 0);
    assert_true(m.fwd->classes <= 64);
    Names nm;
    make_names(&nm, NB, m.fwd->vocab, m.fwd->classes, 77);
    for (int i = 0; i < NB; i++)
      nm.lens[i] = 1;
    assert_int_equal(model_batch_gradient(&m, nm.chars, nm.lens, nm.targets, NB, 0, NB, loss[run]), 0);
    grad[run] = xmalloc(m.nfloats * sizeof(float));
    memcpy(grad[run], m.state + SLOT_GRAD * m.nfloats, m.nfloats * sizeof(float));
    assert_int_equal(model_forward_batch(&m, nm.chars, nm.lens, NB, logit[run]), 0);
    assert_non_null(m.bfwd_fn);
    for (int i = 0; i < NB; i++)
      if (!isfinite(loss[run][i]))
        fail_msg("%s, run %d: name %d's loss %g", label, run, i, loss[run][i]);
    if (run) {
      assert_memory_equal(loss[0], loss[1], sizeof loss[0]);
      assert_memory_equal(logit[0], logit[1], (size_t)(NB * m.fwd->classes) * sizeof(float));
      assert_memory_equal(grad[0], grad[1], m.nfloats * sizeof(float));
      print_message("%-14s names of 1 character: the recurrent matrices NaN or zero, the same "
                    "losses, logits and gradients\n", label);
    }
    model_free(&m);
  }
  free(grad[0]);
  free(grad[1]);
}

static void test_zero_state_rows(void **state) {
  (void)state;
  check_zero_state("graphs/gru.nn", "gru.nn");
  char *g = make_graph("graphs/lstm.nn", 40, 18);
  check_zero_state(g, "lstm.nn, H = 40");
  free(g);
}

/* The model's state (SLOT_COUNT slots) into dst, the grad slot zeroed:
 * it is scratch between steps. */
static void copy_state(const Model *m, float *dst) {
  memcpy(dst, m->state, SLOT_COUNT * m->nfloats * sizeof(float));
  memset(dst + SLOT_GRAD * m->nfloats, 0, m->nfloats * sizeof(float));
}

/* Three steps on batches of 37, 20 and 5 names; the model's state after. */
static float *train_three(const char *rel, int threads) {
  Model m;
  compile(&m, rel, 37, threads, false);
  random_weights(&m, 3);
  model_seed_noise(&m, 9);
  int sizes[] = {37, 20, 5};
  for (int s = 0; s < 3; s++) {
    Names nm;
    make_names(&nm, sizes[s], m.fwd->vocab, m.fwd->classes, 7 + (uint64_t)s);
    float mean, gnorm;
    model_train_batch(&m, nm.chars, nm.lens, nm.targets, sizes[s], NULL, &mean, &gnorm);
  }
  float *copy = xmalloc(SLOT_COUNT * m.nfloats * sizeof(float));
  copy_state(&m, copy);
  model_free(&m);
  return copy;
}

static void test_threads_deterministic(void **state) {
  (void)state;
  const char *graphs[] = {"graphs/rnn.nn", "graphs/gru.nn"};
  for (size_t k = 0; k < ARRAY_LEN(graphs); k++) {
    Model m;
    compile(&m, graphs[k], 37, 1, false);
    size_t bytes = SLOT_COUNT * m.nfloats * sizeof(float);
    model_free(&m);
    float *one = train_three(graphs[k], 1), *two = train_three(graphs[k], 2),
          *again = train_three(graphs[k], 2), *three = train_three(graphs[k], 3);
    assert_memory_equal(one, two, bytes);
    assert_memory_equal(two, again, bytes);
    assert_memory_equal(one, three, bytes);
    print_message("%s: 1, 2 and 3 threads, and 2 threads twice: the same bytes\n", graphs[k]);
    free(one);
    free(two);
    free(again);
    free(three);
  }
}

/* Training, then the noise skipped for the names before and inference on
 * 37 names (model_forward_batch) and on one (model_forward), by a model
 * of batch `batch`: the logits, the model's state after. background: its
 * inference kernels compiled in the background (ModelOptions.background,
 * no cache, so that LLVM has work left on them when model_compile
 * returns), on 2 threads; else at once, on 1 thread. */
static float *train_and_infer(const char *path, int batch, bool background, size_t *bytes) {
  Model m;
  Err e;
  ModelOptions mo = {.batch = batch, .threads = background ? 2 : 1, .batched_forward = true,
                     .background = background, .no_cache = background};
  if (model_compile(&m, path, &mo, &e))
    fail_msg("%s", e.msg);
  Buf names = {0};
  int later = model_background(&m, &names);
  if (background && (later < 1 || m.fwd_fn || m.bfwd_fn))
    fail_msg("%s, batch %d: %d kernels (%.*s) in the background, the inference kernels %s linked",
             path, batch, later, (int)names.len, names.data, m.fwd_fn ? "already" : "not");
  if (!background && later)
    fail_msg("%s: %.*s in the background without ModelOptions.background", path,
             (int)names.len, names.data);
  buf_free(&names);
  random_weights(&m, 3);
  model_seed_noise(&m, 9);
  Names nm;
  make_names(&nm, 37, m.fwd->vocab, m.fwd->classes, 17);
  float mean, gnorm;
  for (int s = 0; s < 37; s += batch) /* a name at a time at batch 1 */
    model_train_batch(&m, nm.chars + s, nm.lens + s, nm.targets + s, batch < 37 - s ? batch : 37 - s,
                      NULL, &mean, &gnorm);
  int c = m.fwd->classes;
  size_t state = SLOT_COUNT * m.nfloats;
  *bytes = (state + 38 * (size_t)c) * sizeof(float);
  float *out = xcalloc(state + 38 * (size_t)c, sizeof(float));
  model_seed_noise(&m, 4);
  model_skip_noise(&m, 5); /* waits for the kernels: whether a batched one exists decides this */
  if (model_wait(&m, &e) || model_background(&m, &names))
    fail_msg("%s: %s", path, e.msg);
  if (model_forward_batch(&m, nm.chars, nm.lens, 37, out + state) ||
      model_forward(&m, nm.chars[0], nm.lens[0], out + state + 37 * (size_t)c))
    fail_msg("%s: inference refused", path);
  copy_state(&m, out);
  model_free(&m);
  return out;
}

/* The inference kernels compiled in the background while training runs
 * (rnnc train): the same draws of noise, logits and state, bit for bit,
 * as with every kernel compiled first, at batch 1 (the fused kernel) and
 * 8, for rnn.nn (its h0 drawn for every name), gru.nn, and a graph whose
 * noise batch.c cannot batch (no batched forward kernel: the one-name
 * kernel runs, with its draws). And a model freed while its kernels still
 * compile. */
static void test_background_compile(void **state) {
  (void)state;
  char *rnn = src_path("graphs/rnn.nn"), *npath = noisy_rnn_graph();
  char *gru = src_path("graphs/gru.nn");
  const char *paths[] = {rnn, gru, npath};
  const int batches[] = {1, 8};
  for (size_t k = 0; k < ARRAY_LEN(paths); k++)
    for (size_t b = 0; b < ARRAY_LEN(batches); b++) {
      size_t nbytes, nref;
      float *got = train_and_infer(paths[k], batches[b], true, &nbytes);
      float *want = train_and_infer(paths[k], batches[b], false, &nref);
      assert_int_equal(nbytes, nref);
      if (memcmp(got, want, nbytes))
        fail_msg("%s, batch %d: compiled in the background, other bytes", paths[k], batches[b]);
      free(got);
      free(want);
    }
  Model m;
  ModelOptions mo = {.batched_forward = true, .background = true, .no_cache = true};
  Err e;
  if (model_compile(&m, gru, &mo, &e))
    fail_msg("%s", e.msg);
  model_free(&m);
  print_message("rnn.nn, gru.nn, a graph without a batched forward kernel, batches 1 and 8: "
                "the same bytes with the inference kernels compiled in the background\n");
  free(gru);
  free(npath);
  free(rnn);
}

/* The packed weights a batched kernel reads (its NAME_pack) are the same
 * whether one call packs them or many share the columns: parts taken in
 * any order, more parts than a pack has columns (parts with none), the
 * parts' blocks stored non-temporally and the one call's not; and the
 * same again into a buffer that is not 64-byte aligned (plain stores). */
static void test_pack_parts(void **state) {
  (void)state;
  const char *graphs[] = {"graphs/rnn.nn", "graphs/gru.nn"};
  for (size_t k = 0; k < ARRAY_LEN(graphs); k++) {
    Model m;
    compile(&m, graphs[k], 8, 1, false);
    assert_non_null(m.bstep_pack_fn);
    random_weights(&m, 3);
    size_t n = m.bstep_abi.packed;
    /* 64-byte aligned, as the runtime's: in more than one part the
     * blocks are stored non-temporally (batch.c's emit_pack_fn) */
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    float *one = aligned_alloc(64, bytes), *many = aligned_alloc(64, bytes);
    assert_true(one && many);
    memset(one, 0xff, n * sizeof *one); /* NaN: a float one way writes and the other not shows */
    m.bstep_pack_fn(m.state, one, 0, 1);
    int counts[] = {2, 3, 7, 1000};
    for (size_t c = 0; c < ARRAY_LEN(counts); c++) {
      memset(many, 0xff, n * sizeof *many);
      for (int part = counts[c] - 1; part >= 0; part--)
        m.bstep_pack_fn(m.state, many, part, counts[c]);
      assert_memory_equal(one, many, n * sizeof *one);
    }
    float *block = aligned_alloc(64, bytes + 64), *odd = block + 4; /* 16 bytes past a line */
    assert_non_null(block);
    memset(odd, 0xff, n * sizeof *odd);
    for (int part = 0; part < 2; part++)
      m.bstep_pack_fn(m.state, odd, part, 2);
    assert_memory_equal(one, odd, n * sizeof *one);
    free(block);
    print_message("%s: %zu packed floats, the same in 1, 2, 3, 7 and 1000 parts, and unaligned\n",
                  graphs[k], n);
    free(one);
    free(many);
    model_free(&m);
  }
}

/* The batched kernels' sequence values share the scratch by lifetime
 * (batch.c's SEQ regions): gru.nn's step_batch holds 8,448 floats a
 * packed row of stacks and sequence values in all, the forward's of both
 * layers and the backward's, but the backward's stacks of layer 1 and the
 * forward's of layer 1 are dead before layer 0's backward writes its own,
 * so it needs 5,888 (forward_batch: 1,024 of 1,280). That the values stay
 * right in the shared regions is what every JIT = interpreter check here
 * and in test_jit shows. */
static void test_scratch_shared(void **state) {
  (void)state;
  Model m;
  ModelOptions mo = {.batch = 8, .threads = 1, .batched_forward = true};
  compile_with(&m, "graphs/gru.nn", &mo);
  assert_non_null(m.bstep_fn);
  assert_non_null(m.bfwd_fn);
  assert_int_equal(m.bstep_abi.scratch_per_t, 5888);
  assert_int_equal(m.bfwd_abi.scratch_per_t, 1024);
  model_free(&m);
}

/* update_range on ranges of the slots, the ranges cut anywhere, updates
 * every float of every slot as update does on the whole; its parts of
 * the norm's sum (no clipping: 0, or NaN for a gradient that is not
 * finite) add up to update's. A graph that clips has no update_range. */
static void test_update_range(void **state) {
  (void)state;
  Model m;
  compile(&m, "graphs/rnn.nn", 8, 1, false);
  assert_null(m.update_range_fn); /* clip_grad_norm: the norm first */
  model_free(&m);
  compile(&m, "graphs/gru.nn", 8, 1, false);
  assert_non_null(m.update_range_fn);
  size_t n = SLOT_COUNT * m.nfloats, nf = m.nfloats;
  int classes = m.fwd->classes;
  static const int32_t no_chars[1];
  float *whole = xmalloc(n * sizeof *whole);
  for (int nan = 0; nan < 2; nan++) {
    Rng r;
    rng_seed(&r, 9);
    for (size_t i = 0; i < n; i++)
      m.state[i] = rng_uniform(&r, -0.1f, 0.1f);
    if (nan)
      m.state[SLOT_GRAD * nf + nf / 3] = NAN;
    memcpy(whole, m.state, n * sizeof *whole);
    float *ranged = m.state;
    m.state = whole;
    m.update_fn(m.state, no_chars, 1, 0, NULL, m.ws[0].scratch, m.tmax, 3, m.ws[0].out);
    float norm = m.ws[0].out[classes + 1];
    m.state = ranged;
    size_t cuts[] = {0, 1, 17, nf / 2 + 5, nf - 3, nf}; /* ranges of 1, 16, ... floats */
    float sum = 0;
    for (size_t k = 0; k + 1 < ARRAY_LEN(cuts); k++) {
      m.update_range_fn(m.state, no_chars, (int32_t)cuts[k], (int32_t)cuts[k + 1], NULL,
                        m.ws[0].scratch, m.tmax, 3, m.ws[0].out);
      sum += m.ws[0].out[classes + 1];
    }
    assert_memory_equal(whole, m.state, n * sizeof *whole);
    if (nan ? !isnan(norm) || !isnan(sum) : norm != 0 || sum != 0)
      fail_msg("the norm: update %g, update_range's parts %g", norm, sum);
  }
  print_message("gru.nn: update_range on 5 ranges, update on the whole: the same bytes\n");
  free(whole);
  model_free(&m);
}

static void test_chunk_names(void **state) {
  (void)state;
  Rng r;
  rng_seed(&r, 5);
  enum { MAXN = 100 };
  int32_t lens[MAXN], names[MAXN], start[MAXN + 1], again[MAXN];
  for (int n = 1; n <= MAXN; n++) {
    int maxlen = n % 3 ? 19 : 3; /* many ties too */
    for (int i = 0; i < n; i++)
      lens[i] = (int32_t)rng_below(&r, (uint32_t)maxlen) + 1;
    int K = model_chunks(n);
    model_chunk_names(lens, n, names, start);
    model_chunk_names(lens, n, again, start);
    assert_memory_equal(names, again, (size_t)n * sizeof *names);
    bool seen[MAXN] = {false};
    int32_t sorted[MAXN], total[MAXN] = {0}, longest = 0;
    for (int i = 0; i < n; i++) {
      assert_false(seen[names[i]]);
      seen[names[i]] = true;
      sorted[i] = lens[i];
      longest = lens[i] > longest ? lens[i] : longest;
    }
    for (int i = 1; i < n; i++) /* insertion sort, longest first */
      for (int j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
        int32_t t = sorted[j];
        sorted[j] = sorted[j - 1];
        sorted[j - 1] = t;
      }
    assert_int_equal(start[0], 0);
    assert_int_equal(start[K], n);
    for (int k = 0; k < K; k++) {
      int size = start[k + 1] - start[k];
      assert_true(size == n / K || size == (n + K - 1) / K);
      if (n >= K) /* chunk k's longest is the batch's k-th longest name (or its equal) */
        assert_int_equal(lens[names[start[k]]], sorted[k]);
      for (int i = start[k]; i < start[k + 1]; i++) {
        total[k] += lens[names[i]];
        if (i > start[k])
          assert_true(lens[names[i]] <= lens[names[i - 1]]);
      }
    }
    for (int k = 1; k < K; k++)
      assert_true(abs(total[k] - total[0]) <= longest);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn_batches),
      cmocka_unit_test(test_gru_batches),
      cmocka_unit_test(test_bigru_batches), cmocka_unit_test(test_gru_h1_batches),
      cmocka_unit_test(test_relu_batches),
      cmocka_unit_test(test_embedding_batches),
      cmocka_unit_test(test_lstm_batches),
      cmocka_unit_test(test_tied_init),
      cmocka_unit_test(test_shared_buffers),
      cmocka_unit_test(test_zero_state_rows),
      cmocka_unit_test(test_threads_deterministic),
      cmocka_unit_test(test_background_compile),
      cmocka_unit_test(test_pack_parts),
      cmocka_unit_test(test_scratch_shared),
      cmocka_unit_test(test_update_range),
      cmocka_unit_test(test_chunk_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

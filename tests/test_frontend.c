/* test_frontend.c: the graph language's front end: IR golden text for both
 * models, every malformed graph in tests/errors against its exact message,
 * shape inference, the L = 3 / H = 512 variants, and mutated graphs that
 * must give an error or a graph, never a crash (ASan/UBSan watch).
 *
 * RNNC_UPDATE_GOLDEN=1 rewrites the golden files instead of comparing. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rnnc.h"
#include "testutil.h"

static bool updating(void) { return getenv("RNNC_UPDATE_GOLDEN") != NULL; }

/* Compares text with a golden file (or rewrites it when updating). */
static void check_golden(const char *rel, const char *text) {
  char *path = src_path(rel);
  if (updating()) {
    write_text(path, text);
  } else {
    Err e;
    char *want = read_file(path, NULL, &e);
    if (!want)
      fail_msg("%s", e.msg);
    if (strcmp(want, text)) {
      /* Show the first differing line. */
      const char *a = want, *b = text;
      int line = 1;
      while (*a && *a == *b) {
        if (*a == '\n')
          line++;
        a++, b++;
      }
      fail_msg("%s differs at line %d:\nwant: %.80s\ngot:  %.80s", rel, line, a, b);
    }
    free(want);
  }
  free(path);
}

static Graph *compile_rel(const char *rel, Err *e) {
  /* Tests run in the source root, so messages name the relative path. */
  return compile_graph_file(rel, e);
}

static char *print_ir(const Graph *g) {
  Buf b = {0};
  graph_print(g, &b);
  buf_put(&b, "", 1);
  return b.data;
}

static void golden_ir(const char *graph, const char *golden) {
  Err e;
  Graph *g = compile_rel(graph, &e);
  if (!g)
    fail_msg("%s", e.msg);
  char *text = print_ir(g);
  check_golden(golden, text);
  free(text);
  graph_free(g);
}

static void test_ir_golden_rnn(void **state) { golden_ir("graphs/rnn.nn", "tests/ir/rnn.ir"); }
static void test_ir_golden_gru(void **state) { golden_ir("graphs/gru.nn", "tests/ir/gru.ir"); }

/* The later stages' text, as `rnnc compile --emit grad|opt` prints it. */
static void golden_stage(const char *graph, PassStop stop, const char *golden) {
  Err e;
  Graph *g = compile_rel(graph, &e);
  if (!g || graph_passes(g, true, stop, &e))
    fail_msg("%s", e.msg);
  char *text = print_ir(g);
  check_golden(golden, text);
  free(text);
  graph_free(g);
}

static void test_grad_opt_golden(void **state) {
  golden_stage("graphs/rnn.nn", PASSES_GRAD, "tests/ir/rnn.grad.ir");
  golden_stage("graphs/rnn.nn", PASSES_ALL, "tests/ir/rnn.opt.ir");
  golden_stage("graphs/gru.nn", PASSES_GRAD, "tests/ir/gru.grad.ir");
  golden_stage("graphs/gru.nn", PASSES_ALL, "tests/ir/gru.opt.ir");
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every tests/errors/NAME.nn fails with exactly the text of NAME.err. */
static void test_error_messages(void **state) {
  char *dir = src_path("tests/errors");
  DIR *d = opendir(dir);
  assert_non_null(d);
  char *names[256];
  int n = 0;
  struct dirent *ent;
  while ((ent = readdir(d)) && n < 256) {
    size_t len = strlen(ent->d_name);
    if (len > 3 && !strcmp(ent->d_name + len - 3, ".nn"))
      names[n++] = xstrndup(ent->d_name, len - 3);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  assert_true(n >= 20);
  for (int i = 0; i < n; i++) {
    char rel[512], golden[512];
    snprintf(rel, sizeof rel, "tests/errors/%s.nn", names[i]);
    snprintf(golden, sizeof golden, "tests/errors/%s.err", names[i]);
    Err e;
    Graph *g = compile_rel(rel, &e);
    if (g)
      fail_msg("%s compiled, but it should fail", rel);
    char *msg = xasprintf("%s\n", e.msg);
    check_golden(golden, msg);
    /* Every message starts with the file's path and a position. */
    assert_int_equal(strncmp(msg, rel, strlen(rel)), 0);
    free(msg);
    free(names[i]);
  }
  free(dir);
}

static const Param *find_param(const Graph *g, const char *name) {
  for (int i = 0; i < g->nparams; i++)
    if (!strcmp(g->params[i].name, name))
      return &g->params[i];
  fail_msg("no parameter %s", name);
  return NULL;
}

static void assert_shape(const Graph *g, const char *name, int rank, int d0, int d1) {
  const Param *p = find_param(g, name);
  assert_int_equal(p->type.rank, rank);
  assert_int_equal(p->type.dim[0], d0);
  if (rank == 2)
    assert_int_equal(p->type.dim[1], d1);
}

static void test_shapes_rnn(void **state) {
  Err e;
  Graph *g = compile_rel("graphs/rnn.nn", &e);
  assert_non_null(g);
  assert_int_equal(g->nparams, 4);
  assert_shape(g, "in2hidden.weight", 2, 256, 315);
  assert_shape(g, "in2hidden.bias", 1, 256, 0);
  assert_shape(g, "in2output.weight", 2, 18, 315);
  assert_shape(g, "in2output.bias", 1, 18, 0);
  assert_int_equal(g->vocab, 59);
  assert_int_equal(g->classes, 18);
  assert_true(type_eq(g->nodes[g->output].type, type_vec(18)));
  assert_true(type_eq(g->nodes[g->loss].type, type_scalar()));
  /* PyTorch Linear init bound: 1/sqrt(fan_in). */
  assert_int_equal(find_param(g, "in2hidden.weight")->init, INIT_LINEAR);
  assert_true(find_param(g, "in2hidden.weight")->init_arg == 315);
  assert_int_equal(g->train.optim, OPTIM_ADAM);
  assert_true(g->train.lr == 1e-3 && g->train.beta1 == 0.9 && g->train.beta2 == 0.999 &&
              g->train.eps == 1e-8 && g->train.clip_norm == 1.0);
  assert_int_equal(g->train.epochs, 2);
  /* The initial state is noise with kaiming_uniform's bound sqrt(6/256). */
  int noise = 0;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == OP_NOISE) {
      noise++;
      assert_float_equal(g->nodes[i].f, 0.153093108923949, 1e-12);
      assert_true(type_eq(g->nodes[i].type, type_vec(256)));
    }
  assert_int_equal(noise, 1);
  graph_free(g);
}

static void test_shapes_gru(void **state) {
  Err e;
  Graph *g = compile_rel("graphs/gru.nn", &e);
  assert_non_null(g);
  assert_int_equal(g->nparams, 10);
  assert_shape(g, "gru.weight_ih_l0", 2, 768, 59);
  assert_shape(g, "gru.weight_hh_l0", 2, 768, 256);
  assert_shape(g, "gru.bias_ih_l0", 1, 768, 0);
  assert_shape(g, "gru.bias_hh_l0", 1, 768, 0);
  assert_shape(g, "gru.weight_ih_l1", 2, 768, 256);
  assert_shape(g, "gru.weight_hh_l1", 2, 768, 256);
  assert_shape(g, "fc.weight", 2, 18, 256);
  assert_shape(g, "fc.bias", 1, 18, 0);
  assert_true(find_param(g, "gru.weight_hh_l1")->init_arg == 0.0625);
  assert_true(g->train.clip_norm == 0);
  /* Two scans, the second over the first's stacked states [T, 256]. */
  int scans[2], ns = 0;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == OP_SCAN && ns < 2)
      scans[ns++] = i;
  assert_int_equal(ns, 2);
  const Node *s1 = &g->nodes[scans[1]];
  Type seq = g->nodes[s1->in[0]].type;
  assert_int_equal(seq.kind, TY_F32);
  assert_int_equal(seq.dim[0], DIM_T);
  assert_int_equal(seq.dim[1], 256);
  /* Parameter tensors start on 64-byte boundaries. */
  for (int i = 0; i < g->nparams; i++)
    assert_int_equal(g->params[i].offset % 16, 0);
  assert_true(g->nfloats >= 642834);
  graph_free(g);
}

/* Compiles the text of a graph file with one substitution made. */
static Graph *compile_variant(const char *rel, const char *from, const char *to) {
  char *path = src_path(rel);
  Err e;
  char *text = read_file(path, NULL, &e);
  assert_non_null(text);
  char *at = strstr(text, from);
  assert_non_null(at);
  char *edited = xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
  Graph *g = compile_graph(rel, edited, strlen(edited), &e);
  if (!g)
    fail_msg("%s", e.msg);
  free(edited);
  free(text);
  free(path);
  return g;
}

static void test_variants(void **state) {
  Graph *g = compile_variant("graphs/gru.nn", "const L = 2", "const L = 3");
  assert_int_equal(g->nparams, 14);
  assert_shape(g, "gru.weight_ih_l2", 2, 768, 256);
  assert_shape(g, "gru.weight_hh_l2", 2, 768, 256);
  graph_free(g);
  g = compile_variant("graphs/gru.nn", "const H = 256", "const H = 512");
  assert_shape(g, "gru.weight_ih_l0", 2, 1536, 59);
  assert_shape(g, "gru.weight_hh_l1", 2, 1536, 512);
  assert_shape(g, "fc.weight", 2, 18, 512);
  graph_free(g);
  g = compile_variant("graphs/rnn.nn", "const H = 256", "const H = 512");
  assert_shape(g, "in2hidden.weight", 2, 512, 571);
  assert_shape(g, "in2output.weight", 2, 18, 571);
  graph_free(g);
}

static void test_cli_compile(void **state) {
  char *out, *err;
  const char *ok[] = {"compile", "graphs/rnn.nn", "--emit", "ir", NULL};
  assert_int_equal(run_rnnc(ok, &out, &err), 0);
  if (!updating())
    check_golden("tests/ir/rnn.ir", out);
  free(out);
  free(err);
  const char *bad[] = {"compile", "tests/errors/matvec_shape.nn", NULL};
  assert_int_equal(run_rnnc(bad, &out, &err), 1);
  assert_non_null(strstr(err, "tests/errors/matvec_shape.nn:11:20: error: @: matrix f32[3, 7] "
                              "and vector f32[3] do not match\n"));
  free(out);
  free(err);
  const char *missing[] = {"compile", "no/such/graph.nn", NULL};
  assert_int_equal(run_rnnc(missing, &out, &err), 1);
  assert_non_null(strstr(err, "no/such/graph.nn"));
  free(out);
  free(err);
  /* The optimized LLVM module: both kernels as the JIT gets them, so the
   * forward kernel computes no loss (no log-softmax, whose maximum is the
   * only llvm.maxnum); on AVX-512 hardware the assembly uses zmm
   * registers. Each kernel is its function and the part codegen cut off
   * for the JIT to compile at once (NAME.part1), which follows it. */
  const char *llvm[] = {"compile", "graphs/gru.nn", "--emit", "llvm", "--time", NULL};
  assert_int_equal(run_rnnc(llvm, &out, &err), 0);
  char *train = strstr(out, "define void @train("), *fwd = strstr(out, "define void @forward(");
  char *step = strstr(out, "define void @step(");
  assert_non_null(train);
  assert_non_null(fwd);
  assert_non_null(step);
  assert_true(train < fwd && fwd < step);
  fwd[-1] = step[-1] = '\0'; /* train and train.part1; forward and forward.part1 */
  assert_non_null(strstr(train, "define void @train.part1("));
  assert_non_null(strstr(fwd, "define void @forward.part1("));
  assert_non_null(strstr(train, "@llvm.maxnum"));
  assert_null(strstr(fwd, "@llvm.maxnum"));
  assert_non_null(strstr(err, "LLVM optimization"));
  /* update_range (the update on one thread's part of a minibatch's) asks
   * ahead for the lines it stores (llvm.c's ranged_loop); the whole-slot
   * update of one thread does not. */
  char *update = strstr(step, "define void @update("), *ranged = strstr(step, "define void @update_range(");
  assert_non_null(update);
  assert_non_null(ranged);
  assert_true(update < ranged);
  char *after = strstr(ranged + 1, "\ndefine ");
  assert_non_null(after);
  ranged[-1] = *after = '\0';
  assert_null(strstr(update, "@llvm.prefetch"));
  if (!strstr(ranged, "@llvm.prefetch.p0(ptr %") || !strstr(ranged, ", i32 1, i32 3, i32 1)"))
    fail_msg("no write prefetch in update_range:\n%s", ranged);
  free(out);
  free(err);
  /* A graph batch.c cannot batch (noise inside the scan): the JIT runs its
   * one-name kernels, and --emit shows them and names the others. */
  char *npath = noisy_rnn_graph();
  const char *unbatched[] = {"compile", npath, "--emit", "llvm", NULL};
  assert_int_equal(run_rnnc(unbatched, &out, &err), 0);
  assert_non_null(strstr(out, "define void @step("));
  assert_null(strstr(out, "define void @step_batch("));
  assert_non_null(strstr(err, "no step_batch kernel for this graph (batched codegen: noise inside"));
  free(out);
  free(err);
  free(npath);
  const char *asm_[] = {"compile", "graphs/rnn.nn", "--emit", "asm", NULL};
  assert_int_equal(run_rnnc(asm_, &out, &err), 0);
  Err e;
  char *cpuinfo = read_file("/proc/cpuinfo", NULL, &e);
  if (cpuinfo && strstr(cpuinfo, " avx512f"))
    assert_non_null(strstr(out, "zmm"));
  free(cpuinfo);
  free(out);
  free(err);
  const char *usage[][4] = {{"compile", NULL},
                            {"compile", "graphs/rnn.nn", "--emit", "nonsense"},
                            {"compile", "graphs/rnn.nn", "--bogus", NULL},
                            {"compile", "graphs/rnn.nn", "graphs/gru.nn", NULL}};
  for (size_t i = 0; i < ARRAY_LEN(usage); i++) {
    const char *argv[5] = {usage[i][0], usage[i][1], usage[i][2], usage[i][3], NULL};
    assert_int_equal(run_rnnc(argv, &out, &err), 2);
    free(out);
    free(err);
  }
}

/* Mutated versions of both graphs: byte deletions, insertions of the
 * language's own characters, and swaps. Each must compile or fail with a
 * positioned message; the sanitizers catch any memory error. */
static void test_mutations(void **state) {
  static const char alphabet[] = "(){}[],:=+-*/%@?<>.#\n 0123456789Txyhl_{}";
  const char *graphs[] = {"graphs/rnn.nn", "graphs/gru.nn"};
  Rng r;
  rng_seed(&r, 7);
  int failed = 0, compiled = 0;
  for (int gi = 0; gi < 2; gi++) {
    char *path = src_path(graphs[gi]);
    size_t len;
    Err e;
    char *text = read_file(path, &len, &e);
    assert_non_null(text);
    for (int it = 0; it < 1500; it++) {
      char *m = xmalloc(len + 8);
      memcpy(m, text, len);
      size_t n = len;
      int edits = 1 + (int)rng_below(&r, 3);
      for (int k = 0; k < edits && n > 1; k++) {
        size_t at = rng_below(&r, (uint32_t)n);
        switch (rng_below(&r, 3)) {
        case 0: /* delete */
          memmove(m + at, m + at + 1, n - at - 1);
          n--;
          break;
        case 1: /* insert */
          memmove(m + at + 1, m + at, n - at);
          m[at] = alphabet[rng_below(&r, sizeof alphabet - 1)];
          n++;
          break;
        default: /* replace */
          m[at] = alphabet[rng_below(&r, sizeof alphabet - 1)];
        }
      }
      Graph *g = compile_graph(graphs[gi], m, n, &e);
      if (g) {
        compiled++;
        graph_free(g);
      } else {
        failed++;
        assert_int_equal(strncmp(e.msg, graphs[gi], strlen(graphs[gi])), 0);
        assert_non_null(strstr(e.msg, "error: "));
      }
      free(m);
    }
    free(text);
    free(path);
  }
  print_message("mutations: %d compiled, %d rejected with a message\n", compiled, failed);
  assert_true(failed > 1000);
}

/* What a graph file that is not one gets (issue 12, messages): a UTF-8
 * byte order mark is accepted ("unexpected non-ASCII character"); a
 * checkpoint given as GRAPH is named as such, and a binary file's line is
 * echoed without its raw bytes, each with one "error:" (it said
 * "rnnc predict: error: x: error: ..."); a graph too big to lower without
 * loops or calls is not told about them; a read error says why. */
static void test_odd_graph_files(void **state) {
  Err e;
  char *rnn = read_file("graphs/rnn.nn", NULL, &e);
  assert_non_null(rnn);
  char *bom = xasprintf("\xEF\xBB\xBF%s", rnn);
  Graph *a = compile_graph("graphs/rnn.nn", rnn, strlen(rnn), &e);
  Graph *b = compile_graph("graphs/rnn.nn", bom, strlen(bom), &e);
  if (!a || !b)
    fail_msg("%s", e.msg);
  char *ta = print_ir(a), *tb = print_ir(b);
  assert_string_equal(ta, tb); /* positions included */
  free(ta);
  free(tb);
  graph_free(a);
  graph_free(b);
  free(bom);
  free(rnn);

  /* 6000 lets: the name lookups alone exceed the budget. */
  Buf lets = {0};
  buf_printf(&lets, "input x : onehot[T, 4]\ntarget y : class[2]\n");
  for (int i = 0; i < 6000; i++)
    buf_printf(&lets, "let a%d = 1\n", i);
  assert_null(compile_graph("lets.nn", lets.data, lets.len, &e));
  assert_non_null(strstr(e.msg, "too big to lower: its statements and expressions take over"));
  buf_free(&lets);

  char *dir = tmp_path("odd");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *bin = xasprintf("%s/bin.nn", dir);
  write_text(bin, "ab\x01\x1b[31m\x9b\xff cd\n"); /* an escape sequence, bytes not UTF-8 */
  char *ckpt = src_path("tests/golden/rnn_seed42.safetensors");
  /* the same checkpoint without its label list (the key renamed in place,
   * as a PyTorch checkpoint has none) */
  char *nolabels = xasprintf("%s/nolabels.safetensors", dir);
  size_t clen;
  char *bytes = read_file(ckpt, &clen, &e);
  assert_non_null(bytes);
  char *key = NULL;
  for (size_t i = 0; !key && i + 8 <= clen; i++)
    key = memcmp(bytes + i, "\"labels\"", 8) ? NULL : bytes + i;
  assert_non_null(key);
  memcpy(key, "\"labelz\"", 8);
  FILE *f = fopen(nolabels, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(bytes, 1, clen, f), clen);
  assert_int_equal(fclose(f), 0);
  free(bytes);
  struct {
    const char *const *argv;
    const char *want;
  } cases[] = {
      {(const char *const[]){"predict", ckpt, "graphs/rnn.nn", "Kim", NULL},
       "rnn_seed42.safetensors: error: this is a safetensors file (a checkpoint), not a graph "
       "file; GRAPH comes first, CKPT second\n"},
      {(const char *const[]){"compile", bin, NULL},
       ":1:3: error: unexpected character (byte 0x01)\nab??[31m?? cd\n  ^\n"},
      {(const char *const[]){"predict", "graphs/rnn.nn", nolabels, "Kim", "--data", dir, NULL},
       "nolabels.safetensors: the checkpoint has no label list, and "},
      {(const char *const[]){"compile", "/proc/self/mem", NULL},
       "rnnc compile: error: /proc/self/mem: cannot read it: Input/output error\n"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *err;
    assert_int_equal(run_rnnc(cases[i].argv, NULL, &err), 1);
    if (!strstr(err, cases[i].want))
      fail_msg("rnnc %s: stderr is\n%s\nnot\n%s", cases[i].argv[0], err, cases[i].want);
    const char *first = strstr(err, "error:");
    assert_non_null(first);
    assert_null(strstr(first + 1, "error:"));
    for (const char *p = err; *p; p++)
      if ((unsigned char)*p >= 0x80 || ((unsigned char)*p < 0x20 && *p != '\n'))
        fail_msg("rnnc %s: a raw byte 0x%02x in its message", cases[i].argv[0], (unsigned char)*p);
    free(err);
  }
  free(ckpt);
  free(nolabels);
  free(bin);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_odd_graph_files),
      cmocka_unit_test(test_ir_golden_rnn), cmocka_unit_test(test_ir_golden_gru),
      cmocka_unit_test(test_grad_opt_golden),
      cmocka_unit_test(test_error_messages), cmocka_unit_test(test_shapes_rnn),
      cmocka_unit_test(test_shapes_gru),     cmocka_unit_test(test_variants),
      cmocka_unit_test(test_cli_compile),    cmocka_unit_test(test_mutations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

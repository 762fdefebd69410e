/* test_aot.c: rnnc build, the ahead-of-time object and its header.
 *
 * The objects are built with the rnnc binary, then linked into a small C
 * driver (written to RNNC_TMP_DIR, compiled with the system's cc) that
 * prints P_forward's logits and P_predict's class and probabilities as
 * hex floats. They are checked against the JIT's forward kernel (the
 * runtime's model API, with a zero noise buffer: what the object uses for
 * a random initial state), against PyTorch's golden logits for gru.nn,
 * and for bad inputs. The header must compile as strict C99 and as C++,
 * and `nm -u` on the object may list only libc/libm symbols. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "testutil.h"

/* -------------------------------------------------------------- fixtures */

typedef struct Built {
  const char *graph, *ckpt, *prefix, *cpu; /* cpu NULL: the host's */
  char *obj, *hdr, *driver;                /* paths */
} Built;

static Built gru = {.graph = "graphs/gru.nn",
                   .ckpt = "tests/golden/gru_seed42.safetensors",
                   .prefix = "gru"};
static Built rnn = {.graph = "graphs/rnn.nn",
                   .ckpt = "tests/golden/rnn_seed42.safetensors",
                   .prefix = "names_rnn",
                   .cpu = "generic"};
static char *workdir;
static int have_cc, have_cxx;

/* The driver: reads one name a line; prints "rc class logits... probs..."
 * (hex floats, exact); with argument "bad", the results of bad inputs. */
static const char driver_body[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "#define CAT2(a, b) a##b\n"
    "#define CAT(a, b) CAT2(a, b)\n"
    "#define FORWARD CAT(P, _forward)\n"
    "#define PREDICT CAT(P, _predict)\n"
    "#define LABELS CAT(P, _labels)\n"
    "#define NCLASS CAT(P, _NUM_CLASSES)\n"
    "#define VOCAB CAT(P, _VOCAB)\n"
    "#define MAXLEN CAT(P, _MAX_LEN)\n"
    "static int encode(const char *s, int32_t *out) {\n"
    "  int n = 0;\n"
    "  for (; *s && n < MAXLEN; s++) {\n"
    "    const char *p = strchr(VOCAB, *s);\n"
    "    out[n++] = p ? (int32_t)(p - VOCAB) : -1;\n"
    "  }\n"
    "  return n;\n"
    "}\n"
    "static void bad(void) {\n"
    "  int32_t c[MAXLEN + 1];\n"
    "  float lg[NCLASS], pr[NCLASS];\n"
    "  char longname[MAXLEN + 2];\n"
    "  int i;\n"
    "  for (i = 0; i <= MAXLEN; i++) c[i] = i % 59;\n"
    "  lg[0] = 12345.0f;\n"
    "  printf(\"forward len 0: %d\\n\", FORWARD(c, 0, lg));\n"
    "  printf(\"forward len -1: %d\\n\", FORWARD(c, -1, lg));\n"
    "  printf(\"forward len max+1: %d\\n\", FORWARD(c, MAXLEN + 1, lg));\n"
    "  c[3] = 59;\n"
    "  printf(\"forward index 59: %d\\n\", FORWARD(c, 5, lg));\n"
    "  c[3] = -1;\n"
    "  printf(\"forward index -1: %d\\n\", FORWARD(c, 5, lg));\n"
    "  printf(\"logits untouched: %d\\n\", lg[0] == 12345.0f);\n"
    "  c[3] = 3;\n"
    "  printf(\"forward len max: %d\\n\", FORWARD(c, MAXLEN, lg));\n"
    "  printf(\"predict \\\"\\\": %d\\n\", PREDICT(\"\", pr));\n"
    "  printf(\"predict a/b: %d\\n\", PREDICT(\"a/b\", pr));\n"
    "  printf(\"predict NULL: %d\\n\", PREDICT(NULL, pr));\n"
    "  printf(\"predict non-ASCII: %d\\n\", PREDICT(\"Jos\\xc3\\xa9\", pr));\n"
    "  memset(longname, 'a', sizeof longname);\n"
    "  longname[MAXLEN] = 0;\n"
    "  printf(\"predict max length: %d\\n\", PREDICT(longname, NULL) >= 0);\n"
    "  longname[MAXLEN] = 'a';\n"
    "  longname[MAXLEN + 1] = 0;\n"
    "  printf(\"predict max length+1: %d\\n\", PREDICT(longname, pr));\n"
    "  printf(\"labels: %s %s\\n\", LABELS[0], LABELS[NCLASS - 1]);\n"
    "}\n"
    "int main(int argc, char **argv) {\n"
    "  char line[512];\n"
    "  if (argc > 1 && !strcmp(argv[1], \"bad\")) {\n"
    "    bad();\n"
    "    return 0;\n"
    "  }\n"
    "  while (fgets(line, sizeof line, stdin)) {\n"
    "    int32_t c[MAXLEN];\n"
    "    float lg[NCLASS], pr[NCLASS];\n"
    "    int i, n, rc, k;\n"
    "    line[strcspn(line, \"\\n\")] = 0;\n"
    "    n = encode(line, c);\n"
    "    rc = FORWARD(c, n, lg);\n"
    "    k = PREDICT(line, pr);\n"
    "    printf(\"%d %d\", rc, k);\n"
    "    for (i = 0; i < NCLASS; i++) printf(\" %a\", (double)lg[i]);\n"
    "    for (i = 0; i < NCLASS; i++) printf(\" %a\", (double)pr[i]);\n"
    "    printf(\"\\n\");\n"
    "  }\n"
    "  return 0;\n"
    "}\n";

static void build(Built *b) {
  b->obj = xasprintf("%s/%s.o", workdir, b->prefix);
  b->hdr = xasprintf("%s/%s.h", workdir, b->prefix);
  const char *argv[12] = {"build", b->graph, b->ckpt, "-o", b->obj};
  int n = 5;
  if (b->cpu) {
    argv[n++] = "--cpu";
    argv[n++] = b->cpu;
  }
  argv[n] = NULL;
  char *out, *err;
  int st = run_rnnc(argv, &out, &err);
  if (st != 0)
    fail_msg("rnnc build %s: exit %d\n%s%s", b->graph, st, out, err);
  free(out);
  free(err);
  if (!have_cc)
    return;
  char *src = xasprintf("%s/%s_driver.c", workdir, b->prefix);
  char *text = xasprintf("#define P %s\n#include \"%s\"\n%s", b->prefix, b->hdr, driver_body);
  write_text(src, text);
  b->driver = xasprintf("%s/%s_driver", workdir, b->prefix);
  /* The object with libc alone (no -lm). */
  int rc = sh("cc -std=c99 -O1 -Wall -Wextra -pedantic -Werror -o '%s' '%s' '%s'", b->driver,
              src, b->obj);
  if (rc)
    fail_msg("compiling and linking the %s driver failed (exit %d)", b->prefix, rc);
  free(text);
  free(src);
}

static int setup(void **state) {
  const char *tmp = getenv("RNNC_TMP_DIR");
  workdir = xasprintf("%s/aot.%d", tmp ? tmp : "/tmp", (int)getpid());
  if (mkdir(workdir, 0777))
    return -1;
  have_cc = sh("command -v cc >/dev/null 2>&1") == 0;
  have_cxx = sh("command -v c++ >/dev/null 2>&1") == 0;
  build(&gru);
  build(&rnn);
  return 0;
}

static int teardown(void **state) {
  Built *bs[] = {&gru, &rnn};
  for (int i = 0; i < 2; i++) {
    free(bs[i]->obj);
    free(bs[i]->hdr);
    free(bs[i]->driver);
  }
  sh("rm -rf '%s'", workdir);
  free(workdir);
  return 0;
}

/* ---------------------------------------------------------- references */

/* Runs b's driver on the names: (n) rc, class; (n, classes) logits, probs. */
static void aot_run(const Built *b, const NameList *ns, int C, int *rc, int *cls, float *logits,
                    float *probs) {
  char *in = xasprintf("%s/%s_names.txt", workdir, b->prefix);
  char *outp = xasprintf("%s/%s_out.txt", workdir, b->prefix);
  Buf buf = {0};
  for (int i = 0; i < ns->n; i++)
    buf_printf(&buf, "%s\n", ns->s[i]);
  buf_put(&buf, "", 1);
  write_text(in, buf.data);
  buf_free(&buf);
  assert_int_equal(sh("'%s' < '%s' > '%s'", b->driver, in, outp), 0);
  char *text = read_text(outp), *p = text;
  for (int i = 0; i < ns->n; i++) {
    char *end;
    rc[i] = (int)strtol(p, &end, 10);
    cls[i] = (int)strtol(end, &end, 10);
    for (int k = 0; k < C; k++)
      logits[(size_t)i * C + k] = strtof(end, &end);
    for (int k = 0; k < C; k++)
      probs[(size_t)i * C + k] = strtof(end, &end);
    assert_true(*end == '\n');
    p = end + 1;
  }
  assert_true(*p == 0);
  free(text);
  free(in);
  free(outp);
}

/* AOT against the JIT (zero noise): bit for bit when exact, else max
 * |diff| within 1e-6 * max(1, |x|). Checks P_predict against P_forward
 * too: the argmax and a double-precision softmax; and the golden logits
 * (the first ngolden names) within 1e-4 when given. */
static void compare(const Built *b, const NameList *ns, const float *golden_or_null, bool exact) {
  int C;
  float *jit = jit_logits(b->graph, b->ckpt, ns, &C);
  size_t nl = (size_t)ns->n * C;
  int *rc = xcalloc((size_t)ns->n, sizeof *rc), *cls = xcalloc((size_t)ns->n, sizeof *cls);
  float *aot = xcalloc(nl, sizeof *aot), *probs = xcalloc(nl, sizeof *probs);
  aot_run(b, ns, C, rc, cls, aot, probs);
  double worst = 0, worst_p = 0, worst_g = 0;
  int same = 0;
  for (int i = 0; i < ns->n; i++) {
    assert_int_equal(rc[i], 0);
    const float *a = aot + (size_t)i * C, *j = jit + (size_t)i * C, *p = probs + (size_t)i * C;
    int best = 0;
    double mx = a[0], sum = 0;
    for (int k = 0; k < C; k++) {
      if (a[k] > a[best])
        best = k;
      mx = a[k] > mx ? a[k] : mx;
      double d = fabs((double)a[k] - j[k]) / fmax(1, fabs(j[k]));
      worst = fmax(worst, d);
      same += !memcmp(&a[k], &j[k], sizeof(float));
      if (golden_or_null && i < ns->ngolden)
        worst_g = fmax(worst_g, fabs((double)a[k] - golden_or_null[(size_t)i * C + k]));
    }
    assert_int_equal(cls[i], best);
    for (int k = 0; k < C; k++)
      sum += exp((double)a[k] - mx);
    for (int k = 0; k < C; k++)
      worst_p = fmax(worst_p, fabs(p[k] - exp((double)a[k] - mx) / sum));
  }
  print_message("%s: AOT vs JIT (zero noise) on %d names: %d of %d logits bit-identical, max "
                "relative difference %.3g; probabilities within %.3g of a double softmax%s",
                b->prefix, ns->n, same, (int)nl, worst, worst_p, golden_or_null ? "" : "\n");
  if (golden_or_null)
    print_message("; golden PyTorch logits within %.3g\n", worst_g);
  if (exact && same != (int)nl)
    fail_msg("%s: the same code on the same CPU, but %d of %d logits differ from the JIT's",
             b->prefix, (int)nl - same, (int)nl);
  if (worst > 1e-6)
    fail_msg("%s: AOT and JIT logits differ by %g (relative), more than 1e-6", b->prefix, worst);
  if (worst_p > 1e-6)
    fail_msg("%s: probabilities differ from the softmax by %g", b->prefix, worst_p);
  if (golden_or_null && worst_g > 1e-4)
    fail_msg("%s: AOT logits differ from PyTorch's by %g", b->prefix, worst_g);
  free(jit);
  free(rc);
  free(cls);
  free(aot);
  free(probs);
}

/* ----------------------------------------------------------------- tests */

#define NEED_CC()                                                                                \
  do {                                                                                           \
    if (!have_cc) {                                                                              \
      print_message("skipped: no C compiler 'cc' on PATH to link the object\n");                \
      skip();                                                                                    \
    }                                                                                            \
  } while (0)

static void test_gru_matches_jit_and_golden(void **state) {
  NEED_CC();
  StFile golden;
  Err e;
  char *path = src_path(gru.ckpt);
  if (st_load(&golden, path, &e))
    fail_msg("%s", e.msg);
  NameList ns = name_list_load(gru.ckpt, true);
  float *g = xcalloc((size_t)ns.ngolden * 18, sizeof *g);
  for (int i = 0; i < ns.ngolden; i++) {
    char name[32];
    snprintf(name, sizeof name, "logits.%d", i);
    const StTensor *t = st_find(&golden, name);
    assert_non_null(t);
    assert_int_equal(t->nelem, 18);
    memcpy(g + (size_t)i * 18, t->data, 18 * sizeof *g);
  }
  /* The host build is the JIT's kernel for the same CPU (the weights a
   * constant instead of a pointer, PIC): the same bits. */
  compare(&gru, &ns, g, true);
  free(g);
  name_list_free(&ns);
  st_free(&golden);
  free(path);
}

static void test_rnn_matches_jit_with_zero_noise(void **state) {
  NEED_CC();
  NameList ns = name_list_load(rnn.ckpt, true);
  /* --cpu generic: SSE2 code against the JIT's host code (AVX-512 here),
   * the sums reassociated differently; and the noise folded away. */
  compare(&rnn, &ns, NULL, false);
  name_list_free(&ns);
}

static void test_deterministic(void **state) {
  NEED_CC();
  /* rnn.nn draws its initial state at random in training; the object
   * must give the same logits on every call. */
  char *in = xasprintf("%s/det.txt", workdir), *o1 = xasprintf("%s/det1.txt", workdir),
       *o2 = xasprintf("%s/det2.txt", workdir);
  write_text(in, "Dostoevsky\nDostoevsky\nNguyen\n");
  assert_int_equal(sh("'%s' < '%s' > '%s'", rnn.driver, in, o1), 0);
  assert_int_equal(sh("'%s' < '%s' > '%s'", rnn.driver, in, o2), 0);
  char *a = read_text(o1), *b = read_text(o2);
  assert_string_equal(a, b);
  char *second = strchr(a, '\n') + 1;
  assert_memory_equal(a, second, (size_t)(second - a));
  free(a);
  free(b);
  free(in);
  free(o1);
  free(o2);
}

static void test_bad_inputs(void **state) {
  NEED_CC();
  char *o = xasprintf("%s/bad.txt", workdir);
  assert_int_equal(sh("'%s' bad > '%s'", gru.driver, o), 0);
  char *text = read_text(o);
  assert_string_equal(text, "forward len 0: 1\n"
                            "forward len -1: 1\n"
                            "forward len max+1: 1\n"
                            "forward index 59: 2\n"
                            "forward index -1: 2\n"
                            "logits untouched: 1\n"
                            "forward len max: 0\n"
                            "predict \"\": -1\n"
                            "predict a/b: -1\n"
                            "predict NULL: -1\n"
                            "predict non-ASCII: -1\n"
                            "predict max length: 1\n"
                            "predict max length+1: -1\n"
                            "labels: Arabic Vietnamese\n");
  free(text);
  free(o);
}

static void test_header_compiles_as_c99_and_cxx(void **state) {
  const Built *bs[] = {&gru, &rnn};
  int checked = 0;
  for (int i = 0; i < 2; i++) {
    const Built *b = bs[i];
    char *hdr = read_text(b->hdr);
    char want[128];
    snprintf(want, sizeof want, "#define %s_NUM_CLASSES 18\n", b->prefix);
    assert_non_null(strstr(hdr, want));
    snprintf(want, sizeof want, "#define %s_VOCAB \"%s\"\n", b->prefix, VOCAB_CHARS);
    assert_non_null(strstr(hdr, want));
    snprintf(want, sizeof want, "extern const char *const %s_labels[%s_NUM_CLASSES];", b->prefix,
             b->prefix);
    assert_non_null(strstr(hdr, want));
    assert_non_null(strstr(hdr, "extern \"C\""));
    free(hdr);
    /* Included twice (the guard), every name used. */
    char *src = xasprintf("%s/%s_hdr.c", workdir, b->prefix);
    char *text = xasprintf(
        "#include \"%s\"\n#include \"%s\"\n"
        "int use(void);\n"
        "int use(void) {\n"
        "  float lg[%s_NUM_CLASSES];\n"
        "  int32_t c[%s_MAX_LEN] = {0};\n"
        "  const char *v = %s_VOCAB;\n"
        "  return %s_forward(c, 1, lg) + %s_predict(v, lg) + (int)sizeof %s_labels[0] +\n"
        "         %s_VOCAB_SIZE + (int)(%s_STACK_BYTES > 0);\n"
        "}\n",
        b->hdr, b->hdr, b->prefix, b->prefix, b->prefix, b->prefix, b->prefix, b->prefix,
        b->prefix, b->prefix);
    write_text(src, text);
    if (have_cc) {
      int rc = sh("cc -std=c99 -Wall -Wextra -pedantic -Werror -c -o /dev/null -x c '%s'", src);
      if (rc)
        fail_msg("%s does not compile as C99 (-Wall -Wextra -pedantic -Werror)", b->hdr);
      checked++;
    }
    if (have_cxx) {
      int rc = sh("c++ -Wall -Wextra -pedantic -Werror -c -o /dev/null -x c++ '%s'", src);
      if (rc)
        fail_msg("%s does not compile as C++ (-Wall -Wextra -pedantic -Werror)", b->hdr);
      checked++;
    }
    free(src);
    free(text);
  }
  if (!have_cc || !have_cxx)
    print_message("skipped: %s not found on PATH\n", !have_cc ? "cc" : "c++");
  if (!checked)
    skip();
}

static void test_object_needs_only_libc(void **state) {
  if (sh("command -v nm >/dev/null 2>&1")) {
    print_message("skipped: no nm on PATH\n");
    skip();
  }
  /* The block operations LLVM may emit; no libm (without an FMA
   * instruction, as for --cpu generic, the inline exp and tanh compute
   * llvm.fma in double precision instead of calling fmaf). */
  static const char *const allowed[] = {"memcpy", "memmove", "memset"};
  const Built *bs[] = {&gru, &rnn};
  for (int i = 0; i < 2; i++) {
    char *o = xasprintf("%s/nm.txt", workdir);
    assert_int_equal(sh("nm -u '%s' > '%s'", bs[i]->obj, o), 0);
    char *text = read_text(o);
    print_message("nm -u %s.o:%s", bs[i]->prefix, *text ? "\n" : " nothing\n");
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
      char *sym = strrchr(line, ' ');
      sym = sym ? sym + 1 : line;
      bool ok = false;
      for (size_t k = 0; k < ARRAY_LEN(allowed); k++)
        ok |= !strcmp(sym, allowed[k]);
      print_message("  %s\n", sym);
      if (!ok)
        fail_msg("%s needs '%s', which is not in libc or libm", bs[i]->obj, sym);
    }
    free(text);
    free(o);
    /* The exported symbols: exactly the API. */
    o = xasprintf("%s/nm.txt", workdir);
    assert_int_equal(sh("nm -g --defined-only '%s' | awk '{print $3}' | sort > '%s'", bs[i]->obj,
                        o),
                     0);
    text = read_text(o);
    char want[256];
    snprintf(want, sizeof want, "%s_forward\n%s_labels\n%s_predict\n", bs[i]->prefix,
             bs[i]->prefix, bs[i]->prefix);
    assert_string_equal(text, want);
    free(text);
    free(o);
  }
}

static void test_generic_cpu_has_no_avx(void **state) {
  if (sh("command -v objdump >/dev/null 2>&1")) {
    print_message("skipped: no objdump on PATH\n");
    skip();
  }
  /* --cpu generic: the x86-64 baseline, so no VEX/EVEX instruction (every
   * AVX mnemonic starts with 'v') and no ymm/zmm register. */
  char *o = xasprintf("%s/objdump.txt", workdir);
  assert_int_equal(sh("objdump -d --no-show-raw-insn '%s' > '%s'", rnn.obj, o), 0);
  char *text = read_text(o);
  int insns = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char *tab = strchr(line, '\t');
    if (!tab || !strchr(line, ':') || strchr(line, ':') > tab)
      continue;
    insns++;
    if (tab[1] == 'v' || strstr(tab, "%ymm") || strstr(tab, "%zmm"))
      fail_msg("%s (--cpu generic) has an AVX instruction: %s", rnn.obj, line);
  }
  assert_true(insns > 100);
  free(text);
  free(o);
}

/* rnnc build as a user meets it: statuses, messages, nothing half-written. */
static char *run(int want, const char *const *argv) {
  char *out, *err;
  int st = run_rnnc(argv, &out, &err);
  if (st != want)
    fail_msg("rnnc build: exit %d, want %d\nstdout: %s\nstderr: %s", st, want, out, err);
  char *all = xasprintf("%s%s", out, err);
  free(out);
  free(err);
  return all;
}

static void expect_in(char *text, const char *fragment) {
  if (!strstr(text, fragment))
    fail_msg("output does not contain \"%s\":\n%s", fragment, text);
  free(text);
}

static void test_cli(void **state) {
  char *o = xasprintf("%s/cli.o", workdir), *h = xasprintf("%s/cli.h", workdir);
  const char *G = "graphs/rnn.nn", *K = "tests/golden/rnn_seed42.safetensors";
  expect_in(run(0, (const char *const[]){"build", "--help", NULL}), "usage: rnnc build");
  expect_in(run(0, (const char *const[]){"--help", NULL}), "build");
  expect_in(run(2, (const char *const[]){"build", G, NULL}), "wants GRAPH and CKPT");
  expect_in(run(2, (const char *const[]){"build", G, K, "x", "-o", o, NULL}), "'x'");
  expect_in(run(2, (const char *const[]){"build", G, K, NULL}), "wants -o");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", "model.obj", NULL}), "NAME.o");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", "dir/m.wasm", "--target",
                                         "aarch64-linux-gnu", NULL}),
            "a .wasm module is for --target wasm32");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", "dir/my-model.o", NULL}),
            "--prefix");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--prefix", "9lives", NULL}),
            "not a C identifier");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--bogus", NULL}), "--help");
  /* LLVM would ignore an unknown CPU and abort on a 32-bit one; a CPU of
   * another architecture is unknown too. */
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--cpu", "foo", NULL}),
            "'foo' is not a CPU of x86_64");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--cpu", "pentium4", NULL}),
            "'pentium4' is not a CPU of x86_64");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--target", "aarch64-linux-gnu",
                                         "--cpu", "znver3", NULL}),
            "'znver3' is not a CPU of aarch64");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--target", "riscv64-linux-gnu",
                                         "--cpu", "sifive-e31", NULL}),
            "'sifive-e31' is not a CPU of riscv64"); /* RV32: LLVM aborts */
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--target", "aarch64-linux-gnu",
                                         "--cpu", "host", NULL}),
            "does not run aarch64-linux-gnu code");
  expect_in(run(2, (const char *const[]){"build", G, K, "-o", o, "--target", "mips-linux-gnu",
                                         "--cpu", "mips32r2", NULL}),
            "for mips-linux-gnu, use generic");
  /* The help lists the tested targets and every back end; --cpu help a
   * target's CPUs. */
  char *help = run(0, (const char *const[]){"build", "--help", NULL});
  assert_contains(help, "thumbv7em-none-eabihf");
  assert_contains(help, "wasm32");
  expect_in(help, "loongarch64");
  expect_in(run(0, (const char *const[]){"build", "--target", "thumbv7em-none-eabihf", "--cpu",
                                         "help", NULL}),
            "cortex-m4, cortex-m7");
  expect_in(run(1, (const char *const[]){"build", "graphs/none.nn", K, "-o", o, NULL}),
            "graphs/none.nn");
  expect_in(run(1, (const char *const[]){"build", G, "tests/golden/none.safetensors", "-o", o,
                                         NULL}),
            "none.safetensors");
  expect_in(run(1, (const char *const[]){"build", G, "tests/golden/gru_seed42.safetensors", "-o",
                                         o, NULL}),
            "in2hidden.weight");
  expect_in(run(1, (const char *const[]){"build", G, K, "-o", o, "--target",
                                         "nonsense-unknown-linux-gnu", NULL}),
            "nonsense-unknown-linux-gnu");
  expect_in(run(1, (const char *const[]){"build", G, K, "-o", "/nonexistent/dir/m.o", NULL}),
            "cannot write /nonexistent/dir/m.o");
  /* None of the failures left a file behind. */
  struct stat st;
  assert_int_not_equal(stat(o, &st), 0);
  assert_int_not_equal(stat(h, &st), 0);
  assert_int_equal(sh("ls -a '%s' | grep -q rnnc-build", workdir), 1);
  /* An explicit x86-64 triple and CPU work, and the prefix names the API. */
  expect_in(run(0, (const char *const[]){"build", G, K, "-o", o, "--target",
                                         "x86_64-unknown-linux-gnu", "--cpu", "x86-64-v2",
                                         "--prefix", "Cli_2", NULL}),
            "x86_64-unknown-linux-gnu, CPU x86-64-v2");
  expect_in(read_text(h), "int Cli_2_predict(const char *ascii_name, float *probs);");
  free(o);
  free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gru_matches_jit_and_golden),
      cmocka_unit_test(test_rnn_matches_jit_with_zero_noise),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_header_compiles_as_c99_and_cxx),
      cmocka_unit_test(test_object_needs_only_libc),
      cmocka_unit_test(test_generic_cpu_has_no_avx),
      cmocka_unit_test(test_cli),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

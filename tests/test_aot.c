/* test_aot.c: rnnc build for the host, the ahead-of-time object and its
 * header.
 *
 * The objects are built with the rnnc binary and linked with the system's
 * cc into tests/targets/driver.c, which prints P_forward's logits and
 * P_predict's class and probabilities (as bits) for the names compiled in,
 * then the results of bad inputs. They are checked against the JIT's
 * forward kernel (the runtime's model API, with a zero noise buffer: what
 * the object uses for a random initial state) and against PyTorch's
 * golden logits for gru.nn and tests/golden/embgru.nn (an embedding table).
 * The header must compile as strict C99 and as C++, and `nm -u` on the
 * object may list only memcpy, memmove and memset.
 * test_targets.c does the same for other targets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "safetensors.h"
#include "testutil.h"
#include "util.h"

/* -------------------------------------------------------------- fixtures */

typedef struct Built {
  const char *graph, *ckpt, *prefix, *cpu; /* cpu NULL: the host's */
  bool quantize;                           /* --quantize int8 */
  bool no_batch;                           /* --no-batch-kernel */
  const char *names_ckpt;                  /* the checkpoint whose golden names to run (NULL: ckpt);
                                            * set for an untrained model (tails_checkpoint), whose
                                            * logits are too close for its classes to be checked */
  char *obj, *hdr, *driver;                /* paths */
  NameList names;                          /* compiled into the driver */
} Built;

static Built gru = {.graph = "graphs/gru.nn",
                   .ckpt = "tests/golden/gru_seed42.safetensors",
                   .prefix = "gru"};
/* an embedding's row gathers (tests/golden/embgru.nn) */
static Built emb = {.graph = "tests/golden/embgru.nn",
                    .ckpt = "tests/golden/embgru_seed42.safetensors",
                    .prefix = "embgru"};
static Built rnn = {.graph = "graphs/rnn.nn",
                   .ckpt = "tests/golden/rnn_seed42.safetensors",
                   .prefix = "names_rnn",
                   .cpu = "generic"};
/* AVX2 without VNNI: the float-accumulating int8 products (the host's may
 * have vpdpbusd: test_int8_vnni) */
static Built gru8 = {.graph = "graphs/gru.nn",
                    .ckpt = "tests/golden/gru_seed42.safetensors",
                    .prefix = "gru8",
                    .cpu = "x86-64-v3",
                    .quantize = true};
static Built rnn8 = {.graph = "graphs/rnn.nn",
                    .ckpt = "tests/golden/rnn_seed42.safetensors",
                    .prefix = "rnn8",
                    .cpu = "generic",
                    .quantize = true};
static Built rnn1 = {.graph = "graphs/rnn.nn",
                    .ckpt = "tests/golden/rnn_seed42.safetensors",
                    .prefix = "rnn1",
                    .cpu = "generic",
                    .no_batch = true};
static Built *const all[] = {&gru, &rnn, &gru8, &rnn8, &rnn1, &emb};
static char *workdir, *root;
static int have_cc, have_cxx;

/* The object, and the driver linked with it: the golden names and edge
 * cases (one character, the whole vocabulary, 64 characters). */
static void build(Built *b) {
  b->obj = xasprintf("%s/%s.o", workdir, b->prefix);
  b->hdr = xasprintf("%s/%s.h", workdir, b->prefix);
  b->names = name_list_load(b->names_ckpt ? b->names_ckpt : b->ckpt, true);
  rnnc_build(b->graph, b->ckpt, b->obj,
             (BuildFlags){.cpu = b->cpu, .quantize = b->quantize, .no_batch = b->no_batch});
  if (!have_cc)
    return;
  write_driver_names(workdir, &b->names);
  b->driver = xasprintf("%s/%s_driver", workdir, b->prefix);
  /* The object with libc alone (no -lm). */
  int rc = sh("cc -std=c99 -O1 -Wall -Wextra -pedantic -Werror -DP=%s -include '%s' -I '%s' "
              "'%s/tests/targets/driver.c' '%s' -o '%s'",
              b->prefix, b->hdr, workdir, root, b->obj, b->driver);
  if (rc)
    fail_msg("compiling and linking the %s driver failed (exit %d)", b->prefix, rc);
}

static int setup(void **state) {
  const char *tmp = getenv("RNNC_TMP_DIR");
  workdir = xasprintf("%s/aot.%d", tmp ? tmp : "/tmp", (int)getpid());
  root = src_path(".");
  if (mkdir(workdir, 0777))
    return -1;
  have_cc = sh("command -v cc >/dev/null 2>&1") == 0;
  have_cxx = sh("command -v c++ >/dev/null 2>&1") == 0;
  for (size_t i = 0; i < ARRAY_LEN(all); i++)
    build(all[i]);
  return 0;
}

static int teardown(void **state) {
  for (size_t i = 0; i < ARRAY_LEN(all); i++) {
    free(all[i]->obj);
    free(all[i]->hdr);
    free(all[i]->driver);
    name_list_free(&all[i]->names);
  }
  sh("rm -rf '%s'", workdir);
  free(workdir);
  free(root);
  return 0;
}

/* b's driver's output (malloc'd). */
static char *run_driver(const Built *b) {
  char *out = xasprintf("%s/%s.out", workdir, b->prefix);
  assert_int_equal(sh("'%s' > '%s'", b->driver, out), 0);
  char *text = read_text(out);
  free(out);
  return text;
}

/* ----------------------------------------------------------------- tests */

#define NEED_CC()                                                                                \
  do {                                                                                           \
    if (!have_cc) {                                                                              \
      print_message("skipped: no C compiler 'cc' on PATH to link the object\n");                \
      skip();                                                                                    \
    }                                                                                            \
  } while (0)

static void matches_jit_and_golden(const Built *b, const char *label) {
  StFile golden;
  Err e;
  char *path = src_path(b->ckpt);
  if (st_load(&golden, path, &e))
    fail_msg("%s", e.msg);
  const NameList *ns = &b->names;
  float *g = xcalloc((size_t)ns->ngolden * 18, sizeof *g);
  for (int i = 0; i < ns->ngolden; i++) {
    char name[32];
    snprintf(name, sizeof name, "logits.%d", i);
    const StTensor *t = st_find(&golden, name);
    assert_non_null(t);
    assert_int_equal(t->nelem, 18);
    memcpy(g + (size_t)i * 18, t->data, 18 * sizeof *g);
  }
  /* The host build is the JIT's kernel for the same CPU (the weights a
   * constant instead of a pointer, PIC): the same bits. And the bad
   * inputs give their error codes (driver_tail). */
  char *text = run_driver(b);
  check_aot_output(label, b->graph, b->ckpt, ns, text,
                   &(AotCheck){.tol = 1e-6, .exact = true, .golden = g, .tail = driver_tail});
  free(text);
  free(g);
  st_free(&golden);
  free(path);
}

static void test_gru_matches_jit_and_golden(void **state) {
  NEED_CC();
  matches_jit_and_golden(&gru, "gru (host)");
}

static void test_embgru_matches_jit_and_golden(void **state) {
  NEED_CC();
  matches_jit_and_golden(&emb, "embgru (host)");
}

static void test_rnn_matches_jit_with_zero_noise(void **state) {
  NEED_CC();
  /* --cpu generic: SSE2 code against the JIT's host code (AVX2 here), the
   * sums reassociated differently; and the noise folded away. rnn.nn
   * draws its initial state at random in training; the object must give
   * the same logits on every run. */
  char *text = run_driver(&rnn), *again = run_driver(&rnn);
  check_aot_output("names_rnn (generic)", rnn.graph, rnn.ckpt, &rnn.names, text,
                   &(AotCheck){.tol = 1e-6, .tail = driver_tail});
  assert_string_equal(text, again);
  free(text);
  free(again);
}

/* --quantize int8: the logits of the JIT with the weights the object
 * computes with (each quantized row as q * scale), for x86-64-v3 (AVX2)
 * and generic x86-64 (the object scales each row's float sum instead of each
 * weight: the last bits differ); and an object 3.5 to 4 times smaller. */
static void test_int8_matches_jit_with_its_weights(void **state) {
  NEED_CC();
  Built *bs[] = {&gru8, &rnn8};
  for (int i = 0; i < 2; i++) {
    char *text = run_driver(bs[i]);
    char *what = xasprintf("%s (int8, %s)", bs[i]->prefix, bs[i]->cpu);
    check_aot_output(what, bs[i]->graph, bs[i]->ckpt, &bs[i]->names, text,
                     &(AotCheck){.tol = 1e-6, .quantized = true, .tail = driver_tail});
    free(what);
    free(text);
  }
  const Built *pairs[2][2] = {{&gru, &gru8}, {&rnn, &rnn8}};
  for (int i = 0; i < 2; i++) {
    struct stat f, q;
    assert_int_equal(stat(pairs[i][0]->obj, &f), 0);
    assert_int_equal(stat(pairs[i][1]->obj, &q), 0);
    double ratio = (double)f.st_size / (double)q.st_size;
    print_message("%s: %lld bytes, int8 %lld bytes (%.2fx smaller)\n", pairs[i][0]->graph,
                  (long long)f.st_size, (long long)q.st_size, ratio);
    if (ratio < 3.5)
      fail_msg("the int8 object of %s is only %.2fx smaller than the float one", pairs[i][0]->graph,
               ratio);
  }
}

/* The products' reference with vpdpbusd: the interpreter's int8 arithmetic
 * (test_targets' INT8_DOT_TOL: the same integers as sdot's). */
#define INT8_DOT_TOL 1e-5
/* But the object's exp and tanh round differently from the interpreter's
 * (libm's, in double): an element of a hidden state within an ulp of a
 * rounding boundary of its quantization (x / scale = k + 0.5) rounds the
 * other way, one step of one quantized input, which moves that name's
 * logits by ~1e-4 (measured on Zen 5: one of gru.nn's 29 golden names,
 * by 2.2e-4; none of rnn.nn's). A quarter of the golden names may differ by up
 * to INT8_FLIP_TOL; the int8 x float logits differ by more than 10 times
 * INT8_DOT_TOL for more than a quarter of the golden names (checked). */
#define INT8_FLIP_TOL 1e-3

/* --quantize int8 for an x86 CPU with VNNI: the products are vpdpbusd
 * instructions (Ice Lake server's 512-bit AVX512-VNNI, Alder Lake's
 * 256-bit AVX-VNNI), none for Zen 3 (no VNNI). Where the host has them,
 * gru.nn's and rnn.nn's objects for it run: logits within INT8_DOT_TOL of
 * the reference interpreter's int8 x int8 arithmetic (interp_set_object:
 * the integers sdot sums), the golden names' classes the float model's;
 * and the reference is more than 10 times that away from the int8 x float
 * logits, so the check can fail. */
static void test_int8_vnni(void **state) {
  if (sh("command -v objdump >/dev/null 2>&1")) {
    print_message("skipped: no objdump on PATH\n");
    skip();
  }
  static const struct {
    const char *cpu;
    bool vnni;
  } cpus[] = {{"icelake-server", true}, {"alderlake", true}, {"znver3", false}};
  for (size_t i = 0; i < ARRAY_LEN(cpus); i++) {
    char *obj = xasprintf("%s/vnni%zu.o", workdir, i);
    free(rnnc_expect(0, (const char *const[]){"build", gru.graph, gru.ckpt, "-o", obj, "--cpu",
                                              cpus[i].cpu, "--quantize", "int8", NULL}));
    int n = count_disassembled("objdump", obj, "vpdpbusd");
    print_message("%s (--cpu %s): %d vpdpbusd instructions\n", obj, cpus[i].cpu, n);
    if (cpus[i].vnni ? n == 0 : n != 0)
      fail_msg("%s (--cpu %s) has %d vpdpbusd instructions", obj, cpus[i].cpu, n);
    free(obj);
  }
  NEED_CC();
  bool v512 = host_has("avx512_vnni"), v256 = host_has("avx_vnni");
  if (!v512 && !v256) {
    print_message("skipped running: this CPU has neither avx512_vnni nor avx_vnni (/proc/cpuinfo), so "
                  "no VNNI object can run here\n");
    return;
  }
  /* the host's (AVX512-VNNI where it has it), and AVX-VNNI's 256-bit code */
  const char *run_cpus[2] = {"host", v512 && v256 ? "alderlake" : NULL};
  char *tails = tails_checkpoint(workdir);
  const Built models[] = {{.graph = "graphs/gru.nn", .ckpt = "tests/golden/gru_seed42.safetensors"},
                          {.graph = "graphs/rnn.nn", .ckpt = "tests/golden/rnn_seed42.safetensors"},
                          {.graph = TAILS_GRAPH, .ckpt = tails, .names_ckpt = gru.ckpt}};
  for (size_t m = 0; m < ARRAY_LEN(models); m++) {
    for (int c = 0; c < 2 && run_cpus[c]; c++) {
      Built b = models[m];
      b.cpu = run_cpus[c];
      b.quantize = true;
      static const char *const prefixes[3][2] = {{"gru8v", "gru8a"}, {"rnn8v", "rnn8a"}, {"tails8v", "tails8a"}};
      b.prefix = prefixes[m][c];
      build(&b);
      if (!count_disassembled("objdump", b.obj, "vpdpbusd"))
        fail_msg("%s (--cpu %s, a CPU with VNNI) has no vpdpbusd instruction", b.obj, b.cpu);
      int C;
      float *fl = jit_logits(b.graph, b.ckpt, &b.names, &C, false);
      char *text = run_driver(&b), *what = xasprintf("%s (int8, vpdpbusd, %s)", b.prefix, b.cpu);
      check_aot_output(what, b.graph, b.ckpt, &b.names, text,
                       &(AotCheck){.tol = INT8_DOT_TOL, .quantized = true, .int8_dot = true,
                                   .loose_tol = INT8_FLIP_TOL, .max_loose = b.names.ngolden / 4,
                                   .same_class = b.names_ckpt ? NULL : fl, .tail = driver_tail});
      free(what);
      free(text);
      free(fl);
      free(b.obj);
      free(b.hdr);
      free(b.driver);
      name_list_free(&b.names);
    }
    NameList ns = name_list_load(models[m].names_ckpt ? models[m].names_ckpt : models[m].ckpt, false);
    int far = check_int8_reference_differs(models[m].graph, models[m].ckpt, models[m].graph, INT8_DOT_TOL);
    if (far <= ns.n / 4)
      fail_msg("%s: only %d of %d names' int8 x float logits are more than %g from the reference: the "
               "check, which lets %d names differ, could not tell them apart",
               models[m].graph, far, ns.n, 10 * INT8_DOT_TOL, ns.n / 4);
    name_list_free(&ns);
  }
  free(tails);
}

/* --no-batch-kernel: the same P_forward (the same bits as the default
 * object), P_forward_batch name by name (driver_tail checks it against
 * P_forward), and no transposed copies of the weights: a smaller object. */
static void test_no_batch_kernel(void **state) {
  NEED_CC();
  char *text = run_driver(&rnn1), *with = run_driver(&rnn);
  check_aot_output("rnn1 (generic, no batch kernel)", rnn1.graph, rnn1.ckpt, &rnn1.names, text,
                   &(AotCheck){.tol = 1e-6, .tail = driver_tail});
  /* The lines of P_forward and P_predict (one per name, before
   * P_forward_batch's "batch:" line) are the same bytes. */
  const char *end = strstr(with, "\nbatch:");
  assert_non_null(end);
  size_t head = (size_t)(end - with) + 1;
  assert_memory_equal(text, with, head);
  struct stat one, batched;
  assert_int_equal(stat(rnn1.obj, &one), 0);
  assert_int_equal(stat(rnn.obj, &batched), 0);
  print_message("rnn.nn: %lld bytes with the batch kernel, %lld without\n",
                (long long)batched.st_size, (long long)one.st_size);
  if ((double)one.st_size > 0.75 * (double)batched.st_size)
    fail_msg("--no-batch-kernel: %lld bytes against %lld", (long long)one.st_size,
             (long long)batched.st_size);
  free(text);
  free(with);
}

/* Hostile input, each buffer fenced by an unreadable page
 * (tests/targets/hostile.c): error codes, no read past the input, and
 * P_forward_batch of 1000 names (63 chunks) equal to P_forward's within
 * 1e-5; for a batched kernel (gru) and for P_forward per name (int8). */
static void test_hostile_inputs(void **state) {
  NEED_CC();
  static const char want[] = "predict 100 KB unterminated: -1\n"
                             "predict 100 KB: -1\n"
                             "predict max length: 1\n"
                             "forward max length: 0\n"
                             "forward 100000 of 64: 1\n"
                             "forward last index bad: 2\n"
                             "batch: 0\n"
                             "batch 100000 in the middle: 1\n"
                             "batch 100000 in the last name: 1\n"
                             "batch last index bad: 2\n"
                             "batch 1000 names: 0 1\n"
                             "done\n";
  const Built *bs[] = {&gru, &gru8};
  for (int i = 0; i < 2; i++) {
    char *exe = xasprintf("%s/%s_hostile", workdir, bs[i]->prefix);
    char *out = xasprintf("%s.out", exe);
    if (sh("cc -std=c99 -O1 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -DP=%s -include '%s' '%s/tests/targets/hostile.c' "
           "'%s' -o '%s'",
           bs[i]->prefix, bs[i]->hdr, root, bs[i]->obj, exe))
      fail_msg("compiling tests/targets/hostile.c with %s failed", bs[i]->obj);
    int rc = sh("'%s' > '%s' 2>&1", exe, out);
    char *text = read_text(out);
    if (rc)
      fail_msg("%s: exit %d (a read past the input faults)\n%s", exe, rc, text);
    assert_string_equal(text, want);
    free(text);
    free(out);
    free(exe);
  }
}

static void test_header_compiles_as_c99_and_cxx(void **state) {
  int checked = 0;
  for (size_t i = 0; i < ARRAY_LEN(all); i++) {
    const Built *b = all[i];
    char *hdr = read_text(b->hdr);
    char want[128];
    snprintf(want, sizeof want, "#define %s_NUM_CLASSES 18\n", b->prefix);
    assert_contains(hdr, want);
    snprintf(want, sizeof want, "#define %s_VOCAB \"%s\"\n", b->prefix, VOCAB_CHARS);
    assert_contains(hdr, want);
    snprintf(want, sizeof want, "extern const char *const %s_labels[%s_NUM_CLASSES];", b->prefix,
             b->prefix);
    assert_contains(hdr, want);
    assert_contains(hdr, "extern \"C\"");
    free(hdr);
    /* Included twice (the guard), every name used. */
    static const char *const lang[2][2] = {{"cc", "-std=c99 -x c"}, {"c++", "-x c++"}};
    for (int k = 0; k < 2; k++) {
      if (!(k ? have_cxx : have_cc))
        continue;
      if (sh("%s %s -Wall -Wextra -pedantic -Werror -fsyntax-only -DP=%s -include '%s' "
             "-include '%s' '%s/tests/targets/header_check.c'",
             lang[k][0], lang[k][1], b->prefix, b->hdr, b->hdr, root))
        fail_msg("%s does not compile with %s %s (-Wall -Wextra -pedantic -Werror)", b->hdr,
                 lang[k][0], lang[k][1]);
      checked++;
    }
  }
  if (!have_cc || !have_cxx)
    print_message("skipped: %s not found on PATH\n", !have_cc ? "cc" : "c++");
  if (!checked)
    skip();
}

/* Issue 12, item 12: a path or label with comment or trigraph sequences
 * (a comment's start was not escaped) still gives a header that compiles
 * with -Werror, and the labels reach the object exactly. (In this file's
 * strings, "?\\?" is two question marks: no trigraph.) */
static void test_header_hostile_names(void **state) {
  if (!have_cc) {
    print_message("skipped: cc not found on PATH\n");
    skip();
  }
  char *gdir = xasprintf("%s/a*", workdir), *odir = xasprintf("%s/o?\?", workdir);
  assert_int_equal(mkdir(gdir, 0755), 0);
  assert_int_equal(mkdir(odir, 0755), 0);
  char *g = xasprintf("%s/*g.nn", gdir), *ck = xasprintf("%s/*/ck?\?/.safetensors", workdir);
  char *ckdir = xasprintf("%s/*", workdir), *ckdir2 = xasprintf("%s/*/ck?\?", workdir);
  assert_int_equal(mkdir(ckdir, 0755), 0);
  assert_int_equal(mkdir(ckdir2, 0755), 0);
  char *rnn_text = read_text("graphs/rnn.nn");
  write_text(g, rnn_text);
  free(rnn_text);
  /* 18 labels as a JSON list (rnnc-2 metadata), no two the same (a
   * checkpoint's labels name one class each), the rest every trigraph */
  const char *labels[18] = {"A/*B", "C*/D",  "back\\", "q\"uote", "nl\nx", "Trig?\?/",
                            "/",    "*",     "?\?",    "?\?=",    "?\?(",   "?\?)",
                            "?\?'", "?\?<", "?\?!",   "?\?>",    "?\?-",   "x?\?/y"};
  Buf list = {0};
  buf_printf(&list, "[");
  for (int i = 0; i < 18; i++) {
    buf_printf(&list, "%s\"", i ? "," : "");
    for (const char *c = labels[i]; *c; c++)
      buf_printf(&list, *c == '\n' ? "\\n" : *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
    buf_printf(&list, "\"");
  }
  buf_printf(&list, "]");
  StFile f;
  Err e;
  if (st_load(&f, "tests/golden/rnn_seed42.safetensors", &e))
    fail_msg("%s", e.msg);
  char *keys[] = {"labels"}, *vals[] = {list.data};
  if (st_save(ck, f.tensors, f.ntensors, keys, vals, 1, &e))
    fail_msg("%s", e.msg);
  st_free(&f);
  buf_free(&list);
  char *obj = xasprintf("%s/m.o", odir), *hdr = xasprintf("%s/m.h", odir);
  free(rnnc_expect(0, (const char *const[]){"build", g, ck, "-o", obj, NULL}));
  char *src = xasprintf("%s/hostile.c", workdir), *exe = xasprintf("%s/hostile", workdir);
  write_text(src, "#include <stdio.h>\n#include \"m.h\"\n"
                  "int main(void) {\n"
                  "  for (int i = 0; i < m_NUM_CLASSES; i++) printf(\"%s|\", m_labels[i]);\n"
                  "  return 0;\n"
                  "}\n");
  char *got = xasprintf("%s/hostile.txt", workdir);
  if (sh("cc -std=c99 -Wall -Wextra -pedantic -Werror -I'%s' -o '%s' '%s' '%s' -lm && '%s' > '%s'",
         odir, exe, src, obj, exe, got))
    fail_msg("%s with hostile labels and paths does not compile with -Werror:\n%s", hdr,
             read_text(hdr));
  if (have_cxx && sh("c++ -Wall -Wextra -pedantic -Werror -c -o /dev/null -x c++ '%s'", hdr))
    fail_msg("%s does not compile as C++ with -Werror", hdr);
  Buf want = {0};
  for (int i = 0; i < 18; i++)
    buf_printf(&want, "%s|", labels[i]);
  buf_put(&want, "", 1);
  char *printed = read_text(got);
  assert_string_equal(printed, want.data);
  free(printed);
  buf_free(&want);
  char *gs[] = {gdir, odir, g, ck, ckdir, ckdir2, obj, hdr, src, exe, got};
  for (size_t i = 0; i < ARRAY_LEN(gs); i++)
    free(gs[i]);
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
  Built *const *bs = all;
  for (size_t i = 0; i < ARRAY_LEN(all); i++) {
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
    snprintf(want, sizeof want, "%s_forward\n%s_forward_batch\n%s_labels\n%s_predict\n",
             bs[i]->prefix, bs[i]->prefix, bs[i]->prefix, bs[i]->prefix);
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
   * AVX mnemonic starts with 'v') and no ymm/zmm register; float and int8. */
  for (int k = 0; k < 2; k++) {
    const char *obj = k ? rnn8.obj : rnn.obj;
    char *o = xasprintf("%s/objdump.txt", workdir);
    assert_int_equal(sh("objdump -d --no-show-raw-insn '%s' > '%s'", obj, o), 0);
    char *text = read_text(o);
    int insns = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
      char *tab = strchr(line, '\t');
      if (!tab || !strchr(line, ':') || strchr(line, ':') > tab)
        continue;
      insns++;
      if (tab[1] == 'v' || strstr(tab, "%ymm") || strstr(tab, "%zmm"))
        fail_msg("%s (--cpu generic) has an AVX instruction: %s", obj, line);
    }
    assert_true(insns > 100);
    free(text);
    free(o);
  }
}

/* rnnc build as a user meets it: statuses, messages, nothing half-written. */
static char *run(int want, const char *const *argv) {
  char *out, *err;
  int st = run_rnnc(argv, &out, &err);
  if (st != want)
    fail_msg("rnnc build: exit %d, want %d\nstdout: %s\nstderr: %s", st, want, out, err);
  char *both = xasprintf("%s%s", out, err);
  free(out);
  free(err);
  return both;
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
            "/nonexistent/dir/m.o: cannot create a file in directory /nonexistent/dir");
  /* The header cannot be written (a directory is in its place): the object
   * is not written either, or is put back (issue 12, messages: the .o was
   * replaced). */
  char *bo = xasprintf("%s/both.o", workdir), *bh = xasprintf("%s/both.h", workdir);
  assert_int_equal(mkdir(bh, 0755), 0);
  expect_in(run(1, (const char *const[]){"build", G, K, "-o", bo, NULL}), "both.h");
  struct stat st;
  assert_int_not_equal(stat(bo, &st), 0);
  write_text(bo, "an old object");
  expect_in(run(1, (const char *const[]){"build", G, K, "-o", bo, NULL}), "both.h");
  expect_in(read_text(bo), "an old object");
  unlink(bo);
  rmdir(bh);
  free(bo);
  free(bh);
  /* None of the failures left a file behind. */
  assert_int_not_equal(stat(o, &st), 0);
  assert_int_not_equal(stat(h, &st), 0);
  assert_int_equal(sh("ls -a '%s' | grep -q rnnc-", workdir), 1);
  /* An explicit x86-64 triple and CPU work, and the prefix names the API. */
  expect_in(run(0, (const char *const[]){"build", G, K, "-o", o, "--target",
                                         "x86_64-unknown-linux-gnu", "--cpu", "x86-64-v2",
                                         "--prefix", "Cli_2", NULL}),
            "x86_64-unknown-linux-gnu, CPU x86-64-v2");
  expect_in(read_text(h), "int Cli_2_predict(const char *name, float *probs);");
  free(o);
  free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gru_matches_jit_and_golden),
      cmocka_unit_test(test_embgru_matches_jit_and_golden),
      cmocka_unit_test(test_rnn_matches_jit_with_zero_noise),
      cmocka_unit_test(test_int8_matches_jit_with_its_weights),
      cmocka_unit_test(test_int8_vnni),
      cmocka_unit_test(test_no_batch_kernel),
      cmocka_unit_test(test_hostile_inputs),
      cmocka_unit_test(test_header_compiles_as_c99_and_cxx),
      cmocka_unit_test(test_header_hostile_names),
      cmocka_unit_test(test_object_needs_only_libc),
      cmocka_unit_test(test_generic_cpu_has_no_avx),
      cmocka_unit_test(test_cli),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_quantize.c: objects of rnnc build --quantize int8 keep the float
 * objects' accuracy.
 *
 * rnn.nn and examples/names_gru.nn (a one-layer GRU 64 wide: gru.nn's
 * recipe at a size this test can train in a few seconds; gru.nn itself is
 * measured in docs/aot.md) are trained as the recipe says (rnnc train: 2
 * epochs, batch 1, seed 42), built for the host with float weights, with
 * int8 weights for x86-64-v3 (AVX2, no VNNI: the products sum in float),
 * with int8 weights for an AArch64 CPU with sdot (cortex-a76: the products
 * quantize their inputs too and sum in int32), which runs under
 * qemu-aarch64's "max" CPU, and, where the host has AVX512-VNNI or
 * AVX-VNNI, with int8 weights for the host (vpdpbusd, int32 sums as
 * sdot's); each runs over the 2,008 names of the test split (the split
 * rnnc train holds out) in bench/aot.c: the int8 objects' accuracies must
 * be within 0.5 points of the float object's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "testutil.h"
#include "util.h"

static char *workdir, *root, *test_file;

static int setup(void **state) {
  (void)state;
  const char *tmp = getenv("RNNC_TMP_DIR");
  workdir = xasprintf("%s/quantize.%d", tmp ? tmp : "/tmp", (int)getpid());
  root = src_path(".");
  if (mkdir(workdir, 0777))
    return -1;
  /* the test split as bench/aot.c reads it: "label len i0 i1 ..." */
  Dataset ds = {0};
  Err e;
  char *dir = src_path("data/names");
  if (data_load(&ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e) || data_split(&ds, 0.1, 42, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return -1;
  }
  free(dir);
  Buf b = {0};
  for (size_t i = 0; i < ds.ntest; i++) {
    const Name *nm = &ds.names[ds.test[i]];
    buf_printf(&b, "%d %d", nm->label, nm->len);
    for (int k = 0; k < nm->len; k++)
      buf_printf(&b, " %d", nm->chars[k]);
    buf_printf(&b, "\n");
  }
  test_file = xasprintf("%s/test.txt", workdir);
  FILE *f = fopen(test_file, "w");
  if (!f || fwrite(b.data, 1, b.len, f) != b.len || fclose(f))
    return -1;
  buf_free(&b);
  data_free(&ds);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sh("rm -rf '%s'", workdir);
  free(workdir);
  free(root);
  free(test_file);
  return 0;
}

/* Where an object runs: the host, or an AArch64 CPU with sdot (int8 x int8
 * products) under qemu-user's "max" CPU. */
typedef struct Where {
  const char *target, *cpu; /* rnnc build's --target and --cpu, or NULL: the host */
  const char *cc, *run;
} Where;
static const Where host = {NULL, NULL, "cc", ""};
static const Where avx2 = {NULL, "x86-64-v3", "cc", ""};
static const Where vnni = {NULL, "host", "cc", ""};
static const Where sdot = {"aarch64-linux-gnu", "cortex-a76", "aarch64-linux-gnu-gcc",
                           "qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu"};

/* The accuracy of model's object (with --quantize int8 when q8) on the
 * test split. */
static double accuracy(const char *graph, const char *ckpt, const char *name, bool q8,
                       const Where *where) {
  char *obj = xasprintf("%s/%s.o", workdir, name), *exe = xasprintf("%s/%s", workdir, name);
  char *out = xasprintf("%s/%s.json", workdir, name);
  rnnc_build(graph, ckpt, obj,
             (BuildFlags){.prefix = name, .target = where->target, .cpu = where->cpu,
                          .quantize = q8});
  if (sh("%s -O2 -I '%s' -DAOT_HEADER='\"%s.h\"' -DAOT_PREFIX=%s -DAOT_CLASSES=18 '%s/bench/aot.c' "
         "'%s' -o '%s'",
         where->cc, workdir, name, name, root, obj, exe))
    fail_msg("linking bench/aot.c with %s by %s failed", obj, where->cc);
  assert_int_equal(sh("%s '%s' '%s' 1 > '%s'", where->run, exe, test_file, out), 0);
  char *text = read_text(out);
  const char *at = strstr(text, "\"test_accuracy\":");
  assert_non_null(at);
  double acc = strtod(at + strlen("\"test_accuracy\":"), NULL);
  free(text);
  free(obj);
  free(exe);
  free(out);
  return acc;
}

static void check_model(const char *graph, const char *stem) {
  if (sh("command -v cc >/dev/null 2>&1")) {
    print_message("skipped: no C compiler 'cc' on PATH to link the objects\n");
    skip();
  }
  if (sh("command -v aarch64-linux-gnu-gcc >/dev/null 2>&1") ||
      sh("command -v qemu-aarch64 >/dev/null 2>&1"))
    fail_msg("aarch64-linux-gnu-gcc or qemu-aarch64 is not installed: they are in the Debian packages "
             "gcc-aarch64-linux-gnu and qemu-user (sh scripts/install-deps --test)");
  char *ckpt = xasprintf("%s/%s.safetensors", workdir, stem), *data = src_path("data/names");
  free(rnnc_expect(0, (const char *const[]){"train", graph, "--data", data, "--out", ckpt,
                                            "--epochs", "2", "--batch", "1", "--seed", "42", NULL}));
  char *name8 = xasprintf("%s8", stem);
  char *named = xasprintf("%s8dot", stem);
  char *namev = xasprintf("%s8vnni", stem);
  double f = accuracy(graph, ckpt, stem, false, &host), q = accuracy(graph, ckpt, name8, true, &avx2);
  double d = accuracy(graph, ckpt, named, true, &sdot);
  print_message("%s: test accuracy %.2f%% with float weights, %.2f%% with int8 weights, %.2f%% "
                "with int8 weights and sdot (aarch64, qemu)\n",
                graph, 100 * f, 100 * q, 100 * d);
  if (host_has("avx512_vnni") || host_has("avx_vnni")) {
    double v = accuracy(graph, ckpt, namev, true, &vnni);
    print_message("%s: %.2f%% with int8 weights and vpdpbusd (the host's VNNI)\n", graph, 100 * v);
    if (v < f - 0.005 || v > f + 0.005)
      fail_msg("%s: int8 weights and activations (vpdpbusd) change the accuracy by %+.2f points (at most "
               "0.5)",
               graph, 100 * (v - f));
  } else
    print_message("%s: not run with vpdpbusd: this CPU has neither avx512_vnni nor avx_vnni\n", graph);
  if (q < f - 0.005 || q > f + 0.005)
    fail_msg("%s: int8 weights change the accuracy by %+.2f points (at most 0.5)", graph,
             100 * (q - f));
  if (d < f - 0.005 || d > f + 0.005)
    fail_msg("%s: int8 weights and activations (sdot) change the accuracy by %+.2f points (at most 0.5)",
             graph, 100 * (d - f));
  free(namev);
  free(named);
  free(name8);
  free(ckpt);
  free(data);
}

static void test_rnn(void **state) {
  (void)state;
  check_model("graphs/rnn.nn", "rnn");
}

static void test_names_gru(void **state) {
  (void)state;
  check_model("examples/names_gru.nn", "names_gru");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rnn),
      cmocka_unit_test(test_names_gru),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

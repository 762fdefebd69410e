/* test_install.c: `cmake --install` of this build into a temporary prefix,
 * then tests/install, a project of its own, configured against it
 * (find_package(rnnc), rnnc_add_model) and built, with float and with
 * int8 weights (QUANTIZE int8): its program must give the JIT's class and
 * probability for the golden names (with the int8 object's weights for
 * the second; on a host with VNNI, whose int8 x int8 products the JIT
 * does not compute, for CPU x86-64-v3: test_aot checks those). rnnc_add_model must also stop the configuration with a
 * clear message for another QUANTIZE and for a missing argument. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

static char *workdir, *root, *prefix;
static const char *cmake, *build;
static const char *const graph = "graphs/rnn.nn", *const ckpt = "tests/golden/rnn_seed42.safetensors";

static int setup(void **state) {
  (void)state;
  const char *tmp = getenv("RNNC_TMP_DIR");
  cmake = getenv("RNNC_CMAKE");
  build = getenv("RNNC_BUILD_DIR");
  if (!cmake || !build)
    return -1;
  workdir = xasprintf("%s/install.%d", tmp ? tmp : "/tmp", (int)getpid());
  prefix = xasprintf("%s/prefix", workdir);
  root = src_path(".");
  return mkdir(workdir, 0777);
}

static int teardown(void **state) {
  (void)state;
  sh("rm -rf '%s'", workdir);
  free(workdir);
  free(prefix);
  free(root);
  return 0;
}

/* Configures tests/install in workdir/dir with extra -D options; returns
 * cmake's status, its output in *log (malloc'd). */
static int configure(const char *dir, const char *extra, char **log) {
  char *out = xasprintf("%s/%s.log", workdir, dir);
  int st = sh("'%s' -S '%s/tests/install' -B '%s/%s' -DCMAKE_PREFIX_PATH='%s' "
              "-DGRAPH='%s/%s' -DCKPT='%s/%s' %s > '%s' 2>&1",
              cmake, root, workdir, dir, prefix, root, graph, root, ckpt, extra, out);
  *log = read_text(out);
  free(out);
  return st;
}

/* Configures and builds tests/install in workdir/dir (with -D options
 * extra) and checks its program against the JIT (zero noise; quantized:
 * with the int8 object's weights): class and probability. */
static void consumer(const char *dir, const char *extra, bool quantized) {
  char *text;
  if (configure(dir, extra, &text))
    fail_msg("configuring tests/install (%s) failed:\n%s", extra, text);
  free(text);
  char *log = xasprintf("%s/%s.build.log", workdir, dir);
  if (sh("'%s' --build '%s/%s' > '%s' 2>&1", cmake, workdir, dir, log))
    fail_msg("building tests/install (%s) failed:\n%s", extra, read_text(log));
  free(log);
  NameList ns = name_list_load(ckpt, false);
  int C;
  float *jit = jit_logits(graph, ckpt, &ns, &C, quantized);
  Buf cmd = {0};
  buf_printf(&cmd, "'%s/%s/consumer'", workdir, dir);
  for (int i = 0; i < ns.n; i++) { /* quoted for sh: ' is '\'' */
    buf_printf(&cmd, " '");
    for (const char *c = ns.s[i]; *c; c++)
      buf_printf(&cmd, *c == '\'' ? "'\\''" : "%c", *c);
    buf_printf(&cmd, "'");
  }
  char *out = xasprintf("%s/%s.out", workdir, dir);
  assert_int_equal(sh("%s > '%s'", cmd.data, out), 0);
  text = read_text(out);
  char *line = text;
  for (int i = 0; i < ns.n; i++) {
    const float *l = jit + (size_t)i * C;
    int best = 0;
    double sum = 0;
    for (int k = 0; k < C; k++)
      best = l[k] > l[best] ? k : best;
    for (int k = 0; k < C; k++)
      sum += exp((double)l[k] - l[best]);
    char want[256];
    snprintf(want, sizeof want, "%s: %d ", ns.s[i], best);
    if (strncmp(line, want, strlen(want)))
      fail_msg("consumer printed \"%.*s\", want the class of \"%s\"", (int)strcspn(line, "\n"),
               line, want);
    double p = strtod(strchr(line + strlen(want), ' ') + 1, NULL);
    if (fabs(p - 1 / sum) > 1e-6)
      fail_msg("%s: probability %.7f, the JIT's is %.7f", ns.s[i], p, 1 / sum);
    line = strchr(line, '\n') + 1;
  }
  assert_string_equal(line, "");
  print_message("tests/install built against the installed rnnc%s%s: %d names as the JIT\n",
                *extra ? " with " : "", extra, ns.n);
  free(text);
  free(out);
  free(jit);
  buf_free(&cmd);
  name_list_free(&ns);
}

static void test_install_and_use(void **state) {
  (void)state;
  char *log = xasprintf("%s/install.log", workdir);
  if (sh("'%s' --install '%s' --prefix '%s' > '%s' 2>&1", cmake, build, prefix, log))
    fail_msg("cmake --install failed:\n%s", read_text(log));
  free(log);
  const char *installed[] = {"bin/rnnc", "lib/cmake/rnnc/rnncConfig.cmake",
                             "lib/cmake/rnnc/rnncConfigVersion.cmake",
                             "lib/cmake/rnnc/rnncTargets.cmake", "lib/cmake/rnnc/rnnc-model.cmake"};
  for (size_t i = 0; i < ARRAY_LEN(installed); i++) {
    char *p = xasprintf("%s/%s", prefix, installed[i]);
    struct stat st;
    if (stat(p, &st))
      fail_msg("cmake --install did not install %s", installed[i]);
    free(p);
  }

  consumer("consumer", "", false);
  bool vnni = host_has("avx512_vnni") || host_has("avx_vnni");
  consumer("consumer8", vnni ? "-DQUANTIZE=int8 -DCPU=x86-64-v3" : "-DQUANTIZE=int8", true);
}

static void test_configure_errors(void **state) {
  (void)state;
  char *text;
  assert_int_not_equal(configure("int4", "-DQUANTIZE=int4", &text), 0);
  assert_contains(text, "QUANTIZE wants int8, not 'int4'");
  free(text);
  assert_int_not_equal(configure("nograph", "-UGRAPH -DGRAPH=", &text), 0);
  assert_contains(text, "rnnc_add_model(lang): GRAPH is required");
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_install_and_use),
      cmocka_unit_test(test_configure_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

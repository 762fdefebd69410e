/* test_cli.c: the rnnc command line as a user meets it: help and version,
 * exit statuses (0 success, 1 bad input, 2 bad usage), and `rnnc data`. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"
#include "util.h"

/* Runs rnnc, checks the exit status, and returns stdout + stderr. */
static char *run(int want_status, const char *const *argv) {
  char *out, *err;
  int status = run_rnnc(argv, &out, &err);
  if (status != want_status)
    fail_msg("rnnc %s ...: exit %d, want %d\nstdout: %s\nstderr: %s", argv[0] ? argv[0] : "",
             status, want_status, out, err);
  char *all = xasprintf("%s%s", out, err);
  free(out);
  free(err);
  return all;
}

static void expect_in(const char *text, const char *fragment) {
  if (!strstr(text, fragment))
    fail_msg("output does not contain \"%s\":\n%s", fragment, text);
}

static void test_help_and_version(void **state) {
  char *s = run(0, (const char *const[]){"--help", NULL});
  expect_in(s, "usage: rnnc");
  expect_in(s, "data");
  free(s);
  s = run(0, (const char *const[]){"--version", NULL});
  expect_in(s, "rnnc ");
  expect_in(s, "LLVM 19");
  free(s);
  s = run(0, (const char *const[]){"data", "--help", NULL});
  expect_in(s, "usage: rnnc data");
  expect_in(s, "--seed");
  free(s);
}

static void test_usage_errors(void **state) {
  char *s = run(2, (const char *const[]){"frobnicate", NULL});
  expect_in(s, "unknown command 'frobnicate'");
  free(s);
  s = run(2, (const char *const[]){NULL});
  free(s);
  s = run(2, (const char *const[]){"data", "--bogus", NULL});
  free(s);
  s = run(2, (const char *const[]){"data", "--seed", "forty-two", NULL});
  expect_in(s, "forty-two");
  free(s);
  s = run(2, (const char *const[]){"data", "--test-fraction", "1.5", NULL});
  free(s);
  s = run(2, (const char *const[]){"data", "stray", NULL});
  expect_in(s, "stray");
  free(s);
}

static void test_data_summary(void **state) {
  char *dir = src_path("data/names");
  char *s = run(0, (const char *const[]){"data", "--data", dir, NULL});
  expect_in(s, "18065 train / 2008 test");
  expect_in(s, "Arabic");
  expect_in(s, "Vietnamese");
  expect_in(s, "20073");
  expect_in(s, "skipped: 1 name");
  expect_in(s, "Czech.txt:265: Maxa/B: character '/' is not in the vocabulary");
  free(s);
  /* The sizes do not depend on the seed. */
  s = run(0, (const char *const[]){"data", "--data", dir, "--seed", "7", NULL});
  expect_in(s, "split (seed 7, test fraction 0.1): 18065 train / 2008 test");
  free(s);
  free(dir);
}

static void test_data_bad_input(void **state) {
  char *s = run(1, (const char *const[]){"data", "--data", "/nonexistent", NULL});
  expect_in(s, "'/nonexistent' does not exist");
  free(s);
  char *dir = tmp_path("baddata");
  assert_int_equal(mkdir(dir, 0777), 0);
  char *file = xasprintf("%s/X.txt", dir);
  write_text(file, "Ok\nBa\xff" "d\n");
  s = run(1, (const char *const[]){"data", "--data", dir, NULL});
  expect_in(s, "X.txt:2: invalid UTF-8");
  free(s);
  free(file);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_and_version),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_data_summary),
      cmocka_unit_test(test_data_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

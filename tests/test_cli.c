/* test_cli.c: the rnnc command line as a user meets it: help and version,
 * exit statuses (0 success, 1 bad input, 2 bad usage), and `rnnc data`. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"
#include "util.h"

/* Runs rnnc, checks the exit status, and returns stdout + stderr. */

static void test_help_and_version(void **state) {
  char *s = rnnc_expect(0, (const char *const[]){"--help", NULL});
  assert_contains(s, "usage: rnnc");
  assert_contains(s, "data");
  free(s);
  s = rnnc_expect(0, (const char *const[]){"--version", NULL});
  assert_contains(s, "rnnc ");
  assert_contains(s, "LLVM 19");
  free(s);
  s = rnnc_expect(0, (const char *const[]){"help", "train", NULL});
  assert_contains(s, "usage: rnnc train GRAPH");
  free(s);
  free(rnnc_expect(2, (const char *const[]){"help", "frobnicate", NULL}));
  s = rnnc_expect(0, (const char *const[]){"data", "--help", NULL});
  assert_contains(s, "usage: rnnc data");
  assert_contains(s, "--seed");
  free(s);
}

static void test_usage_errors(void **state) {
  char *s = rnnc_expect(2, (const char *const[]){"frobnicate", NULL});
  assert_contains(s, "unknown command 'frobnicate'");
  free(s);
  s = rnnc_expect(2, (const char *const[]){NULL});
  free(s);
  s = rnnc_expect(2, (const char *const[]){"data", "--bogus", NULL});
  free(s);
  s = rnnc_expect(2, (const char *const[]){"data", "--seed", "forty-two", NULL});
  assert_contains(s, "forty-two");
  free(s);
  s = rnnc_expect(2, (const char *const[]){"data", "--test-fraction", "1.5", NULL});
  free(s);
  s = rnnc_expect(2, (const char *const[]){"data", "stray", NULL});
  assert_contains(s, "stray");
  free(s);
}

static void test_data_summary(void **state) {
  char *dir = src_path("data/names");
  char *s = rnnc_expect(0, (const char *const[]){"data", "--data", dir, NULL});
  assert_contains(s, "18065 train / 2008 test");
  assert_contains(s, "Arabic");
  assert_contains(s, "Vietnamese");
  assert_contains(s, "20073");
  assert_contains(s, "skipped: 1 name");
  assert_contains(s, "Czech.txt:265: Maxa/B: character '/' is not in the vocabulary");
  free(s);
  /* The sizes do not depend on the seed. */
  s = rnnc_expect(0, (const char *const[]){"data", "--data", dir, "--seed", "7", NULL});
  assert_contains(s, "split (seed 7, test fraction 0.1): 18065 train / 2008 test");
  free(s);
  free(dir);
}

static void test_data_bad_input(void **state) {
  char *s = rnnc_expect(1, (const char *const[]){"data", "--data", "/nonexistent", NULL});
  assert_contains(s, "'/nonexistent' does not exist");
  free(s);
  char *dir = tmp_path("baddata");
  assert_int_equal(mkdir(dir, 0777), 0);
  char *file = xasprintf("%s/X.txt", dir);
  write_text(file, "Ok\nBa\xff" "d\n");
  s = rnnc_expect(1, (const char *const[]){"data", "--data", dir, NULL});
  assert_contains(s, "X.txt:2: invalid UTF-8");
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

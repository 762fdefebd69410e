/* test_util.c: the helpers in common/ that every command relies on:
 * allocation failures end the process with a message and status 1. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

/* Under AddressSanitizer a failed allocation must return NULL, as libc's
 * does, instead of ending the process in ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

/* Runs fn in a child; returns its exit status (or -signal) and its stderr. */
static int in_child(void (*fn)(void), char **err) {
  char *path = tmp_path("stderr");
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, 2) < 0)
      _exit(127);
    fn();
    _exit(0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  Err e;
  *err = read_file(path, NULL, &e);
  assert_non_null(*err);
  unlink(path);
  free(path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static volatile size_t huge = SIZE_MAX / 4; /* volatile: no compile-time verdict */

static void big_malloc(void) { free(xmalloc(huge)); }
static void big_calloc(void) { free(xcalloc(huge, 2)); }
static void big_realloc(void) { free(xrealloc(NULL, huge)); }
static void big_aligned(void) { free(xmemalign(64, huge)); }
static void big_big(void) { free(xalloc_big(huge)); }
static void big_big_max(void) { free(xalloc_big(SIZE_MAX)); } /* rounding up must not wrap */
static void big_buf(void) {
  Buf b = {.len = huge}; /* as if that much were there: the put grows it */
  buf_put(&b, "y", 1);
}

/* Issue 12, item 7: an allocation failure aborted (exit 134, no message
 * for some); now every one prints a message and exits 1. */
static void test_out_of_memory(void **state) {
  void (*fns[])(void) = {big_malloc,  big_calloc,  big_realloc, big_aligned,
                         big_big,     big_big_max, big_buf};
  for (size_t i = 0; i < ARRAY_LEN(fns); i++) {
    char *err;
    int status = in_child(fns[i], &err);
    if (status != 1 || !strstr(err, "rnnc: out of memory (allocating "))
      fail_msg("allocation %zu: status %d, stderr: %s", i, status, err);
    free(err);
  }
}

/* xalloc_big: 64-aligned below 1 MiB; from there whole 2 MiB pages,
 * 2 MiB-aligned (what a transparent huge page needs). */
static void test_alloc_big(void **state) {
  const size_t sizes[] = {1, 1000, (1 << 20) - 1, 1 << 20, 3 << 20, (4 << 20) + 1};
  for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
    unsigned char *p = xalloc_big(sizes[i]);
    uintptr_t align = sizes[i] < (1 << 20) ? 64 : (uintptr_t)2 << 20;
    if ((uintptr_t)p % align)
      fail_msg("xalloc_big(%zu) = %p: not aligned to %ju", sizes[i], (void *)p, (uintmax_t)align);
    memset(p, 0xa5, sizes[i]); /* all of it ours (ASan checks) */
    assert_int_equal(p[sizes[i] - 1], 0xa5);
    free(p);
  }
}

static void test_parse_numbers(void **state) {
  int64_t v = 7;
  assert_int_equal(parse_int64("0", 0, 10, &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(parse_int64("-3", -5, 5, &v), 0);
  assert_int_equal(v, -3);
  assert_int_equal(parse_int64("9007199254740992", 0, INT64_MAX, &v), 0);
  assert_int_equal(v, 9007199254740992LL);
  const char *bad[] = {"", " 1", "1 ", "+1", "-1", "1e3", "0x10", "abc", "12abc", "11",
                       "99999999999999999999", "-"};
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    v = 7;
    if (parse_int64(bad[i], 0, 10, &v) == 0)
      fail_msg("parse_int64(\"%s\", 0, 10) accepted it", bad[i]);
    assert_int_equal(v, 7);
  }
  double d = 0;
  assert_int_equal(parse_double("1e-3", &d), 0);
  assert_true(d == 1e-3);
  assert_int_equal(parse_double("1e-320", &d), 0); /* underflow: a denormal */
  assert_true(d > 0 && d < 1e-300);
  assert_int_equal(parse_double("-2.5", &d), 0);
  assert_true(d == -2.5);
  const char *nan[] = {"", " 1", "1x", "nan", "inf", "1e999", "-1e999", "0x", "1,5"};
  for (size_t i = 0; i < ARRAY_LEN(nan); i++)
    if (parse_double(nan[i], &d) == 0)
      fail_msg("parse_double(\"%s\") accepted it", nan[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_out_of_memory),
      cmocka_unit_test(test_alloc_big),
      cmocka_unit_test(test_parse_numbers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

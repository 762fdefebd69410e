/* test_inputs.c: files that are not what a command expects, as a hostile
 * or careless user gives them: devices, FIFOs, directories, huge sparse
 * files. Each gets a message and exit status 1, quickly and in bounded
 * memory (issue 12, items 8 and 9). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

static char *graph, *data_dir, *ckpt, *dir;

static int setup(void **state) {
  data_dir = make_data_dir((const char *const[]){"Greek", "Korean"}, (const int[]){20, 20}, 2);
  graph = make_rnn_graph(16, 2);
  dir = tmp_path("inputs");
  if (mkdir(dir, 0755))
    return -1;
  ckpt = xasprintf("%s/m.safetensors", dir);
  const char *argv[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--out", ckpt, NULL};
  return wait_rnnc(spawn_rnnc(argv, NULL, NULL, NULL));
}

static int teardown(void **state) {
  free(graph);
  free(data_dir);
  free(ckpt);
  free(dir);
  return 0;
}

/* rnnc argv must exit 1 within 30 s with each fragment in its output. */
static void expect_refused(const char *const *argv, const char *f1, const char *f2) {
  char *err = tmp_path("stderr");
  int status = wait_rnnc_for(spawn_rnnc(argv, NULL, NULL, err), 30, NULL);
  Err e;
  char *msg = read_file(err, NULL, &e);
  assert_non_null(msg);
  if (status != 1 || !strstr(msg, f1) || (f2 && !strstr(msg, f2)))
    fail_msg("rnnc %s %s: exit %d, want 1 and \"%s\": %s", argv[0], argv[1], status, f1, msg);
  free(msg);
  unlink(err);
  free(err);
}

/* Item 8: a graph that is a device, a directory or a huge file is refused
 * before it is read (rnnc compile /dev/zero grew without bound). */
static void test_graph_not_a_file(void **state) {
  char *big = xasprintf("%s/big.nn", dir);
  FILE *f = fopen(big, "w");
  assert_non_null(f);
  assert_int_equal(ftruncate(fileno(f), (off_t)1 << 30), 0); /* 1 GB, sparse */
  fclose(f);
  expect_refused((const char *const[]){"compile", "/dev/zero", NULL}, "/dev/zero",
                 "not a regular file");
  expect_refused((const char *const[]){"compile", big, NULL}, "too big for a graph file", NULL);
  expect_refused((const char *const[]){"compile", dir, NULL}, "is a directory", NULL);
  expect_refused((const char *const[]){"train", "/dev/zero", "--data", data_dir, "--out", ckpt,
                                       NULL},
                 "not a regular file", NULL);
  expect_refused((const char *const[]){"predict", big, ckpt, "Kim", NULL},
                 "too big for a graph file", NULL);
  unlink(big);
  free(big);
}

/* Item 9: a FIFO as the graph, the checkpoint or the data blocked
 * forever; now refused at once. */
static void test_fifos(void **state) {
  char *fifo = xasprintf("%s/fifo", dir);
  assert_int_equal(mkfifo(fifo, 0644), 0);
  const char *msg = "is a FIFO";
  expect_refused((const char *const[]){"compile", fifo, NULL}, msg, NULL);
  expect_refused((const char *const[]){"predict", fifo, ckpt, "Kim", NULL}, msg, NULL);
  expect_refused((const char *const[]){"predict", graph, fifo, "Kim", NULL}, msg, NULL);
  expect_refused((const char *const[]){"eval", graph, fifo, "--data", data_dir, NULL}, msg, NULL);
  expect_refused((const char *const[]){"build", graph, fifo, "-o", "x.o", NULL}, msg, NULL);
  expect_refused((const char *const[]){"train", graph, "--init", fifo, "--data", data_dir,
                                       "--out", ckpt, NULL},
                 msg, NULL);
  expect_refused((const char *const[]){"check", fifo, NULL}, msg, NULL);
  unlink(fifo);
  free(fifo);
}

/* Item 8: a data file of 64 MB with no newline (sparse: all zero bytes) is
 * read a chunk at a time: its one line is skipped, and memory stays small
 * (it took several times the file's size). */
static void test_huge_data_file(void **state) {
  char *d = make_data_dir((const char *const[]){"Greek", "Korean"}, (const int[]){20, 20}, 2);
  char *zero = xasprintf("%s/Zero.txt", d);
  FILE *f = fopen(zero, "w");
  assert_non_null(f);
  assert_int_equal(ftruncate(fileno(f), (off_t)64 << 20), 0);
  fclose(f);
  char *out = tmp_path("stdout");
  const char *argv[] = {"data", "--data", d, NULL};
  struct rusage ru;
  int status = wait_rnnc_for(spawn_rnnc(argv, NULL, out, NULL), 60, &ru);
  assert_int_equal(status, 0);
  Err e;
  char *s = read_file(out, NULL, &e);
  assert_non_null(s);
  assert_contains(s, "Zero.txt:1: \\x00\\x00");
  assert_contains(s, "...: longer than 1000 characters");
  print_message("rnnc data with a 64 MB line: %ld MB peak memory\n", ru.ru_maxrss >> 10);
  /* The sanitized build's own baseline is about 35 MB. */
  assert_true(ru.ru_maxrss < (100 << 10));
  free(s);
  unlink(out);
  free(out);
  free(zero);
  free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_graph_not_a_file),
      cmocka_unit_test(test_fifos),
      cmocka_unit_test(test_huge_data_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_cli.c: the rnnc command line as a user meets it: help and version,
 * exit statuses (0 success, 1 bad input, 2 bad usage), and `rnnc data`. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Output that cannot be written (stdout on /dev/full, or closed) is an
 * error for every command that prints: a message and exit status 1, not a
 * silent loss with 0 (issue 12, item 3). */
static void test_lost_output(void **state) {
  char *data = make_data_dir((const char *const[]){"Greek", "Korean"}, (const int[]){20, 20}, 2);
  char *graph = make_rnn_graph(16, 2);
  char *dir = tmp_path("lost");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *ckpt = xasprintf("%s/m.safetensors", dir), *obj = xasprintf("%s/m.o", dir);
  char *names = xasprintf("%s/names.txt", dir);
  write_text(names, "Kim\nPapadopoulos\n");
  free(rnnc_expect(0, (const char *const[]){"train", graph, "--data", data, "--epochs", "1",
                                            "--out", ckpt, NULL}));
  const char *const *cmds[] = {
      (const char *const[]){"--help", NULL},
      (const char *const[]){"help", NULL},
      (const char *const[]){"help", "predict", NULL},
      (const char *const[]){"--version", NULL},
      (const char *const[]){"data", "--help", NULL},
      (const char *const[]){"data", "--data", data, NULL},
      (const char *const[]){"compile", graph, NULL},
      (const char *const[]){"compile", graph, "--emit", "llvm", NULL},
      (const char *const[]){"compile", "--help", NULL},
      (const char *const[]){"train", "--help", NULL},
      (const char *const[]){"train", graph, "--data", data, "--epochs", "1", "--out", ckpt, NULL},
      (const char *const[]){"eval", graph, ckpt, "--data", data, NULL},
      (const char *const[]){"eval", "--help", NULL},
      (const char *const[]){"predict", graph, ckpt, "Papadopoulos", "Kim", NULL},
      (const char *const[]){"predict", graph, ckpt, "Kim", "--logits", NULL},
      (const char *const[]){"predict", graph, ckpt, "--input", names, NULL},
      (const char *const[]){"predict", "--help", NULL},
      (const char *const[]){"build", graph, ckpt, "-o", obj, NULL},
      (const char *const[]){"build", "--help", NULL},
      (const char *const[]){"check", graph, "--names", "Kim", "--samples", "2", NULL},
      (const char *const[]){"check", "--help", NULL},
  };
  char *err = tmp_path("stderr");
  for (size_t i = 0; i < ARRAY_LEN(cmds); i++) {
    const char *where[] = {"/dev/full", "-"}, *why[] = {"No space left on device",
                                                       "Bad file descriptor"};
    for (int k = 0; k < 2; k++) {
      int status = wait_rnnc(spawn_rnnc(cmds[i], NULL, where[k], err));
      Err e;
      char *msg = read_file(err, NULL, &e);
      assert_non_null(msg);
      if (status != 1 || !strstr(msg, "rnnc: error: cannot write standard output") ||
          !strstr(msg, why[k]))
        fail_msg("rnnc %s %s ... with stdout %s: exit %d, stderr:\n%s", cmds[i][0],
                 cmds[i][1] ? cmds[i][1] : "", k ? "closed" : "on /dev/full", status, msg);
      free(msg);
    }
  }
  unlink(err);
  free(err);
  free(names);
  free(obj);
  free(ckpt);
  free(dir);
  free(graph);
  free(data);
}

/* An output over an input (the graph, the data, the checkpoint, the
 * metrics log) or over another output is a usage error, exit status 2,
 * and the file is left as it was; whatever the name (./X, DIR/../DIR/X)
 * and whether it exists yet. An output named by its directory alone
 * (-o DIR/) is a usage error too. */
static void test_no_overwrite(void **state) {
  (void)state;
  char *data = make_data_dir((const char *const[]){"Greek", "Korean"}, (const int[]){20, 20}, 2);
  char *graph = make_rnn_graph(16, 2);
  char *dir = tmp_path("clobber");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *ckpt = xasprintf("%s/m.safetensors", dir), *log = xasprintf("%s/m.jsonl", dir);
  char *optim = xasprintf("%s/../%s/m.optim.safetensors", dir, strrchr(dir, '/') + 1);
  char *tsv = xasprintf("%s/d.tsv", dir), *slash = xasprintf("%s/", dir);
  write_text(tsv, "Kim\tKorean\nPapadopoulos\tGreek\nPak\tKorean\nNikas\tGreek\n");
  Err e;
  size_t glen, tlen;
  char *gtext = read_file(graph, &glen, &e), *ttext = read_file(tsv, &tlen, &e);
  assert_true(gtext && ttext);
  const char *const *cmds[] = {
      (const char *const[]){"train", graph, "--data", data, "--out", graph, NULL},
      (const char *const[]){"train", graph, "--data", data, "--out", ckpt, "--metrics", graph, NULL},
      (const char *const[]){"train", graph, "--data", tsv, "--out", tsv, NULL},
      (const char *const[]){"train", graph, "--data", data, "--out", ckpt, "--metrics", ckpt, NULL},
      (const char *const[]){"train", graph, "--data", data, "--out", ckpt, "--metrics", optim, NULL},
      (const char *const[]){"train", graph, "--data", data, "--out", ckpt, "--keep-best", "--metrics",
                            xasprintf("%s/m.best.safetensors", dir), NULL},
      (const char *const[]){"plot", log, "-o", log, NULL},
      (const char *const[]){"export", graph, ckpt, "-o", slash, NULL},
      (const char *const[]){"import", "model.onnx", "-o", slash, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cmds); i++) {
    char *s = rnnc_expect(2, cmds[i]);
    if (!strstr(s, "it would be overwritten") && !strstr(s, "names a directory"))
      fail_msg("rnnc %s ...: %s", cmds[i][0], s);
    free(s);
  }
  size_t n;
  char *now = read_file(graph, &n, &e);
  assert_true(now && n == glen && !memcmp(now, gtext, n));
  free(now);
  now = read_file(tsv, &n, &e);
  assert_true(now && n == tlen && !memcmp(now, ttext, n));
  free(now);
  assert_int_equal(access(ckpt, F_OK), -1); /* nothing written */
  free((char *)cmds[5][8]);
  free(gtext);
  free(ttext);
  free(slash);
  free(tsv);
  free(optim);
  free(log);
  free(ckpt);
  free(dir);
  free(graph);
  free(data);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_and_version),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_data_summary),
      cmocka_unit_test(test_data_bad_input),
      cmocka_unit_test(test_lost_output),
      cmocka_unit_test(test_no_overwrite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

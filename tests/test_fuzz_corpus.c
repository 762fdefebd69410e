/* test_fuzz_corpus.c: replays the fuzzers' kept corpora under the ordinary
 * ASan/UBSan build, so that a change that brings back a crash, a memory
 * error or a leak they found fails here:
 * - tests/fuzz/corpus through the front end (tests/fuzz/fuzz_frontend.c):
 *   every input gives a graph, or NULL with a positioned "error: " message
 *   naming the file, and does so quickly;
 * - tests/fuzz/ckpt_corpus through the checkpoint reader and its metadata
 *   (tests/fuzz/fuzz_checkpoint.c): every file loads, or fails with a
 *   message naming it. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "rnnc.h"
#include "testutil.h"

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names of the files in rel (malloc'd), at least min of them. */
static char **list_dir(const char *rel, int min, int *count) {
  char *dir = src_path(rel);
  DIR *d = opendir(dir);
  if (!d)
    fail_msg("cannot open %s", dir);
  char **names = NULL;
  int n = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    if (ent->d_name[0] == '.')
      continue;
    names = xrealloc(names, (size_t)(n + 1) * sizeof *names);
    names[n++] = xstrdup(ent->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  /* An empty or missing corpus would make a test pass vacuously. */
  assert_true(n >= min);
  free(dir);
  *count = n;
  return names;
}

static void test_fuzz_corpus(void **state) {
  int n;
  char **names = list_dir("tests/fuzz/corpus", 20, &n);
  int compiled = 0, rejected = 0;
  double slowest = 0;
  const char *slowest_name = "";
  for (int i = 0; i < n; i++) {
    char rel[512];
    snprintf(rel, sizeof rel, "tests/fuzz/corpus/%s", names[i]);
    char *path = src_path(rel);
    size_t len;
    Err e;
    char *text = read_file(path, &len, &e);
    if (!text)
      fail_msg("%s", e.msg);
    e.msg[0] = '\0';
    clock_t t0 = clock();
    /* The bytes as they are: corpus files may hold NULs and no final newline. */
    Graph *g = compile_graph(rel, text, len, &e);
    double dt = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (dt > slowest) {
      slowest = dt;
      slowest_name = names[i];
    }
    if (g) {
      compiled++;
      graph_free(g);
    } else {
      rejected++;
      if (strncmp(e.msg, rel, strlen(rel)) || !strstr(e.msg, "error: "))
        fail_msg("%s: rejected without a proper message: '%.300s'", rel, e.msg);
    }
    /* A hang guard, not a speed test: the fuzzer's timeout is 5 s, in CPU
     * time here (clock()) so that a loaded machine does not trip it; a
     * sanitized build is slower than a plain one, so allow the same 5 s.
     * Valid graphs take milliseconds. */
    if (dt > 5.0)
      fail_msg("%s took %.1f s to compile", rel, dt);
    free(text);
    free(path);
  }
  print_message("fuzz corpus: %d files, %d compiled, %d rejected with a message; slowest %s "
                "(%.3f s)\n",
                n, compiled, rejected, slowest_name, slowest);
  assert_true(compiled > 0);
  assert_true(rejected > 0);
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

static void test_checkpoint_corpus(void **state) {
  int n, loaded = 0, refused = 0;
  char **names = list_dir("tests/fuzz/ckpt_corpus", 20, &n);
  for (int i = 0; i < n; i++) {
    char rel[512];
    snprintf(rel, sizeof rel, "tests/fuzz/ckpt_corpus/%s", names[i]);
    char *path = src_path(rel);
    StFile f;
    Err e;
    e.msg[0] = '\0';
    if (st_load(&f, path, &e) == 0) {
      CkptMeta meta;
      e.msg[0] = '\0';
      if (ckpt_read_meta(&f, path, &meta, &e) == 0) {
        loaded++;
        ckpt_meta_free(&meta);
      }
      st_free(&f);
    }
    if (e.msg[0]) {
      refused++;
      if (!strstr(e.msg, path))
        fail_msg("%s: refused without naming the file: '%.300s'", rel, e.msg);
    }
    free(path);
    free(names[i]);
  }
  free(names);
  print_message("checkpoint corpus: %d files, %d loaded, %d refused with a message\n", n, loaded,
                refused);
  assert_true(loaded > 0);
  assert_true(refused > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_fuzz_corpus),
                                     cmocka_unit_test(test_checkpoint_corpus)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_fuzz_corpus.c: replays the fuzzer's kept corpus (tests/fuzz/corpus,
 * see tests/fuzz/fuzz_frontend.c) through the front end. Every input must
 * give a graph, or NULL with a positioned "error: " message naming the
 * file, and must do so quickly; under the ASan/UBSan build this also
 * catches any memory error or leak a front-end change reintroduces. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"
#include "testutil.h"

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_fuzz_corpus(void **state) {
  char *dir = src_path("tests/fuzz/corpus");
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
  /* An empty or missing corpus would make this test pass vacuously. */
  assert_true(n >= 20);
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
    double t0 = now_seconds();
    /* The bytes as they are: corpus files may hold NULs and no final newline. */
    Graph *g = compile_graph(rel, text, len, &e);
    double dt = now_seconds() - t0;
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
    /* The fuzzer's timeout is 5 s; a sanitized build is slower than a
     * plain one, so allow the same here. Valid graphs take milliseconds. */
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
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_fuzz_corpus)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

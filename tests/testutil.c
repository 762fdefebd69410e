#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

char *src_path(const char *rel) {
  const char *root = getenv("RNNC_SOURCE_DIR");
  return xasprintf("%s/%s", root ? root : ".", rel);
}

char *tmp_path(const char *stem) {
  static int counter;
  const char *dir = getenv("RNNC_TMP_DIR");
  return xasprintf("%s/%s.%d.%d", dir ? dir : "/tmp", stem, (int)getpid(), counter++);
}

void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

static char *slurp(const char *path) {
  Err e;
  char *s = read_file(path, NULL, &e);
  return s ? s : xstrdup("");
}

int run_rnnc(const char *const *argv, char **out, char **err) {
  return run_rnnc_in(argv, NULL, out, err);
}

int run_rnnc_in(const char *const *argv, const char *in, char **out, char **err) {
  const char *bin = getenv("RNNC_BIN");
  assert_non_null(bin);
  char *o = tmp_path("stdout"), *e = tmp_path("stderr");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (!freopen(o, "wb", stdout) || !freopen(e, "wb", stderr) || (in && !freopen(in, "rb", stdin)))
      _exit(127);
    size_t n = 0;
    while (argv[n])
      n++;
    char **args = calloc(n + 2, sizeof *args);
    args[0] = (char *)bin;
    for (size_t i = 0; i < n; i++)
      args[i + 1] = (char *)argv[i];
    execv(bin, args);
    _exit(127);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (out)
    *out = slurp(o);
  if (err)
    *err = slurp(e);
  unlink(o);
  unlink(e);
  free(o);
  free(e);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

char *rnnc_expect(int want_status, const char *const *argv) {
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

void assert_contains(const char *text, const char *fragment) {
  if (!strstr(text, fragment))
    fail_msg("output does not contain \"%s\":\n%s", fragment, text);
}

bool host_has(const char *flag) {
  Err e;
  char *cpuinfo = read_file("/proc/cpuinfo", NULL, &e);
  char *pat = xasprintf(" %s", flag);
  bool has = false;
  for (const char *p = cpuinfo; p && (p = strstr(p, pat)); p++)
    if (p[strlen(pat)] == ' ' || p[strlen(pat)] == '\n')
      has = true;
  free(pat);
  free(cpuinfo);
  return has;
}

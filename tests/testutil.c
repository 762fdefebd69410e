#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safetensors.h"
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

/* In the child: fd (0..2) onto path, NULL for /dev/null, "-" closed. */
static void redirect(int fd, const char *path) {
  if (path && !strcmp(path, "-")) {
    close(fd);
    return;
  }
  int f = open(path ? path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (f < 0 || dup2(f, fd) < 0)
    _exit(127);
  close(f);
}

pid_t spawn_rnnc(const char *const *argv, const char *const *env, const char *out,
                 const char *err) {
  const char *bin = getenv("RNNC_BIN");
  assert_non_null(bin);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The signals rnnc handles, as a terminal gives them (the test may
     * run with some ignored). */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    redirect(1, out);
    redirect(2, err);
    for (size_t i = 0; env && env[i]; i++) {
      const char *eq = strchr(env[i], '=');
      char *name = strndup(env[i], (size_t)(eq - env[i]));
      setenv(name, eq + 1, 1);
    }
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
  return pid;
}

int wait_rnnc(pid_t pid) {
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int wait_rnnc_for(pid_t pid, double seconds, struct rusage *ru) {
  struct rusage r;
  int status;
  for (int ms = 0;; ms += 10) {
    pid_t got = wait4(pid, &status, WNOHANG, &r);
    assert_true(got >= 0);
    if (got == pid)
      break;
    if (ms >= seconds * 1000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fail_msg("rnnc still running after %.0f s: killed", seconds);
    }
    usleep(10000);
  }
  if (ru)
    *ru = r;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int run_rnnc(const char *const *argv, char **out, char **err) {
  char *o = tmp_path("stdout"), *e = tmp_path("stderr");
  int status = wait_rnnc(spawn_rnnc(argv, NULL, o, e));
  if (out)
    *out = slurp(o);
  if (err)
    *err = slurp(e);
  unlink(o);
  unlink(e);
  free(o);
  free(e);
  return status < 0 ? -1 : status;
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

char *make_data_dir(const char *const *langs, const int *per, int n) {
  char *dir = tmp_path("names");
  assert_int_equal(mkdir(dir, 0755), 0);
  for (int i = 0; i < n; i++) {
    char *rel = xasprintf("data/names/%s.txt", langs[i]);
    char *src = src_path(rel);
    Err e;
    char *text = read_file(src, NULL, &e);
    assert_non_null(text);
    char *end = text;
    for (int k = 0; k < per[i] && (end = strchr(end, '\n')); k++)
      end++;
    if (end)
      *end = '\0';
    char *dst = xasprintf("%s/%s.txt", dir, langs[i]);
    write_text(dst, text);
    free(dst);
    free(text);
    free(src);
    free(rel);
  }
  return dir;
}

/* text with its one occurrence of from replaced by to (text is freed). */
static char *replace(char *text, const char *from, const char *to) {
  char *at = strstr(text, from);
  assert_non_null(at);
  char *r = xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
  free(text);
  return r;
}

char *make_rnn_graph(int H, int C) {
  char *src = src_path("graphs/rnn.nn");
  Err e;
  char *text = read_file(src, NULL, &e);
  assert_non_null(text);
  free(src);
  char h[32], c[32];
  snprintf(h, sizeof h, "const H = %d", H);
  snprintf(c, sizeof c, "const C = %d", C);
  text = replace(replace(text, "const H = 256", h), "const C = 18", c);
  char *path = tmp_path("rnn.nn");
  write_text(path, text);
  free(text);
  return path;
}

/* Rewrites the metadata of a safetensors file: key set to value (added
 * when absent; value NULL removes it). */
void st_set_meta(const char *path, const char *key, const char *value) {
  StFile f;
  Err e;
  if (st_load(&f, path, &e))
    fail_msg("%s", e.msg);
  char *keys[32], *vals[32];
  int n = 0;
  bool done = false;
  for (int k = 0; k < f.nmeta && n < 31; k++) {
    if (!strcmp(f.meta_keys[k], key)) {
      done = true;
      if (!value)
        continue;
    }
    keys[n] = f.meta_keys[k];
    vals[n++] = !strcmp(f.meta_keys[k], key) ? (char *)value : f.meta_vals[k];
  }
  if (!done && value) {
    keys[n] = (char *)key;
    vals[n++] = (char *)value;
  }
  if (st_save(path, f.tensors, f.ntensors, keys, vals, n, &e))
    fail_msg("%s", e.msg);
  st_free(&f);
}

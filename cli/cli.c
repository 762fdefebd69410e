/* cli.c: helpers shared by the subcommands. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <sched.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "rnnc %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'rnnc %s --help'.\n", cmd);
  return EXIT_USAGE;
}

/* path's directory resolved (symbolic links, "." and "..") and its last
 * name: the same string for two names of a file that does not exist yet
 * (malloc'd; NULL when the directory does not resolve). */
static char *resolved(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? xasprintf("%.*s", slash == path ? 1 : (int)(slash - path), path) : xstrdup(".");
  char *real = realpath(dir, NULL);
  free(dir);
  if (!real)
    return NULL;
  char *r = xasprintf("%s/%s", real, slash ? slash + 1 : path);
  free(real);
  return r;
}

bool cli_same_file(const char *a, const char *b) {
  if (!a || !b)
    return false;
  if (!strcmp(a, b))
    return true;
  struct stat sa, sb;
  if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  char *ra = resolved(a), *rb = resolved(b);
  bool same = ra && rb && !strcmp(ra, rb);
  free(ra);
  free(rb);
  return same;
}

int cli_refuse_overwrite(const char *cmd, const char *what, const char *out,
                         const char *const *ins, const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (out && ins[i] && cli_same_file(out, ins[i]))
      return cli_usage_error(cmd, "%s %s is %s (%s): it would be overwritten", what, out, names[i],
                             ins[i]);
  return 0;
}

void cli_error(const char *cmd, const Err *e) {
  if (strstr(e->msg, ": error: "))
    fprintf(stderr, "%s\n", e->msg);
  else
    fprintf(stderr, "rnnc %s: error: %s\n", cmd, e->msg);
}

int cli_parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!*s || *s == '-' || *s == '+')
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end || errno)
    return -1;
  *out = v;
  return 0;
}

int cli_parse_int(const char *s, int lo, int hi, int *out) {
  int64_t v;
  if (parse_int64(s, lo, hi, &v))
    return -1;
  *out = (int)v;
  return 0;
}

int cli_default_threads(void) {
  /* The cores this process may run on: all online ones, unless taskset, a
   * cgroup or mpirun (a rank bound to a core or a socket) says fewer. */
  cpu_set_t set;
  long n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                       : sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > CLI_MAX_THREADS ? CLI_MAX_THREADS : (int)n;
}

/* cli.c: helpers shared by the subcommands. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <sched.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* cli.c: helpers shared by the subcommands. */
#include <stdarg.h>
#include <stdio.h>

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

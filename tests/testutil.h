/* testutil.h: helpers shared by the cmocka tests. */
#ifndef RNNC_TESTUTIL_H
#define RNNC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The repository root ($RNNC_SOURCE_DIR, else "."), joined with rel.
 * Returns a malloc'd path. */
char *src_path(const char *rel);
/* A fresh scratch path under $RNNC_TMP_DIR (else /tmp), unique per call. */
char *tmp_path(const char *stem);
/* Writes text to path (creating it); fails the test on error. */
void write_text(const char *path, const char *text);
/* Runs the rnnc binary ($RNNC_BIN) with argv (NULL-terminated, without
 * argv[0]); captures stdout and stderr (malloc'd, may be NULL) and returns
 * the exit status, or -1 if it died by a signal. */
int run_rnnc(const char *const *argv, char **out, char **err);
/* The same with standard input read from the file in (NULL: inherited). */
int run_rnnc_in(const char *const *argv, const char *in, char **out, char **err);
/* Runs rnnc, fails the test unless it exits with want_status, and returns
 * its stdout followed by its stderr (malloc'd). */
char *rnnc_expect(int want_status, const char *const *argv);
/* Fails the test unless text contains fragment. */
void assert_contains(const char *text, const char *fragment);
/* Whether /proc/cpuinfo lists CPU flag `flag` (avx2, fma, avx512f, ...). */
bool host_has(const char *flag);

#endif

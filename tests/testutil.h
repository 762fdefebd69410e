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
/* Runs a shell command (formatted); its exit status, or -1. */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A whole file (malloc'd); fails the test when it cannot be read. */
char *read_text(const char *path);

/* The names the AOT tests run: PyTorch's golden names of ckpt (a path
 * relative to the repository, e.g. tests/golden/gru_seed42.safetensors:
 * s[0..ngolden)), then, with edge_cases, one character, every character of
 * the vocabulary, the longest name an object takes, and a few more. */
typedef struct NameList {
  char **s;
  int n, ngolden;
} NameList;
NameList name_list_load(const char *ckpt, bool edge_cases);
void name_list_free(NameList *ns);
/* The JIT's logits (n, classes) for every name: the forward kernel of
 * graph with ckpt's weights and a zero noise buffer, which is what an
 * object of rnnc build computes for a random initial state. */
float *jit_logits(const char *graph, const char *ckpt, const NameList *ns, int *classes);

#endif

/* testutil.h: helpers shared by the cmocka tests. */
#ifndef RNNC_TESTUTIL_H
#define RNNC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sys/types.h>

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
/* Starts the rnnc binary with argv (as run_rnnc) and the environment
 * extended by env ("NAME=value" strings, NULL-terminated; env may be
 * NULL); stdout and stderr go to the files out and err (NULL: /dev/null,
 * "-": closed). Returns its pid. */
pid_t spawn_rnnc(const char *const *argv, const char *const *env, const char *out,
                 const char *err);
/* Waits for a spawned rnnc: its exit status, or minus the signal that
 * ended it. */
int wait_rnnc(pid_t pid);
/* wait_rnnc, but a process still running after `seconds` is killed and
 * fails the test (a hang). ru (may be NULL) receives its resource use. */
struct rusage;
int wait_rnnc_for(pid_t pid, double seconds, struct rusage *ru);
/* Runs rnnc, fails the test unless it exits with want_status, and returns
 * its stdout followed by its stderr (malloc'd). */
char *rnnc_expect(int want_status, const char *const *argv);
/* A scratch data directory: per[i] names (the first ones) of language
 * langs[i] of data/names, for i < n. Returns its path (malloc'd). */
char *make_data_dir(const char *const *langs, const int *per, int n);
/* graphs/rnn.nn with hidden size H and C classes as a scratch file: a
 * small model that trains in milliseconds. Returns its path (malloc'd). */
char *make_rnn_graph(int H, int C);
/* Rewrites the metadata of a safetensors file: key set to value (added
 * when absent; value NULL removes it). */
void st_set_meta(const char *path, const char *key, const char *value);
/* Fails the test unless text contains fragment. */
void assert_contains(const char *text, const char *fragment);

#endif

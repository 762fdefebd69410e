/* testutil.h: helpers shared by the cmocka tests. */
#ifndef RNNC_TESTUTIL_H
#define RNNC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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
/* Cuts the last n bytes off the file at path, in place. */
void shrink_file(const char *path, size_t n);
/* rnn.nn with noise inside its scan's cell (h + kaiming_uniform(H)), a
 * graph batch.c cannot batch, written to a scratch file: its path
 * (malloc'd). */
char *noisy_rnn_graph(void);
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
/* The same with standard input read from the file in (NULL: inherited). */
int run_rnnc_in(const char *const *argv, const char *in, char **out, char **err);
/* Runs rnnc, fails the test unless it exits with want_status, and returns
 * its stdout followed by its stderr (malloc'd). */
char *rnnc_expect(int want_status, const char *const *argv);
/* What `rnnc build` is given besides GRAPH CKPT -o OBJ (NULL, false: left
 * out, the default). */
typedef struct BuildFlags {
  const char *prefix, *target, *cpu;
  bool quantize; /* --quantize int8 */
  bool no_batch; /* --no-batch-kernel */
} BuildFlags;
/* `rnnc build graph ckpt -o obj` with f's options; fails the test unless
 * it exits 0. */
void rnnc_build(const char *graph, const char *ckpt, const char *obj, BuildFlags f);
/* A scratch data directory: per[i] names (the first ones) of language
 * langs[i] of data/names, for i < n. Returns its path (malloc'd). */
char *make_data_dir(const char *const *langs, const int *per, int n);
/* rel (graphs/rnn.nn, gru.nn or lstm.nn: "const H = 256" and "const C =
 * 18") with hidden size H and C classes as a scratch file. Returns its path
 * (malloc'd). */
char *make_graph(const char *rel, int H, int C);
/* make_graph of rnn.nn: a small model that trains in milliseconds. */
char *make_rnn_graph(int H, int C);
/* Rewrites the metadata of a safetensors file: key set to value (added
 * when absent; value NULL removes it). */
void st_set_meta(const char *path, const char *key, const char *value);
/* Fails the test unless text contains fragment. */
void assert_contains(const char *text, const char *fragment);
/* Whether /proc/cpuinfo lists CPU flag `flag` (avx2, fma, avx512f, ...). */
bool host_has(const char *flag);

/* A copy of the graph file rel (relative to the repository) with each
 * (from, to) pair of the NULL-terminated list replaced (the first
 * occurrence of from, which must be there), written to a fresh scratch
 * path (returned, malloc'd). */
char *graph_variant(const char *rel, ...);
/* Runs a shell command (formatted); its exit status, or -1. */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A whole file (malloc'd); fails the test when it cannot be read. */
char *read_text(const char *path);
/* How many times needle occurs in the disassembly of the object file obj
 * by the objdump command (e.g. "aarch64-linux-gnu-objdump"); fails the
 * test when objdump does. */
int count_disassembled(const char *objdump, const char *obj, const char *needle);
/* The complete lines of a file: its newlines (0 when it does not exist,
 * so a test can poll a file another process is still creating). */
size_t count_lines(const char *path);

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
 * object of rnnc build computes for a random initial state; quantized:
 * with the weights an object of --quantize int8 computes with
 * (quantized_values). */
float *jit_logits(const char *graph, const char *ckpt, const NameList *ns, int *classes,
                  bool quantized);

/* The same from the reference interpreter (float32) as an object computes
 * (interp_set_object): with int8_dot, the int8 x int8 products of
 * --quantize int8 on a CPU with integer dot products. */
float *interp_logits(const char *graph, const char *ckpt, const NameList *ns, int *classes,
                     bool int8_dot);

/* Fails unless the reference interpreter's int8 x int8 logits
 * (interp_logits with int8_dot) are at least 10 tol from the int8 x float
 * logits (the JIT with the quantized weights) on ckpt's names: a check
 * against the reference within tol can tell the two arithmetics apart.
 * Returns the number of names whose logits are that far. */
int check_int8_reference_differs(const char *graph, const char *ckpt, const char *what, double tol);

/* tests/targets/driver.c, the program test_aot and test_targets link with
 * an object of rnnc build. Its names: dir/names.h (a C array) and
 * dir/names.json (for run_wasm.mjs). */
void write_driver_names(const char *dir, const NameList *ns);
/* What driver.c prints after the names: the results of bad inputs. */
extern const char driver_tail[];

/* Checks a driver's output for graph and ckpt on ns against the JIT's
 * logits: one line per name (status 0, P_predict's class = the argmax,
 * the logits within tol relative (of max(1, |x|)) or, with exact, bit for
 * bit, the probabilities within 1e-6 of a double softmax, the first
 * ngolden logits within 1e-4 of golden if given), then tail. Prints what
 * it measured, labelled what. */
typedef struct AotCheck {
  double tol;
  bool exact;
  bool quantized; /* an object of --quantize int8: the JIT with its weights */
  bool int8_dot;  /* with integer dot products: the interpreter's int8 arithmetic
                   * (interp_logits) instead of the JIT */
  const float *golden; /* (ngolden, classes) or NULL */
  double loose_tol; /* > 0: up to max_loose names may differ by up to loose_tol (a
                     * quantized input of int8_dot rounded the other way) */
  int max_loose;
  const float *same_class; /* (ngolden, classes) or NULL: each golden name's argmax
                            * must be these logits' */
  const char *tail;
} AotCheck;
void check_aot_output(const char *what, const char *graph, const char *ckpt, const NameList *ns,
                      const char *text, const AotCheck *c);

/* tests/graphs/gru_tails.nn: rows of 48 and 40 int8 values, which take the
 * int8 products' steps shorter than 64 bytes (gru.nn's and rnn.nn's rows
 * are 64 or 256 long): vpdpbusd's 32- and 16-byte forms, and the last
 * bytes one at a time. */
#define TAILS_GRAPH "tests/graphs/gru_tails.nn"
/* A checkpoint of TAILS_GRAPH in dir (a malloc'd path): its initial
 * weights (`rnnc train --epochs 0`), with gru.nn's golden checkpoint's
 * name list (name_list_load's names). */
char *tails_checkpoint(const char *dir);

#endif

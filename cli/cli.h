/* cli.h: the rnnc subcommands. Each takes (argc, argv) with argv[0] the
 * command's name and returns the exit status: EXIT_OK, EXIT_BAD_INPUT
 * (graph, data, checkpoint) or EXIT_USAGE. */
#ifndef RNNC_CLI_H
#define RNNC_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "util.h"

/* Prints "rnnc CMD: <message>" and a pointer to --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether writing path a would overwrite the file b: the same file (both
 * exist: the same device and inode, whatever the names) or the same name.
 * NULL is no file. */
bool cli_same_file(const char *a, const char *b);
/* Output `out` (the file of option `what`, e.g. "--out") checked against
 * the n files ins[] (each named in names[], e.g. "the graph"): a usage
 * error (EXIT_USAGE, with a message) when it would overwrite one, else 0.
 * NULL entries are skipped. */
int cli_refuse_overwrite(const char *cmd, const char *what, const char *out,
                         const char *const *ins, const char *const *names, int n);

/* Prints e's message as command cmd's error: "rnnc CMD: error: MSG", or
 * MSG alone when it is a graph error, which says "path...: error:" itself. */
void cli_error(const char *cmd, const Err *e);

/* A non-negative decimal integer; 0, or -1 when malformed. */
int cli_parse_u64(const char *s, uint64_t *out);
/* A decimal integer in [lo, hi]; 0, or -1 when malformed or out of range. */
int cli_parse_int(const char *s, int lo, int hi, int *out);

/* --threads: at most this many; the default is every core the process may
 * run on (its CPU affinity: taskset, cgroups, mpirun binding). */
enum { CLI_MAX_THREADS = 256 };
int cli_default_threads(void);

/* The model of GRAPH with the weights of CKPT (eval, predict, build):
 * CKPT's metadata first, its vocabulary (the names' when it has none: one
 * of PyTorch's) into *v and with its label count (else classes) the sizes
 * of a graph that takes them from the data; then the graph compiled as mo
 * says, the weights and labels loaded (*labels NULL when CKPT has none),
 * and the vocabulary's size checked against the graph's input. */
int cli_load_model(Model *m, const char *graph, const char *ckpt, ModelOptions *mo, int classes,
                   char ***labels, int *nlabels, Vocab *v, Err *e);

int cmd_data(int argc, char **argv);
extern const char data_usage[];
int cmd_compile(int argc, char **argv);
extern const char compile_usage[];
int cmd_train(int argc, char **argv);
extern const char train_usage[];
int cmd_eval(int argc, char **argv);
extern const char eval_usage[];
int cmd_predict(int argc, char **argv);
extern const char predict_usage[];
int cmd_plot(int argc, char **argv);
extern const char plot_usage[];
int cmd_build(int argc, char **argv);
extern const char build_usage[];
/* build_usage and the list of targets, which depends on the LLVM linked. */
void build_help(FILE *f);
int cmd_import(int argc, char **argv);
extern const char import_usage[];
int cmd_export(int argc, char **argv);
extern const char export_usage[];
int cmd_check(int argc, char **argv);
extern const char check_usage[];

#endif

/* main.c: the rnnc command line. One table of subcommands; each parses its
 * own options with getopt_long and returns an exit status:
 * 0 success, 1 bad input (graph, data, checkpoint), 2 bad usage. */
#include <getopt.h>
#include <llvm-c/Core.h>
#include <llvm-c/ErrorHandling.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist.h"
#include "util.h"

typedef struct Command {
  const char *name;
  const char *summary;
  const char *usage;       /* full help text for `rnnc CMD --help` */
  void (*help)(FILE *out); /* or NULL: prints what usage cannot hold */
  int (*run)(int argc, char **argv);
} Command;

/* ------------------------------------------------------------- the table */

static const Command commands[] = {
    {"data", "summarize a names data set and its train/test split", data_usage, NULL,
     cmd_data},
    {"compile", "compile a graph file and print a stage's output (IR, LLVM, assembly)",
     compile_usage, NULL, cmd_compile},
    {"train", "train a graph on a names data set and write a checkpoint", train_usage, NULL,
     cmd_train},
    {"eval", "accuracy and confusion matrix of a checkpoint on the test split", eval_usage, NULL,
     cmd_eval},
    {"predict", "classify names with a trained checkpoint", predict_usage, NULL, cmd_predict},
    {"plot", "draw a training's metrics log (train --metrics) as an SVG or HTML page",
     plot_usage, NULL, cmd_plot},
    {"build", "compile a checkpoint into an object file and C header (AOT)", build_usage,
     build_help, cmd_build},
    {"import", "translate an ONNX model into a graph file and a checkpoint", import_usage, NULL,
     cmd_import},
    {"export", "write a graph and its checkpoint as an ONNX model", export_usage, NULL,
     cmd_export},
    {"check", "check a graph's gradients against finite differences", check_usage, NULL,
     cmd_check},
};

static const Command *find_command(const char *name) {
  for (size_t i = 0; i < ARRAY_LEN(commands); i++)
    if (!strcmp(commands[i].name, name))
      return &commands[i];
  return NULL;
}

static void print_help(FILE *f) {
  fprintf(f, "usage: rnnc <command> [options]\n"
             "       rnnc <command> --help    (or: rnnc help <command>)\n"
             "       rnnc --version\n\n"
             "rnnc compiles small recurrent models written in its graph language\n"
             "into native training and inference kernels.\n\ncommands:\n");
  for (size_t i = 0; i < ARRAY_LEN(commands); i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nExit status: 0 success, 1 bad input (graph, data, checkpoint), "
             "2 bad usage.\n");
}

/* Everything a command printed must have reached stdout: a full disk or a
 * closed stdout is an error, not a silent loss. */
static int finish(int rc) {
  Err e;
  if (close_stdout(&e)) {
    fprintf(stderr, "rnnc: error: %s\n", e.msg);
    if (rc == EXIT_OK)
      rc = EXIT_BAD_INPUT;
  }
  return rc;
}

/* LLVM's fatal errors (a back end that cannot select an instruction or
 * lay out a frame: rnnc build --target sparc, msp430, amdgcn, r600,
 * xtensa) would abort() the process; they are an error like any other. */
static void llvm_fatal(const char *reason) {
  fprintf(stderr, "rnnc: error: LLVM cannot go on: %s\n"
                  "(rnnc build --help lists the targets rnnc is tested with; other back ends may "
                  "not compile every graph)\n",
          reason);
  fflush(stderr);
  _exit(EXIT_BAD_INPUT); /* LLVM's state is not to be trusted: no atexit handlers */
}

static int run(int argc, char **argv) {
  LLVMInstallFatalErrorHandler(llvm_fatal);
  if (argc < 2) {
    print_help(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "help") && argc > 2) { /* rnnc help CMD = rnnc CMD --help */
    const Command *c = find_command(argv[2]);
    if (!c) {
      fprintf(stderr, "rnnc: unknown command '%s'\nTry 'rnnc --help'.\n", argv[2]);
      return EXIT_USAGE;
    }
    if (c->help)
      c->help(stdout);
    else
      fputs(c->usage, stdout);
    return EXIT_OK;
  }
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    print_help(stdout);
    return EXIT_OK;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    unsigned maj, min, patch;
    LLVMGetVersion(&maj, &min, &patch);
    printf("rnnc %s (LLVM %u.%u.%u)\n", RNNC_VERSION, maj, min, patch);
    return EXIT_OK;
  }
  const Command *c = find_command(cmd);
  if (!c) {
    fprintf(stderr, "rnnc: unknown command '%s'\nTry 'rnnc --help'.\n", cmd);
    return EXIT_USAGE;
  }
  int ranks = dist_launched_size(); /* mpirun -np ranks: MPI starts in cmd_train */
  if (ranks > 1 && c->run != cmd_train) {
    fprintf(stderr, "rnnc %s: error: started as one of %d processes (mpirun -np %d): only 'rnnc "
                    "train' runs on several ranks\n",
            cmd, ranks, ranks);
    return EXIT_BAD_INPUT;
  }
  return c->run(argc - 1, argv + 1);
}

int main(int argc, char **argv) { return finish(run(argc, argv)); }

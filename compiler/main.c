/* main.c: the rnnc command line. One table of subcommands; each parses its
 * own options with getopt_long and returns an exit status:
 * 0 success, 1 bad input (graph, data, checkpoint), 2 bad usage. */
#include <getopt.h>
#include <llvm-c/Core.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "runtime.h"
#include "util.h"

typedef struct Command {
  const char *name;
  const char *summary;
  const char *usage; /* full help text for `rnnc CMD --help` */
  int (*run)(int argc, char **argv);
} Command;

static const Command *find_command(const char *name);

static int usage_error(const Command *c, const char *fmt, const char *arg) {
  fprintf(stderr, "rnnc %s: ", c->name);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'rnnc %s --help'.\n", c->name);
  return EXIT_USAGE;
}

/* Parses a non-negative integer option value; returns -1 when malformed. */
static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!*s || *s == '-')
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end)
    return -1;
  *out = v;
  return 0;
}

/* ------------------------------------------------------------- rnnc data */

static const char data_usage[] =
    "usage: rnnc data [--data DIR] [--seed S] [--test-fraction F]\n"
    "\n"
    "Loads a names data set (one <Language>.txt per label, one UTF-8 name a\n"
    "line), normalizes every name to ASCII, and prints the languages with\n"
    "their counts, the names skipped and why, and the train/test split.\n"
    "\n"
    "  --data DIR           data directory (default: data/names)\n"
    "  --seed S             split seed (default: 42)\n"
    "  --test-fraction F    share of each language held out (default: 0.1)\n"
    "  -h, --help           this help\n";

static int cmd_data(int argc, char **argv) {
  const Command *self = find_command("data");
  const char *dir = "data/names";
  uint64_t seed = 42;
  double fraction = 0.1;
  static const struct option opts[] = {
      {"data", required_argument, 0, 'd'},
      {"seed", required_argument, 0, 's'},
      {"test-fraction", required_argument, 0, 'f'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'd':
      dir = optarg;
      break;
    case 's':
      if (parse_u64(optarg, &seed))
        return usage_error(self, "--seed wants a non-negative integer, not '%s'", optarg);
      break;
    case 'f': {
      char *end;
      fraction = strtod(optarg, &end);
      if (end == optarg || *end || !(fraction >= 0 && fraction < 1))
        return usage_error(self, "--test-fraction wants a number in [0, 1), not '%s'", optarg);
      break;
    }
    case 'h':
      fputs(self->usage, stdout);
      return EXIT_OK;
    default:
      fprintf(stderr, "Try 'rnnc data --help'.\n");
      return EXIT_USAGE;
    }
  }
  if (optind < argc)
    return usage_error(self, "unexpected argument '%s'", argv[optind]);

  Dataset ds = {0};
  Err e;
  if (data_load(&ds, dir, NULL, 0, &e) || data_split(&ds, fraction, seed, &e)) {
    fprintf(stderr, "rnnc data: error: %s\n", e.msg);
    data_free(&ds);
    return EXIT_BAD_INPUT;
  }
  printf("data: %s\n", dir);
  printf("%-5s %-14s %7s %7s %7s\n", "label", "language", "names", "train", "test");
  size_t *ntr = xcalloc((size_t)ds.nlabels, sizeof *ntr);
  size_t *nte = xcalloc((size_t)ds.nlabels, sizeof *nte);
  for (size_t i = 0; i < ds.ntrain; i++)
    ntr[ds.names[ds.train[i]].label]++;
  for (size_t i = 0; i < ds.ntest; i++)
    nte[ds.names[ds.test[i]].label]++;
  for (int l = 0; l < ds.nlabels; l++)
    printf("%5d %-14s %7zu %7zu %7zu\n", l, ds.labels[l], ds.per_label[l], ntr[l], nte[l]);
  printf("%5s %-14s %7zu %7zu %7zu\n", "", "total", ds.nnames, ds.ntrain, ds.ntest);
  free(ntr);
  free(nte);
  printf("\nskipped: %zu name%s", ds.nskipped, ds.nskipped == 1 ? "" : "s");
  if (ds.nempty)
    printf(" (and %zu empty line%s)", ds.nempty, ds.nempty == 1 ? "" : "s");
  printf("\n");
  for (size_t i = 0; i < ds.nskipped; i++)
    printf("  %s:%d: %s: %s\n", ds.skipped[i].file, ds.skipped[i].line, ds.skipped[i].text,
           ds.skipped[i].reason);
  printf("\nsplit (seed %llu, test fraction %g): %zu train / %zu test\n",
         (unsigned long long)seed, fraction, ds.ntrain, ds.ntest);
  data_free(&ds);
  return EXIT_OK;
}

/* ------------------------------------------------------------- the table */

static const Command commands[] = {
    {"data", "summarize a names data set and its train/test split", data_usage, cmd_data},
    {"compile", "compile a graph file and print a stage's output (IR, LLVM, assembly)",
     compile_usage, cmd_compile},
    {"train", "train a graph on a names data set and write a checkpoint", train_usage, cmd_train},
    {"eval", "accuracy and confusion matrix of a checkpoint on the test split", eval_usage,
     cmd_eval},
    {"predict", "classify names with a trained checkpoint", predict_usage, cmd_predict},
    {"build", "compile a checkpoint into an object file and C header (AOT)", build_usage,
     cmd_build},
    {"check", "check a graph's gradients against finite differences", check_usage, cmd_check},
};

static const Command *find_command(const char *name) {
  for (size_t i = 0; i < ARRAY_LEN(commands); i++)
    if (!strcmp(commands[i].name, name))
      return &commands[i];
  return NULL;
}

static void print_help(FILE *f) {
  fprintf(f, "usage: rnnc <command> [options]\n"
             "       rnnc <command> --help\n"
             "       rnnc --version\n\n"
             "rnnc compiles small recurrent models written in its graph language\n"
             "into native training and inference kernels.\n\ncommands:\n");
  for (size_t i = 0; i < ARRAY_LEN(commands); i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nExit status: 0 success, 1 bad input (graph, data, checkpoint), "
             "2 bad usage.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_help(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
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
  return c->run(argc - 1, argv + 1);
}

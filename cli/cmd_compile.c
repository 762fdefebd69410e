/* cmd_compile.c: rnnc compile GRAPH [--emit STAGE] [-o FILE]. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rnnc.h"

const char compile_usage[] =
    "usage: rnnc compile GRAPH [--emit STAGE] [-o FILE]\n"
    "\n"
    "Compiles a graph file and prints one stage's output. Errors in the graph\n"
    "print path:line:col, the line and a caret, and exit with status 1.\n"
    "\n"
    "  --emit STAGE   ir:   the forward IR after lowering and verification\n"
    "                 grad: the IR with the backward pass and the optimizer's\n"
    "                       update appended (reverse-mode autodiff)\n"
    "                 (default: ir)\n"
    "  -o FILE        write the output to FILE instead of standard output\n"
    "  -h, --help     this help\n";

int cmd_compile(int argc, char **argv) {
  const char *emit = "ir", *out_path = NULL;
  static const struct option opts[] = {{"emit", required_argument, 0, 'e'},
                                       {"output", required_argument, 0, 'o'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (c) {
    case 'e':
      emit = optarg;
      break;
    case 'o':
      out_path = optarg;
      break;
    case 'h':
      fputs(compile_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("compile", "bad option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage_error("compile", optind >= argc ? "missing GRAPH" : "more than one GRAPH");
  bool want_grad = !strcmp(emit, "grad");
  if (strcmp(emit, "ir") && !want_grad)
    return cli_usage_error("compile", "unknown --emit stage '%s' (ir, grad)", emit);
  Err e;
  Graph *g = compile_graph_file(argv[optind], &e);
  if (!g || (want_grad && grad(g, &e))) {
    fprintf(stderr, "%s\n", e.msg);
    graph_free(g);
    return EXIT_BAD_INPUT;
  }
  Buf b = {0};
  graph_print(g, &b);
  graph_free(g);
  FILE *f = out_path ? fopen(out_path, "w") : stdout;
  if (!f) {
    perror(out_path);
    buf_free(&b);
    return EXIT_BAD_INPUT;
  }
  int bad = fwrite(b.data, 1, b.len, f) != b.len;
  bad |= out_path ? fclose(f) != 0 : fflush(f) != 0;
  buf_free(&b);
  if (bad) {
    fprintf(stderr, "rnnc compile: cannot write %s\n", out_path ? out_path : "standard output");
    return EXIT_BAD_INPUT;
  }
  return EXIT_OK;
}

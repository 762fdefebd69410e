/* cmd_compile.c: rnnc compile GRAPH [--emit STAGE] [-o FILE]. */
#include <getopt.h>
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "files.h"
#include "rnnc.h"

const char compile_usage[] =
    "usage: rnnc compile GRAPH [--emit STAGE] [--time] [-o FILE]\n"
    "                    [--vocab-size V] [--classes C]\n"
    "\n"
    "Compiles a graph file and prints one stage's output. Errors in the graph\n"
    "print path:line:col, the line and a caret, and exit with status 1.\n"
    "\n"
    "  --emit STAGE   ir:   the forward IR after lowering and verification\n"
    "                 grad: the training IR: forward (simplified), backward\n"
    "                       (reverse-mode autodiff) and the optimizer's update\n"
    "                 opt:  the training IR after the optimization passes\n"
    "                 llvm: the optimized LLVM module: every kernel the JIT may\n"
    "                       run (train, forward, step, update, step_batch,\n"
    "                       forward_batch; update_range and the batched kernels'\n"
    "                       _pack functions where the graph has them), made as\n"
    "                       the JIT makes them (train, forward, step and\n"
    "                       forward_batch in two functions each, NAME and\n"
    "                       NAME.part1, which the JIT compiles at once); a\n"
    "                       batched kernel the graph cannot have is named on\n"
    "                       stderr\n"
    "                 asm:  its assembly for this machine\n"
    "                 (default: ir)\n"
    "  --time         print each stage's time to standard error\n"
    "  --vocab-size V, --classes C\n"
    "                 what data.vocab and data.classes are in a graph that takes\n"
    "                 its sizes from the data (train, eval and predict take them\n"
    "                 from the data set or the checkpoint)\n"
    "  -o FILE        write the output to FILE instead of standard output\n"
    "  -h, --help     this help\n";

/* Bounds for --vocab-size and --classes (a graph's sizes are ints). */
enum { MAX_DATA_SIZE = 1 << 20 };

static int emit_module(const char *path, const DataSizes *sizes, bool asm_out, Buf *out,
                       double *t, Err *e) {
  /* Every kernel the JIT may make (runtime/model.c: the same graphs, the
   * same codegen), in one module and a context of their own. */
  size_t len;
  char *text = read_file(path, &len, e);
  if (!text)
    return -1;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("rnnc", ctx);
  LLVMTargetMachineRef tm = target_machine(NULL, NULL, NULL, LLVMRelocDefault, e);
  Kernels ks = {0};
  int rc = -1;
  double t0 = now_seconds();
  if (!tm || kernels_prepare(&ks, path, text, len, KERNEL_ALL, 0, sizes, e))
    goto done;
  double t1 = now_seconds();
  for (int k = 0; k < KERNEL_KINDS; k++) {
    KernelAbi abi;
    if (!kernel_emit(k, ks.graph[k], m, tm, &abi, e))
      continue;
    if (!kernel_optional(k))
      goto done;
    /* the JIT runs without it too */
    fprintf(stderr, "rnnc compile: no %s kernel for this graph (%s)\n", kernel_name(k), e->msg);
  }
  double t2 = now_seconds();
  if (optimize_kernel(m, tm, e))
    goto done;
  double t3 = now_seconds();
  if (asm_out) {
    char *msg = NULL;
    LLVMMemoryBufferRef mb;
    if (target_emit(tm, m, LLVMAssemblyFile, &mb, &msg)) {
      errf(e, "emitting assembly: %s", msg);
      LLVMDisposeMessage(msg);
      goto done;
    }
    buf_put(out, LLVMGetBufferStart(mb), LLVMGetBufferSize(mb));
    LLVMDisposeMemoryBuffer(mb);
  } else {
    char *ir = LLVMPrintModuleToString(m);
    buf_put(out, ir, strlen(ir));
    LLVMDisposeMessage(ir);
  }
  double t4 = now_seconds();
  t[0] = t1 - t0, t[1] = t2 - t1, t[2] = t3 - t2, t[3] = t4 - t3;
  rc = 0;
done:
  kernels_free(&ks);
  free(text);
  if (tm)
    LLVMDisposeTargetMachine(tm);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  return rc;
}

int cmd_compile(int argc, char **argv) {
  const char *emit = "ir", *out_path = NULL;
  bool timing = false;
  DataSizes sizes = {0};
  static const struct option opts[] = {{"emit", required_argument, 0, 'e'},
                                       {"vocab-size", required_argument, 0, 'V'},
                                       {"classes", required_argument, 0, 'C'},
                                       {"output", required_argument, 0, 'o'},
                                       {"time", no_argument, 0, 't'},
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
    case 't':
      timing = true;
      break;
    case 'V':
    case 'C':
      if (cli_parse_int(optarg, 1, MAX_DATA_SIZE, c == 'V' ? &sizes.vocab : &sizes.classes))
        return cli_usage_error("compile", "--%s wants an integer in [1, %d], not '%s'",
                               c == 'V' ? "vocab-size" : "classes", MAX_DATA_SIZE, optarg);
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
  static const char *const stages[] = {"ir", "grad", "opt", "llvm", "asm"};
  int stage = -1;
  for (int i = 0; i < 5; i++)
    if (!strcmp(emit, stages[i]))
      stage = i;
  if (stage < 0)
    return cli_usage_error("compile", "unknown --emit stage '%s' (ir, grad, opt, llvm, asm)", emit);
  Err e;
  Buf b = {0};
  double t[4] = {0};
  if (stage >= 3) {
    if (emit_module(argv[optind], &sizes, stage == 4, &b, t, &e)) {
      cli_error("compile", &e);
      buf_free(&b);
      return EXIT_BAD_INPUT;
    }
  } else {
    double t0 = now_seconds();
    size_t len;
    char *text = read_graph(argv[optind], &len, &e);
    Graph *g = text ? compile_graph_data(argv[optind], text, len, &sizes, &e) : NULL;
    free(text);
    double t1 = now_seconds();
    PassStop stop = stage == 0 ? PASSES_FRONT : stage == 1 ? PASSES_GRAD : PASSES_ALL;
    if (!g || graph_passes(g, true, stop, &e)) {
      cli_error("compile", &e);
      graph_free(g);
      return EXIT_BAD_INPUT;
    }
    t[0] = t1 - t0;
    t[1] = now_seconds() - t1;
    graph_print(g, &b);
    graph_free(g);
  }
  if (timing)
    fprintf(stderr,
            "front end and passes %.1f ms, codegen %.1f ms, LLVM optimization %.1f ms, "
            "output %.1f ms\n",
            1e3 * (t[0] + (stage < 3 ? t[1] : 0)), stage < 3 ? 0 : 1e3 * t[1], 1e3 * t[2], 1e3 * t[3]);
  /* stdout is checked as rnnc exits (main.c); a file is staged, so that
   * it is complete or not there (files.h). */
  int rc = EXIT_OK;
  Staged st;
  if (!out_path)
    out_write(b.data, b.len);
  else if (stage_file(&st, out_path, b.data, b.len, &e) || stage_commit(&st, &e)) {
    cli_error("compile", &e);
    stage_discard(&st);
    rc = EXIT_BAD_INPUT;
  }
  buf_free(&b);
  return rc;
}

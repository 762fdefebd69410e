/* cmd_export.c: rnnc export: a graph and its checkpoint -> an ONNX model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "files.h"
#include "rnnc.h"
#include "runtime.h"

const char export_usage[] =
    "usage: rnnc export GRAPH CKPT -o NAME.onnx\n"
    "\n"
    "Writes the graph's inference (its output, the logits, from its input) with\n"
    "the checkpoint's weights as an ONNX model (opset 14): the input 'x' is\n"
    "[T, 1, V] floats (one-hot characters), the output 'logits' [C]; each scan\n"
    "is an ONNX Scan whose body is the cell, parameters are initializers under\n"
    "their names. A graph with something ONNX has no op for (a random initial\n"
    "state: kaiming_uniform) is an error naming it. rnnc import --onehot reads\n"
    "the model back (docs/onnx.md).\n"
    "\n"
    "  -o NAME.onnx      the file to write\n"
    "  -h, --help        this help\n";

int cmd_export(int argc, char **argv) {
  const char *out = NULL;
  static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'h':
      fputs(export_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("export", "bad option");
    }
  }
  if (argc - optind != 2)
    return cli_usage_error("export", "wants GRAPH and CKPT");
  if (!out || !*out)
    return cli_usage_error("export", "wants -o NAME.onnx");
  const char *graph = argv[optind], *ckpt = argv[optind + 1];
  const char *base = strrchr(out, '/');
  if (!*(base ? base + 1 : out))
    return cli_usage_error("export", "-o %s names a directory: give the file, DIR/NAME.onnx", out);
  const char *ins[] = {graph, ckpt}, *names[] = {"the graph", "the checkpoint"};
  int bad = cli_refuse_overwrite("export", "-o", out, ins, names, 2);
  if (bad)
    return bad;
  Err e;
  Model m = {0};
  ModelOptions mo = {.no_train = true, .no_kernels = true};
  char **labels = NULL;
  int nlabels = 0, rc = EXIT_BAD_INPUT;
  Graph *g = NULL;
  Buf onnx = {0};
  Staged s = {.fd = -1};
  Vocab vocab = {0};
  char *text = NULL;
  size_t len;
  /* The weights through the checkpoint reader's checks, with the sizes a
   * graph takes from its data (data.vocab, data.classes) from the
   * checkpoint's vocabulary and labels; the graph as its file says, before
   * the passes (the same parameter layout), with those sizes. */
  if (cli_load_model(&m, graph, ckpt, &mo, 0, &labels, &nlabels, &vocab, &e) ||
      !(text = read_graph(graph, &len, &e)) ||
      !(g = compile_graph_data(graph, text, len, &mo.sizes, &e)) ||
      onnx_export(g, m.state, &onnx, &e) || stage_file(&s, out, onnx.data, onnx.len, &e) ||
      stage_commit(&s, &e)) {
    fprintf(stderr, "rnnc export: %s\n", e.msg);
  } else {
    printf("rnnc export: wrote %s (%zu bytes)\n", out, onnx.len);
    rc = EXIT_OK;
  }
  stage_discard(&s);
  buf_free(&onnx);
  graph_free(g);
  free(text);
  vocab_free(&vocab);
  for (int i = 0; i < nlabels; i++)
    free(labels[i]);
  free(labels);
  model_free(&m);
  return rc;
}

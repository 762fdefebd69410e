/* cmd_import.c: rnnc import: an ONNX model -> NAME.nn and NAME.safetensors. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "files.h"
#include "onnx_import.h"
#include "rnnc.h"
#include "runtime.h"

const char import_usage[] =
    "usage: rnnc import MODEL.onnx -o DIR/NAME [--onehot] [--input NAME] [--output NAME]\n"
    "                   [--labels L1,L2,...|--data DIR]\n"
    "\n"
    "Translates an ONNX model (torch.onnx.export's, opsets 7 to 17) into a graph\n"
    "file, DIR/NAME.nn, built from the graph language's primitives, and its\n"
    "weights, DIR/NAME.safetensors, a checkpoint that compile, train, eval,\n"
    "predict and build take with it. Recurrent nodes (GRU, LSTM, RNN) become a\n"
    "cell and a scan with ONNX's equations; shape arithmetic on constants is\n"
    "folded. The model runs one sequence at a time: batch dimensions are 1.\n"
    "An op, attribute or data type rnnc cannot express is an error naming the\n"
    "node, its op and the attribute (docs/onnx.md lists what is supported).\n"
    "\n"
    "  -o DIR/NAME       the files to write (NAME.nn, NAME.safetensors)\n"
    "  --onehot          the sequence input holds one-hot characters ([T, 1, V]):\n"
    "                    the graph takes names (input x : onehot[T, V]); without\n"
    "                    it the input is float vectors (f32[T, V]), which only\n"
    "                    the reference interpreter runs\n"
    "  --input NAME      the graph input that is the sequence (default: the only\n"
    "                    graph input that is not an initializer)\n"
    "  --output NAME     the graph output that is the logits (default: the first)\n"
    "  --labels LIST     the classes' names, comma-separated, into the checkpoint\n"
    "  --data DIR        take the labels from a names data directory (default:\n"
    "                    data/names when it has as many languages as the output)\n"
    "  -h, --help        this help\n";

static int split_list(const char *s, char ***out) {
  int n = 1;
  for (const char *p = s; *p; p++)
    n += *p == ',';
  char **v = xcalloc((size_t)n, sizeof *v);
  for (int i = 0; i < n; i++) {
    const char *end = strchr(s, ',');
    size_t len = end ? (size_t)(end - s) : strlen(s);
    v[i] = xstrndup(s, len);
    s += len + (end != NULL);
  }
  *out = v;
  return n;
}

int cmd_import(int argc, char **argv) {
  const char *out = NULL, *labels_arg = NULL, *data_dir = NULL;
  ImportOptions o = {0};
  static const struct option opts[] = {{"onehot", no_argument, 0, 'x'},
                                       {"input", required_argument, 0, 'i'},
                                       {"output", required_argument, 0, 'y'},
                                       {"labels", required_argument, 0, 'l'},
                                       {"data", required_argument, 0, 'd'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'x':
      o.onehot = true;
      break;
    case 'i':
      o.input = optarg;
      break;
    case 'y':
      o.output = optarg;
      break;
    case 'l':
      labels_arg = optarg;
      break;
    case 'd':
      data_dir = optarg;
      break;
    case 'h':
      fputs(import_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("import", "bad option");
    }
  }
  if (optind >= argc)
    return cli_usage_error("import", "no MODEL.onnx given");
  if (optind + 1 < argc)
    return cli_usage_error("import", "unexpected argument '%s'", argv[optind + 1]);
  if (!out || !*out)
    return cli_usage_error("import", "no -o DIR/NAME given");
  if (labels_arg && data_dir)
    return cli_usage_error("import", "--labels and --data both give the labels: choose one");
  const char *path = argv[optind];
  o.source = path;
  const char *base = strrchr(out, '/');
  if (!*(base ? base + 1 : out))
    return cli_usage_error("import", "-o %s names a directory: give DIR/NAME (NAME.nn and "
                                     "NAME.safetensors are written)", out);

  Err e;
  size_t len;
  char *bytes = read_file(path, &len, &e);
  if (!bytes) {
    fprintf(stderr, "rnnc import: %s\n", e.msg);
    return EXIT_BAD_INPUT;
  }
  Imported im;
  int rc = onnx_import(bytes, len, &o, &im, &e);
  free(bytes);
  if (rc) {
    fprintf(stderr, "rnnc import: %s: %s\n", path, e.msg);
    return EXIT_BAD_INPUT;
  }
  char *nn_path = xasprintf("%s.nn", out), *st_path = xasprintf("%s.safetensors", out);
  char **labels = NULL;
  int nlabels = 0, status = EXIT_BAD_INPUT;
  Dataset ds = {0};
  /* The graph must compile: a check of the importer, before any file. */
  Graph *g = compile_graph(nn_path, im.nn.data, im.nn.len, &e);
  if (!g) {
    fprintf(stderr, "rnnc import: %s: the imported graph does not compile (please report it):\n%s\n",
            path, e.msg);
    goto done;
  }
  graph_free(g);
  if (labels_arg) {
    nlabels = split_list(labels_arg, &labels);
  } else {
    const char *dir = data_dir ? data_dir : "data/names";
    Err de;
    if (data_load(&ds, dir, NULL, 0, data_default_kind(dir), NULL, &de) == 0 &&
        (data_dir || ds.nlabels == im.classes)) {
      labels = ds.labels;
      nlabels = ds.nlabels;
    } else if (data_dir) {
      fprintf(stderr, "rnnc import: %s\n", de.msg);
      goto done;
    }
  }
  if (nlabels && nlabels != im.classes) {
    fprintf(stderr, "rnnc import: %d labels, but the model's output has %d classes\n", nlabels,
            im.classes);
    goto done;
  }
  if (nlabels && data_check_labels(labels, nlabels, &e)) {
    fprintf(stderr, "rnnc import: the labels: %s\n", e.msg);
    goto done;
  }
  /* Metadata as checkpoints hold it (no "format": not one of rnnc
   * train's, with a step and a pair). */
  char *list = nlabels ? ckpt_json_list(labels, nlabels) : NULL;
  char *vocab = im.onehot && im.vocab == VOCAB_SIZE ? ckpt_vocab_list() : NULL;
  char *keys[3], *vals[3];
  int nmeta = 0;
  keys[nmeta] = "producer", vals[nmeta++] = "rnnc import";
  if (list)
    keys[nmeta] = "labels", vals[nmeta++] = list;
  if (vocab)
    keys[nmeta] = "vocab", vals[nmeta++] = vocab;
  /* Both files or neither. */
  Staged sn = {.fd = -1}, ss = {.fd = -1};
  if (nlabels && !list)
    fprintf(stderr, "rnnc import: a label is not valid UTF-8\n");
  else if (stage_file(&sn, nn_path, im.nn.data, im.nn.len, &e) ||
           st_stage(&ss, st_path, im.tensors, im.ntensors, keys, vals, nmeta, &e) ||
           stage_commit_both(&ss, &sn, &e)) {
    fprintf(stderr, "rnnc import: %s\n", e.msg);
  } else {
    status = EXIT_OK;
    printf("rnnc import: wrote %s (input [T, %d]%s, %d classes) and %s (%d tensors)\n", nn_path,
           im.vocab, im.onehot ? " one-hot" : "", im.classes, st_path, im.ntensors);
    if (im.onehot && im.vocab != VOCAB_SIZE)
      printf("rnnc import: note: the input has %d characters; names use rnnc's vocabulary of %d\n",
             im.vocab, VOCAB_SIZE);
  }
  stage_discard(&sn);
  stage_discard(&ss);
  free(list);
  free(vocab);
done:
  if (labels != ds.labels) {
    for (int i = 0; i < nlabels; i++)
      free(labels[i]);
    free(labels);
  }
  data_free(&ds);
  free(nn_path);
  free(st_path);
  imported_free(&im);
  return status;
}

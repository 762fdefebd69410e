/* fuzz_onnx.c: libFuzzer target for rnnc import (compiler/onnx_import.c).
 *
 * Feeds the input bytes to onnx_import as an ONNX model, the sequence input
 * float (the interpreter's) or one-hot depending on the first byte; a model
 * it accepts must give a graph file that compiles. The contract: any input
 * gives that, or -1 with a message -- never a crash, a hang, a leak or an
 * out-of-bounds access (ASan and UBSan watch).
 *
 * Build and run as fuzz_frontend (tests/fuzz/README.md), with this target:
 *
 *   cmake --build /tmp/build-fuzz -j2 --target fuzz_onnx
 *   /tmp/build-fuzz/fuzz_onnx -max_len=65536 -timeout=5 -rss_limit_mb=2048 \
 *       -max_total_time=600 -artifact_prefix=/tmp/fuzz-onnx/ /tmp/fuzz-onnx/corpus \
 *       tests/fuzz/onnx_corpus
 *
 * tests/test_onnx.c replays tests/fuzz/onnx_corpus under the ordinary test
 * build. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "onnx_import.h"
#include "rnnc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ImportOptions o = {.onehot = size > 0 && (data[0] & 1)};
  Imported im;
  Err e;
  e.msg[0] = '\0';
  if (onnx_import(data, size, &o, &im, &e)) {
    if (!e.msg[0]) {
      fprintf(stderr, "onnx_import failed without a message\n");
      abort();
    }
    return 0;
  }
  Graph *g = compile_graph("fuzz.nn", im.nn.data, im.nn.len, &e);
  if (!g) {
    fprintf(stderr, "an imported graph does not compile:\n%s\n%s\n", im.nn.data, e.msg);
    abort();
  }
  graph_free(g);
  imported_free(&im);
  return 0;
}

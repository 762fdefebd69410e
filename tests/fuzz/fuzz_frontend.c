/* fuzz_frontend.c: libFuzzer target for the graph language's front end.
 *
 * Feeds the input bytes to compile_graph (lexer, parser, lowering, IR
 * verifier) and frees the result. The contract under test: any input gives
 * a Graph or NULL with "error: " in the message -- never a crash, a hang, a
 * leak or an out-of-bounds access (ASan and UBSan watch; libFuzzer's
 * -timeout and -rss_limit_mb catch hangs and blow-ups).
 *
 * Build (a separate build dir; the whole library is compiled with clang-19
 * and -fsanitize=fuzzer-no-link,address,undefined):
 *
 *   cmake -S . -B /tmp/build-fuzz -DCMAKE_C_COMPILER=/usr/bin/clang-19 \
 *         -DRNNC_FUZZ=ON -DRNNC_TESTS=OFF
 *   cmake --build /tmp/build-fuzz -j2 --target fuzz_frontend
 *
 * Run (from the repository root; tests/fuzz/README.md has the seeding,
 * crash-minimizing and corpus-shrinking steps):
 *
 *   /tmp/build-fuzz/fuzz_frontend -dict=tests/fuzz/nn.dict -max_len=8192 \
 *       -timeout=5 -rss_limit_mb=2048 -max_total_time=600 -report_slow_units=1 \
 *       -artifact_prefix=/tmp/fuzz-work/ /tmp/fuzz-work/corpus /tmp/fuzz-work/seeds
 *
 * tests/test_fuzz_corpus.c replays tests/fuzz/corpus under the ordinary
 * (gcc, ASan/UBSan) test build, so the corpus keeps guarding regressions
 * without clang. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Err e;
  e.msg[0] = '\0';
  /* compile_graph copies the text; data need not be NUL-terminated. */
  Graph *g = compile_graph("fuzz.nn", (const char *)data, size, &e);
  if (g) {
    graph_free(g);
  } else if (!strstr(e.msg, "error: ")) {
    /* A failure must say what went wrong. */
    fprintf(stderr, "compile_graph returned NULL without an error message: '%.200s'\n", e.msg);
    abort();
  }
  return 0;
}

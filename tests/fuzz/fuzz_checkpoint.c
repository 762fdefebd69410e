/* fuzz_checkpoint.c: libFuzzer target for reading checkpoints: the
 * safetensors reader (header length, JSON header, entries, tiling) and the
 * checkpoint metadata rnnc reads (ckpt_read_meta: labels as a JSON list or
 * comma-joined, the vocabulary, step, epoch and position).
 *
 * The input bytes are a file (a memfd, read through /proc/self/fd/N as
 * rnnc reads a path). The contract: st_load and ckpt_read_meta accept it
 * or fail with a message that names the file; never a crash, a hang, a
 * leak, an out-of-bounds access or a huge allocation.
 *
 * Build and run as fuzz_frontend (tests/fuzz/README.md), seeded with the
 * kept corpus tests/fuzz/ckpt_corpus and the golden checkpoints:
 *
 *   cmake --build /tmp/build-fuzz -j2 --target fuzz_checkpoint
 *   /tmp/build-fuzz/fuzz_checkpoint -dict=tests/fuzz/ckpt.dict -max_len=4096 \
 *       -timeout=5 -rss_limit_mb=2048 -max_total_time=600 \
 *       -artifact_prefix=/tmp/fuzz-ckpt/ /tmp/fuzz-ckpt/corpus tests/fuzz/ckpt_corpus
 *
 * tests/test_fuzz_corpus.c replays tests/fuzz/ckpt_corpus the same way. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("ckpt.safetensors", 0);
    if (fd < 0)
      abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
    abort();
  StFile f;
  Err e;
  e.msg[0] = '\0';
  if (st_load(&f, path, &e) == 0) {
    CkptMeta meta;
    e.msg[0] = '\0';
    if (ckpt_read_meta(&f, path, &meta, &e) == 0)
      ckpt_meta_free(&meta);
    st_free(&f);
  }
  if (e.msg[0] && !strstr(e.msg, path)) {
    /* A failure must name the file. */
    fprintf(stderr, "an error that does not name the file: '%.200s'\n", e.msg);
    abort();
  }
  return 0;
}

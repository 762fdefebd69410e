/* vocab.c: the 59-character vocabulary of the names task. */
#include <assert.h>
#include <string.h>

#include "runtime.h"

static_assert(sizeof VOCAB_CHARS - 1 == VOCAB_SIZE, "VOCAB_SIZE must match VOCAB_CHARS");

int vocab_index(unsigned char c) {
  /* memchr over the 59 bytes only, so the terminating NUL never matches. */
  const char *p = memchr(VOCAB_CHARS, c, VOCAB_SIZE);
  return p ? (int)(p - VOCAB_CHARS) : -1;
}

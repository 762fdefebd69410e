/* vocab.c: vocabularies: the names task's 59 characters, or every
 * character of a data set's training names with an unknown slot. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <unistr.h>

#include "runtime.h"

static_assert(sizeof VOCAB_CHARS - 1 == VOCAB_SIZE, "VOCAB_SIZE must match VOCAB_CHARS");

int vocab_index(unsigned char c) {
  /* memchr over the 59 bytes only, so the terminating NUL never matches. */
  const char *p = memchr(VOCAB_CHARS, c, VOCAB_SIZE);
  return p ? (int)(p - VOCAB_CHARS) : -1;
}

static const char *const kind_names[] = {[VOCAB_NAMES] = "names", [VOCAB_ASCII] = "ascii",
                                         [VOCAB_UNICODE] = "unicode"};

const char *vocab_kind_name(VocabKind k) { return kind_names[k]; }

int vocab_kind_parse(const char *s, VocabKind *k) {
  for (size_t i = 0; i < ARRAY_LEN(kind_names); i++)
    if (!strcmp(s, kind_names[i])) {
      *k = (VocabKind)i;
      return 0;
    }
  return -1;
}

void vocab_names(Vocab *v) {
  *v = (Vocab){.kind = VOCAB_NAMES, .n = VOCAB_SIZE, .unknown = -1};
  v->cp = xmalloc(VOCAB_SIZE * sizeof *v->cp);
  for (int i = 0; i < VOCAB_SIZE; i++)
    v->cp[i] = (unsigned char)VOCAB_CHARS[i];
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

void vocab_build(Vocab *v, VocabKind k, const int32_t *const *seqs, const int32_t *lens,
                 size_t n) {
  assert(k != VOCAB_NAMES && "the names vocabulary is fixed");
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += (size_t)lens[i];
  int32_t *all = xmalloc((total + 1) * sizeof *all);
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    for (int32_t t = 0; t < lens[i]; t++)
      all[m++] = seqs[i][t];
  qsort(all, m, sizeof *all, cmp_i32);
  *v = (Vocab){.kind = k, .unknown = 0};
  v->cp = xmalloc((m + 1) * sizeof *v->cp);
  v->cp[v->n++] = -1; /* the unknown slot */
  for (size_t i = 0; i < m; i++)
    if (i == 0 || all[i] != all[i - 1])
      v->cp[v->n++] = all[i];
  free(all);
}

int vocab_from_list(Vocab *v, VocabKind k, char *const *items, int n, Err *e) {
  *v = (Vocab){.kind = k, .unknown = -1};
  if (n < 1 || n > VOCAB_MAX)
    return errf(e, "a vocabulary of %d characters (1 to %d)", n, VOCAB_MAX);
  v->cp = xmalloc((size_t)n * sizeof *v->cp);
  v->n = n;
  for (int i = 0; i < n; i++) {
    const uint8_t *s = (const uint8_t *)items[i];
    size_t len = strlen(items[i]);
    ucs4_t c;
    if (len == 0) {
      if (v->unknown >= 0)
        goto bad;
      v->unknown = i;
      v->cp[i] = -1;
      continue;
    }
    if (u8_check(s, len) || u8_mbtouc(&c, s, len) != (int)len) {
      vocab_free(v);
      return errf(e, "vocabulary item %d is not one character", i);
    }
    v->cp[i] = (int32_t)c;
  }
  if (k == VOCAB_NAMES) {
    for (int i = 0; i < n; i++)
      if (n != VOCAB_SIZE || v->cp[i] != (unsigned char)VOCAB_CHARS[i]) {
        vocab_free(v);
        return errf(e, "the vocabulary differs from the names vocabulary (\"%s\")", VOCAB_CHARS);
      }
    return 0;
  }
  /* A built vocabulary: the unknown slot first, then increasing code points. */
  if (v->unknown != 0)
    goto bad;
  for (int i = 2; i < n; i++)
    if (v->cp[i] <= v->cp[i - 1])
      goto bad;
  return 0;
bad:
  vocab_free(v);
  return errf(e, "the vocabulary is not an unknown slot (\"\") followed by characters in code "
                 "point order, each once");
}

char **vocab_to_list(const Vocab *v) {
  char **items = xcalloc((size_t)v->n, sizeof *items);
  for (int i = 0; i < v->n; i++) {
    uint8_t buf[8] = {0};
    if (v->cp[i] >= 0)
      u8_uctomb(buf, (ucs4_t)v->cp[i], (int)sizeof buf - 1);
    items[i] = xstrdup((const char *)buf);
  }
  return items;
}

void vocab_free(Vocab *v) {
  free(v->cp);
  *v = (Vocab){0};
}

int vocab_lookup(const Vocab *v, int32_t c) {
  if (v->kind == VOCAB_NAMES)
    return c > 0 && c < 0x80 ? vocab_index((unsigned char)c) : -1;
  /* cp[1..n) is sorted */
  int lo = 1, hi = v->n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (v->cp[mid] < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < v->n && v->cp[lo] == c ? lo : v->unknown;
}

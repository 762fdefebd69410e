/* diag.c: positioned error messages and the compiler's arena. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistr.h>

#include "rnnc.h"

void format_error(Err *e, const Src *src, Pos p, const char *msg) {
  if (!e)
    return;
  if (p.line <= 0 || !src) {
    snprintf(e->msg, sizeof e->msg, "%s: error: %s", src ? src->path : "<graph>", msg);
    return;
  }
  /* Find the line; show it with a caret under column p.col. Tabs in the
   * line are kept in the caret line so that the caret lines up. */
  const char *s = src->text, *end = src->text + src->len;
  for (int l = 1; l < p.line && s < end; s++)
    if (*s == '\n')
      l++;
  const char *eol = s;
  while (eol < end && *eol != '\n' && *eol != '\r')
    eol++;
  /* Show at most 160 characters of a long line, around the column. */
  int col = p.col;
  if (col > 120 && col - 80 < (int)(eol - s)) {
    s += col - 80;
    col = 80;
  }
  int n = (int)(eol - s);
  if (n > 160)
    n = 160;
  char caret[256];
  int k = 0;
  for (int i = 0; i < col - 1 && i < n && k < (int)sizeof caret - 2; i++)
    caret[k++] = s[i] == '\t' ? '\t' : ' ';
  caret[k++] = '^';
  caret[k] = '\0';
  /* The line as it can go to a terminal: control characters and bytes
   * that are not UTF-8 (a binary file given as a graph) as '?', one for
   * one so that the caret stays under its column. */
  char shown[4 * 160 + 1];
  int k2 = 0;
  for (int i = 0; i < n;) {
    ucs4_t uc;
    int len = u8_mbtoucr(&uc, (const uint8_t *)s + i, (size_t)(n - i));
    if (len <= 0 || uc == 0x7f || (uc < 0x20 && uc != '\t')) {
      shown[k2++] = '?';
      i++;
    } else {
      memcpy(shown + k2, s + i, (size_t)len);
      k2 += len;
      i += len;
    }
  }
  snprintf(e->msg, sizeof e->msg, "%s:%d:%d: error: %s\n%.*s\n%s", src->path, p.line, p.col,
           msg, k2, shown, caret);
}

void error_at(Diag *d, Pos p, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  format_error(d->err, d->src, p, msg);
  longjmp(d->jb, 1);
}

struct ArenaBlock {
  ArenaBlock *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

void *arena_alloc(Arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  ArenaBlock *b = a->head;
  if (!b || b->used + n > b->cap) {
    size_t cap = n > 65536 ? n : 65536;
    b = xmalloc(sizeof *b + cap);
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  memset(p, 0, n);
  return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  memcpy(p, s, n);
  return p;
}

void arena_free(Arena *a) {
  for (ArenaBlock *b = a->head, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  a->head = NULL;
}

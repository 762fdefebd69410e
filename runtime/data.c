/* data.c: the names data set: one <Label>.txt per label, one UTF-8 name a
 * line, each name kept as its vocabulary indices; and the seeded,
 * stratified train/test split. */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uninorm.h>
#include <unistr.h>

#include "runtime.h"

/* Lines longer than this are skipped unread: a name of NAME_MAX_CHARS
 * characters is at most 4 * NAME_MAX_CHARS bytes, and this leaves room
 * for trailing whitespace. */
enum { DATA_LINE_MAX = 65536 };
/* A TSV or CSV file is read whole: at most this many bytes. */
#define DATA_FILE_MAX ((size_t)1 << 30)
#define DATA_LINE_MAX_STR "65536"

/* What became of one line. */
enum { ENC_OK, ENC_EMPTY, ENC_SKIP, ENC_BAD_UTF8 };

/* Writes c for a message: 'x' for printable ASCII, U+XXXX for other ASCII
 * (control characters), 'é' (U+00E9) for the rest. */
static void describe_char(char *out, size_t size, long c) {
  if (c > 0x20 && c < 0x7F) {
    snprintf(out, size, "'%c'", (char)c);
  } else if (c < 0x80) {
    snprintf(out, size, "U+%04lX", (unsigned long)c);
  } else {
    uint8_t utf8[8];
    int k = u8_uctomb(utf8, (ucs4_t)c, (int)sizeof utf8);
    snprintf(out, size, "'%.*s' (U+%04lX)", k > 0 ? k : 0, (const char *)utf8,
             (unsigned long)c);
  }
}

/* text NFC-normalized (valid UTF-8, trailing whitespace stripped):
 * malloc'd and NUL-terminated, or NULL with a message in e. */
static char *normalize_nfc(const char *s, size_t n, Err *e) {
  const uint8_t *bad = u8_check((const uint8_t *)s, n);
  if (bad) {
    errf(e, "invalid UTF-8 (byte 0x%02x at column %zu)", *bad, (size_t)(bad - (const uint8_t *)s) + 1);
    return NULL;
  }
  n = utf8_rstrip(s, n);
  size_t m = 0;
  uint8_t *d = n ? u8_normalize(UNINORM_NFC, (const uint8_t *)s, n, NULL, &m) : NULL;
  if (n && !d) {
    errf(e, "cannot normalize it: %s", strerror(errno));
    return NULL;
  }
  char *out = xmemdup0(d, m);
  free(d);
  return out;
}

/* Normalizes one line (to ASCII for the names and ascii vocabularies, else
 * to NFC) into code points, and with a vocabulary (v not NULL) maps them to
 * its indices. ENC_OK: *chars, *text (the normalized form) and *len are
 * set. ENC_SKIP: why in e. ENC_BAD_UTF8: the message in e. ENC_EMPTY:
 * nothing but whitespace. */
static int encode(const char *s, size_t n, VocabKind kind, const Vocab *v, int32_t **chars,
                  char **text, int32_t *len, Err *e) {
  /* Too long as written (valid UTF-8 only: invalid is an error below). A
   * character is at most 4 bytes, so more than 4 * NAME_MAX_CHARS bytes
   * are too many without counting. */
  size_t used = utf8_rstrip(s, n);
  if (!u8_check((const uint8_t *)s, n) &&
      (used > 4 * NAME_MAX_CHARS || u8_mbsnlen((const uint8_t *)s, used) > NAME_MAX_CHARS)) {
    errf(e, "longer than %d characters", NAME_MAX_CHARS);
    return ENC_SKIP;
  }
  char what[64];
  char *a;
  if (vocab_is_ascii(kind)) {
    size_t dropped = 0;
    a = normalize_ascii(s, n, &dropped, e);
    if (!a)
      return ENC_BAD_UTF8;
    if (dropped) {
      long c = normalize_first_dropped(s, n);
      describe_char(what, sizeof what, c);
      errf(e, "character %s has no ASCII form", c >= 0 ? what : "(unknown)");
      free(a);
      return ENC_SKIP;
    }
  } else {
    a = normalize_nfc(s, n, e);
    if (!a)
      return ENC_BAD_UTF8;
    if (memchr(s, '\0', used)) {
      free(a);
      errf(e, "it holds a NUL character");
      return ENC_SKIP;
    }
  }
  size_t m = strlen(a);
  if (m == 0) {
    size_t stripped = utf8_rstrip(s, n);
    free(a);
    if (stripped == 0)
      return ENC_EMPTY;
    errf(e, "nothing is left after normalization");
    return ENC_SKIP;
  }
  size_t nch = u8_mbsnlen((const uint8_t *)a, m);
  if (nch > NAME_MAX_CHARS) { /* as normalized: ß is ss, ... */
    free(a);
    errf(e, "longer than %d characters", NAME_MAX_CHARS);
    return ENC_SKIP;
  }
  int32_t *ch = xmalloc(nch * sizeof *ch);
  size_t k = 0;
  for (size_t i = 0; i < m; k++) {
    ucs4_t c;
    i += (size_t)u8_mbtouc_unsafe(&c, (const uint8_t *)a + i, m - i);
    ch[k] = (int32_t)c;
    int x = v ? vocab_lookup(v, ch[k]) : 0;
    if (x < 0) {
      describe_char(what, sizeof what, ch[k]);
      /* Name the normalized form when it is not what the file says. */
      size_t orig = utf8_rstrip(s, n);
      if (orig == m && !memcmp(a, s, m))
        errf(e, "character %s is not in the vocabulary", what);
      else
        errf(e, "character %s of its %s form \"%s\" is not in the vocabulary", what,
             vocab_is_ascii(kind) ? "ASCII" : "NFC", a);
      free(ch);
      free(a);
      return ENC_SKIP;
    }
    if (v)
      ch[k] = x;
  }
  *chars = ch;
  *text = a;
  *len = (int32_t)nch;
  return ENC_OK;
}

int name_encode(const char *utf8, size_t n, const Vocab *v, int32_t **chars, char **text,
                Err *e) {
  int32_t *ch = NULL;
  char *a = NULL;
  int32_t len = 0;
  switch (encode(utf8, n, v->kind, v, &ch, &a, &len, e)) {
  case ENC_OK:
    break;
  case ENC_EMPTY:
    return errf(e, "empty name");
  default:
    return -1;
  }
  *chars = ch;
  if (text)
    *text = a;
  else
    free(a);
  return len;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The label names of the *.txt files in dir (stems, malloc'd), in byte
 * order. Hidden files are not data, as for a shell glob. */
static int list_txt(const char *dir, char ***stems, int *nstems, Err *e) {
  struct stat st;
  if (stat(dir, &st)) {
    if (errno == ENOENT)
      return errf(e, "data directory '%s' does not exist", dir);
    return errf(e, "cannot read data directory '%s': %s", dir, strerror(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return errf(e, "'%s' is not a directory (expected a directory of <Language>.txt files)", dir);
  DIR *d = opendir(dir);
  if (!d)
    return errf(e, "cannot open data directory '%s': %s", dir, strerror(errno));
  char **v = NULL;
  size_t n = 0, cap = 0, nentries = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    const char *name = ent->d_name;
    if (name[0] == '.')
      continue;
    nentries++;
    size_t len = strlen(name);
    if (len <= 4 || strcmp(name + len - 4, ".txt"))
      continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 32;
      v = xrealloc(v, cap * sizeof *v);
    }
    if (u8_check((const uint8_t *)name, len)) {
      /* Labels end up in checkpoints' JSON headers. */
      errf(e, "%s/%s: the file name is not valid UTF-8", dir, name);
      closedir(d);
      for (size_t i = 0; i < n; i++)
        free(v[i]);
      free(v);
      return -1;
    }
    v[n++] = xstrndup(name, len - 4);
  }
  closedir(d);
  if (n == 0) {
    free(v);
    if (nentries == 0)
      return errf(e, "data directory '%s' is empty (expected one <Language>.txt per label)", dir);
    return errf(e, "data directory '%s' has no .txt files (expected one <Language>.txt per label)",
                dir);
  }
  if (n > INT_MAX / 2) {
    for (size_t i = 0; i < n; i++)
      free(v[i]);
    free(v);
    return errf(e, "data directory '%s' has too many .txt files", dir);
  }
  qsort(v, n, sizeof *v, cmp_str);
  *stems = v;
  *nstems = (int)n;
  return 0;
}

/* Growable arrays of the data set being built. */
typedef struct Loader {
  Dataset *ds;
  VocabKind kind;     /* how text is normalized */
  const Vocab *vocab; /* NULL: names keep their code points */
  size_t names_cap, skipped_cap;
} Loader;

static void add_name(Loader *ld, int32_t *chars, int32_t len, int label, char *ascii) {
  Dataset *ds = ld->ds;
  if (ds->nnames == ld->names_cap) {
    ld->names_cap = ld->names_cap ? 2 * ld->names_cap : 1024;
    ds->names = xrealloc(ds->names, ld->names_cap * sizeof *ds->names);
  }
  ds->names[ds->nnames++] = (Name){.chars = chars, .len = len, .label = label, .text = ascii};
  ds->per_label[label]++;
}

static void add_skipped(Loader *ld, const char *path, size_t line, const char *s, size_t n,
                        const char *why) {
  Dataset *ds = ld->ds;
  if (ds->nskipped == ld->skipped_cap) {
    ld->skipped_cap = ld->skipped_cap ? 2 * ld->skipped_cap : 16;
    ds->skipped = xrealloc(ds->skipped, ld->skipped_cap * sizeof *ds->skipped);
  }
  ds->skipped[ds->nskipped++] = (Skipped){.file = xstrdup(path),
                                          .line = line > INT_MAX ? INT_MAX : (int)line,
                                          .text = shown_text(s, utf8_rstrip(s, n), 80),
                                          .reason = xstrdup(why)};
}

/* One line of a data file. */
static int load_line(Loader *ld, const char *path, size_t line, int label, const char *p, size_t n,
                     bool whole, Err *e) {
  int32_t *chars;
  char *ascii;
  int32_t len;
  Err why;
  if (!whole) { /* the first DATA_LINE_MAX bytes: often reason enough */
    bool many = u8_mbsnlen((const uint8_t *)p, n) > NAME_MAX_CHARS;
    add_skipped(ld, path, line, p, n,
                many ? "longer than " NAME_MAX_CHARS_STR " characters"
                     : "line longer than " DATA_LINE_MAX_STR " bytes");
    return 0;
  }
  switch (encode(p, n, ld->kind, ld->vocab, &chars, &ascii, &len, &why)) {
  case ENC_OK:
    add_name(ld, chars, len, label, ascii);
    return 0;
  case ENC_EMPTY:
    ld->ds->nempty++;
    return 0;
  case ENC_SKIP:
    add_skipped(ld, path, line, p, n, why.msg);
    return 0;
  default:
    return errf(e, "%s:%zu: %s", path, line, why.msg);
  }
}

/* Reads one <Label>.txt a chunk at a time: one name a line; '\n' ends a
 * line, and the '\r' of a CRLF file goes with the trailing whitespace. A
 * line longer than DATA_LINE_MAX bytes is skipped without keeping it, so memory
 * does not grow with the file (a gigabyte with no newline included). */
static int load_file(Loader *ld, const char *path, int label, Err *e) {
  int fd = open_regular(path, e);
  if (fd < 0)
    return -1;
  char *chunk = xmalloc(65536);
  Buf cur = {0}; /* the line so far, at most DATA_LINE_MAX bytes */
  buf_put(&cur, "", 1); /* never NULL, even for an empty line */
  cur.len = 0;
  bool whole = true; /* cur is all of the line */
  size_t line = 0;
  int rc = 0;
  for (;;) {
    ssize_t n = read(fd, chunk, 65536);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = errf(e, "%s: cannot read it: %s", path, strerror(errno));
      break;
    }
    if (n == 0) { /* a last line without '\n' */
      if (cur.len || !whole)
        rc = load_line(ld, path, ++line, label, cur.data, cur.len, whole, e);
      break;
    }
    for (const char *p = chunk, *end = chunk + n; p < end && rc == 0;) {
      const char *nl = memchr(p, '\n', (size_t)(end - p));
      size_t k = nl ? (size_t)(nl - p) : (size_t)(end - p);
      size_t room = DATA_LINE_MAX - cur.len;
      if (k > room)
        whole = false;
      buf_put(&cur, p, k < room ? k : room);
      p += k;
      if (!nl)
        break;
      p++;
      rc = load_line(ld, path, ++line, label, cur.data, cur.len, whole, e);
      cur.len = 0;
      whole = true;
    }
    if (rc)
      break;
  }
  close(fd);
  buf_free(&cur);
  free(chunk);
  return rc;
}

int data_check_labels(char *const *labels, int n, Err *e) {
  for (int i = 0; i < n; i++)
    if (!labels[i][0])
      return errf(e, "label %d of %d is empty", i + 1, n);
  if (n < 2)
    return 0;
  char **sorted = xmalloc((size_t)n * sizeof *sorted);
  memcpy(sorted, labels, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
  int rc = 0;
  for (int i = 1; i < n && !rc; i++)
    if (!strcmp(sorted[i], sorted[i - 1])) {
      char *shown = shown_text(sorted[i], strlen(sorted[i]), 40);
      rc = errf(e, "\"%s\" names two classes", shown);
      free(shown);
    }
  free(sorted);
  return rc;
}

/* The label list of a checkpoint, as ds's labels. */
static int set_labels(Dataset *ds, char *const *labels, int nlabels, Err *e) {
  if (nlabels <= 0)
    return errf(e, "empty label list");
  ds->labels = xcalloc((size_t)nlabels, sizeof *ds->labels);
  ds->nlabels = nlabels;
  for (int i = 0; i < nlabels; i++) {
    for (int j = 0; j < i; j++)
      if (!strcmp(labels[i], labels[j]))
        return errf(e, "label '%s' appears twice in the label list", labels[i]);
    ds->labels[i] = xstrdup(labels[i]);
  }
  return 0;
}

/* The index of label s in ds's labels, or -1 with a message naming where
 * it comes from (where: "path/Label.txt" or "path:line:col"). */
static int label_index(const Dataset *ds, const char *s, const char *where, Err *e) {
  for (int j = 0; j < ds->nlabels; j++)
    if (!strcmp(s, ds->labels[j]))
      return j;
  Buf list = {0};
  for (int j = 0; j < ds->nlabels && list.len < 400; j++) {
    char *shown = shown_text(ds->labels[j], strlen(ds->labels[j]), 64);
    buf_printf(&list, "%s%s", j ? ", " : "", shown);
    free(shown);
  }
  char *shown = shown_text(s, strlen(s), 80);
  errf(e, "%s: '%s' is not one of the %d labels (%s%s)", where, shown, ds->nlabels, list.data,
       list.len >= 400 ? ", ..." : "");
  free(shown);
  buf_free(&list);
  return -1;
}

/* A directory of <Label>.txt files. */
static int load_dir(Loader *ld, const char *dir, char *const *labels, int nlabels, Err *e) {
  Dataset *ds = ld->ds;
  char **stems = NULL;
  int nstems = 0;
  if (list_txt(dir, &stems, &nstems, e))
    return -1;
  int *label_of = xmalloc((size_t)nstems * sizeof *label_of); /* (nstems) */
  int rc = -1;
  if (!labels) {
    ds->labels = stems; /* the data set takes the stems */
    ds->nlabels = nstems;
    stems = NULL;
    for (int i = 0; i < nstems; i++)
      label_of[i] = i;
  } else {
    if (set_labels(ds, labels, nlabels, e))
      goto out;
    for (int i = 0; i < nstems; i++) {
      char *where = xasprintf("%s/%s.txt", dir, stems[i]);
      label_of[i] = label_index(ds, stems[i], where, e);
      free(where);
      if (label_of[i] < 0)
        goto out;
    }
  }
  ds->per_label = xcalloc((size_t)ds->nlabels, sizeof *ds->per_label);
  for (int i = 0; i < nstems; i++) {
    const char *stem = stems ? stems[i] : ds->labels[i];
    char *path = xasprintf("%s/%s.txt", dir, stem);
    struct stat st;
    int bad;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
      bad = errf(e, "%s is not a regular file", path);
    else
      bad = load_file(ld, path, label_of[i], e);
    free(path);
    if (bad)
      goto out;
  }
  rc = 0;
out:
  if (stems) {
    for (int i = 0; i < nstems; i++)
      free(stems[i]);
    free(stems);
  }
  free(label_of);
  return rc;
}

/* One record of a table: its text and label (malloc'd, unquoted), and
 * where each starts. */
typedef struct Record {
  char *text, *label;
  size_t tlen, llen;
  size_t line, lcol; /* the record's first line; the label's line and column */
  size_t lline;
} Record;

/* A table being read: the text, where the reader is (line and column in
 * characters, 1-based), and the records so far. */
typedef struct Table {
  const char *path, *p, *end;
  size_t line, col;
  Record *recs;
  size_t n, cap;
  size_t nempty;
} Table;

static int advance(Table *t) {
  unsigned char c = (unsigned char)*t->p++;
  if (c == '\n')
    t->line++, t->col = 1;
  else if ((c & 0xC0) != 0x80)
    t->col++;
  return c;
}

static int table_error(Table *t, size_t line, size_t col, Err *e, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int table_error(Table *t, size_t line, size_t col, Err *e, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return errf(e, "%s:%zu:%zu: %s", t->path, line, col, msg);
}

static void add_record(Table *t, Buf *f0, Buf *f1, size_t line, size_t lline, size_t lcol) {
  if (t->n == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 1024;
    t->recs = xrealloc(t->recs, t->cap * sizeof *t->recs);
  }
  buf_put(f0, "", 1);
  buf_put(f1, "", 1);
  t->recs[t->n++] = (Record){.text = xmemdup0(f0->data, f0->len - 1), .tlen = f0->len - 1,
                             .label = xmemdup0(f1->data, f1->len - 1), .llen = f1->len - 1,
                             .line = line, .lline = lline, .lcol = lcol};
}

/* The ASCII character c for a message. */
static const char *shown_char(int c, char buf[16]) {
  if (c >= 0x21 && c < 0x7F)
    snprintf(buf, 16, "'%c'", c);
  else if (c == ' ')
    snprintf(buf, 16, "a space");
  else
    snprintf(buf, 16, "byte 0x%02X", c);
  return buf;
}

/* TSV: a record a line, text<TAB>label; '\r' before '\n' is dropped, and
 * lines of nothing but whitespace are counted empty. */
static int parse_tsv(Table *t, Err *e) {
  Buf f[2] = {{0}, {0}};
  int rc = 0;
  while (t->p < t->end && rc == 0) {
    const char *nl = memchr(t->p, '\n', (size_t)(t->end - t->p));
    const char *eol = nl ? nl : t->end;
    size_t n = (size_t)(eol - t->p);
    if (n && t->p[n - 1] == '\r')
      n--;
    size_t line = t->line;
    if (utf8_rstrip(t->p, n) == 0 && !memchr(t->p, '\t', n)) {
      t->nempty++;
    } else {
      const char *tab = memchr(t->p, '\t', n);
      if (!tab) {
        rc = table_error(t, line, 1, e, "no tab: a line is text<TAB>label");
        break;
      }
      const char *lab = tab + 1, *stop = t->p + n;
      const char *tab2 = memchr(lab, '\t', (size_t)(stop - lab));
      size_t tcol = 1 + u8_mbsnlen((const uint8_t *)t->p, (size_t)(tab - t->p));
      if (tab2) {
        size_t col = tcol + 1 + u8_mbsnlen((const uint8_t *)lab, (size_t)(tab2 - lab));
        rc = table_error(t, line, col, e, "a second tab: a line is text<TAB>label");
        break;
      }
      f[0].len = f[1].len = 0;
      buf_put(&f[0], t->p, (size_t)(tab - t->p));
      buf_put(&f[1], lab, (size_t)(stop - lab));
      add_record(t, &f[0], &f[1], line, line, tcol + 1);
    }
    t->p = nl ? nl + 1 : t->end;
    t->line++;
  }
  buf_free(&f[0]);
  buf_free(&f[1]);
  return rc;
}

/* CSV as RFC 4180 has it: records of two fields, text,label, separated by
 * commas and ended by a line break (LF or CRLF; the last may have none). A
 * field in double quotes may hold commas, line breaks and quotes (doubled:
 * ""); a quote anywhere else is an error, as are text after a closing
 * quote and a record of another number of fields. Empty lines are counted
 * empty. */
static int parse_csv(Table *t, Err *e) {
  Buf f[2] = {{0}, {0}};
  char cb[16];
  int rc = 0;
  while (t->p < t->end && rc == 0) {
    size_t line = t->line, lline = 0, lcol = 0;
    if (*t->p == '\n' || (*t->p == '\r' && t->p + 1 < t->end && t->p[1] == '\n')) {
      if (*t->p == '\r')
        advance(t);
      advance(t);
      t->nempty++;
      continue;
    }
    int nf = 0;
    for (;;) { /* one field a pass */
      Buf *b = &f[nf < 2 ? nf : 1];
      if (nf < 2)
        b->len = 0;
      if (nf == 1)
        lline = t->line, lcol = t->col;
      nf++;
      if (t->p < t->end && *t->p == '"') {
        size_t ql = t->line, qc = t->col;
        advance(t);
        for (;;) {
          if (t->p >= t->end) {
            rc = table_error(t, ql, qc, e, "this quoted field has no closing quote");
            goto done;
          }
          if (*t->p == '"') {
            if (t->p + 1 < t->end && t->p[1] == '"') {
              buf_put(b, "\"", 1);
              advance(t), advance(t);
              continue;
            }
            advance(t);
            break;
          }
          buf_put(b, t->p, 1);
          advance(t);
        }
        if (t->p < t->end && *t->p != ',' && *t->p != '\n' &&
            !(*t->p == '\r' && t->p + 1 < t->end && t->p[1] == '\n')) {
          rc = table_error(t, t->line, t->col, e,
                           "%s after a closing quote (expected ',' or the end of the line)",
                           shown_char((unsigned char)*t->p, cb));
          goto done;
        }
      } else {
        while (t->p < t->end && *t->p != ',' && *t->p != '\n' &&
               !(*t->p == '\r' && t->p + 1 < t->end && t->p[1] == '\n')) {
          if (*t->p == '"') {
            rc = table_error(t, t->line, t->col, e,
                             "a quote inside an unquoted field (quote the whole field, and "
                             "double the quotes in it: \"\")");
            goto done;
          }
          buf_put(b, t->p, 1);
          advance(t);
        }
      }
      if (t->p < t->end && *t->p == ',') {
        advance(t);
        continue;
      }
      break; /* the end of the record */
    }
    if (nf != 2) {
      rc = table_error(t, line, 1, e, "%d field%s: a record is text,label", nf,
                       nf == 1 ? "" : "s");
      goto done;
    }
    add_record(t, &f[0], &f[1], line, lline, lcol);
    if (t->p < t->end && *t->p == '\r')
      advance(t);
    if (t->p < t->end)
      advance(t); /* the '\n' */
  }
done:
  buf_free(&f[0]);
  buf_free(&f[1]);
  return rc;
}

/* Whether a data file (path, its text) is read as CSV (else TSV). */
static bool is_csv(const char *path, const char *text, size_t len) {
  size_t n = strlen(path);
  if (n >= 4 && !strcasecmp(path + n - 4, ".csv"))
    return true;
  if (n >= 4 && !strcasecmp(path + n - 4, ".tsv"))
    return false;
  const char *nl = memchr(text, '\n', len);
  return !memchr(text, '\t', nl ? (size_t)(nl - text) : len);
}

/* A TSV or CSV file of text and label records. */
static int load_table(Loader *ld, const char *path, char *const *labels, int nlabels, Err *e) {
  Dataset *ds = ld->ds;
  size_t len;
  char *text = read_file_max(path, DATA_FILE_MAX, "a data file", &len, e);
  if (!text)
    return -1;
  size_t skip = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0; /* a BOM */
  Table t = {.path = path, .p = text + skip, .end = text + len, .line = 1, .col = 1};
  bool csv = is_csv(path, text + skip, len - skip);
  int rc = csv ? parse_csv(&t, e) : parse_tsv(&t, e);
  ds->nempty = t.nempty;
  /* Labels: UTF-8 and not empty; the data's in byte order, or the list's. */
  for (size_t i = 0; i < t.n && rc == 0; i++) {
    Record *r = &t.recs[i];
    const uint8_t *bad = u8_check((const uint8_t *)r->label, r->llen);
    if (bad)
      rc = table_error(&t, r->lline, r->lcol + u8_mbsnlen((const uint8_t *)r->label,
                                                          (size_t)(bad - (uint8_t *)r->label)),
                       e, "the label is not valid UTF-8 (byte 0x%02X)", *bad);
    else if (r->llen == 0 || strlen(r->label) != r->llen)
      rc = table_error(&t, r->lline, r->lcol, e, "%s label", r->llen ? "a NUL in the" : "an empty");
  }
  if (rc == 0 && t.n == 0)
    rc = errf(e, "%s: no records (expected lines of text%slabel)", path, csv ? "," : "<TAB>");
  if (rc == 0 && !labels) {
    char **all = xmalloc(t.n * sizeof *all);
    for (size_t i = 0; i < t.n; i++)
      all[i] = t.recs[i].label;
    qsort(all, t.n, sizeof *all, cmp_str);
    ds->labels = xmalloc(t.n * sizeof *ds->labels);
    for (size_t i = 0; i < t.n; i++)
      if (i == 0 || strcmp(all[i], all[i - 1]))
        ds->labels[ds->nlabels++] = xstrdup(all[i]);
    free(all);
    if (ds->nlabels > DATA_MAX_LABELS)
      rc = errf(e, "%s: %d labels (at most %d)", path, ds->nlabels, DATA_MAX_LABELS);
  } else if (rc == 0) {
    rc = set_labels(ds, labels, nlabels, e);
  }
  if (rc == 0)
    ds->per_label = xcalloc((size_t)ds->nlabels, sizeof *ds->per_label);
  for (size_t i = 0; i < t.n && rc == 0; i++) {
    Record *r = &t.recs[i];
    char *where = xasprintf("%s:%zu:%zu", path, r->lline, r->lcol);
    int l = label_index(ds, r->label, where, e);
    free(where);
    rc = l < 0 ? -1 : load_line(ld, path, r->line, l, r->text, r->tlen, true, e);
  }
  for (size_t i = 0; i < t.n; i++) {
    free(t.recs[i].text);
    free(t.recs[i].label);
  }
  free(t.recs);
  free(text);
  return rc;
}

int data_load(Dataset *ds, const char *path, char *const *labels, int nlabels, VocabKind kind,
              const Vocab *vocab, Err *e) {
  *ds = (Dataset){0};
  Vocab names = {0};
  if (!vocab && kind == VOCAB_NAMES) {
    vocab_names(&names);
    vocab = &names;
  }
  Loader ld = {.ds = ds, .kind = vocab ? vocab->kind : kind, .vocab = vocab};
  struct stat st;
  int rc = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? load_table(&ld, path, labels, nlabels, e)
                                                        : load_dir(&ld, path, labels, nlabels, e);
  if (rc == 0 && ds->nnames == 0)
    rc = errf(e, "no usable names in '%s' (%zu skipped, %zu empty lines)", path, ds->nskipped,
              ds->nempty);
  if (rc == 0 && ds->nnames > UINT32_MAX)
    rc = errf(e, "too many names in '%s' (%zu)", path, ds->nnames);
  ds->encoded = vocab != NULL;
  vocab_free(&names);
  if (rc)
    data_free(ds);
  return rc;
}

VocabKind data_default_kind(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? VOCAB_UNICODE : VOCAB_NAMES;
}

void data_encode(Dataset *ds, const Vocab *v) {
  assert(!ds->encoded && v->unknown >= 0 && "code points, and a vocabulary that takes any");
  for (size_t i = 0; i < ds->nnames; i++)
    for (int32_t t = 0; t < ds->names[i].len; t++)
      ds->names[i].chars[t] = vocab_lookup(v, ds->names[i].chars[t]);
  ds->encoded = true;
}

void data_build_vocab(const Dataset *ds, VocabKind kind, Vocab *v) {
  const int32_t **seqs = xmalloc((ds->ntrain + 1) * sizeof *seqs);
  int32_t *lens = xmalloc((ds->ntrain + 1) * sizeof *lens);
  for (size_t i = 0; i < ds->ntrain; i++) {
    seqs[i] = ds->names[ds->train[i]].chars;
    lens[i] = ds->names[ds->train[i]].len;
  }
  vocab_build(v, kind, seqs, lens, ds->ntrain);
  free(seqs);
  free(lens);
}

int data_split(Dataset *ds, double test_fraction, uint64_t seed, Err *e) {
  double f = test_fraction;
  if (!(f >= 0 && f < 1))
    return errf(e, "the test fraction must be in [0, 1), not %g", f);
  if (ds->nnames > UINT32_MAX)
    return errf(e, "too many names to split (%zu)", ds->nnames);
  free(ds->train);
  free(ds->test);
  ds->train = ds->test = NULL;
  ds->ntrain = ds->ntest = 0;

  /* How many names of each label go to test: floor(f * count) each, then
   * one more, by largest remainder, to as many labels as it takes to reach
   * ceil(f * N) in all. So every label is within one name of f * count.
   * Doubles here are exact IEEE products and floors: the same everywhere. */
  int L = ds->nlabels;
  size_t total = (size_t)ceil(f * (double)ds->nnames);
  size_t *want = xcalloc((size_t)L, sizeof *want); /* (L) test names per label */
  double *rem = xcalloc((size_t)L, sizeof *rem);  /* (L) f * count - want */
  size_t assigned = 0;
  for (int l = 0; l < L; l++) {
    double x = f * (double)ds->per_label[l];
    want[l] = (size_t)floor(x);
    if (want[l] > ds->per_label[l])
      want[l] = ds->per_label[l];
    rem[l] = x - (double)want[l];
    assigned += want[l];
  }
  while (assigned < total) { /* ties go to the lower label */
    int best = -1;
    for (int l = 0; l < L; l++)
      if (want[l] < ds->per_label[l] && (best < 0 || rem[l] > rem[best]))
        best = l;
    assert(best >= 0 && "ceil(f * N) <= N, so some label has a name left");
    want[best]++;
    rem[best] -= 1.0;
    assigned++;
  }
  while (assigned > total) { /* only if rounding made a floor too big */
    int best = -1;
    for (int l = 0; l < L; l++)
      if (want[l] > 0 && (best < 0 || rem[l] < rem[best]))
        best = l;
    assert(best >= 0 && "assigned > 0, so some label has a test name");
    want[best]--;
    rem[best] += 1.0;
    assigned--;
  }

  /* Shuffle each label's names (in label order, one stream), take the first
   * want[l] for test, then shuffle train and test so neither is grouped by
   * label. */
  Rng rng;
  rng_seed(&rng, seed);
  uint32_t *idx = xmalloc(ds->nnames * sizeof *idx);
  ds->train = xmalloc(ds->nnames * sizeof *ds->train);
  ds->test = xmalloc((total ? total : 1) * sizeof *ds->test);
  for (int l = 0; l < L; l++) {
    size_t n = 0;
    for (size_t i = 0; i < ds->nnames; i++)
      if (ds->names[i].label == l)
        idx[n++] = (uint32_t)i;
    rng_shuffle_u32(&rng, idx, n);
    memcpy(ds->test + ds->ntest, idx, want[l] * sizeof *idx);
    ds->ntest += want[l];
    memcpy(ds->train + ds->ntrain, idx + want[l], (n - want[l]) * sizeof *idx);
    ds->ntrain += n - want[l];
  }
  assert(ds->ntest == total && ds->ntrain + ds->ntest == ds->nnames);
  rng_shuffle_u32(&rng, ds->train, ds->ntrain);
  rng_shuffle_u32(&rng, ds->test, ds->ntest);
  free(idx);
  free(want);
  free(rem);
  return 0;
}

void data_free(Dataset *ds) {
  for (int l = 0; l < ds->nlabels; l++)
    free(ds->labels[l]);
  free(ds->labels);
  free(ds->per_label);
  for (size_t i = 0; i < ds->nnames; i++) {
    free(ds->names[i].chars);
    free((char *)ds->names[i].text);
  }
  free(ds->names);
  for (size_t i = 0; i < ds->nskipped; i++) {
    free(ds->skipped[i].file);
    free(ds->skipped[i].text);
    free(ds->skipped[i].reason);
  }
  free(ds->skipped);
  free(ds->train);
  free(ds->test);
  *ds = (Dataset){0};
}

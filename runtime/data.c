/* data.c: the names data set: one <Label>.txt per label, one UTF-8 name a
 * line, each name kept as its vocabulary indices; and the seeded,
 * stratified train/test split. */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unistr.h>

#include "runtime.h"

/* Lines longer than this are skipped unread: a name of NAME_MAX_CHARS
 * characters is at most 4 * NAME_MAX_CHARS bytes, and this leaves room
 * for trailing whitespace. */
enum { DATA_LINE_MAX = 65536 };
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

/* Normalizes one line and maps it to vocabulary indices. ENC_OK: *chars,
 * *ascii and *len are set. ENC_SKIP: why in e. ENC_BAD_UTF8: the message
 * in e. ENC_EMPTY: nothing but whitespace. */
static int encode(const char *s, size_t n, uint8_t **chars, char **ascii, int32_t *len, Err *e) {
  /* Too long as written (valid UTF-8 only: invalid is an error below). A
   * character is at most 4 bytes, so more than 4 * NAME_MAX_CHARS bytes
   * are too many without counting. */
  size_t used = utf8_rstrip(s, n);
  if (!u8_check((const uint8_t *)s, n) &&
      (used > 4 * NAME_MAX_CHARS || u8_mbsnlen((const uint8_t *)s, used) > NAME_MAX_CHARS)) {
    errf(e, "longer than %d characters", NAME_MAX_CHARS);
    return ENC_SKIP;
  }
  size_t dropped = 0;
  char *a = normalize_ascii(s, n, &dropped, e);
  if (!a)
    return ENC_BAD_UTF8;
  char what[64];
  if (dropped) {
    long c = normalize_first_dropped(s, n);
    describe_char(what, sizeof what, c);
    errf(e, "character %s has no ASCII form", c >= 0 ? what : "(unknown)");
    free(a);
    return ENC_SKIP;
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
  if (m > NAME_MAX_CHARS) { /* as its ASCII form: ß is ss, ... */
    free(a);
    errf(e, "longer than %d characters", NAME_MAX_CHARS);
    return ENC_SKIP;
  }
  uint8_t *ch = xmalloc(m);
  for (size_t i = 0; i < m; i++) {
    int v = vocab_index((unsigned char)a[i]);
    if (v < 0) {
      describe_char(what, sizeof what, (unsigned char)a[i]);
      /* Name the ASCII form when it is not what the file says. */
      size_t orig = utf8_rstrip(s, n);
      if (orig == m && !memcmp(a, s, m))
        errf(e, "character %s is not in the vocabulary", what);
      else
        errf(e, "character %s of its ASCII form \"%s\" is not in the vocabulary", what, a);
      free(ch);
      free(a);
      return ENC_SKIP;
    }
    ch[i] = (uint8_t)v;
  }
  *chars = ch;
  *ascii = a;
  *len = (int32_t)m;
  return ENC_OK;
}

int name_encode(const char *utf8, size_t n, uint8_t **chars, char **ascii, Err *e) {
  uint8_t *ch = NULL;
  char *a = NULL;
  int32_t len = 0;
  switch (encode(utf8, n, &ch, &a, &len, e)) {
  case ENC_OK:
    break;
  case ENC_EMPTY:
    return errf(e, "empty name");
  default:
    return -1;
  }
  *chars = ch;
  if (ascii)
    *ascii = a;
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
  size_t names_cap, skipped_cap;
} Loader;

static void add_name(Loader *ld, uint8_t *chars, int32_t len, int label, char *ascii) {
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
  uint8_t *chars;
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
  switch (encode(p, n, &chars, &ascii, &len, &why)) {
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

int data_load(Dataset *ds, const char *dir, char *const *labels, int nlabels, Err *e) {
  *ds = (Dataset){0};
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
    if (nlabels <= 0) {
      errf(e, "empty label list");
      goto out;
    }
    ds->labels = xcalloc((size_t)nlabels, sizeof *ds->labels);
    ds->nlabels = nlabels;
    for (int i = 0; i < nlabels; i++) {
      for (int j = 0; j < i; j++)
        if (!strcmp(labels[i], labels[j])) {
          errf(e, "label '%s' appears twice in the label list", labels[i]);
          goto out;
        }
      ds->labels[i] = xstrdup(labels[i]);
    }
    for (int i = 0; i < nstems; i++) {
      label_of[i] = -1;
      for (int j = 0; j < nlabels && label_of[i] < 0; j++)
        if (!strcmp(stems[i], labels[j]))
          label_of[i] = j;
      if (label_of[i] < 0) {
        Buf list = {0};
        for (int j = 0; j < nlabels; j++)
          buf_printf(&list, "%s%s", j ? ", " : "", labels[j]);
        errf(e, "%s/%s.txt: '%s' is not one of the %d labels (%s)", dir, stems[i], stems[i],
             nlabels, list.data);
        buf_free(&list);
        goto out;
      }
    }
  }
  ds->per_label = xcalloc((size_t)ds->nlabels, sizeof *ds->per_label);

  Loader ld = {.ds = ds};
  for (int i = 0; i < nstems; i++) {
    const char *stem = stems ? stems[i] : ds->labels[i];
    char *path = xasprintf("%s/%s.txt", dir, stem);
    struct stat st;
    int bad;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
      bad = errf(e, "%s is not a regular file", path);
    else
      bad = load_file(&ld, path, label_of[i], e);
    free(path);
    if (bad)
      goto out;
  }
  if (ds->nnames == 0) {
    errf(e, "no usable names in '%s' (%zu skipped, %zu empty lines)", dir, ds->nskipped,
         ds->nempty);
    goto out;
  }
  if (ds->nnames > UINT32_MAX) {
    errf(e, "too many names in '%s' (%zu)", dir, ds->nnames);
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
  if (rc)
    data_free(ds);
  return rc;
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

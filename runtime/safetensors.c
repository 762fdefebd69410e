/* safetensors.c: safetensors checkpoints, float32 only (see safetensors.h).
 *
 * Reading: the header length and header are read first and validated in
 * full (JSON, every entry, then the byte ranges tiling the data section)
 * before a single data byte is touched; st_load then reads the data section
 * with one pread into one malloc'd block. Since the ranges tile the section
 * from 0 and each holds a whole number of floats, every tensor starts at a
 * multiple of 4 in that block: its data is aligned wherever the data
 * section sits in the file (8 + N is often not a multiple of 4). st_open
 * keeps the file open instead, and st_read reads one tensor's bytes, with
 * one pread, wherever its caller wants them.
 *
 * Writing: header built with jansson (which escapes strings and checks
 * UTF-8), padded with spaces to a multiple of 8, staged with the data
 * (files.h: a temporary in the target's directory, fsync'd), renamed over
 * the target. */
#include "safetensors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian and is copied as is");
_Static_assert(sizeof(float) == 4, "F32 is 4 bytes");

#define META_KEY "__metadata__"

/* ------------------------------------------------------------- helpers */

/* s made fit for an error message: at most 64 bytes (cut at a UTF-8
 * character boundary), control characters shown as '?'. */
static const char *shown(char buf[80], const char *s) {
  size_t n = strlen(s);
  size_t cut = n > 64 ? 64 : n;
  while (cut < n && cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
    cut--;
  for (size_t i = 0; i < cut; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  strcpy(buf + cut, cut < n ? "..." : "");
  return buf;
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a real number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "an unknown JSON value";
}

/* Formats a shape as "[2, 3]" into buf. */
static const char *shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
  size_t len = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "",
                            (long long)shape[i]);
  if (len < cap)
    snprintf(buf + len, cap - len, "]");
  return buf;
}

/* Product of shape, or -1 when it (or its size in bytes) overflows. */
static int shape_nelem(const int64_t *shape, int ndim, size_t *nelem) {
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX)
      return -1;
    if (__builtin_mul_overflow(n, (size_t)shape[i], &n))
      return -1;
  }
  size_t bytes;
  if (__builtin_mul_overflow(n, sizeof(float), &bytes) || bytes > (size_t)INT64_MAX)
    return -1;
  *nelem = n;
  return 0;
}

/* ------------------------------------------------------------- reading */

/* Reads n bytes at off. Returns 0, or -1 with errno set (0 when the file
 * ended first). */
static int read_at(int fd, void *p, size_t n, off_t off) {
  char *c = p;
  while (n > 0) {
    ssize_t r = pread(fd, c, n, off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = 0;
      return -1;
    }
    c += r;
    n -= (size_t)r;
    off += r;
  }
  return 0;
}

/* A tensor's byte range in the data section. */
typedef struct Span {
  size_t begin, end;
  int tensor;
} Span;

static int span_cmp(const void *a, const void *b) {
  const Span *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return 0;
}

/* Validates one header entry (name -> v) into t and *span; data_len is the
 * size of the data section. */
static int parse_entry(StTensor *t, Span *span, const char *path, const char *name,
                       json_t *v, size_t data_len, Err *e) {
  char nb[80], sb[256];
  const char *nm = shown(nb, name);
  if (!json_is_object(v))
    return errf(e, "%s: tensor '%s': entry is %s, not an object", path, nm, json_kind(v));

  json_t *dtype = json_object_get(v, "dtype");
  if (!dtype)
    return errf(e, "%s: tensor '%s': no \"dtype\"", path, nm);
  if (!json_is_string(dtype))
    return errf(e, "%s: tensor '%s': \"dtype\" is %s, not a string", path, nm,
                json_kind(dtype));
  t->i32 = strcmp(json_string_value(dtype), "I32") == 0;
  if (strcmp(json_string_value(dtype), "F32") != 0 && !t->i32) {
    char db[80];
    return errf(e,
                "%s: tensor '%s': dtype is %s, but rnnc reads only F32 (float32) "
                "and I32 tensors; convert the checkpoint with tensor.float()",
                path, nm, shown(db, json_string_value(dtype)));
  }

  json_t *shape = json_object_get(v, "shape");
  if (!shape)
    return errf(e, "%s: tensor '%s': no \"shape\"", path, nm);
  if (!json_is_array(shape))
    return errf(e, "%s: tensor '%s': \"shape\" is %s, not an array of dimensions", path,
                nm, json_kind(shape));
  size_t rank = json_array_size(shape);
  if (rank > ST_MAX_DIMS)
    return errf(e, "%s: tensor '%s': shape has %zu dimensions; at most %d are supported",
                path, nm, rank, ST_MAX_DIMS);
  t->ndim = (int)rank;
  for (size_t i = 0; i < rank; i++) {
    json_t *d = json_array_get(shape, i);
    if (!json_is_integer(d))
      return errf(e, "%s: tensor '%s': shape[%zu] is %s, not a non-negative integer",
                  path, nm, i, json_kind(d));
    if (json_integer_value(d) < 0)
      return errf(e, "%s: tensor '%s': shape[%zu] is %lld, not a non-negative integer",
                  path, nm, i, (long long)json_integer_value(d));
    t->shape[i] = json_integer_value(d);
  }
  if (shape_nelem(t->shape, t->ndim, &t->nelem) < 0)
    return errf(e, "%s: tensor '%s': shape %s has too many elements (the count overflows)",
                path, nm, shape_str(sb, sizeof sb, t->shape, t->ndim));

  json_t *offs = json_object_get(v, "data_offsets");
  if (!offs)
    return errf(e, "%s: tensor '%s': no \"data_offsets\"", path, nm);
  json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
  if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(b) ||
      !json_is_integer(en))
    return errf(e, "%s: tensor '%s': \"data_offsets\" is not two integers [begin, end]",
                path, nm);
  long long begin = json_integer_value(b), end = json_integer_value(en);
  if (begin < 0 || end < 0)
    return errf(e, "%s: tensor '%s': data_offsets [%lld, %lld] are negative", path, nm,
                begin, end);
  if (begin > end)
    return errf(e, "%s: tensor '%s': data_offsets [%lld, %lld]: begin is after end", path,
                nm, begin, end);
  if ((unsigned long long)end > data_len)
    return errf(e,
                "%s: tensor '%s': data_offsets [%lld, %lld]: end is beyond the data "
                "section (%zu bytes); is the file truncated?",
                path, nm, begin, end, data_len);
  if ((size_t)(end - begin) != t->nelem * sizeof(float))
    return errf(e,
                "%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes, but %s shape "
                "%s needs %zu",
                path, nm, begin, end, end - begin, t->i32 ? "I32" : "F32",
                shape_str(sb, sizeof sb, t->shape, t->ndim), t->nelem * sizeof(float));
  span->begin = (size_t)begin;
  span->end = (size_t)end;
  return 0;
}

static int parse_meta(StFile *f, const char *path, json_t *meta, Err *e) {
  if (!json_is_object(meta))
    return errf(e, "%s: " META_KEY " is %s, not an object of strings", path,
                json_kind(meta));
  size_t n = json_object_size(meta);
  f->meta_keys = xcalloc(n, sizeof *f->meta_keys);
  f->meta_vals = xcalloc(n, sizeof *f->meta_vals);
  const char *key;
  json_t *v;
  json_object_foreach(meta, key, v) {
    if (!json_is_string(v)) {
      char kb[80];
      return errf(e, "%s: " META_KEY " '%s' is %s, not a string", path, shown(kb, key),
                  json_kind(v));
    }
    f->meta_keys[f->nmeta] = xstrdup(key);
    f->meta_vals[f->nmeta] = xstrdup(json_string_value(v));
    f->nmeta++;
  }
  return 0;
}

/* Checks that spans (sorted) tile [0, data_len): no gap, no overlap, nothing
 * after the last tensor. */
static int check_tiling(const StFile *f, const Span *sp, int n, size_t data_len,
                        const char *path, Err *e) {
  char ab[80], bb[80];
  size_t at = 0;
  for (int i = 0; i < n; i++) {
    const char *nm = shown(ab, f->tensors[sp[i].tensor].name);
    if (sp[i].begin > at)
      return errf(e,
                  "%s: tensor '%s': bytes %zu..%zu of the data section before it belong "
                  "to no tensor",
                  path, nm, at, sp[i].begin);
    if (sp[i].begin < at)
      return errf(e, "%s: tensor '%s' (bytes %zu..%zu) overlaps tensor '%s' (bytes %zu..%zu)",
                  path, nm, sp[i].begin, sp[i].end,
                  shown(bb, f->tensors[sp[i - 1].tensor].name), sp[i - 1].begin,
                  sp[i - 1].end);
    at = sp[i].end;
  }
  if (at != data_len)
    return errf(e,
                "%s: the data section has %zu bytes, but the tensors end at byte %zu "
                "(trailing bytes)",
                path, data_len, at);
  return 0;
}

/* Validates the parsed header into f; spans receive the byte ranges. */
static int parse_header(StFile *f, Span **spans, json_t *root, size_t data_len,
                        const char *path, Err *e) {
  json_t *meta = json_object_get(root, META_KEY);
  if (meta && parse_meta(f, path, meta, e) < 0)
    return -1;
  size_t n = json_object_size(root) - (meta != NULL);
  /* The header is at most ST_MAX_HEADER bytes, so n fits an int. */
  assert(n <= ST_MAX_HEADER);
  f->tensors = xcalloc(n, sizeof *f->tensors);
  *spans = xcalloc(n, sizeof **spans);
  const char *name;
  json_t *v;
  json_object_foreach(root, name, v) {
    if (v == meta)
      continue;
    StTensor *t = &f->tensors[f->ntensors];
    t->name = xstrdup(name);
    (*spans)[f->ntensors].tensor = f->ntensors;
    f->ntensors++;
    if (parse_entry(t, &(*spans)[f->ntensors - 1], path, name, v, data_len, e) < 0)
      return -1;
  }
  qsort(*spans, n, sizeof **spans, span_cmp);
  return check_tiling(f, *spans, f->ntensors, data_len, path, e);
}

/* What load_fd reads. */
typedef enum { READ_ALL, READ_HEADER } ReadMode;

static int load_fd(StFile *f, int fd, const char *path, ReadMode mode, Err *e) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return errf(e, "%s: %s", path, strerror(errno));
  uint64_t size = (uint64_t)st.st_size;
  if (size < 8)
    return errf(e,
                "%s: file is %llu bytes, too short for a safetensors file (it starts "
                "with an 8-byte header length)",
                path, (unsigned long long)size);

  unsigned char lenb[8];
  if (read_at(fd, lenb, 8, 0) < 0)
    return errf(e, "%s: cannot read the header length: %s", path,
                errno ? strerror(errno) : "file ended early");
  uint64_t hlen = get_le64(lenb);
  if (hlen > ST_MAX_HEADER)
    return errf(e,
                "%s: header length %llu is absurd (more than %u bytes); not a "
                "safetensors file, or corrupted",
                path, (unsigned long long)hlen, ST_MAX_HEADER);
  if (hlen > size - 8)
    return errf(e,
                "%s: header length %llu is larger than the %llu bytes after it; is the "
                "file truncated?",
                path, (unsigned long long)hlen, (unsigned long long)(size - 8));

  char *hdr = xmalloc(hlen);
  json_t *root = NULL;
  Span *spans = NULL;
  int rc = -1;
  if (read_at(fd, hdr, hlen, 8) < 0) {
    errf(e, "%s: cannot read the header: %s", path,
         errno ? strerror(errno) : "file ended early");
    goto out;
  }
  /* The Rust crate insists on '{' first; so does the JSON object we want. */
  if (hlen == 0 || hdr[0] != '{') {
    errf(e, "%s: header does not start with '{': it must be a JSON object", path);
    goto out;
  }
  json_error_t jerr;
  root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    if (json_error_code(&jerr) == json_error_duplicate_key)
      errf(e,
           "%s: header has a %s (byte %d of the header): a tensor name, or a field "
           "of one entry, appears twice",
           path, jerr.text, jerr.position);
    else
      errf(e, "%s: header is not valid JSON: %s (byte %d of the header)", path, jerr.text,
           jerr.position);
    goto out;
  }
  if (!json_is_object(root)) {
    errf(e, "%s: header is %s, not a JSON object", path, json_kind(root));
    goto out;
  }
  size_t data_len = (size_t)(size - 8 - hlen);
  if (parse_header(f, &spans, root, data_len, path, e) < 0)
    goto out;
  f->data_at = 8 + hlen;
  for (int i = 0; i < f->ntensors; i++)
    f->tensors[spans[i].tensor].offset = spans[i].begin;
  if (mode == READ_HEADER) {
    rc = 0;
    goto out;
  }

  f->blob = xalloc_big(data_len); /* util.h: each 4 KiB page a fault */
  if (read_at(fd, f->blob, data_len, (off_t)(8 + hlen)) < 0) {
    errf(e, "%s: cannot read the data section: %s", path,
         errno ? strerror(errno) : "file ended early");
    goto out;
  }
  for (int i = 0; i < f->ntensors; i++) {
    /* The tiling starts at 0 and every range is a whole number of floats. */
    assert(spans[i].begin % sizeof(float) == 0 && "tensors tile the data section");
    StTensor *t = &f->tensors[spans[i].tensor];
    void *at = (char *)f->blob + spans[i].begin;
    if (t->i32)
      t->idata = at;
    else
      t->data = at;
  }
  rc = 0;
out:
  free(spans);
  json_decref(root);
  free(hdr);
  return rc;
}

static int load(StFile *f, const char *path, ReadMode mode, bool keep_open, Err *e) {
  memset(f, 0, sizeof *f);
  int fd = open_regular(path, e); /* a FIFO is refused, not waited for */
  if (fd < 0)
    return -1;
  int rc = load_fd(f, fd, path, mode, e);
  if (rc == 0 && keep_open) {
    f->fd = fd;
    f->open = true;
  } else {
    close(fd);
  }
  if (rc < 0)
    st_free(f);
  return rc;
}

int st_load(StFile *f, const char *path, Err *e) { return load(f, path, READ_ALL, false, e); }

int st_load_header(StFile *f, const char *path, Err *e) {
  return load(f, path, READ_HEADER, false, e);
}

int st_open(StFile *f, const char *path, Err *e) { return load(f, path, READ_HEADER, true, e); }

int st_read(const StFile *f, const StTensor *t, void *dst, const char *path, Err *e) {
  assert(f->open && t >= f->tensors && t < f->tensors + f->ntensors);
  if (read_at(f->fd, dst, t->nelem * sizeof(float), (off_t)(f->data_at + t->offset)) < 0) {
    char nb[80];
    return errf(e, "%s: cannot read tensor '%s': %s", path, shown(nb, t->name),
                errno ? strerror(errno) : "the file ended early (truncated since it was opened?)");
  }
  return 0;
}

const StTensor *st_find(const StFile *f, const char *name) {
  for (int i = 0; i < f->ntensors; i++)
    if (strcmp(f->tensors[i].name, name) == 0)
      return &f->tensors[i];
  return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
  for (int i = 0; i < f->nmeta; i++)
    if (strcmp(f->meta_keys[i], key) == 0)
      return f->meta_vals[i];
  return NULL;
}

void st_free(StFile *f) {
  for (int i = 0; i < f->ntensors; i++)
    free(f->tensors[i].name);
  free(f->tensors);
  for (int i = 0; i < f->nmeta; i++) {
    free(f->meta_keys[i]);
    free(f->meta_vals[i]);
  }
  free(f->meta_keys);
  free(f->meta_vals);
  free(f->blob);
  if (f->open)
    close(f->fd);
  memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------- writing */

/* The header of ts (offsets contiguous in the given order) and the
 * metadata, padded with spaces to a multiple of 8 bytes, into *out. */
static int build_header(Buf *out, const char *path, const StTensor *ts, int n,
                        char *const *mk, char *const *mv, int nmeta, Err *e) {
  char nb[80];
  json_t *root = json_object();
  int rc = -1;
  if (nmeta > 0) {
    json_t *meta = json_object();
    json_object_set_new(root, META_KEY, meta);
    for (int i = 0; i < nmeta; i++) {
      assert(mk[i] && mv[i] && "metadata strings present");
      if (json_object_get(meta, mk[i])) {
        errf(e, "%s: metadata key '%s' given twice", path, shown(nb, mk[i]));
        goto out;
      }
      json_t *val = json_string(mv[i]);
      if (!val) {
        errf(e, "%s: metadata value %d is not valid UTF-8", path, i);
        goto out;
      }
      if (json_object_set_new(meta, mk[i], val) < 0) {
        errf(e, "%s: metadata key %d is not valid UTF-8", path, i);
        goto out;
      }
    }
  }
  size_t at = 0;
  for (int i = 0; i < n; i++) {
    const StTensor *t = &ts[i];
    assert(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS && "tensor rank in range");
    size_t nelem = 0;
    int ok = shape_nelem(t->shape, t->ndim, &nelem);
    assert(ok == 0 && nelem == t->nelem && "nelem is the product of the shape");
    (void)ok;
    assert(t->name && (t->data || t->nelem == 0) && "tensor name and data present");
    if (strcmp(t->name, META_KEY) == 0) {
      errf(e, "%s: a tensor cannot be called " META_KEY, path);
      goto out;
    }
    if (json_object_get(root, t->name)) {
      errf(e, "%s: tensor name '%s' given twice", path, shown(nb, t->name));
      goto out;
    }
    json_t *shape = json_array();
    for (int d = 0; d < t->ndim; d++)
      json_array_append_new(shape, json_integer(t->shape[d]));
    size_t end = at + t->nelem * sizeof(float);
    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                              "data_offsets", (json_int_t)at, (json_int_t)end);
    assert(entry && "json_pack format matches its arguments");
    if (json_object_set_new(root, t->name, entry) < 0) {
      errf(e, "%s: the name of tensor %d is not valid UTF-8", path, i);
      goto out;
    }
    at = end;
  }
  char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  assert(s && "json_dumps of a well-formed object");
  buf_put(out, s, strlen(s));
  free(s);
  while (out->len % 8)
    buf_put(out, " ", 1);
  rc = 0;
out:
  json_decref(root);
  return rc;
}

int st_stage(Staged *s, const char *path, const StTensor *ts, int n, char *const *meta_keys,
             char *const *meta_vals, int nmeta, Err *e) {
  assert(n >= 0 && nmeta >= 0);
  *s = (Staged){.fd = -1};
  Buf hdr = {0};
  if (build_header(&hdr, path, ts, n, meta_keys, meta_vals, nmeta, e) < 0 ||
      stage_open(s, path, e) < 0) {
    buf_free(&hdr);
    return -1;
  }
  unsigned char lenb[8];
  put_le64(lenb, hdr.len);
  stage_write(s, lenb, 8);
  stage_write(s, hdr.data, hdr.len);
  for (int i = 0; i < n; i++)
    stage_write(s, ts[i].data, ts[i].nelem * sizeof(float));
  buf_free(&hdr);
  return stage_close(s, e);
}

int st_save(const char *path, const StTensor *ts, int n, char *const *meta_keys,
            char *const *meta_vals, int nmeta, Err *e) {
  Staged s;
  if (st_stage(&s, path, ts, n, meta_keys, meta_vals, nmeta, e) < 0) {
    stage_discard(&s);
    return -1;
  }
  return stage_commit(&s, e);
}

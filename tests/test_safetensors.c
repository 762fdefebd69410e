/* test_safetensors.c: the safetensors reader and writer.
 *
 * - PyTorch's golden files load with the right names, shapes, metadata and
 *   values (the expected values were read by a separate hand parser, see
 *   test_golden_*);
 * - save -> load is bit-exact (NaN payloads, -0, denormals, scalars, empty
 *   tensors, rank 8, UTF-8 names and metadata) and the file has the layout
 *   the Rust crate writes;
 * - every kind of malformed file is an error naming the file, the tensor and
 *   the problem; truncations and random byte corruptions never crash (the
 *   suite runs under ASan/UBSan, which also catches misaligned floats);
 * - writes are atomic: a failed save leaves the old file and no temporary;
 * - st_open + st_read (each tensor read where its caller wants it) give
 *   st_load's bytes and its errors: every truncation and corruption that
 *   st_load refuses, st_open refuses; a file that shrinks after st_open is
 *   an error of st_read naming the tensor; the open file is read even
 *   after another is renamed over its path. */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime.h"
#include "safetensors.h"
#include "testutil.h"

/* ------------------------------------------------------------- helpers */

static void check_msg(const char *msg, const char *needle) {
  if (!strstr(msg, needle))
    fail_msg("error message lacks \"%s\":\n  %s", needle, msg);
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(p, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

/* Writes [u64 len(header)][header][ndata zero bytes] to a fresh path. */
static char *crafted(const char *header, size_t ndata) {
  char *path = tmp_path("crafted.safetensors");
  size_t hl = strlen(header);
  Buf b = {0};
  for (int i = 0; i < 8; i++) {
    unsigned char c = (unsigned char)((uint64_t)hl >> (8 * i));
    buf_put(&b, &c, 1);
  }
  buf_put(&b, header, hl);
  for (size_t i = 0; i < ndata; i++)
    buf_put(&b, "", 1);
  write_bytes(path, b.data, b.len);
  buf_free(&b);
  return path;
}

/* st_load(path) must fail with a message naming path and containing each
 * needle, and leave the StFile empty. */
static void expect_load_error(const char *path, const char *n1, const char *n2) {
  StFile f;
  Err e = {{0}};
  if (st_load(&f, path, &e) == 0) {
    st_free(&f);
    fail_msg("%s loaded, expected an error about \"%s\"", path, n1);
  }
  check_msg(e.msg, path);
  check_msg(e.msg, n1);
  if (n2)
    check_msg(e.msg, n2);
  assert_null(f.tensors);
  assert_null(f.blob);
  assert_null(f.meta_keys);
  assert_int_equal(f.ntensors, 0);
  assert_int_equal(f.nmeta, 0);
  st_free(&f); /* harmless on an empty StFile */
}

static void load_ok(StFile *f, const char *path) {
  Err e;
  if (st_load(f, path, &e) < 0)
    fail_msg("%s", e.msg);
}

static uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static float from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static char *make_dir(const char *stem) {
  char *d = tmp_path(stem);
  assert_int_equal(mkdir(d, 0755), 0);
  return d;
}

/* Number of st_save temporaries left in dir. */
static int count_temps(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)))
    n += strncmp(de->d_name, STAGE_PREFIX, strlen(STAGE_PREFIX)) == 0;
  closedir(d);
  return n;
}

static char *slurp(const char *path, size_t *len) {
  Err e;
  char *s = read_file(path, len, &e);
  if (!s)
    fail_msg("%s", e.msg);
  return s;
}

static void check_tensor(const StFile *f, const char *name, int ndim, int64_t d0,
                         int64_t d1) {
  const StTensor *t = st_find(f, name);
  if (!t)
    fail_msg("no tensor %s", name);
  assert_int_equal(t->ndim, ndim);
  assert_int_equal(t->shape[0], d0);
  if (ndim > 1)
    assert_int_equal(t->shape[1], d1);
  assert_int_equal(t->nelem, ndim > 1 ? (size_t)(d0 * d1) : (size_t)d0);
  assert_int_equal((uintptr_t)t->data % _Alignof(float), 0);
}

/* ------------------------------------------------------------- golden */

/* The expected values below were read from the files by a separate
 * 15-line Python script that parses the header with json.loads and
 * unpacks the data with struct.unpack('<f', ...) (no safetensors, no
 * torch), printed with '%.9g', which round-trips a float32 exactly.
 * The same numbers come out of torch.frombuffer on the data section. */
static void test_golden_rnn(void **state) {
  char *path = src_path("tests/golden/rnn_seed42.safetensors");
  StFile f;
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 35);
  assert_string_equal(f.tensors[0].name, "in2hidden.weight");
  assert_string_equal(f.tensors[34].name, "loss"); /* header order */
  check_tensor(&f, "in2hidden.weight", 2, 256, 315);
  check_tensor(&f, "in2hidden.bias", 1, 256, 0);
  check_tensor(&f, "in2output.weight", 2, 18, 315);
  check_tensor(&f, "in2output.bias", 1, 18, 0);
  check_tensor(&f, "h0", 1, 256, 0);
  check_tensor(&f, "grad_norm", 1, 1, 0);
  check_tensor(&f, "loss", 1, 1, 0);
  check_tensor(&f, "step1.in2output.weight", 2, 18, 315);
  for (int i = 0; i < 20; i++) {
    char name[32];
    snprintf(name, sizeof name, "logits.%d", i);
    check_tensor(&f, name, 1, 18, 0);
  }
  assert_null(st_find(&f, "logits.20"));

  assert_int_equal(f.nmeta, 8);
  assert_string_equal(f.meta_keys[0], "model");
  assert_string_equal(st_meta(&f, "model"), "rnn");
  assert_string_equal(st_meta(&f, "vocab"), VOCAB_CHARS);
  assert_string_equal(st_meta(&f, "labels"),
                      "Arabic,Chinese,Czech,Dutch,English,French,German,Greek,Irish,"
                      "Italian,Japanese,Korean,Polish,Portuguese,Russian,Scottish,"
                      "Spanish,Vietnamese");
  assert_int_equal(strncmp(st_meta(&f, "names"), "Mike\nQin\nSlaveya\n", 17), 0);
  assert_string_equal(st_meta(&f, "train_name"), "Dostoevsky");
  assert_string_equal(st_meta(&f, "train_label"), "Russian");
  assert_non_null(st_meta(&f, "step"));
  assert_null(st_meta(&f, "nope"));

  const StTensor *w = st_find(&f, "in2hidden.weight");
  assert_true(w->data[0] == 0.0430768691f);
  assert_true(w->data[256 * 315 - 1] == 0.0156258717f);
  assert_true(w->data[100 * 315 + 7] == -0.00443439418f);
  assert_true(st_find(&f, "in2output.bias")->data[17] == 0.0321160257f);
  assert_true(st_find(&f, "h0")->data[0] == -0.0485068336f);
  assert_true(st_find(&f, "h0")->data[255] == -0.0951415673f);
  assert_true(st_find(&f, "logits.0")->data[0] == -0.311883032f);
  assert_true(st_find(&f, "logits.19")->data[17] == -0.0119740814f);
  assert_true(st_find(&f, "loss")->data[0] == 3.19263363f);
  assert_true(st_find(&f, "grad_norm")->data[0] == 8.29462719f);
  assert_true(st_find(&f, "grad.in2output.weight")->data[5 * 315 + 100] == 0.039088916f);
  assert_true(st_find(&f, "step1.in2hidden.bias")->data[42] == 0.00540458551f);
  assert_int_equal(bits(st_find(&f, "loss")->data[0]), 0x404c541c);
  st_free(&f);
  assert_null(f.tensors);
  free(path);
}

static void test_golden_gru(void **state) {
  char *path = src_path("tests/golden/gru_seed42.safetensors");
  StFile f;
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 51);
  static const char *const layer[] = {"l0", "l1"};
  for (int l = 0; l < 2; l++) {
    char name[64];
    snprintf(name, sizeof name, "gru.weight_ih_%s", layer[l]);
    check_tensor(&f, name, 2, 768, l ? 256 : 59);
    snprintf(name, sizeof name, "gru.weight_hh_%s", layer[l]);
    check_tensor(&f, name, 2, 768, 256);
    snprintf(name, sizeof name, "gru.bias_ih_%s", layer[l]);
    check_tensor(&f, name, 1, 768, 0);
    snprintf(name, sizeof name, "step1.gru.bias_hh_%s", layer[l]);
    check_tensor(&f, name, 1, 768, 0);
  }
  check_tensor(&f, "fc.weight", 2, 18, 256);
  check_tensor(&f, "fc.bias", 1, 18, 0);
  check_tensor(&f, "grad.fc.weight", 2, 18, 256);
  assert_null(st_find(&f, "h0"));
  assert_null(st_find(&f, "grad_norm"));
  assert_string_equal(st_meta(&f, "model"), "gru");
  assert_string_equal(st_meta(&f, "vocab"), VOCAB_CHARS);
  assert_int_equal(strncmp(st_meta(&f, "labels"), "Arabic,Chinese,", 15), 0);

  assert_true(st_find(&f, "gru.weight_ih_l0")->data[0] == 0.0477836579f);
  assert_true(st_find(&f, "gru.weight_hh_l1")->data[768 * 256 - 1] == 0.0486089811f);
  assert_true(st_find(&f, "gru.bias_hh_l1")->data[100] == -0.053264834f);
  assert_true(st_find(&f, "fc.weight")->data[18 * 256 - 1] == 0.0234992281f);
  assert_true(st_find(&f, "fc.bias")->data[0] == 0.0179014131f);
  assert_true(st_find(&f, "logits.7")->data[3] == 0.0407196991f);
  assert_true(st_find(&f, "loss")->data[0] == 2.90550995f);
  assert_true(st_find(&f, "grad.fc.bias")->data[9] == 0.0605442859f);
  assert_true(st_find(&f, "step1.gru.weight_ih_l1")->data[12345] == -0.0130606294f);
  st_free(&f);
  free(path);
}

/* ------------------------------------------------------------- round trip */

static void assert_same_files(const StFile *a, const StFile *b) {
  assert_int_equal(a->ntensors, b->ntensors);
  for (int i = 0; i < a->ntensors; i++) {
    const StTensor *x = &a->tensors[i], *y = &b->tensors[i];
    assert_string_equal(x->name, y->name);
    assert_int_equal(x->ndim, y->ndim);
    for (int d = 0; d < x->ndim; d++)
      assert_int_equal(x->shape[d], y->shape[d]);
    assert_int_equal(x->nelem, y->nelem);
    assert_memory_equal(x->data, y->data, x->nelem * sizeof(float));
  }
  assert_int_equal(a->nmeta, b->nmeta);
  for (int i = 0; i < a->nmeta; i++) {
    assert_string_equal(a->meta_keys[i], b->meta_keys[i]);
    assert_string_equal(a->meta_vals[i], b->meta_vals[i]);
  }
}

static void test_round_trip(void **state) {
  char *dir = make_dir("st-rt");
  char *path = xasprintf("%s/ckpt.safetensors", dir);

  float a[15], v[3] = {1.5f, -2.25f, 3e-38f}, s = 42.5f, u[2] = {7, 8};
  for (int i = 0; i < 15; i++)
    a[i] = (float)i * 0.1f - 0.7f;
  a[0] = -0.0f;
  a[1] = INFINITY;
  a[2] = -INFINITY;
  a[3] = from_bits(0x7fc01234); /* NaN with a payload */
  a[4] = from_bits(0xffa00001); /* signalling NaN, negative */
  a[5] = from_bits(0x00000001); /* smallest denormal */
  StTensor ts[] = {
      {.name = "a", .ndim = 2, .shape = {3, 5}, .nelem = 15, .data = a},
      {.name = "scalar", .ndim = 0, .nelem = 1, .data = &s},
      {.name = "empty", .ndim = 2, .shape = {0, 7}, .nelem = 0, .data = NULL},
      {.name = "rank8", .ndim = 8, .shape = {1, 1, 1, 1, 1, 1, 1, 3}, .nelem = 3, .data = v},
      {.name = "gewicht.\xc3\xbc \"q\"", .ndim = 1, .shape = {2}, .nelem = 2, .data = u},
  };
  char *keys[] = {"labels", "vocab", "odd", "empty", "names"};
  char *vals[] = {"Arabic,Chinese", VOCAB_CHARS, "quote\" backslash\\ tab\t \xc5\x9a", "",
                  "Mike\nQin\n"};
  Err e;
  if (st_save(path, ts, 5, keys, vals, 5, &e) < 0)
    fail_msg("%s", e.msg);
  assert_int_equal(count_temps(dir), 0);

  StFile f;
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 5);
  for (int i = 0; i < 5; i++) {
    const StTensor *t = &f.tensors[i];
    assert_string_equal(t->name, ts[i].name);
    assert_int_equal(t->ndim, ts[i].ndim);
    for (int d = 0; d < t->ndim; d++)
      assert_int_equal(t->shape[d], ts[i].shape[d]);
    assert_int_equal(t->nelem, ts[i].nelem);
    if (t->nelem)
      assert_memory_equal(t->data, ts[i].data, t->nelem * sizeof(float));
    assert_int_equal((uintptr_t)t->data % _Alignof(float), 0);
  }
  assert_int_equal(f.nmeta, 5);
  for (int i = 0; i < 5; i++) {
    assert_string_equal(f.meta_keys[i], keys[i]);
    assert_string_equal(f.meta_vals[i], vals[i]);
  }
  st_free(&f);

  /* The layout: header padded with spaces to a multiple of 8, metadata
   * first, data contiguous in the given order. */
  size_t len;
  char *raw = slurp(path, &len);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--)
    hl = hl << 8 | (unsigned char)raw[i];
  assert_int_equal(hl % 8, 0);
  assert_int_equal(len, 8 + hl + (15 + 1 + 0 + 3 + 2) * 4);
  assert_int_equal(strncmp(raw + 8, "{\"__metadata__\":{\"labels\":", 26), 0);
  size_t brace = hl;
  while (brace > 0 && raw[8 + brace - 1] == ' ')
    brace--;
  assert_true(hl - brace < 8);
  assert_int_equal(raw[8 + brace - 1], '}');
  assert_non_null(strstr(raw + 8, "\"a\":{\"dtype\":\"F32\",\"shape\":[3,5],"
                                  "\"data_offsets\":[0,60]}"));
  assert_non_null(strstr(raw + 8, "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],"
                                  "\"data_offsets\":[60,64]}"));
  assert_non_null(strstr(raw + 8, "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,7],"
                                  "\"data_offsets\":[64,64]}"));
  assert_memory_equal(raw + 8 + hl, a, 60);
  free(raw);

  /* Overwrite without metadata: no __metadata__ key at all. */
  if (st_save(path, ts, 2, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);
  raw = slurp(path, NULL);
  assert_null(strstr(raw + 8, "__metadata__"));
  free(raw);
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 2);
  assert_int_equal(f.nmeta, 0);
  assert_null(st_meta(&f, "labels"));
  st_free(&f);

  /* No tensors at all. */
  if (st_save(path, NULL, 0, keys, vals, 1, &e) < 0)
    fail_msg("%s", e.msg);
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 0);
  assert_string_equal(st_meta(&f, "labels"), "Arabic,Chinese");
  st_free(&f);

  /* A path without a directory part goes to the current directory. */
  char cwd[4096];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0);
  int rc = st_save("bare.safetensors", ts, 1, NULL, NULL, 0, &e);
  assert_int_equal(chdir(cwd), 0);
  if (rc < 0)
    fail_msg("%s", e.msg);
  char *bare = xasprintf("%s/bare.safetensors", dir);
  load_ok(&f, bare);
  assert_int_equal(f.ntensors, 1);
  st_free(&f);
  unlink(bare);
  free(bare);

  assert_int_equal(count_temps(dir), 0);
  unlink(path);
  rmdir(dir);
  free(path);
  free(dir);
}

/* Golden file -> st_save -> st_load: bit-exact, metadata included. */
static void test_golden_round_trip(void **state) {
  static const char *const golden[] = {"tests/golden/rnn_seed42.safetensors",
                                       "tests/golden/gru_seed42.safetensors"};
  for (size_t g = 0; g < ARRAY_LEN(golden); g++) {
    char *src = src_path(golden[g]);
    char *dst = tmp_path("golden-copy.safetensors");
    StFile a, b;
    load_ok(&a, src);
    Err e;
    if (st_save(dst, a.tensors, a.ntensors, a.meta_keys, a.meta_vals, a.nmeta, &e) < 0)
      fail_msg("%s", e.msg);
    load_ok(&b, dst);
    assert_same_files(&a, &b);
    st_free(&a);
    st_free(&b);
    unlink(dst);
    free(dst);
    free(src);
  }
}

/* A valid file whose data section starts at an odd offset: the floats
 * must still come back aligned (UBSan checks every access). */
static void test_unaligned_data_section(void **state) {
  const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[4,0],\"data_offsets\":[16,16]},"
                    "\"__metadata__\":{}}   ";
  size_t hl = strlen(hdr);
  float vals[4] = {1.0f, -2.5f, 1e30f, 0.125f};
  Buf b = {0};
  for (int i = 0; i < 8; i++) {
    unsigned char c = (unsigned char)((uint64_t)hl >> (8 * i));
    buf_put(&b, &c, 1);
  }
  buf_put(&b, hdr, hl);
  buf_put(&b, vals, sizeof vals);
  assert_int_not_equal((8 + hl) % 4, 0);
  char *path = tmp_path("unaligned.safetensors");
  write_bytes(path, b.data, b.len);
  buf_free(&b);

  StFile f;
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 3);
  assert_int_equal(f.nmeta, 0);
  const StTensor *x = st_find(&f, "x"), *s = st_find(&f, "s"), *z = st_find(&f, "z");
  assert_int_equal((uintptr_t)x->data % _Alignof(float), 0);
  assert_true(x->data[0] == 1.0f && x->data[1] == -2.5f && x->data[2] == 1e30f);
  assert_int_equal(s->ndim, 0);
  assert_int_equal(s->nelem, 1);
  assert_true(s->data[0] == 0.125f);
  assert_int_equal(z->nelem, 0);
  st_free(&f);
  unlink(path);
  free(path);

  /* The smallest file: an empty header object and no data. */
  path = crafted("{}", 0);
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 0);
  assert_int_equal(f.nmeta, 0);
  st_free(&f);
  unlink(path);
  free(path);
}

/* ------------------------------------------------------------- malformed */

#define W(x) "{\"w\":" x "}"
#define OK_ENTRY "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

typedef struct Bad {
  const char *header;
  size_t ndata;
  const char *n1, *n2; /* must appear in the message */
} Bad;

static const Bad bad_headers[] = {
    /* header not a JSON object / not JSON */
    {"", 0, "does not start with '{'", NULL},
    {"[]", 0, "does not start with '{'", NULL},
    {"\"w\"", 0, "does not start with '{'", NULL},
    {" {}", 0, "does not start with '{'", NULL},
    {"{\"w\":", 0, "not valid JSON", NULL},
    {"{\"w\":" OK_ENTRY ",}", 8, "not valid JSON", NULL},
    {"{} x", 0, "not valid JSON", NULL},
    {"{\"w\\u0000\":" OK_ENTRY "}", 8, "not valid JSON", NULL},
    {"{\"w\xff\":" OK_ENTRY "}", 8, "not valid JSON", NULL},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8,
     "not valid JSON", "too big"},
    /* entries */
    {W("5"), 0, "tensor 'w'", "not an object"},
    {W("[1,2]"), 0, "tensor 'w'", "is an array, not an object"},
    {W("null"), 0, "tensor 'w'", "is null, not an object"},
    {W("{\"shape\":[2],\"data_offsets\":[0,8]}"), 8, "tensor 'w'", "no \"dtype\""},
    {W("{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,8]}"), 8, "tensor 'w'",
     "\"dtype\" is an integer"},
    {W("{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}"), 4, "tensor 'w'",
     "dtype is F16, but rnnc reads only F32"},
    {W("{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}"), 4, "tensor 'w'",
     "dtype is BF16"},
    {W("{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}"), 16, "tensor 'w'",
     "dtype is F64"},
    {W("{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}"), 8, "tensor 'w'",
     "dtype is f32"},
    {W("{\"dtype\":\"F32\",\"data_offsets\":[0,8]}"), 8, "tensor 'w'", "no \"shape\""},
    {W("{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}"), 8, "tensor 'w'",
     "\"shape\" is an integer, not an array"},
    {W("{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}"), 8, "tensor 'w'",
     "shape[0] is -2, not a non-negative integer"},
    {W("{\"dtype\":\"F32\",\"shape\":[1,2.0],\"data_offsets\":[0,8]}"), 8, "tensor 'w'",
     "shape[1] is a real number"},
    {W("{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}"), 8, "tensor 'w'",
     "shape[0] is a string"},
    {W("{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}"), 4,
     "tensor 'w'", "9 dimensions; at most 8"},
    {W("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}"), 8,
     "tensor 'w'", "overflows"},
    {W("{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}"), 8,
     "tensor 'w'", "overflows"},
    {W("{\"dtype\":\"F32\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}"), 8,
     "tensor 'w'", "overflows"},
    {W("{\"dtype\":\"F32\",\"shape\":[2]}"), 8, "tensor 'w'", "no \"data_offsets\""},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":8}"), 8, "tensor 'w'",
     "not two integers"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}"), 8, "tensor 'w'",
     "not two integers"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}"), 8, "tensor 'w'",
     "not two integers"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.0,8.0]}"), 8, "tensor 'w'",
     "not two integers"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}"), 8, "tensor 'w'",
     "not two integers"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}"), 8, "tensor 'w'",
     "negative"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}"), 8, "tensor 'w'",
     "begin is after end"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"), 4, "tensor 'w'",
     "end is beyond the data section (4 bytes)"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9223372036854775807]}"), 8,
     "tensor 'w'", "beyond the data section"},
    {W("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}"), 12, "tensor 'w'",
     "hold 12 bytes, but F32 shape [2] needs 8"},
    {W("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,4]}"), 4, "tensor 'w'",
     "hold 4 bytes, but F32 shape [0] needs 0"},
    {W("{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"), 8,
     "duplicate", NULL},
    {"{\"w\":" OK_ENTRY ",\"w\":" OK_ENTRY "}", 8, "duplicate object key near '\"w\"'",
     "a tensor name, or a field of one entry, appears twice"},
    /* byte ranges must tile the data section */
    {"{\"a\":" OK_ENTRY ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "tensor 'b' (bytes 4..12) overlaps tensor 'a' (bytes 0..8)", NULL},
    {"{\"a\":" OK_ENTRY ",\"b\":" OK_ENTRY "}", 8, "overlaps", NULL},
    {"{\"a\":" OK_ENTRY ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
     20, "tensor 'b': bytes 8..12", "belong to no tensor"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 6, "tensor 'b'",
     "bytes 0..2"},
    {W(OK_ENTRY), 12, "trailing", "12 bytes"},
    /* metadata */
    {"{\"__metadata__\":\"labels\"}", 0, "__metadata__ is a string, not an object", NULL},
    {"{\"__metadata__\":[]}", 0, "__metadata__ is an array", NULL},
    {"{\"__metadata__\":{\"labels\":3}}", 0, "__metadata__ 'labels' is an integer", NULL},
    {"{\"__metadata__\":{\"vocab\":\"abc\",\"labels\":null}}", 0, "'labels' is null", NULL},
    {"{\"__metadata__\":{\"labels\":{}},\"w\":" OK_ENTRY "}", 8, "'labels' is an object",
     NULL},
    /* an error names a strange tensor name harmlessly */
    {"{\"a\\nb\":5}", 0, "tensor 'a?b'", "not an object"},
};

static void test_malformed_headers(void **state) {
  for (size_t i = 0; i < ARRAY_LEN(bad_headers); i++) {
    const Bad *b = &bad_headers[i];
    char *path = crafted(b->header, b->ndata);
    expect_load_error(path, b->n1, b->n2);
    unlink(path);
    free(path);
  }
  /* Nesting beyond jansson's depth limit: an error, not a stack overflow. */
  Buf deep = {0};
  buf_printf(&deep, "{\"w\":");
  for (int i = 0; i < 100000; i++)
    buf_put(&deep, "[", 1);
  buf_put(&deep, "", 1);
  char *path = crafted(deep.data, 0);
  expect_load_error(path, "not valid JSON", NULL);
  unlink(path);
  free(path);
  buf_free(&deep);
}

static void test_malformed_files(void **state) {
  char *path = tmp_path("raw.safetensors");
  /* Shorter than the 8-byte length. */
  write_bytes(path, "", 0);
  expect_load_error(path, "file is 0 bytes, too short", NULL);
  write_bytes(path, "\x02\0\0\0\0\0\0", 7);
  expect_load_error(path, "file is 7 bytes, too short", NULL);
  /* Header length larger than the file. */
  write_bytes(path, "\x64\0\0\0\0\0\0\0{}        ", 18);
  expect_load_error(path, "header length 100 is larger than the 10 bytes after it",
                    "truncated");
  write_bytes(path, "\x08\0\0\0\0\0\0\0{}", 10);
  expect_load_error(path, "header length 8 is larger than the 2 bytes", NULL);
  /* Absurd header lengths. */
  write_bytes(path, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
  expect_load_error(path, "header length 18446744073709551615 is absurd", NULL);
  write_bytes(path, "\0\0\0\0\0\x01\0\0{}", 10);
  expect_load_error(path, "header length 1099511627776 is absurd", NULL);
  write_bytes(path, "\x01\xe1\xf5\x05\0\0\0\0{}", 10); /* 100000001 */
  expect_load_error(path, "is absurd", NULL);
  /* A NUL byte in the header. */
  write_bytes(path, "\x03\0\0\0\0\0\0\0{}\0", 11);
  expect_load_error(path, "not valid JSON", NULL);
  /* Not a safetensors file at all. */
  const char *text = "# a text file, not a checkpoint\n";
  write_bytes(path, text, strlen(text));
  expect_load_error(path, "is absurd", NULL);
  unlink(path);
  /* No such file; a directory. */
  expect_load_error(path, "No such file", NULL);
  char *dir = make_dir("st-isdir");
  expect_load_error(dir, "is a directory", NULL);
  rmdir(dir);
  free(dir);
  free(path);
}

/* ------------------------------------------------------- st_open, st_read */

/* Whether st_open + st_read of path give what st_load gives: both fail, or
 * both succeed with the same tensors, byte for byte. Returns st_load's
 * result. */
static int open_matches_load(const char *path) {
  StFile f, g;
  Err e, eg;
  int rl = st_load(&f, path, &e), ro = st_open(&g, path, &eg);
  assert_int_equal(rl, ro);
  if (rl == 0) {
    assert_int_equal(f.ntensors, g.ntensors);
    assert_int_equal(f.nmeta, g.nmeta);
    for (int i = 0; i < f.ntensors; i++) {
      const StTensor *a = &f.tensors[i], *b = &g.tensors[i];
      assert_string_equal(a->name, b->name);
      assert_int_equal(a->nelem, b->nelem);
      assert_null(b->data); /* st_open reads no data */
      uint32_t *got = xmalloc((a->nelem ? a->nelem : 1) * sizeof *got);
      if (st_read(&g, b, got, path, &eg))
        fail_msg("%s", eg.msg);
      assert_memory_equal(got, a->i32 ? (void *)a->idata : (void *)a->data,
                          a->nelem * sizeof *got);
      free(got);
    }
  } else {
    assert_string_equal(e.msg, eg.msg); /* the same checks, the same message */
  }
  st_free(&f);
  st_free(&g);
  return rl;
}

static void test_open_read_golden(void **state) {
  const char *golden[] = {"tests/golden/rnn_seed42.safetensors",
                          "tests/golden/gru_seed42.safetensors"};
  for (size_t i = 0; i < ARRAY_LEN(golden); i++) {
    char *path = src_path(golden[i]);
    assert_int_equal(open_matches_load(path), 0);
    free(path);
  }
}

/* A file that shrinks after st_open (st_open checked its size) is an
 * error of st_read, naming the file and the tensor; one renamed over its
 * path is not seen: st_read reads the file st_open opened. */
static void test_open_then_changed(void **state) {
  float d[6] = {1, 2, 3, 4, 5, 6}, z[6] = {0};
  StTensor ts[] = {{.name = "w", .ndim = 2, .shape = {2, 2}, .nelem = 4, .data = d},
                   {.name = "b", .ndim = 1, .shape = {2}, .nelem = 2, .data = d + 4}};
  char *path = tmp_path("opened.safetensors");
  Err e;
  if (st_save(path, ts, 2, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);
  StFile f;
  if (st_open(&f, path, &e))
    fail_msg("%s", e.msg);
  /* Another save renamed over path: f still reads the first file. */
  StTensor other[] = {{.name = "w", .ndim = 2, .shape = {2, 2}, .nelem = 4, .data = z},
                      {.name = "b", .ndim = 1, .shape = {2}, .nelem = 2, .data = z}};
  if (st_save(path, other, 2, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);
  float got[4];
  assert_int_equal(st_read(&f, st_find(&f, "w"), got, path, &e), 0);
  assert_memory_equal(got, d, sizeof got);
  st_free(&f);

  /* Shrunk in place after st_open: the last tensor ("b") is cut off. */
  if (st_open(&f, path, &e))
    fail_msg("%s", e.msg);
  shrink_file(path, 4);
  assert_int_equal(st_read(&f, st_find(&f, "w"), got, path, &e), 0); /* still all there */
  assert_memory_equal(got, z, sizeof got);
  assert_int_equal(st_read(&f, st_find(&f, "b"), got, path, &e), -1);
  check_msg(e.msg, path);
  check_msg(e.msg, "tensor 'b'");
  check_msg(e.msg, "ended early");
  st_free(&f);
  unlink(path);
  free(path);
}

/* ------------------------------------------------------- truncation, fuzz */

/* Every truncation of a golden file at a length in lens must fail. The
 * copy is shrunk in place, longest first, so nothing is rewritten. */
static int cmp_size_desc(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

static void truncations(const char *golden_rel) {
  char *src = src_path(golden_rel);
  size_t len;
  char *bytes = slurp(src, &len);
  char *path = tmp_path("trunc.safetensors");
  write_bytes(path, bytes, len);
  free(bytes);

  size_t cap = len / 7919 + 200 + 16, n = 0;
  size_t *lens = xmalloc(cap * sizeof *lens);
  for (size_t l = 0; l < 200; l++)
    lens[n++] = l;
  for (size_t l = 7919; l < len; l += 7919)
    lens[n++] = l;
  for (size_t k = 1; k <= 8; k++)
    lens[n++] = len - k;
  qsort(lens, n, sizeof *lens, cmp_size_desc);
  int tried = 0;
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && lens[i] == lens[i - 1])
      continue;
    assert_int_equal(truncate(path, (off_t)lens[i]), 0);
    StFile f;
    Err e;
    if (st_load(&f, path, &e) == 0) {
      st_free(&f);
      fail_msg("%s truncated to %zu bytes loaded", golden_rel, lens[i]);
    }
    check_msg(e.msg, path);
    if (st_open(&f, path, &e) == 0) {
      st_free(&f);
      fail_msg("%s truncated to %zu bytes opened", golden_rel, lens[i]);
    }
    check_msg(e.msg, path);
    tried++;
  }
  print_message("%s: %d truncations, all errors\n", golden_rel, tried);
  free(lens);
  unlink(path);
  free(path);
  free(src);
}

static void test_truncated_golden(void **state) {
  truncations("tests/golden/rnn_seed42.safetensors");
  truncations("tests/golden/gru_seed42.safetensors");
}

/* Random byte corruptions of the length field, header and data of a small
 * file, and of the golden rnn header: each load either fails cleanly or
 * gives tensors whose data lies inside the file and is aligned. */
static void corrupt(const char *path, size_t span, int rounds, uint64_t seed) {
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  Rng r;
  rng_seed(&r, seed);
  int ok = 0;
  for (int k = 0; k < rounds; k++) {
    int nflip = 1 + (int)rng_below(&r, 3);
    size_t pos[3];
    unsigned char old[3];
    for (int j = 0; j < nflip; j++) {
      pos[j] = rng_below(&r, (uint32_t)span);
      assert_int_equal(pread(fd, &old[j], 1, (off_t)pos[j]), 1);
      unsigned char c = (unsigned char)rng_below(&r, 256);
      assert_int_equal(pwrite(fd, &c, 1, (off_t)pos[j]), 1);
    }
    if (k % 10 == 0) /* st_open + st_read agree with st_load, in a tenth of the rounds */
      (void)open_matches_load(path);
    StFile f;
    Err e;
    if (st_load(&f, path, &e) == 0) {
      ok++;
      for (int i = 0; i < f.ntensors; i++) {
        const StTensor *t = &f.tensors[i];
        assert_int_equal((uintptr_t)t->data % _Alignof(float), 0);
        volatile float sum = 0; /* touch every float: ASan checks bounds */
        for (size_t j = 0; j < t->nelem; j++)
          sum += t->data[j];
        (void)sum;
      }
      st_free(&f);
    } else {
      check_msg(e.msg, path);
    }
    for (int j = nflip - 1; j >= 0; j--)
      assert_int_equal(pwrite(fd, &old[j], 1, (off_t)pos[j]), 1);
  }
  close(fd);
  print_message("%d corruptions of %zu bytes: %d still loaded\n", rounds, span, ok);
}

static void test_corrupted(void **state) {
  float d[6] = {1, 2, 3, 4, 5, 6};
  StTensor ts[] = {{.name = "w", .ndim = 2, .shape = {2, 2}, .nelem = 4, .data = d},
                   {.name = "b", .ndim = 1, .shape = {2}, .nelem = 2, .data = d + 4}};
  char *keys[] = {"labels"}, *vals[] = {"x,y"};
  char *path = tmp_path("fuzz.safetensors");
  Err e;
  if (st_save(path, ts, 2, keys, vals, 1, &e) < 0)
    fail_msg("%s", e.msg);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  corrupt(path, (size_t)st.st_size, 4000, 1);
  unlink(path);
  free(path);

  char *src = src_path("tests/golden/rnn_seed42.safetensors");
  size_t len;
  char *bytes = slurp(src, &len);
  path = tmp_path("fuzz-golden.safetensors");
  write_bytes(path, bytes, len);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--)
    hl = hl << 8 | (unsigned char)bytes[i];
  free(bytes);
  corrupt(path, 8 + (size_t)hl, 300, 2);
  unlink(path);
  free(path);
  free(src);
}

/* ------------------------------------------------------------- writing */

static float wdata[4] = {1, 2, 3, 4};
static StTensor wts[] = {{.name = "w", .ndim = 1, .shape = {4}, .nelem = 4, .data = wdata},
                         {.name = "v", .ndim = 1, .shape = {2}, .nelem = 2, .data = wdata}};

/* st_save must fail with n1 in the message and leave path as it was. */
static void expect_save_error(const char *path, const StTensor *ts, int n, char *const *mk,
                              char *const *mv, int nmeta, const char *n1) {
  size_t before_len;
  char *before = slurp(path, &before_len);
  Err e = {{0}};
  assert_int_equal(st_save(path, ts, n, mk, mv, nmeta, &e), -1);
  check_msg(e.msg, path);
  check_msg(e.msg, n1);
  size_t after_len;
  char *after = slurp(path, &after_len);
  assert_int_equal(before_len, after_len);
  assert_memory_equal(before, after, before_len);
  free(before);
  free(after);
}

static void test_save_errors(void **state) {
  char *dir = make_dir("st-save-err");
  char *path = xasprintf("%s/ckpt.safetensors", dir);
  Err e;
  if (st_save(path, wts, 1, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);

  StTensor dup[] = {wts[0], wts[0]};
  expect_save_error(path, dup, 2, NULL, NULL, 0, "tensor name 'w' given twice");
  StTensor reserved[] = {wts[0]};
  reserved[0].name = "__metadata__";
  expect_save_error(path, reserved, 1, NULL, NULL, 0, "cannot be called __metadata__");
  StTensor badname[] = {wts[0]};
  badname[0].name = "w\xff";
  expect_save_error(path, badname, 1, NULL, NULL, 0, "the name of tensor 0 is not valid UTF-8");
  char *k2[] = {"labels", "labels"}, *v2[] = {"a", "b"};
  expect_save_error(path, wts, 1, k2, v2, 2, "metadata key 'labels' given twice");
  char *k1[] = {"labels"}, *bad[] = {"caf\xe9"};
  expect_save_error(path, wts, 1, k1, bad, 1, "metadata value 0 is not valid UTF-8");
  expect_save_error(path, wts, 1, bad, k1, 1, "metadata key 0 is not valid UTF-8");
  assert_int_equal(count_temps(dir), 0);

  unlink(path);
  rmdir(dir);
  free(path);
  free(dir);
}

/* Tries st_save(path) with write permission on dir taken away: as root
 * (who ignores permissions) in a child that drops to nobody, else after a
 * chmod. Returns 1 when it failed with "Permission denied", -1 when
 * privileges cannot be dropped here (a user namespace, say). */
static int save_without_permission(const char *dir, const char *path) {
  Err e = {{0}};
  if (geteuid() != 0) {
    assert_int_equal(chmod(dir, 0555), 0);
    int rc = st_save(path, wts, 2, NULL, NULL, 0, &e);
    assert_int_equal(chmod(dir, 0755), 0);
    if (rc == 0)
      return 0;
    check_msg(e.msg, path);
    check_msg(e.msg, "cannot create a file in directory");
    return strstr(e.msg, "Permission denied") != NULL;
  }
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
      _exit(3);
    int rc = st_save(path, wts, 2, NULL, NULL, 0, &e);
    if (rc == 0)
      _exit(4);
    if (!strstr(e.msg, path) || !strstr(e.msg, "cannot create a file in directory") ||
        !strstr(e.msg, "Permission denied")) {
      fprintf(stderr, "unexpected message: %s\n", e.msg);
      _exit(5);
    }
    _exit(0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3)
    return -1;
  if (WEXITSTATUS(status) != 0)
    fail_msg("child as nobody: status %d", WEXITSTATUS(status));
  return 1;
}

static void test_atomic_write(void **state) {
  char *dir = make_dir("st-atomic");
  char *path = xasprintf("%s/ckpt.safetensors", dir);
  Err e;
  if (st_save(path, wts, 1, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);
  size_t old_len;
  char *old = slurp(path, &old_len);

  /* An unwritable directory: a clear error, the old file intact. */
  int denied = save_without_permission(dir, path);
  if (denied < 0)
    print_message("cannot drop root privileges here: unwritable directory not tested\n");
  else
    assert_int_equal(denied, 1);
  size_t len;
  char *now = slurp(path, &len);
  assert_int_equal(len, old_len);
  assert_memory_equal(now, old, len);
  free(now);
  assert_int_equal(count_temps(dir), 0);

  /* A directory that does not exist. */
  char *missing = xasprintf("%s/no/such/dir/ckpt.safetensors", dir);
  assert_int_equal(st_save(missing, wts, 1, NULL, NULL, 0, &e), -1);
  check_msg(e.msg, "cannot create a file in directory");
  check_msg(e.msg, "no/such/dir");
  check_msg(e.msg, "No such file or directory");
  free(missing);

  /* The path is a directory: error, the directory untouched, no temporary
   * left beside it. */
  char *sub = xasprintf("%s/sub", dir);
  assert_int_equal(mkdir(sub, 0755), 0);
  assert_int_equal(st_save(sub, wts, 2, NULL, NULL, 0, &e), -1);
  check_msg(e.msg, sub);
  check_msg(e.msg, "Is a directory");
  struct stat st;
  assert_int_equal(stat(sub, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(count_temps(dir), 0);
  assert_int_equal(count_temps(sub), 0);
  rmdir(sub);
  free(sub);

  /* Replacing keeps the old file's permissions; a new file gets 0666 less
   * the umask, not mkstemp's 0600. */
  assert_int_equal(chmod(path, 0640), 0);
  if (st_save(path, wts, 2, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0640);
  StFile f;
  load_ok(&f, path);
  assert_int_equal(f.ntensors, 2);
  st_free(&f);
  char *fresh = xasprintf("%s/fresh.safetensors", dir);
  mode_t mask = umask(022);
  if (st_save(fresh, wts, 1, NULL, NULL, 0, &e) < 0)
    fail_msg("%s", e.msg);
  umask(mask);
  assert_int_equal(stat(fresh, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
  unlink(fresh);
  free(fresh);

  assert_int_equal(count_temps(dir), 0);
  free(old);
  unlink(path);
  rmdir(dir);
  free(path);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_golden_rnn),
      cmocka_unit_test(test_golden_gru),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_golden_round_trip),
      cmocka_unit_test(test_unaligned_data_section),
      cmocka_unit_test(test_malformed_headers),
      cmocka_unit_test(test_malformed_files),
      cmocka_unit_test(test_open_read_golden),
      cmocka_unit_test(test_open_then_changed),
      cmocka_unit_test(test_truncated_golden),
      cmocka_unit_test(test_corrupted),
      cmocka_unit_test(test_save_errors),
      cmocka_unit_test(test_atomic_write),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

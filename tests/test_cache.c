/* test_cache.c: the kernel cache (compiler/cache.c, jit_add_kernel).
 *
 * In process, on the cache layer: an entry round-trips; every truncation
 * and byte flips across header, key and object are misses; a directory
 * writable by others is refused. Through the rnnc binary, each case in a
 * cache directory of its own ($RNNC_CACHE_DIR): a cold and a warm run give
 * the same bits (predict --logits, and a short training's checkpoint), and
 * the warm run loads what the cold one stored (the entry's inode is
 * unchanged, and train reports its kernels from the cache); --no-cache and
 * RNNC_NO_CACHE=1 write nothing, and neither does rnnc build (it compiles
 * no JIT kernel); the directory is made 0700. Entries that
 * must not be loaded hold the object of another graph (rnn.nn with tanh
 * for sigmoid: other logits), so loading one would show in the output:
 * corrupted, truncated, garbage and wrong-key entries are rebuilt and
 * replaced, and so are whole entries with a valid checksum whose objects
 * are no object files, do not define the kernel, or are framed wrong; a
 * valid entry writable by group, or owned by another user, or
 * in a directory writable by group or owned by another user, is not
 * loaded (and another user's file not replaced). Processes filling the
 * same entry at once leave one whole entry, and an entry whose value is
 * too short to hold the kernel's ABI is rebuilt too.
 *
 * The key (jit_kernel_key) is the graph after its passes, not the code:
 * graph_key gives the same bytes for a graph file that differs only in
 * comments and layout (through rnnc: the same entry is loaded), other
 * bytes for another graph; a kernel and its ABI from the cache are those
 * codegen and LLVM made (jit_kernel cold, then warm). */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rnnc.h"
#include "testutil.h"

enum { NOBODY = 65534, HEADER = 32, ABI_BYTES = 48 /* jit.c's */ };

static char *rnn, *tanh_rnn, *ckpt; /* graphs/rnn.nn, its tanh variant, the golden weights */

static int setup(void **state) {
  (void)state;
  rnn = src_path("graphs/rnn.nn");
  ckpt = src_path("tests/golden/rnn_seed42.safetensors");
  Err e;
  char *text = read_file(rnn, NULL, &e);
  char *at = text ? strstr(text, "return sigmoid(") : NULL;
  if (!at)
    return -1;
  char *variant = xasprintf("%.*sreturn tanh(%s", (int)(at - text), text, at + strlen("return sigmoid("));
  tanh_rnn = tmp_path("rnn_tanh.nn");
  write_text(tanh_rnn, variant);
  free(variant);
  free(text);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  free(rnn);
  free(tanh_rnn);
  free(ckpt);
  return 0;
}

static char *slurp(const char *path, size_t *len) {
  Err e;
  char *s = read_file(path, len, &e);
  if (!s)
    fail_msg("%s", e.msg);
  return s;
}

/* The one entry in dir (a malloc'd path); fails unless there is exactly
 * one file, an entry (no temporary file left behind). */
static char *only_entry(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  char *entry = NULL;
  int n = 0;
  for (struct dirent *de; (de = readdir(d));) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
      continue;
    n++;
    size_t len = strlen(de->d_name);
    if (len == 23 && !strcmp(de->d_name + 16, ".kernel"))
      entry = xasprintf("%s/%s", dir, de->d_name);
  }
  closedir(d);
  if (n != 1 || !entry)
    fail_msg("%s: %d files, want one entry", dir, n);
  return entry;
}

static void set_cache(const char *dir) { assert_int_equal(setenv("RNNC_CACHE_DIR", dir, 1), 0); }

/* predict --logits of two names, the output (stderr ignored). */
static char *logits(const char *graph, bool no_cache) {
  const char *argv[] = {"predict", graph, ckpt, "Nakamura", "O'Brien", "--logits",
                        no_cache ? "--no-cache" : NULL, NULL};
  char *out, *err;
  int st = run_rnnc(argv, &out, &err);
  if (st != 0)
    fail_msg("predict: exit %d\n%s%s", st, out, err);
  free(err);
  return out;
}

/* A fresh cache directory holding the entry of rnn.nn's forward kernel
 * (*entry) and the output that goes with it (*want); *other: what rnn_tanh's
 * kernel prints, and *other_entry its entry (in a directory of its own). */
typedef struct Fixture {
  char *dir, *entry, *want;
  char *other, *other_entry;
} Fixture;

static void fixture(Fixture *f) {
  char *odir = tmp_path("cache-tanh");
  set_cache(odir);
  f->other = logits(tanh_rnn, false);
  f->other_entry = only_entry(odir);
  free(odir);
  f->dir = tmp_path("cache");
  set_cache(f->dir);
  f->want = logits(rnn, false);
  f->entry = only_entry(f->dir);
  assert_string_not_equal(f->want, f->other); /* the variant is visible */
}

static void fixture_free(Fixture *f) {
  free(f->dir);
  free(f->entry);
  free(f->want);
  free(f->other);
  free(f->other_entry);
}

/* The key length in an entry's header (see cache.c). */
static size_t key_length(const char *entry) {
  size_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | (unsigned char)entry[8 + i];
  return n;
}

/* An entry with rnn.nn's key, and so its file name, that holds rnn_tanh's
 * object with a correct checksum: only the checks of who may write it keep
 * it from being loaded. Written through the cache layer itself. */
static void plant_variant(const Fixture *f) {
  size_t n, m;
  char *good = slurp(f->entry, &n), *bad = slurp(f->other_entry, &m);
  size_t klen = key_length(good), bklen = key_length(bad);
  Err e;
  Cache *c = cache_open(f->dir, &e);
  assert_non_null(c);
  cache_store(c, good + HEADER, klen, bad + HEADER + bklen, m - HEADER - bklen);
  cache_close(c);
  free(good);
  free(bad);
}

static void assert_same_file(const char *path, const char *want, size_t wlen) {
  size_t n;
  char *got = slurp(path, &n);
  assert_int_equal(n, wlen);
  assert_memory_equal(got, want, n);
  free(got);
}

/* ------------------------------------------------------- the cache layer */

static void test_layer_roundtrip_and_damage(void **state) {
  (void)state;
  char *dir = tmp_path("layer");
  char *nested = xasprintf("%s/a/b", dir);
  Err e;
  Cache *c = cache_open(nested, &e);
  assert_non_null(c);
  struct stat st;
  assert_int_equal(stat(nested, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(stat(dir, &st), 0); /* what it creates is 0700 all the way */
  assert_int_equal(st.st_mode & 0777, 0700);

  char key[300], obj[5000];
  for (size_t i = 0; i < sizeof key; i++)
    key[i] = (char)(i * 7 + 1);
  for (size_t i = 0; i < sizeof obj; i++)
    obj[i] = (char)(i * 13 + 5);
  Buf b = {0};
  assert_int_equal(cache_load(c, key, sizeof key, &b), -1);
  cache_store(c, key, sizeof key, obj, sizeof obj);
  assert_int_equal(cache_load(c, key, sizeof key, &b), 0);
  assert_int_equal(b.len, sizeof obj);
  assert_memory_equal(b.data, obj, sizeof obj);
  buf_free(&b);
  assert_int_equal(cache_load(c, key, sizeof key - 1, &b), -1); /* another key */
  char *entry = only_entry(nested);
  size_t len;
  char *good = slurp(entry, &len);
  assert_int_equal(len, HEADER + sizeof key + sizeof obj);

  /* Every truncation, and flips in header, key and object, are misses. */
  int misses = 0, tries = 0;
  for (size_t cut = 0; cut < len; cut += cut < 64 ? 1 : 97) {
    assert_int_equal(truncate(entry, (off_t)cut), 0);
    misses += cache_load(c, key, sizeof key, &b) == -1;
    tries++;
  }
  for (size_t at = 0; at < len; at += at < 64 ? 1 : 61) {
    char *bad = xmalloc(len);
    memcpy(bad, good, len);
    bad[at] ^= 0x10;
    FILE *fp = fopen(entry, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bad, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    free(bad);
    misses += cache_load(c, key, sizeof key, &b) == -1;
    tries++;
  }
  print_message("cache layer: %d of %d damaged entries missed\n", misses, tries);
  assert_int_equal(misses, tries);
  assert_int_equal(b.len, 0);
  /* Stored again, it is whole again. */
  cache_store(c, key, sizeof key, obj, sizeof obj);
  assert_same_file(entry, good, len);
  cache_close(c);

  /* A directory writable by others is refused, with the reason. */
  assert_int_equal(chmod(nested, 0777), 0);
  assert_null(cache_open(nested, &e));
  assert_contains(e.msg, "writable by group or others");
  free(good);
  free(entry);
  free(nested);
  free(dir);
}

/* ----------------------------------------------------------- through rnnc */

static void test_cold_and_warm_predict(void **state) {
  (void)state;
  char *dir = tmp_path("cache"); /* does not exist yet */
  set_cache(dir);
  char *cold = logits(rnn, false);
  struct stat d, a, b;
  assert_int_equal(stat(dir, &d), 0);
  assert_int_equal(d.st_mode & 0777, 0700);
  char *entry = only_entry(dir);
  assert_int_equal(stat(entry, &a), 0);
  assert_int_equal(a.st_mode & 0777, 0600);
  char *warm = logits(rnn, false);
  assert_string_equal(warm, cold);
  assert_int_equal(stat(entry, &b), 0);
  /* Loaded, not compiled and stored again: the same file. */
  assert_int_equal(a.st_ino, b.st_ino);
  assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
  char *uncached = logits(rnn, true);
  assert_string_equal(uncached, cold);
  print_message("rnn.nn predict --logits: cold, warm and --no-cache agree\n");
  free(only_entry(dir)); /* still one entry */
  free(cold);
  free(warm);
  free(uncached);
  free(entry);
  free(dir);
}

static void test_no_cache_writes_nothing(void **state) {
  (void)state;
  char *dir = tmp_path("cache");
  set_cache(dir);
  char *out = logits(rnn, true);
  struct stat st;
  assert_int_equal(stat(dir, &st), -1); /* not even created */
  assert_int_equal(setenv("RNNC_NO_CACHE", "1", 1), 0);
  char *out2 = logits(rnn, false);
  assert_int_equal(unsetenv("RNNC_NO_CACHE"), 0);
  assert_int_equal(stat(dir, &st), -1);
  assert_string_equal(out, out2);
  free(out);
  free(out2);
  free(dir);
  /* Each command with the option says so, and where the cache is. */
  const char *cmds[] = {"train", "eval", "predict"};
  for (size_t i = 0; i < ARRAY_LEN(cmds); i++) {
    char *help = rnnc_expect(0, (const char *const[]){cmds[i], "--help", NULL});
    assert_contains(help, "--no-cache");
    assert_contains(help, "RNNC_NO_CACHE=1");
    free(help);
  }
}

/* rnnc build compiles its own object: no JIT kernel, no cache. */
static void test_build_uses_no_jit_kernel(void **state) {
  (void)state;
  char *dir = tmp_path("cache"), *obj = tmp_path("names_rnn.o");
  char *o = xasprintf("%s.o", obj);
  set_cache(dir);
  free(rnnc_expect(0, (const char *const[]){"build", rnn, ckpt, "-o", o, "--prefix", "names_rnn", NULL}));
  struct stat st;
  assert_int_equal(stat(dir, &st), -1);
  char *h = xasprintf("%s.h", obj);
  unlink(o);
  unlink(h);
  free(h);
  free(o);
  free(obj);
  free(dir);
}

/* Three languages of data/names, a few names each, and rnn.nn 32 wide. */
static void small_training(char **data, char **graph) {
  *data = tmp_path("names3");
  assert_int_equal(mkdir(*data, 0755), 0);
  const char *langs[] = {"Chinese", "Greek", "Japanese"};
  for (int i = 0; i < 3; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "data/names/%s.txt", langs[i]);
    char *src = src_path(rel);
    char *text = slurp(src, NULL);
    char *end = text;
    for (int k = 0; k < 40 && (end = strchr(end, '\n')); k++)
      end++;
    if (end)
      *end = '\0';
    char *dst = xasprintf("%s/%s.txt", *data, langs[i]);
    write_text(dst, text);
    free(dst);
    free(text);
    free(src);
  }
  char *text = slurp(rnn, NULL);
  char *h = strstr(text, "const H = 256"), *c = strstr(text, "const C = 18");
  assert_true(h && c && h < c);
  char *small = xasprintf("%.*sconst H = 32%.*sconst C = 3%s", (int)(h - text), text,
                          (int)(c - h - strlen("const H = 256")), h + strlen("const H = 256"),
                          c + strlen("const C = 18"));
  *graph = tmp_path("rnn32.nn");
  write_text(*graph, small);
  free(small);
  free(text);
}

static char *train(const char *graph, const char *data, const char *out, bool no_cache) {
  const char *argv[] = {"train", graph, "--data", data, "--epochs", "1", "--out", out,
                        no_cache ? "--no-cache" : NULL, NULL};
  return rnnc_expect(0, argv);
}

static void test_cold_and_warm_training(void **state) {
  (void)state;
  char *data, *graph;
  small_training(&data, &graph);
  char *dir = tmp_path("cache");
  set_cache(dir);
  char *a = tmp_path("cold.safetensors"), *b = tmp_path("warm.safetensors");
  char *c = tmp_path("uncached.safetensors");
  char *s = train(graph, data, a, false);
  /* train; LLVM's work on the inference kernels goes on in the background */
  assert_contains(s, "; 0 of 1 kernels from the cache; 2 compiling in the background "
                     "(forward_batch, forward)");
  free(s);
  s = train(graph, data, b, false); /* all three stored: the evaluation waited for them */
  assert_contains(s, "; 3 of 3 kernels from the cache");
  free(s);
  s = train(graph, data, c, true);
  assert_contains(s, "; 0 of 1 kernels from the cache; 2 compiling in the background");
  free(s);
  size_t na, nb, nc;
  char *ca = slurp(a, &na), *cb = slurp(b, &nb), *cc = slurp(c, &nc);
  assert_int_equal(na, nb);
  assert_memory_equal(ca, cb, na);
  assert_int_equal(na, nc);
  assert_memory_equal(ca, cc, na);
  print_message("training checkpoints cold, warm and --no-cache: the same %zu bytes\n", na);
  free(ca);
  free(cb);
  free(cc);
  free(a);
  free(b);
  free(c);
  free(dir);
  free(data);
  free(graph);
}

static void write_bytes(const char *path, const char *p, size_t n) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(p, 1, n, fp), n);
  assert_int_equal(fclose(fp), 0);
}

static void test_damaged_entries_are_rebuilt(void **state) {
  (void)state;
  Fixture f;
  fixture(&f);
  size_t n, m;
  char *good = slurp(f.entry, &n), *other = slurp(f.other_entry, &m);
  static const char *const kinds[] = {"a byte of the object flipped", "a byte of the key flipped",
                                      "truncated", "garbage", "empty",
                                      "another kernel's entry (wrong key)",
                                      "another kernel's object, checksum stale"};
  for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
    char *bad = xmalloc(n > m ? n : m);
    size_t len = n;
    memcpy(bad, good, n);
    switch (k) {
    case 0: bad[n - 100] ^= 0x01; break;
    case 1: bad[HEADER + 40] ^= 0x01; break;
    case 2: len = n / 2; break;
    case 3: for (size_t i = 0; i < n; i++) bad[i] = (char)(i * 31 + 7); break;
    case 4: len = 0; break;
    case 5: memcpy(bad, other, m), len = m; break;
    case 6: {
      /* rnn.nn's header and key, rnn_tanh's object and its length. */
      size_t gk = key_length(good), ok = key_length(other), olen = m - HEADER - ok;
      len = HEADER + gk + olen;
      bad = xrealloc(bad, len);
      memcpy(bad + HEADER + gk, other + HEADER + ok, olen);
      for (int i = 0; i < 8; i++)
        bad[16 + i] = (char)(olen >> (8 * i));
      break;
    }
    }
    write_bytes(f.entry, bad, len);
    char *got = logits(rnn, false);
    if (strcmp(got, f.want))
      fail_msg("entry %s: loaded (output differs)", kinds[k]);
    assert_same_file(f.entry, good, n); /* rebuilt and replaced */
    print_message("entry %s: ignored, rebuilt and replaced\n", kinds[k]);
    free(got);
    free(bad);
  }
  /* A whole entry with the right key whose value is too short to hold
   * the kernel's ABI (written through the cache layer). */
  Err e;
  Cache *c = cache_open(f.dir, &e);
  assert_non_null(c);
  cache_store(c, good + HEADER, key_length(good), "abi", 3);
  cache_close(c);
  char *got = logits(rnn, false);
  assert_string_equal(got, f.want);
  assert_same_file(f.entry, good, n);
  print_message("entry with no room for the ABI: ignored, rebuilt and replaced\n");
  free(got);
  /* Whole entries with the right key and checksum, the right ABI, and
   * objects the JIT could not link, or that do not define the kernel:
   * bytes that are no object file, the objects with every "forward" of
   * their symbol names renamed, and the objects' framing (jit.c's
   * OBJECTS_MAGIC, then each object's length) with a first length longer
   * than what follows. */
  size_t klen = key_length(good), vlen = n - HEADER - klen;
  assert_memory_equal(good + HEADER + klen + ABI_BYTES, "rncobjs1", 8); /* the kernel in parts */
  static const char *const forged[] = {"its object garbage", "its objects not defining the kernel",
                                       "its objects' framing cut short"};
  for (size_t k = 0; k < ARRAY_LEN(forged); k++) {
    char *val = xmalloc(vlen);
    memcpy(val, good + HEADER + klen, vlen);
    size_t renamed = 0;
    if (k == 0) {
      for (size_t i = ABI_BYTES; i < vlen; i++)
        val[i] = (char)(i * 131 + 17);
    } else if (k == 1) {
      for (size_t i = ABI_BYTES; i + 7 <= vlen; i++)
        if (!memcmp(val + i, "forward", 7))
          val[i + 1] = 'u', renamed++;
    } else {
      for (int b = 0; b < 8; b++)
        val[ABI_BYTES + 8 + b] = (char)(vlen >> (8 * b));
    }
    assert_true(k != 1 || renamed > 0);
    c = cache_open(f.dir, &e);
    assert_non_null(c);
    cache_store(c, good + HEADER, klen, val, vlen);
    cache_close(c);
    got = logits(rnn, false);
    assert_string_equal(got, f.want);
    assert_same_file(f.entry, good, n);
    print_message("entry with %s: ignored, rebuilt and replaced\n", forged[k]);
    free(got);
    free(val);
  }
  free(only_entry(f.dir));
  free(good);
  free(other);
  fixture_free(&f);
}

/* rnn.nn with a comment and blank lines more: the same graph, at other
 * positions (malloc'd path). */
static char *commented_rnn(void) {
  char *text = slurp(rnn, NULL);
  char *variant = xasprintf("# a comment that moves every position\n\n\n%s\n# and one at the end\n", text);
  char *path = tmp_path("rnn_commented.nn");
  write_text(path, variant);
  free(variant);
  free(text);
  return path;
}

static void forward_key(const char *path, Buf *key) {
  Err e;
  size_t len;
  char *text = slurp(path, &len);
  Kernels ks;
  if (kernels_prepare(&ks, path, text, len, KERNEL_BIT(KERNEL_FORWARD), 0, NULL, &e))
    fail_msg("%s", e.msg);
  graph_key(ks.graph[KERNEL_FORWARD], key);
  kernels_free(&ks);
  free(text);
}

static void test_key_is_the_graph(void **state) {
  (void)state;
  char *commented = commented_rnn();
  Buf a = {0}, b = {0}, c = {0};
  forward_key(rnn, &a);
  forward_key(commented, &b);
  forward_key(tanh_rnn, &c);
  assert_int_equal(a.len, b.len);
  assert_memory_equal(a.data, b.data, a.len);
  assert_true(a.len != c.len || memcmp(a.data, c.data, a.len));
  buf_free(&a);
  buf_free(&b);
  buf_free(&c);

  /* Through rnnc: the commented graph loads rnn.nn's entry. */
  char *dir = tmp_path("cache");
  set_cache(dir);
  char *cold = logits(rnn, false);
  char *entry = only_entry(dir);
  struct stat before, after;
  assert_int_equal(stat(entry, &before), 0);
  char *warm = logits(commented, false);
  assert_string_equal(warm, cold);
  free(only_entry(dir)); /* no second entry */
  assert_int_equal(stat(entry, &after), 0);
  assert_int_equal(before.st_ino, after.st_ino);
  assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  print_message("a graph that differs in comments only: the same key, its entry loaded\n");
  free(cold);
  free(warm);
  free(entry);
  free(dir);
  unlink(commented);
  free(commented);
}

/* jit_kernel in process: the objects and ABIs of each kernel kind of
 * gru.nn's training at batch 32 and of its forward kernels, compiled into
 * an empty cache and loaded from it, are the same. */
static void test_kernel_and_abi_from_the_cache(void **state) {
  (void)state;
  char *gru = src_path("graphs/gru.nn");
  size_t len;
  char *text = slurp(gru, &len);
  Err e;
  Kernels ks;
  const KernelKind kinds[] = {KERNEL_STEP, KERNEL_UPDATE, KERNEL_FORWARD, KERNEL_FORWARD_BATCH};
  unsigned want = 0;
  for (size_t i = 0; i < ARRAY_LEN(kinds); i++)
    want |= KERNEL_BIT(kinds[i]);
  if (kernels_prepare(&ks, gru, text, len, want, 0, NULL, &e))
    fail_msg("%s", e.msg);
  Jit *j = jit_new(NULL, &e);
  assert_non_null(j);
  Simd simd = jit_simd(j);
  char *dir = tmp_path("cache");
  Cache *c = cache_open(dir, &e);
  assert_non_null(c);
  for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
    const Graph *g = ks.graph[kinds[i]];
    Buf obj[2] = {{0}};
    KernelAbi abi[2];
    memset(abi, 0xa5, sizeof abi);
    JitTimes t[2] = {{0}};
    for (int r = 0; r < 2; r++) /* cold, warm */
      if (jit_kernel(j, kinds[i], g, simd, c, &obj[r], &abi[r], &t[r], &e))
        fail_msg("%s: %s", kernel_name(kinds[i]), e.msg);
    assert_int_equal(t[0].cached, 0);
    assert_int_equal(t[1].cached, 1);
    assert_true(t[0].codegen > 0 || t[0].optimize > 0);
    assert_true(t[1].codegen == 0 && t[1].optimize == 0 && t[1].machine_code == 0);
    assert_int_equal(obj[1].len, obj[0].len);
    assert_memory_equal(obj[1].data, obj[0].data, obj[0].len);
    assert_int_equal(abi[1].scratch_fixed, abi[0].scratch_fixed);
    assert_int_equal(abi[1].scratch_per_t, abi[0].scratch_per_t);
    assert_int_equal(abi[1].scratch_per_b, abi[0].scratch_per_b);
    assert_int_equal(abi[1].noise, abi[0].noise);
    assert_int_equal(abi[1].packed, abi[0].packed);
    assert_int_equal(abi[1].extra, abi[0].extra);
    print_message("%s: object (%zu bytes) and ABI (scratch %zu + T * %zu + B * %zu, noise %zu, "
                  "packs %zu, second function %s) the same from the cache\n",
                  kernel_name(kinds[i]), obj[0].len, abi[0].scratch_fixed, abi[0].scratch_per_t,
                  abi[0].scratch_per_b, abi[0].noise, abi[0].packed, abi[0].extra ? "yes" : "no");
    buf_free(&obj[0]);
    buf_free(&obj[1]);
  }
  cache_close(c);
  jit_free(j);
  kernels_free(&ks);
  free(dir);
  free(text);
  free(gru);
}

static void test_untrusted_entries_are_not_loaded(void **state) {
  (void)state;
  Fixture f;
  fixture(&f);
  size_t n;
  char *good = slurp(f.entry, &n);
  bool root = geteuid() == 0;

  /* The planted entry would be loaded if it were trusted. */
  plant_variant(&f);
  char *got = logits(rnn, false);
  assert_string_equal(got, f.other);
  free(got);

  /* Writable by group: not loaded; it is ours, so it is replaced. */
  plant_variant(&f);
  assert_int_equal(chmod(f.entry, 0620), 0);
  got = logits(rnn, false);
  assert_string_equal(got, f.want);
  free(got);
  assert_same_file(f.entry, good, n);
  struct stat st;
  assert_int_equal(stat(f.entry, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  print_message("entry writable by group: not loaded, replaced\n");

  /* Another user's: not loaded, and left alone. */
  if (root) {
    plant_variant(&f);
    size_t pn;
    char *planted = slurp(f.entry, &pn);
    assert_int_equal(chown(f.entry, NOBODY, NOBODY), 0);
    got = logits(rnn, false);
    assert_string_equal(got, f.want);
    free(got);
    assert_int_equal(stat(f.entry, &st), 0);
    assert_int_equal(st.st_uid, NOBODY);
    assert_same_file(f.entry, planted, pn);
    free(planted);
    assert_int_equal(chown(f.entry, 0, 0), 0);
    print_message("entry of another user: not loaded, not replaced\n");
  } else {
    print_message("not root: an entry of another user is not tested\n");
  }

  /* A directory writable by group, or another user's: not used at all,
   * with a warning; the (valid-looking) entry in it is left alone. */
  for (int k = 0; k < 2; k++) {
    if (k == 1 && !root) {
      print_message("not root: a cache directory of another user is not tested\n");
      break;
    }
    plant_variant(&f);
    size_t pn;
    char *planted = slurp(f.entry, &pn);
    if (k == 0)
      assert_int_equal(chmod(f.dir, 0770), 0);
    else
      assert_int_equal(chown(f.dir, NOBODY, NOBODY), 0);
    const char *argv[] = {"predict", rnn, ckpt, "Nakamura", "O'Brien", "--logits", NULL};
    char *out, *err;
    assert_int_equal(run_rnnc(argv, &out, &err), 0);
    assert_string_equal(out, f.want);
    assert_contains(err, k == 0 ? "writable by group or others" : "belongs to another user");
    assert_same_file(f.entry, planted, pn);
    print_message("cache directory %s: not used, with a warning\n",
                  k == 0 ? "writable by group" : "of another user");
    free(out);
    free(err);
    free(planted);
    if (k == 0)
      assert_int_equal(chmod(f.dir, 0700), 0);
    else
      assert_int_equal(chown(f.dir, 0, 0), 0);
  }
  free(good);
  fixture_free(&f);
}

/* Four processes start on an empty cache at once: each prints the same
 * logits, and one whole entry is left, which the next run loads. */
static void test_concurrent_fill(void **state) {
  (void)state;
  char *dir = tmp_path("cache");
  set_cache(dir);
  const char *bin = getenv("RNNC_BIN");
  assert_non_null(bin);
  enum { N = 4 };
  pid_t pids[N];
  char *outs[N];
  for (int i = 0; i < N; i++) {
    outs[i] = tmp_path("concurrent.out");
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      int fd = open(outs[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || dup2(fd, 1) < 0)
        _exit(127);
      execl(bin, bin, "predict", rnn, ckpt, "Nakamura", "O'Brien", "--logits", (char *)NULL);
      _exit(127);
    }
  }
  for (int i = 0; i < N; i++) {
    int status;
    assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  char *first = slurp(outs[0], NULL);
  for (int i = 1; i < N; i++) {
    char *o = slurp(outs[i], NULL);
    assert_string_equal(o, first);
    free(o);
  }
  char *entry = only_entry(dir);
  struct stat a, b;
  assert_int_equal(stat(entry, &a), 0);
  char *again = logits(rnn, false);
  assert_string_equal(again, first);
  assert_int_equal(stat(entry, &b), 0);
  assert_int_equal(a.st_ino, b.st_ino); /* loaded */
  print_message("%d processes filling one entry: the same logits, one entry, loaded next\n", N);
  for (int i = 0; i < N; i++) {
    unlink(outs[i]);
    free(outs[i]);
  }
  free(again);
  free(first);
  free(entry);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layer_roundtrip_and_damage),
      cmocka_unit_test(test_cold_and_warm_predict),
      cmocka_unit_test(test_no_cache_writes_nothing),
      cmocka_unit_test(test_build_uses_no_jit_kernel),
      cmocka_unit_test(test_cold_and_warm_training),
      cmocka_unit_test(test_damaged_entries_are_rebuilt),
      cmocka_unit_test(test_untrusted_entries_are_not_loaded),
      cmocka_unit_test(test_concurrent_fill),
      cmocka_unit_test(test_key_is_the_graph),
      cmocka_unit_test(test_kernel_and_abi_from_the_cache),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

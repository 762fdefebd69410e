/* test_data.c: the vocabulary, loading data/names (checked name by name
 * against tests/data/names_ascii.tsv), the split (sizes, stratification,
 * partition, determinism), and bad input: a clear error or a counted skip,
 * never a crash (ASan/UBSan watch). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "testutil.h"

/* The names vocabulary, for name_encode (reachable until exit). */
static const Vocab *names_vocab(void) {
  static Vocab v;
  if (!v.n)
    vocab_names(&v);
  return &v;
}

static void load_names(Dataset *ds) {
  char *dir = src_path("data/names");
  Err e;
  if (data_load(ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e))
    fail_msg("%s", e.msg);
  free(dir);
}

static void split(Dataset *ds, double fraction, uint64_t seed) {
  Err e;
  if (data_split(ds, fraction, seed, &e))
    fail_msg("%s", e.msg);
}

/* A fresh directory under the test scratch dir holding the given files
 * (name, contents pairs, NULL-terminated). */
static char *make_dir(const char *const *files) {
  char *dir = tmp_path("data");
  assert_int_equal(mkdir(dir, 0777), 0);
  for (size_t i = 0; files && files[i]; i += 2) {
    char *path = xasprintf("%s/%s", dir, files[i]);
    write_text(path, files[i + 1]);
    free(path);
  }
  return dir;
}

/* Loads dir, expecting failure with a message containing each of the
 * NULL-terminated fragments. */
static void expect_load_error(const char *dir, const char *const *fragments) {
  Dataset ds;
  Err e = {{0}};
  assert_int_equal(data_load(&ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e), -1);
  for (size_t i = 0; fragments[i]; i++)
    if (!strstr(e.msg, fragments[i]))
      fail_msg("error \"%s\" does not mention \"%s\"", e.msg, fragments[i]);
  assert_null(ds.names); /* nothing half-built is left behind */
  data_free(&ds);
}

static void test_vocab(void **state) {
  assert_int_equal(VOCAB_SIZE, 59);
  assert_int_equal(strlen(VOCAB_CHARS), 59);
  for (int i = 0; i < VOCAB_SIZE; i++)
    assert_int_equal(vocab_index((unsigned char)VOCAB_CHARS[i]), i);
  assert_int_equal(vocab_index('a'), 0);
  assert_int_equal(vocab_index('z'), 25);
  assert_int_equal(vocab_index('A'), 26);
  assert_int_equal(vocab_index(' '), 52);
  assert_int_equal(vocab_index('\''), 58);
  int n = 0;
  for (int c = 0; c < 256; c++)
    n += vocab_index((unsigned char)c) >= 0;
  assert_int_equal(n, 59);
  assert_int_equal(vocab_index('/'), -1);
  assert_int_equal(vocab_index('\0'), -1);
  assert_int_equal(vocab_index(0xC3), -1);
}

static void test_name_encode(void **state) {
  int32_t *chars;
  char *ascii;
  Err e;
  int n = name_encode("Ślusàrski", strlen("Ślusàrski"), names_vocab(), &chars, &ascii, &e);
  assert_int_equal(n, 9);
  assert_string_equal(ascii, "Slusarski");
  for (int i = 0; i < n; i++)
    assert_int_equal(chars[i], vocab_index((unsigned char)ascii[i]));
  free(chars);
  free(ascii);
  n = name_encode("O'Neil-Smith, Jr.", 17, names_vocab(), &chars, NULL, &e);
  assert_int_equal(n, 17);
  free(chars);
  assert_int_equal(name_encode("", 0, names_vocab(), &chars, NULL, &e), -1);
  assert_non_null(strstr(e.msg, "empty"));
  assert_int_equal(name_encode(" \t", 2, names_vocab(), &chars, NULL, &e), -1);
  assert_int_equal(name_encode("Maxa/B", 6, names_vocab(), &chars, NULL, &e), -1);
  assert_string_equal(e.msg, "character '/' is not in the vocabulary");
  assert_int_equal(name_encode("Ж", strlen("Ж"), names_vocab(), &chars, NULL, &e), -1);
  assert_string_equal(e.msg, "character 'Ж' (U+0416) has no ASCII form");
  assert_int_equal(name_encode("a©", strlen("a©"), names_vocab(), &chars, NULL, &e), -1);
  assert_string_equal(e.msg, "character '(' of its ASCII form \"a(c)\" is not in the vocabulary");
  assert_int_equal(name_encode("a\tb", 3, names_vocab(), &chars, NULL, &e), -1);
  assert_string_equal(e.msg, "character U+0009 is not in the vocabulary");
  assert_int_equal(name_encode("ab\xff", 3, names_vocab(), &chars, NULL, &e), -1);
  assert_non_null(strstr(e.msg, "invalid UTF-8"));
}

static void test_load_names(void **state) {
  Dataset ds;
  load_names(&ds);
  static const char *const langs[] = {
      "Arabic",   "Chinese", "Czech",  "Dutch",      "English", "French",
      "German",   "Greek",   "Irish",  "Italian",    "Japanese", "Korean",
      "Polish",   "Portuguese", "Russian", "Scottish", "Spanish", "Vietnamese"};
  assert_int_equal(ds.nlabels, 18);
  for (int l = 0; l < 18; l++)
    assert_string_equal(ds.labels[l], langs[l]);
  assert_int_equal(ds.nnames, 20073);
  assert_int_equal(ds.nempty, 0);
  assert_int_equal(ds.nskipped, 1);
  assert_non_null(strstr(ds.skipped[0].file, "Czech.txt"));
  assert_int_equal(ds.skipped[0].line, 265);
  assert_string_equal(ds.skipped[0].text, "Maxa/B");
  assert_string_equal(ds.skipped[0].reason, "character '/' is not in the vocabulary");
  size_t total = 0;
  for (int l = 0; l < 18; l++)
    total += ds.per_label[l];
  assert_int_equal(total, 20073);
  assert_int_equal(ds.per_label[2], 518); /* Czech: 519 lines, one skipped */
  assert_int_equal(ds.per_label[14], 9408);

  /* Name by name, in file order, against the independent transliteration:
   * every tsv row but the skipped one. */
  char *path = src_path("tests/data/names_ascii.tsv");
  Err e;
  char *text = read_file(path, NULL, &e);
  if (!text)
    fail_msg("%s", e.msg);
  char *p = strchr(text, '\n') + 1;
  size_t k = 0;
  while (*p) {
    char *nl = strchr(p, '\n');
    if (nl)
      *nl = '\0';
    char *name = strchr(p, '\t');
    *name++ = '\0';
    char *ascii = strchr(name, '\t');
    *ascii++ = '\0';
    if (strcmp(name, "Maxa/B")) {
      assert_true(k < ds.nnames);
      const Name *nm = &ds.names[k++];
      assert_string_equal(ds.labels[nm->label], p);
      assert_string_equal(nm->text, ascii);
      assert_int_equal(nm->len, (int)strlen(ascii));
      for (int i = 0; i < nm->len; i++)
        assert_int_equal(VOCAB_CHARS[nm->chars[i]], ascii[i]);
    }
    if (!nl)
      break;
    p = nl + 1;
  }
  assert_int_equal(k, ds.nnames);
  free(text);
  free(path);
  data_free(&ds);
}

static void test_split_sizes_and_strata(void **state) {
  Dataset ds;
  load_names(&ds);
  split(&ds, 0.1, 42);
  assert_int_equal(ds.ntrain, 18065);
  assert_int_equal(ds.ntest, 2008);

  size_t *nte = xcalloc((size_t)ds.nlabels, sizeof *nte);
  for (size_t i = 0; i < ds.ntest; i++)
    nte[ds.names[ds.test[i]].label]++;
  for (int l = 0; l < ds.nlabels; l++) {
    double share = 0.1 * (double)ds.per_label[l];
    if (!((double)nte[l] >= share - 1 && (double)nte[l] <= share + 1))
      fail_msg("%s: %zu of %zu names in test, want %.1f +- 1", ds.labels[l], nte[l],
               ds.per_label[l], share);
  }
  free(nte);

  /* Every name in exactly one of train and test. */
  unsigned char *seen = xcalloc(ds.nnames, 1);
  for (size_t i = 0; i < ds.ntrain; i++) {
    assert_true(ds.train[i] < ds.nnames);
    seen[ds.train[i]]++;
  }
  for (size_t i = 0; i < ds.ntest; i++) {
    assert_true(ds.test[i] < ds.nnames);
    assert_int_equal(seen[ds.test[i]], 0); /* not also in train */
    seen[ds.test[i]]++;
  }
  for (size_t i = 0; i < ds.nnames; i++)
    assert_int_equal(seen[i], 1);
  free(seen);

  /* Other fractions: ceil(f * N) in test. */
  split(&ds, 0.0, 42);
  assert_int_equal(ds.ntrain, 20073);
  assert_int_equal(ds.ntest, 0);
  split(&ds, 0.5, 1);
  assert_int_equal(ds.ntest, 10037);
  assert_int_equal(ds.ntrain, 10036);
  Err e;
  assert_int_equal(data_split(&ds, 1.0, 42, &e), -1);
  assert_non_null(strstr(e.msg, "[0, 1)"));
  assert_int_equal(data_split(&ds, -0.1, 42, &e), -1);
  assert_int_equal(data_split(&ds, NAN, 42, &e), -1);
  data_free(&ds);
}

static uint64_t fnv1a_u32(const uint32_t *a, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= a[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static void test_split_determinism(void **state) {
  Dataset a, b;
  load_names(&a);
  load_names(&b);
  split(&a, 0.1, 42);
  split(&b, 0.1, 42);
  assert_int_equal(a.ntest, b.ntest);
  assert_memory_equal(a.test, b.test, a.ntest * sizeof *a.test);
  assert_memory_equal(a.train, b.train, a.ntrain * sizeof *a.train);
  /* The split is integer arithmetic on a fixed generator: these are the
   * same on every machine and compiler. */
  assert_int_equal(a.test[0], 19926);
  assert_int_equal(fnv1a_u32(a.test, a.ntest), 0x1d5c5387ccfaeb14ULL);
  assert_int_equal(fnv1a_u32(a.train, a.ntrain), 0xd66216e3be9226d8ULL);

  split(&b, 0.1, 43);
  assert_int_equal(b.ntest, 2008);
  assert_true(memcmp(a.test, b.test, a.ntest * sizeof *a.test) != 0);
  /* Splitting again with the first seed gives the first split back. */
  split(&b, 0.1, 42);
  assert_memory_equal(a.test, b.test, a.ntest * sizeof *a.test);
  data_free(&a);
  data_free(&b);
}

static void test_bad_dirs(void **state) {
  expect_load_error("/nonexistent/names",
                    (const char *const[]){"'/nonexistent/names'", "does not exist", NULL});

  /* A file is a table: CSV without a tab in its first line. */
  char *file = tmp_path("plain");
  write_text(file, "Abe\n");
  expect_load_error(file, (const char *const[]){file, ":1:1: 1 field: a record is text,label", NULL});
  free(file);

  char *empty = make_dir(NULL);
  expect_load_error(empty, (const char *const[]){empty, "is empty", NULL});
  free(empty);

  char *notxt = make_dir((const char *const[]){"README", "names\n", "A.csv", "x\n", NULL});
  expect_load_error(notxt, (const char *const[]){notxt, "no .txt files", NULL});
  free(notxt);

  /* A directory where a file of names should be. */
  char *sub = make_dir((const char *const[]){"A.txt", "Abe\n", NULL});
  char *inner = xasprintf("%s/B.txt", sub);
  assert_int_equal(mkdir(inner, 0777), 0);
  expect_load_error(sub, (const char *const[]){"B.txt", "not a regular file", NULL});
  free(inner);
  free(sub);

  /* A file that cannot be read (root reads anything: no test then). */
  if (geteuid() != 0) {
    char *locked = make_dir((const char *const[]){"A.txt", "Abe\n", NULL});
    char *path = xasprintf("%s/A.txt", locked);
    assert_int_equal(chmod(path, 0), 0);
    expect_load_error(locked, (const char *const[]){path, "Permission denied", NULL});
    free(path);
    free(locked);
  }

  /* Only unusable names. */
  char *none = make_dir((const char *const[]){"A.txt", "\n???\n\n", NULL});
  expect_load_error(none, (const char *const[]){"no usable names", "1 skipped", "2 empty", NULL});
  free(none);
}

static void test_invalid_utf8_names_file_and_line(void **state) {
  char *dir = make_dir((const char *const[]){"A.txt", "Abe\nCid\n", "B.txt",
                                             "Good\nAlso good\nBa\xff" "d\nNever read\n", NULL});
  char *want = xasprintf("%s/B.txt:3: invalid UTF-8 (byte 0xff at column 3)", dir);
  Dataset ds;
  Err e;
  assert_int_equal(data_load(&ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e), -1);
  assert_string_equal(e.msg, want);
  free(want);
  free(dir);
}

static void test_empty_lines_and_skips(void **state) {
  /* CRLF, trailing whitespace, whitespace-only and empty lines, no final
   * newline; names with only unknown characters. */
  char *dir = make_dir((const char *const[]){
      "Alpha.txt", "Abe\r\n\r\n  \t \nCid  \n\n",
      "Beta.txt", "???\nЖЖЖ\nDee\n\xc2\xa0\nEve", NULL});
  Dataset ds;
  Err e;
  if (data_load(&ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(ds.nlabels, 2);
  assert_string_equal(ds.labels[0], "Alpha");
  assert_string_equal(ds.labels[1], "Beta");
  assert_int_equal(ds.nnames, 4);
  assert_string_equal(ds.names[0].text, "Abe");
  assert_string_equal(ds.names[1].text, "Cid");
  assert_string_equal(ds.names[2].text, "Dee");
  assert_string_equal(ds.names[3].text, "Eve");
  assert_int_equal(ds.names[3].label, 1);
  assert_int_equal(ds.per_label[0], 2);
  assert_int_equal(ds.per_label[1], 2);
  assert_int_equal(ds.nempty, 4); /* "\r", "  \t ", "", "\u00a0" */
  assert_int_equal(ds.nskipped, 2);
  assert_int_equal(ds.skipped[0].line, 1);
  assert_string_equal(ds.skipped[0].text, "???");
  assert_string_equal(ds.skipped[0].reason, "character '?' is not in the vocabulary");
  assert_int_equal(ds.skipped[1].line, 2);
  assert_string_equal(ds.skipped[1].text, "ЖЖЖ");
  assert_string_equal(ds.skipped[1].reason, "character 'Ж' (U+0416) has no ASCII form");
  char *beta = xasprintf("%s/Beta.txt", dir);
  assert_string_equal(ds.skipped[1].file, beta);
  free(beta);

  /* Four names: test gets ceil(0.1 * 4) = 1. */
  split(&ds, 0.1, 42);
  assert_int_equal(ds.ntest, 1);
  assert_int_equal(ds.ntrain, 3);
  data_free(&ds);
  free(dir);
}

static void test_label_list(void **state) {
  char *dir = make_dir((const char *const[]){"Beta.txt", "Abe\nCid\n", "Gamma.txt", "Dee\n",
                                             NULL});
  char *const labels[] = {"Alpha", "Beta", "Gamma", "Delta"};
  Dataset ds;
  Err e;
  if (data_load(&ds, dir, labels, 4, VOCAB_NAMES, NULL, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(ds.nlabels, 4);
  assert_string_equal(ds.labels[3], "Delta");
  assert_int_equal(ds.per_label[0], 0);
  assert_int_equal(ds.per_label[1], 2);
  assert_int_equal(ds.per_label[2], 1);
  assert_int_equal(ds.per_label[3], 0);
  assert_int_equal(ds.names[2].label, 2);
  data_free(&ds);

  char *const other[] = {"Alpha", "Beta"};
  assert_int_equal(data_load(&ds, dir, other, 2, VOCAB_NAMES, NULL, &e), -1);
  assert_non_null(strstr(e.msg, "Gamma.txt: 'Gamma' is not one of the 2 labels (Alpha, Beta)"));
  char *const twice[] = {"Beta", "Gamma", "Beta"};
  assert_int_equal(data_load(&ds, dir, twice, 3, VOCAB_NAMES, NULL, &e), -1);
  assert_non_null(strstr(e.msg, "'Beta' appears twice"));
  free(dir);
}

/* Names longer than NAME_MAX_CHARS, as written or as ASCII, are skipped
 * with a reason, the skip list showing the start only (issue 12, item 7:
 * a 5 MB line aborted training, a 1 MB one took 5 GB). */
static void test_long_names(void **state) {
  Buf b = {0};
  for (int i = 0; i < 1000; i++)
    buf_put(&b, "a", 1);
  buf_put(&b, "\n", 1); /* line 1: 1000 characters, kept */
  for (int i = 0; i < 1001; i++)
    buf_put(&b, "b", 1);
  buf_put(&b, "\n", 1); /* line 2: 1001, skipped */
  for (int i = 0; i < 500; i++)
    buf_put(&b, "\xc3\x9f", 2); /* ß: 500 as written, 1000 as ASCII (ss): kept */
  buf_put(&b, "\n", 1);
  for (int i = 0; i < 501; i++)
    buf_put(&b, "\xc3\x9f", 2); /* 1002 as ASCII: skipped */
  buf_put(&b, "\n", 1);
  for (int i = 0; i < 5 << 20; i++)
    buf_put(&b, "c", 1); /* a 5 MB line */
  buf_put(&b, "\nAbe\n", 5);
  char *dir = make_dir((const char *const[]){"X.txt", "", NULL});
  char *file = xasprintf("%s/X.txt", dir);
  FILE *f = fopen(file, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
  assert_int_equal(fclose(f), 0);
  buf_free(&b);
  Dataset ds;
  Err e;
  if (data_load(&ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(ds.nnames, 3);
  assert_int_equal(ds.names[0].len, 1000);
  assert_int_equal(ds.names[1].len, 1000);
  assert_string_equal(ds.names[2].text, "Abe");
  assert_int_equal(ds.nskipped, 3);
  const int lines[] = {2, 4, 5};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(ds.skipped[i].line, lines[i]);
    assert_string_equal(ds.skipped[i].reason, "longer than 1000 characters");
    assert_true(strlen(ds.skipped[i].text) <= 83);
    assert_non_null(strstr(ds.skipped[i].text, "..."));
  }
  data_free(&ds);
  /* name_encode, as predict uses it. */
  char long_name[1002];
  memset(long_name, 'd', 1001);
  long_name[1001] = '\0';
  int32_t *chars;
  assert_int_equal(name_encode(long_name, 1001, names_vocab(), &chars, NULL, &e), -1);
  assert_string_equal(e.msg, "longer than 1000 characters");
  assert_int_equal(name_encode(long_name, 1000, names_vocab(), &chars, NULL, &e), 1000);
  free(chars);
  free(file);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vocab),
      cmocka_unit_test(test_name_encode),
      cmocka_unit_test(test_load_names),
      cmocka_unit_test(test_split_sizes_and_strata),
      cmocka_unit_test(test_split_determinism),
      cmocka_unit_test(test_bad_dirs),
      cmocka_unit_test(test_invalid_utf8_names_file_and_line),
      cmocka_unit_test(test_empty_lines_and_skips),
      cmocka_unit_test(test_label_list),
      cmocka_unit_test(test_long_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

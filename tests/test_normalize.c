/* test_normalize.c: UTF-8 -> ASCII against Python's unidecode: every row of
 * tests/data/names_ascii.tsv (the whole data set) and every character of
 * tests/data/unidecode_latin.tsv; trailing whitespace; invalid UTF-8;
 * characters with no ASCII form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"
#include "testutil.h"

static char *read_fixture(const char *rel) {
  char *path = src_path(rel);
  Err e;
  char *text = read_file(path, NULL, &e);
  if (!text)
    fail_msg("%s", e.msg);
  free(path);
  return text;
}

/* Splits text into lines in place; returns the count. */
static size_t split_lines(char *text, char ***lines) {
  size_t n = 0, cap = 0;
  char **v = NULL;
  for (char *p = text; *p;) {
    char *nl = strchr(p, '\n');
    if (nl)
      *nl = '\0';
    if (n == cap) {
      cap = cap ? 2 * cap : 1024;
      v = xrealloc(v, cap * sizeof *v);
    }
    v[n++] = p;
    if (!nl)
      break;
    p = nl + 1;
  }
  *lines = v;
  return n;
}

static char *norm(const char *s, size_t *dropped) {
  Err e;
  char *a = normalize_ascii(s, strlen(s), dropped, &e);
  if (!a)
    fail_msg("normalize_ascii(\"%s\"): %s", s, e.msg);
  return a;
}

static void expect(const char *in, const char *want) {
  size_t dropped = 99;
  char *got = norm(in, &dropped);
  if (strcmp(got, want) || dropped)
    fail_msg("\"%s\" -> \"%s\" (%zu dropped), want \"%s\"", in, got, dropped, want);
  free(got);
}

static void test_names_ascii_tsv(void **state) {
  char *text = read_fixture("tests/data/names_ascii.tsv");
  char **lines;
  size_t n = split_lines(text, &lines);
  assert_string_equal(lines[0], "language\tname\tascii");
  size_t rows = 0, bad = 0;
  for (size_t i = 1; i < n; i++) {
    char *name = strchr(lines[i], '\t');
    assert_non_null(name);
    name++;
    char *ascii = strchr(name, '\t');
    assert_non_null(ascii);
    *ascii++ = '\0';
    size_t dropped;
    char *got = norm(name, &dropped);
    if (strcmp(got, ascii) || dropped) {
      if (bad++ < 10)
        print_error("row %zu: \"%s\" -> \"%s\" (%zu dropped), want \"%s\"\n", i + 1, name, got,
                    dropped, ascii);
    }
    free(got);
    rows++;
  }
  assert_int_equal(rows, 20074);
  if (bad)
    fail_msg("%zu of %zu rows differ from unidecode", bad, rows);
  free(lines);
  free(text);
}

static void test_unidecode_latin(void **state) {
  char *text = read_fixture("tests/data/unidecode_latin.tsv");
  char **lines;
  size_t n = split_lines(text, &lines);
  size_t rows = 0, bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (lines[i][0] == '#' || !lines[i][0])
      continue;
    char *tab = strchr(lines[i], '\t');
    assert_non_null(tab);
    unsigned long cp = strtoul(lines[i], NULL, 16);
    char utf8[4]; /* every code point here is in the BMP */
    if (cp < 0x800) {
      utf8[0] = (char)(0xC0 | (cp >> 6));
      utf8[1] = (char)(0x80 | (cp & 0x3F));
      utf8[2] = '\0';
    } else {
      utf8[0] = (char)(0xE0 | (cp >> 12));
      utf8[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
      utf8[2] = (char)(0x80 | (cp & 0x3F));
      utf8[3] = '\0';
    }
    /* Between two letters, so that whitespace is not trailing. */
    char *in = xasprintf("a%sa", utf8), *want = xasprintf("a%sa", tab + 1);
    size_t dropped;
    char *got = norm(in, &dropped);
    if (strcmp(got, want) || dropped) {
      if (bad++ < 10)
        print_error("U+%04lX: \"%s\" (%zu dropped), want \"%s\"\n", cp, got, dropped, want);
    }
    free(got);
    free(in);
    free(want);
    rows++;
  }
  assert_true(rows > 500);
  if (bad)
    fail_msg("%zu of %zu characters differ from unidecode", bad, rows);
  free(lines);
  free(text);
}

static void test_examples(void **state) {
  expect("Ślusàrski", "Slusarski");
  expect("Groß", "Gross");
  expect("Marszałek", "Marszalek");
  expect("Ǣ", "AE");  /* decomposes to Æ + macron: the table after NFKD */
  expect("ǿ", "o");   /* ø + acute */
  expect("a″b", "a''b"); /* double prime -> two primes */
  expect("O’Brien", "O'Brien");
  expect("Żółć", "Zolc");
  expect("", "");
  expect("plain", "plain");
}

static void test_whitespace(void **state) {
  expect("Abe \t\r", "Abe");
  expect("Abe\xc2\xa0", "Abe");         /* U+00A0 trailing */
  expect("Abe\xe3\x80\x80 ", "Abe");    /* U+3000 */
  expect("Abe\xe2\x80\xa9", "Abe");     /* U+2029 */
  expect("Abe\x1c", "Abe");             /* Python counts U+001C as space */
  expect("  Abe", "  Abe");             /* only the right end */
  expect("To The First\xc2\xa0Page", "To The First Page"); /* Russian.txt */
  expect(" \t ", "");
  assert_int_equal(utf8_rstrip("ab \xc2\xa0", 5), 2);
  assert_int_equal(utf8_rstrip("ab\xff ", 4), 3); /* an invalid byte is not space */
}

static void test_invalid_utf8(void **state) {
  static const char *const bad[] = {
      "\xff",             /* never valid */
      "ab\xc3",           /* truncated sequence */
      "\xc0\xaf",         /* overlong '/' */
      "\xed\xa0\x80",     /* surrogate */
      "\xf4\x90\x80\x80", /* above U+10FFFF */
      "a\x80z",           /* stray continuation byte */
  };
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    Err e = {{0}};
    size_t dropped;
    char *got = normalize_ascii(bad[i], strlen(bad[i]), &dropped, &e);
    assert_null(got);
    assert_non_null(strstr(e.msg, "invalid UTF-8"));
  }
  Err e;
  assert_null(normalize_ascii("ab\xff", 3, NULL, &e));
  assert_string_equal(e.msg, "invalid UTF-8 (byte 0xff at column 3)");
}

static void test_no_ascii_form(void **state) {
  size_t dropped;
  char *a = norm("Иванов", &dropped);
  assert_string_equal(a, "");
  assert_int_equal(dropped, 6);
  free(a);
  a = norm("aЖb", &dropped);
  assert_string_equal(a, "ab");
  assert_int_equal(dropped, 1);
  free(a);
  Err e;
  a = normalize_ascii("a\0b", 3, &dropped, &e); /* NUL cannot sit in a C string */
  assert_string_equal(a, "ab");
  assert_int_equal(dropped, 1);
  free(a);
  a = norm("\xcc\x81", &dropped); /* a lone combining mark is dropped, not counted */
  assert_string_equal(a, "");
  assert_int_equal(dropped, 0);
  free(a);
  a = norm("Mo\xc2\xadller", &dropped); /* soft hyphen: removed, as unidecode does */
  assert_string_equal(a, "Moller");
  assert_int_equal(dropped, 0);
  free(a);
  assert_int_equal(normalize_first_dropped("Xйz", strlen("Xйz")), 0x439); /* й, not и */
  assert_int_equal(normalize_first_dropped("Xyz", 3), -1);
  assert_int_equal(normalize_first_dropped("\xff", 1), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_ascii_tsv), cmocka_unit_test(test_unidecode_latin),
      cmocka_unit_test(test_examples),        cmocka_unit_test(test_whitespace),
      cmocka_unit_test(test_invalid_utf8),    cmocka_unit_test(test_no_ascii_form),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

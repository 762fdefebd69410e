/* normalize.c: UTF-8 names -> ASCII, the way Python's unidecode (1.3.6)
 * transliterates the Latin-script names of the data set.
 *
 *   name  --rstrip-->  --table-->  --NFKD-->  --drop marks, table-->  ASCII
 *
 * NFKD (libunistring) splits accented letters into a base letter and
 * combining marks (é -> e + U+0301), and the marks are dropped. Letters
 * that have no decomposition (ß, ł, ø, æ, ...) and the characters whose
 * decomposition is not what unidecode gives (´ -> space + accent, ŀ -> l·)
 * come from the table below. Anything else outside ASCII has no ASCII form
 * here (Cyrillic, CJK, ...): it is left out and counted, where unidecode
 * would romanize it. tests/data/unidecode_latin.tsv checks the result
 * against unidecode for all of Latin-1 and Latin Extended-A, Latin Extended
 * Additional but for a few archaic letters (Vietnamese included), and the
 * punctuation in the table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "runtime.h"

typedef struct Translit {
  ucs4_t c;
  const char *ascii;
} Translit;

/* unidecode's output for every character below U+0180 whose NFKD with
 * marks dropped differs from it, and for a few letters and punctuation
 * marks beyond that which turn up in names. Sorted by code point (binary
 * search). "" means unidecode deletes the character: it is removed, not
 * counted as having no ASCII form. */
static const Translit table[] = {
    {0x00A1, "!"},    /* inverted exclamation mark */
    {0x00A2, "C/"},   /* cent sign */
    {0x00A3, "PS"},   /* pound sign */
    {0x00A4, "$?"},   /* currency sign */
    {0x00A5, "Y="},   /* yen sign */
    {0x00A6, "|"},    /* broken bar */
    {0x00A7, "SS"},   /* section sign */
    {0x00A8, "\""},   /* diaeresis (NFKD: space + combining diaeresis) */
    {0x00A9, "(c)"},  /* copyright sign */
    {0x00AB, "<<"},   /* left-pointing double angle quotation mark */
    {0x00AC, "!"},    /* not sign */
    {0x00AD, ""},     /* soft hyphen */
    {0x00AE, "(r)"},  /* registered sign */
    {0x00AF, "-"},    /* macron (NFKD: space + combining macron) */
    {0x00B0, "deg"},  /* degree sign */
    {0x00B1, "+-"},   /* plus-minus sign */
    {0x00B4, "'"},    /* acute accent (NFKD: space + combining acute) */
    {0x00B5, "u"},    /* micro sign (NFKD: Greek mu) */
    {0x00B6, "P"},    /* pilcrow sign */
    {0x00B7, "*"},    /* middle dot */
    {0x00B8, ","},    /* cedilla (NFKD: space + combining cedilla) */
    {0x00BB, ">>"},   /* right-pointing double angle quotation mark */
    {0x00BC, " 1/4"}, /* vulgar fractions (NFKD: 1 U+2044 4, no space) */
    {0x00BD, " 1/2"},
    {0x00BE, " 3/4"},
    {0x00BF, "?"},    /* inverted question mark */
    {0x00C6, "AE"},   /* Æ */
    {0x00D0, "D"},    /* Ð eth */
    {0x00D7, "x"},    /* multiplication sign */
    {0x00D8, "O"},    /* Ø */
    {0x00DE, "Th"},   /* Þ thorn */
    {0x00DF, "ss"},   /* ß */
    {0x00E6, "ae"},   /* æ */
    {0x00F0, "d"},    /* ð eth */
    {0x00F7, "/"},    /* division sign */
    {0x00F8, "o"},    /* ø */
    {0x00FE, "th"},   /* þ thorn */
    {0x0110, "D"},    /* Đ */
    {0x0111, "d"},    /* đ */
    {0x0126, "H"},    /* Ħ */
    {0x0127, "h"},    /* ħ */
    {0x0131, "i"},    /* ı dotless i */
    {0x0138, "k"},    /* ĸ kra */
    {0x013F, "L"},    /* Ŀ (NFKD: L + middle dot) */
    {0x0140, "l"},    /* ŀ (NFKD: l + middle dot) */
    {0x0141, "L"},    /* Ł */
    {0x0142, "l"},    /* ł */
    {0x0149, "'n"},   /* ŉ */
    {0x014A, "ng"},   /* Ŋ: unidecode 1.3.6 swaps the case of eng, */
    {0x014B, "NG"},   /* ŋ  and so do we, to give what it gives */
    {0x0152, "OE"},   /* Œ */
    {0x0153, "oe"},   /* œ */
    {0x0166, "T"},    /* Ŧ */
    {0x0167, "t"},    /* ŧ */
    {0x0192, "f"},    /* ƒ */
    {0x0237, "j"},    /* ȷ dotless j */
    {0x02BB, "`"},    /* modifier letter turned comma (Hawaiian ʻokina) */
    {0x02BC, "'"},    /* modifier letter apostrophe (also from ŉ's NFKD) */
    {0x02D8, "V"},    /* spacing breve, dot above, ring above, ogonek, */
    {0x02D9, "."},    /* tilde, double acute: NFKD gives a space plus */
    {0x02DA, "@"},    /* a combining mark */
    {0x02DB, ","},
    {0x02DC, "~"},
    {0x02DD, "\""},
    {0x1680, " "},    /* ogham space mark */
    {0x1E9E, "Ss"},   /* ẞ capital sharp s */
    {0x200B, " "},    /* zero width space */
    {0x200C, ""},     /* zero width non-joiner */
    {0x200D, ""},     /* zero width joiner */
    {0x200E, ""},     /* left-to-right mark */
    {0x200F, ""},     /* right-to-left mark */
    {0x2010, "-"},    /* hyphen */
    {0x2011, "-"},    /* non-breaking hyphen */
    {0x2012, "-"},    /* figure dash */
    {0x2013, "-"},    /* en dash */
    {0x2014, "--"},   /* em dash */
    {0x2015, "--"},   /* horizontal bar */
    {0x2018, "'"},    /* left single quotation mark */
    {0x2019, "'"},    /* right single quotation mark (O’Brien) */
    {0x201A, ","},    /* single low-9 quotation mark */
    {0x201B, "'"},    /* single high-reversed-9 quotation mark */
    {0x201C, "\""},   /* left double quotation mark */
    {0x201D, "\""},   /* right double quotation mark */
    {0x201E, ",,"},   /* double low-9 quotation mark */
    {0x201F, "\""},   /* double high-reversed-9 quotation mark */
    {0x2027, "."},    /* hyphenation point */
    {0x2032, "'"},    /* prime (double prime decomposes to two primes) */
    {0x2044, "/"},    /* fraction slash */
    {0x2060, ""},     /* word joiner */
    {0xFEFF, ""},     /* byte order mark / zero width no-break space */
};

static int translit_cmp(const void *key, const void *elem) {
  ucs4_t c = *(const ucs4_t *)key, t = ((const Translit *)elem)->c;
  return c < t ? -1 : c > t;
}

static const char *table_lookup(ucs4_t c) {
  const Translit *t = bsearch(&c, table, ARRAY_LEN(table), sizeof table[0], translit_cmp);
  return t ? t->ascii : NULL;
}

/* Python's str.isspace: Unicode White_Space minus U+180E, plus the
 * information separators U+001C..U+001F. */
static int is_py_space(ucs4_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t utf8_rstrip(const char *s, size_t n) {
  const uint8_t *u = (const uint8_t *)s;
  size_t keep = 0;
  for (size_t i = 0; i < n;) {
    ucs4_t c;
    int k = u8_mbtouc(&c, u + i, n - i); /* an invalid byte: U+FFFD, k = 1 */
    i += (size_t)k;
    if (!is_py_space(c))
      keep = i;
  }
  return keep;
}

/* Appends the transliteration of the valid UTF-8 s[0..n) to out, counting
 * the characters with no ASCII form in *dropped. */
static int transliterate(const uint8_t *s, size_t n, Buf *out, size_t *dropped, Err *e) {
  /* The table goes first, for the characters whose NFKD is wrong here. */
  Buf pre = {0};
  for (size_t i = 0; i < n;) {
    ucs4_t c;
    int k = u8_mbtouc_unsafe(&c, s + i, n - i);
    const char *t = c < 0x80 ? NULL : table_lookup(c);
    if (t)
      buf_put(&pre, t, strlen(t));
    else
      buf_put(&pre, s + i, (size_t)k);
    i += (size_t)k;
  }
  if (!pre.len)
    return 0;
  size_t dn = 0;
  uint8_t *d = u8_normalize(UNINORM_NFKD, (const uint8_t *)pre.data, pre.len, NULL, &dn);
  buf_free(&pre);
  if (!d)
    return errf(e, "Unicode normalization failed: %s", strerror(errno));
  /* The table again, for what decomposition produced (Ǣ -> Æ + macron,
   * ǿ -> ø + acute, ″ -> ′′). */
  for (size_t i = 0; i < dn;) {
    ucs4_t c;
    int k = u8_mbtouc_unsafe(&c, d + i, dn - i);
    i += (size_t)k;
    const char *t;
    if (c != 0 && c < 0x80) {
      char ch = (char)c;
      buf_put(out, &ch, 1);
    } else if (uc_is_general_category(c, UC_CATEGORY_M)) {
      continue;
    } else if ((t = table_lookup(c))) {
      buf_put(out, t, strlen(t));
    } else {
      (*dropped)++; /* NUL too: it cannot sit in a C string */
    }
  }
  free(d);
  return 0;
}

static int check_utf8(const char *s, size_t n, Err *e) {
  const uint8_t *bad = u8_check((const uint8_t *)s, n);
  if (bad)
    return errf(e, "invalid UTF-8 (byte 0x%02x at column %zu)", *bad,
                (size_t)(bad - (const uint8_t *)s) + 1);
  return 0;
}

char *normalize_ascii(const char *s, size_t n, size_t *dropped, Err *e) {
  if (check_utf8(s, n, e))
    return NULL;
  n = utf8_rstrip(s, n);
  size_t ndropped = 0;
  if (!memchr(s, 0, n)) { /* the common case: already ASCII */
    size_t i = 0;
    while (i < n && (unsigned char)s[i] < 0x80)
      i++;
    if (i == n) {
      if (dropped)
        *dropped = 0;
      return xstrndup(s, n);
    }
  }
  Buf out = {0};
  if (transliterate((const uint8_t *)s, n, &out, &ndropped, e)) {
    buf_free(&out);
    return NULL;
  }
  buf_put(&out, "", 1);
  if (dropped)
    *dropped = ndropped;
  return out.data;
}

long normalize_first_dropped(const char *s, size_t n) {
  if (u8_check((const uint8_t *)s, n))
    return -1;
  n = utf8_rstrip(s, n);
  /* One character at a time, to name the character as written (й, not
   * the и its decomposition leaves behind). */
  for (size_t i = 0; i < n;) {
    ucs4_t c;
    int k = u8_mbtouc_unsafe(&c, (const uint8_t *)s + i, n - i);
    size_t nd = 0;
    Buf out = {0};
    int bad = transliterate((const uint8_t *)s + i, (size_t)k, &out, &nd, NULL);
    buf_free(&out);
    if (bad || nd)
      return (long)c;
    i += (size_t)k;
  }
  return -1;
}

char *shown_text(const char *s, size_t n, size_t max) {
  Buf b = {0};
  for (size_t i = 0; i < n;) {
    ucs4_t c;
    int k = u8_mbtoucr(&c, (const uint8_t *)s + i, n - i);
    char esc[8];
    const char *piece = esc;
    size_t len;
    if (k < 0) { /* not UTF-8: the byte */
      len = (size_t)snprintf(esc, sizeof esc, "\\x%02X", (unsigned char)s[i]);
      k = 1;
    } else if (c == '\n' || c == '\t' || c == '\r') {
      len = (size_t)snprintf(esc, sizeof esc, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : 'r');
    } else if (c < 0x20 || c == 0x7f) {
      len = (size_t)snprintf(esc, sizeof esc, "\\x%02X", (unsigned)c);
    } else {
      piece = s + i;
      len = (size_t)k;
    }
    if (b.len + len > max) {
      buf_put(&b, "...", 3);
      break;
    }
    buf_put(&b, piece, len);
    i += (size_t)k;
  }
  buf_put(&b, "", 1);
  return b.data;
}

/* lex.c: graph source text -> tokens. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

/* Punctuators, longest first. */
static const char *const puncts[] = {"..", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}",
                                     ",", ":", "=", "+", "-", "*", "/", "%", "@", "?", "<",
                                     ">", ";"};

static bool ident_start(int c) { return isalpha(c) || c == '_'; }
static bool ident_char(int c) { return isalnum(c) || c == '_'; }

/* Length of an interpolation "{name}" at s, or 0. */
static int interp_len(const char *s, const char *end) {
  if (s >= end || *s != '{' || s + 1 >= end || !ident_start((unsigned char)s[1]))
    return 0;
  const char *p = s + 1;
  while (p < end && ident_char((unsigned char)*p))
    p++;
  return p < end && *p == '}' ? (int)(p - s) + 1 : 0;
}

Token *tokenize(const Src *src, Diag *d, Arena *a) {
  const char *s = src->text, *end = src->text + src->len;
  int line = 1;
  const char *bol = s;
  int depth = 0; /* () and [] nesting: newlines inside are not tokens */
  /* The token array lives in the arena (grown by doubling), so an error,
   * which longjmps out, leaks nothing. */
  size_t n = 0, cap = 256;
  Token *toks = arena_alloc(a, cap * sizeof *toks);

#define POS ((Pos){line, (int)(s - bol) + 1})
#define PUSH(...)                                                                                  \
  do {                                                                                             \
    if (n == cap) {                                                                                \
      Token *grown = arena_alloc(a, 2 * cap * sizeof *toks);                                       \
      memcpy(grown, toks, cap * sizeof *toks);                                                     \
      toks = grown;                                                                                \
      cap *= 2;                                                                                    \
    }                                                                                              \
    toks[n++] = (Token){__VA_ARGS__};                                                              \
  } while (0)

  while (s < end) {
    unsigned char c = (unsigned char)*s;
    if (c == '\n') {
      if (depth == 0 && n > 0 && toks[n - 1].kind != TK_NL)
        PUSH(.kind = TK_NL, .s = s, .len = 1, .pos = POS);
      s++;
      line++;
      bol = s;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') {
      s++;
      continue;
    }
    if (c == '#') {
      while (s < end && *s != '\n')
        s++;
      continue;
    }
    if (c == '\0')
      error_at(d, POS, "NUL byte in graph file");
    if (isdigit(c) || (c == '.' && s + 1 < end && isdigit((unsigned char)s[1]))) {
      /* A number: digits, an optional fraction (a '.' followed by a digit:
       * "0..L" is 0, "..", L) and an optional exponent. */
      const char *p = s;
      while (p < end && isdigit((unsigned char)*p))
        p++;
      if (p + 1 < end && *p == '.' && isdigit((unsigned char)p[1])) {
        p++;
        while (p < end && isdigit((unsigned char)*p))
          p++;
      }
      if (p < end && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        if (q < end && (*q == '+' || *q == '-'))
          q++;
        if (q >= end || !isdigit((unsigned char)*q))
          error_at(d, POS, "malformed number: exponent without digits");
        while (q < end && isdigit((unsigned char)*q))
          q++;
        p = q;
      }
      if (p < end && (ident_char((unsigned char)*p) || *p == '.'))
        if (!(*p == '.' && p + 1 < end && p[1] == '.'))
          error_at(d, POS, "malformed number '%.*s'", (int)(p - s) + 1, s);
      char buf[64];
      size_t len = (size_t)(p - s);
      if (len >= sizeof buf)
        error_at(d, POS, "number too long");
      memcpy(buf, s, len);
      buf[len] = '\0';
      PUSH(.kind = TK_NUM, .s = s, .len = (int)len, .num = strtod(buf, NULL), .pos = POS);
      s = p;
      continue;
    }
    if (ident_start(c)) {
      /* name ("." name | "{" name "}")* */
      const char *p = s;
      for (;;) {
        while (p < end && ident_char((unsigned char)*p))
          p++;
        int k;
        if (p + 1 < end && *p == '.' && ident_start((unsigned char)p[1]))
          p++;
        else if ((k = interp_len(p, end)) > 0)
          p += k;
        else
          break;
      }
      if (p - s > 200)
        error_at(d, POS, "name too long (over 200 characters)");
      PUSH(.kind = TK_IDENT, .s = s, .len = (int)(p - s), .pos = POS);
      s = p;
      continue;
    }
    size_t i;
    for (i = 0; i < ARRAY_LEN(puncts); i++) {
      size_t len = strlen(puncts[i]);
      if ((size_t)(end - s) >= len && !memcmp(s, puncts[i], len))
        break;
    }
    if (i == ARRAY_LEN(puncts)) {
      if (c >= 0x80)
        error_at(d, POS, "unexpected non-ASCII character");
      if (isprint(c))
        error_at(d, POS, "unexpected character '%c'", c);
      error_at(d, POS, "unexpected character (byte 0x%02x)", c);
    }
    int len = (int)strlen(puncts[i]);
    if (*s == ';') { /* ';' separates statements like a newline */
      if (n > 0 && toks[n - 1].kind != TK_NL)
        PUSH(.kind = TK_NL, .s = s, .len = 1, .pos = POS);
      s++;
      continue;
    }
    if (*s == '(' || *s == '[')
      depth++;
    if ((*s == ')' || *s == ']') && depth > 0)
      depth--;
    if (depth > 256)
      error_at(d, POS, "brackets nested too deeply");
    PUSH(.kind = TK_PUNCT, .s = s, .len = len, .pos = POS);
    s += len;
  }
  /* The end: just past the last token, on its line (an error there shows
   * that line and not the empty one after the file's last newline). In an
   * unclosed bracket the statement cannot end: no end of line, only the
   * end of the file. */
  Pos at = POS;
  for (size_t k = n; k-- > 0;)
    if (toks[k].kind != TK_NL) {
      at = (Pos){toks[k].pos.line, toks[k].pos.col + toks[k].len};
      break;
    }
  if (n > 0 && toks[n - 1].kind != TK_NL && depth == 0)
    PUSH(.kind = TK_NL, .s = s, .len = 0, .pos = at);
  PUSH(.kind = TK_EOF, .s = s, .len = 0, .pos = at);
#undef PUSH
#undef POS
  return toks;
}

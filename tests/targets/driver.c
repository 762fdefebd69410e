/* driver.c: runs an object of rnnc build on the names of names.h and prints,
 * for each name, P_forward's status and logits and P_predict's class and
 * probabilities, then P_forward_batch's status and the logits it gives all
 * the names at once (one line per name), then the results of bad inputs,
 * then "done". Floats are printed as their bits in hex: exact, and
 * newlib's printf has no %a.
 *
 * test_aot.c and test_targets.c compile it for each target with
 *   -DP=<prefix> -include <header> -I<directory of names.h>
 * (names.h: static const char *const names[] = {...};), run it natively,
 * under qemu-user or on an emulated Cortex-M4, and compare the output with
 * the JIT's logits. It is C99 and C++. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "names.h"

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(P, _forward)
#define FORWARD_BATCH CAT(P, _forward_batch)
#define PREDICT CAT(P, _predict)
#define LABELS CAT(P, _labels)
#define NCLASS CAT(P, _NUM_CLASSES)
#define VOCAB CAT(P, _VOCAB)
#define MAXLEN CAT(P, _MAX_LEN)

static unsigned long bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (unsigned long)u;
}

/* Vocabulary indices of s; -1 for a character outside it. */
static int encode(const char *s, int32_t *out) {
  int n = 0;
  for (; *s && n < MAXLEN; s++) {
    const char *p = strchr(VOCAB, *s);
    out[n++] = p ? (int32_t)(p - VOCAB) : -1;
  }
  return n;
}

/* P_forward_batch on hostile input (c: MAXLEN + 1 good indices): the
 * status, and that it wrote nothing. */
static void bad_batch(int32_t *c) {
  int32_t lens[3] = {2, 3, 4};
  float out[3 * NCLASS];
  out[0] = out[3 * NCLASS - 1] = 12345.0f;
  printf("batch n 0: %d\n", FORWARD_BATCH(c, lens, 0, out));
  printf("batch n -1: %d\n", FORWARD_BATCH(c, lens, -1, out));
  printf("batch NULL: %d %d %d\n", FORWARD_BATCH(NULL, lens, 3, out), FORWARD_BATCH(c, NULL, 3, out),
         FORWARD_BATCH(c, lens, 3, NULL));
  lens[1] = 0;
  printf("batch len 0: %d\n", FORWARD_BATCH(c, lens, 3, out));
  lens[1] = -3;
  printf("batch len -3: %d\n", FORWARD_BATCH(c, lens, 3, out));
  lens[1] = MAXLEN + 1;
  printf("batch len max+1: %d\n", FORWARD_BATCH(c, lens, 3, out));
  lens[1] = 100000;
  printf("batch len 100000: %d\n", FORWARD_BATCH(c, lens, 3, out));
  lens[1] = 3;
  c[8] = 59; /* the last name's last index */
  printf("batch index 59: %d\n", FORWARD_BATCH(c, lens, 3, out));
  c[8] = -1;
  printf("batch index -1: %d\n", FORWARD_BATCH(c, lens, 3, out));
  c[8] = 8;
  printf("batch untouched: %d\n", out[0] == 12345.0f && out[3 * NCLASS - 1] == 12345.0f);
  printf("batch good: %d\n", FORWARD_BATCH(c, lens, 3, out));
}

static void bad(void) {
  int32_t c[MAXLEN + 1];
  float lg[NCLASS], pr[NCLASS];
  char longname[MAXLEN + 2];
  int i;
  for (i = 0; i <= MAXLEN; i++)
    c[i] = i % 59;
  lg[0] = 12345.0f;
  printf("forward len 0: %d\n", FORWARD(c, 0, lg));
  printf("forward len -1: %d\n", FORWARD(c, -1, lg));
  printf("forward len max+1: %d\n", FORWARD(c, MAXLEN + 1, lg));
  c[3] = 59;
  printf("forward index 59: %d\n", FORWARD(c, 5, lg));
  c[3] = -1;
  printf("forward index -1: %d\n", FORWARD(c, 5, lg));
  c[3] = 3;
  printf("forward NULL chars: %d\n", FORWARD(NULL, 5, lg));
  printf("forward NULL logits: %d\n", FORWARD(c, 5, NULL));
  printf("logits untouched: %d\n", lg[0] == 12345.0f);
  printf("forward len max: %d\n", FORWARD(c, MAXLEN, lg));
  bad_batch(c);
  printf("predict \"\": %d\n", PREDICT("", pr));
  printf("predict a/b: %d\n", PREDICT("a/b", pr));
  printf("predict NULL: %d\n", PREDICT(NULL, pr));
  printf("predict non-ASCII: %d\n", PREDICT("Jos\xc3\xa9", pr));
  memset(longname, 'a', sizeof longname);
  longname[MAXLEN] = 0;
  printf("predict max length: %d\n", PREDICT(longname, NULL) >= 0);
  longname[MAXLEN] = 'a';
  longname[MAXLEN + 1] = 0;
  printf("predict max length+1: %d\n", PREDICT(longname, pr));
  printf("labels: %s %s\n", LABELS[0], LABELS[NCLASS - 1]);
}

/* All the names in one call of P_forward_batch. */
static void batch(void) {
  enum { N = sizeof names / sizeof names[0] };
  static int32_t idx[N * MAXLEN], lens[N];
  static float lg[N * NCLASS];
  int32_t at = 0;
  size_t i;
  int k;
  for (i = 0; i < N; i++) {
    lens[i] = encode(names[i], idx + at);
    at += lens[i];
  }
  printf("batch: %d\n", FORWARD_BATCH(idx, lens, N, lg));
  for (i = 0; i < N; i++) {
    for (k = 0; k < NCLASS; k++)
      printf("%s%08lx", k ? " " : "", bits(lg[i * NCLASS + k]));
    printf("\n");
  }
}

int main(void) {
  size_t i;
  int k;
  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    int32_t c[MAXLEN];
    float lg[NCLASS], pr[NCLASS];
    int n = encode(names[i], c);
    int rc = FORWARD(c, n, lg), cls = PREDICT(names[i], pr);
    printf("%d %d", rc, cls);
    for (k = 0; k < NCLASS; k++)
      printf(" %08lx", bits(lg[k]));
    for (k = 0; k < NCLASS; k++)
      printf(" %08lx", bits(pr[k]));
    printf("\n");
  }
  batch();
  bad();
  printf("done\n");
  return 0;
}

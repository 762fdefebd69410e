/* aot.c: times an object file from `rnnc build` (AOT inference).
 *
 *   cc -O2 -I DIR -DAOT_HEADER='"NAME.h"' -DAOT_PREFIX=NAME -DAOT_CLASSES=18 \
 *      bench/aot.c DIR/NAME.o -lm
 *   ./a.out TEST_FILE [REPS]
 *
 * TEST_FILE has one name a line, "label len i0 i1 ...", vocabulary indices
 * (rnnc-bench --dump-test writes the test split so). Calls
 * NAME_forward(chars, len, logits) once per name, REPS passes (default 5),
 * then NAME_forward_batch on all the names at once, REPS passes, and
 * prints one JSON line: the median pass in microseconds per name (by the
 * wall clock and by CPU time; batch_: of the batched calls), and the
 * accuracy of the argmax. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include AOT_HEADER

#if !defined(AOT_PREFIX) || !defined(AOT_CLASSES)
#error "define AOT_PREFIX (the header's prefix) and AOT_CLASSES (the number of classes)"
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(AOT_PREFIX, _forward)
#define FORWARD_BATCH CAT(AOT_PREFIX, _forward_batch)
#define STR2(a) #a
#define STR(a) STR2(a)

typedef struct Name {
  int label, len;
  int32_t *chars;
} Name;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s TEST_FILE [REPS]\n", argv[0]);
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  if (reps < 1)
    reps = 1;
  size_t n = 0, cap = 4096;
  Name *names = malloc(cap * sizeof *names);
  int label, len;
  while (fscanf(f, "%d %d", &label, &len) == 2) {
    if (n == cap)
      names = realloc(names, (cap *= 2) * sizeof *names);
    names[n].label = label;
    names[n].len = len;
    names[n].chars = malloc((size_t)len * sizeof(int32_t));
    for (int k = 0; k < len; k++)
      if (fscanf(f, "%d", &names[n].chars[k]) != 1)
        return 1;
    n++;
  }
  fclose(f);
  if (!n)
    return 1;
  float logits[256];
  size_t correct = 0;
  for (size_t i = 0; i < n; i++) {
    if (FORWARD(names[i].chars, names[i].len, logits)) {
      fprintf(stderr, "%s_forward failed on name %zu\n", STR(AOT_PREFIX), i);
      return 1;
    }
    int best = 0;
    for (int k = 1; k < AOT_CLASSES; k++)
      if (logits[k] > logits[best])
        best = k;
    correct += best == names[i].label;
  }
  double *pass = malloc((size_t)reps * sizeof *pass), *cpass = malloc((size_t)reps * sizeof *cpass);
  volatile float sink = 0;
  for (int r = 0; r < reps; r++) {
    double t = now(), c = cpu();
    for (size_t i = 0; i < n; i++) {
      FORWARD(names[i].chars, names[i].len, logits);
      sink += logits[0];
    }
    pass[r] = now() - t;
    cpass[r] = cpu() - c;
  }
  qsort(pass, (size_t)reps, sizeof *pass, cmp);
  qsort(cpass, (size_t)reps, sizeof *cpass, cmp);
  double us = 1e6 * pass[reps / 2] / (double)n, cpu_us = 1e6 * cpass[reps / 2] / (double)n;
  /* the batch: the names one after the other */
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += (size_t)names[i].len;
  int32_t *idx = malloc(total * sizeof *idx), *lens = malloc(n * sizeof *lens);
  float *out = malloc(n * AOT_CLASSES * sizeof *out);
  for (size_t i = 0, at = 0; i < n; at += (size_t)names[i++].len) {
    lens[i] = names[i].len;
    for (int k = 0; k < names[i].len; k++)
      idx[at + (size_t)k] = names[i].chars[k];
  }
  for (int r = 0; r < reps; r++) {
    double t = now(), c = cpu();
    if (FORWARD_BATCH(idx, lens, (int32_t)n, out)) {
      fprintf(stderr, "%s_forward_batch failed\n", STR(AOT_PREFIX));
      return 1;
    }
    sink += out[0];
    pass[r] = now() - t;
    cpass[r] = cpu() - c;
  }
  qsort(pass, (size_t)reps, sizeof *pass, cmp);
  qsort(cpass, (size_t)reps, sizeof *cpass, cmp);
  printf("{\"event\":\"aot\",\"prefix\":\"%s\",\"names\":%zu,\"infer_us_per_name\":%.2f,"
         "\"infer_cpu_us_per_name\":%.2f,\"batch_infer_us_per_name\":%.2f,"
         "\"batch_infer_cpu_us_per_name\":%.2f,\"test_accuracy\":%.4f}\n",
         STR(AOT_PREFIX), n, us, cpu_us, 1e6 * pass[reps / 2] / (double)n,
         1e6 * cpass[reps / 2] / (double)n, (double)correct / (double)n);
  return 0;
}

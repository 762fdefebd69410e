/* hostile.c: P_predict, P_forward and P_forward_batch of an object of
 * rnnc build on hostile input, each buffer placed at the end of its
 * mapping, right before a page that may not be read: a read past the
 * input is a SIGSEGV, not a silent success. Prints one line per case
 * ("name: status"), then "done". Host only (mmap); test_aot.c builds it
 * with -D_DEFAULT_SOURCE (MAP_ANONYMOUS) -DP=<prefix> -include <header>. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(P, _forward)
#define FORWARD_BATCH CAT(P, _forward_batch)
#define PREDICT CAT(P, _predict)
#define NCLASS CAT(P, _NUM_CLASSES)
#define MAXLEN CAT(P, _MAX_LEN)

/* bytes bytes that end where an unreadable page begins. */
static void *fenced(size_t bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), span = (bytes + page - 1) / page * page;
  char *m = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || mprotect(m + span, page, PROT_NONE)) {
    perror("mmap");
    _exit(3);
  }
  return m + span - bytes;
}

int main(void) {
  enum { BIG = 100000 };
  float lg[3 * NCLASS];
  /* a 100 KB name with no NUL before the fence; a 100 KB name */
  char *name = fenced(BIG);
  memset(name, 'a', BIG);
  printf("predict 100 KB unterminated: %d\n", PREDICT(name, lg));
  name[BIG - 1] = 0;
  printf("predict 100 KB: %d\n", PREDICT(name, NULL));
  /* the longest name, its NUL the last byte */
  name[BIG - 1 - MAXLEN] = 'a';
  printf("predict max length: %d\n", PREDICT(name + BIG - 1 - MAXLEN, lg) >= 0);
  /* P_forward: len indices, the last before the fence */
  int32_t *c = fenced(MAXLEN * sizeof *c);
  for (int i = 0; i < MAXLEN; i++)
    c[i] = (i * 7) % 59;
  printf("forward max length: %d\n", FORWARD(c, MAXLEN, lg));
  printf("forward 100000 of 64: %d\n", FORWARD(c, BIG, lg));
  printf("forward last index bad: %d\n", (c[MAXLEN - 1] = 59, FORWARD(c, MAXLEN, lg)));
  c[MAXLEN - 1] = 1;
  /* P_forward_batch: 3 names in idx's last 9 entries, lens fenced too */
  int32_t *idx = c + MAXLEN - 9, *lens = fenced(3 * sizeof *lens);
  float *out = fenced(3 * NCLASS * sizeof *out);
  lens[0] = 2, lens[1] = 3, lens[2] = 4;
  printf("batch: %d\n", FORWARD_BATCH(idx, lens, 3, out));
  printf("batch 100000 in the middle: %d\n", (lens[1] = BIG, FORWARD_BATCH(idx, lens, 3, out)));
  lens[1] = 3;
  lens[2] = BIG;
  printf("batch 100000 in the last name: %d\n", FORWARD_BATCH(idx, lens, 3, out));
  lens[2] = 4;
  idx[8] = -5;
  printf("batch last index bad: %d\n", FORWARD_BATCH(idx, lens, 3, out));
  idx[8] = 1;
  /* 1000 names of 1 to 64 indices, in a buffer that ends with them */
  enum { MANY = 1000 };
  int32_t *ml = fenced(MANY * sizeof *ml), total = 0;
  for (int i = 0; i < MANY; i++)
    total += ml[i] = 1 + (i * 37) % MAXLEN;
  int32_t *mi = fenced((size_t)total * sizeof *mi);
  for (int32_t i = 0; i < total; i++)
    mi[i] = (i * 13) % 59;
  float *mo = fenced((size_t)MANY * NCLASS * sizeof *mo);
  int rc = FORWARD_BATCH(mi, ml, MANY, mo), same = rc == 0;
  /* every name as P_forward computes it, within 1e-5 relative */
  for (int i = 0, at = 0; same && i < MANY; at += ml[i++]) {
    float one[NCLASS];
    same &= FORWARD(mi + at, ml[i], one) == 0;
    for (int k = 0; k < NCLASS; k++) {
      float d = one[k] - mo[i * NCLASS + k], a = one[k] < 0 ? -one[k] : one[k];
      same &= (d < 0 ? -d : d) <= 1e-5f * (a > 1 ? a : 1);
    }
  }
  printf("batch 1000 names: %d %d\n", rc, same);
  printf("done\n");
  return 0;
}

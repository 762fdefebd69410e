/* header_check.c: a header of rnnc build, included twice (its guard) with
 * -DP=<prefix> -include <header> -include <header>, and every declaration
 * used. test_targets.c compiles it as C99 and as C++ with each target's
 * compiler (-pedantic -Werror). */
#include <stdint.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

int use(void);
int use(void) {
  float lg[CAT(P, _NUM_CLASSES)];
  int32_t c[CAT(P, _MAX_LEN)] = {0}, len = 1;
  const char *v = CAT(P, _VOCAB);
  return CAT(P, _forward)(c, 1, lg) + CAT(P, _forward_batch)(c, &len, 1, lg) + CAT(P, _predict)(v, lg) +
         (int)sizeof CAT(P, _labels)[0] + CAT(P, _VOCAB_SIZE) + CAT(P, _BATCH_NAMES) +
         (int)(CAT(P, _STACK_BYTES) + CAT(P, _BATCH_STACK_BYTES) + CAT(P, _TEXT_BYTES) +
                   CAT(P, _RODATA_BYTES) + CAT(P, _DATA_BYTES) >
               0);
}

/* classify.c: the example's model on a Cortex-M4F (docs/aot.md, "Cortex-M").
 * Classifies a few surnames with names_predict and prints each one's most
 * likely language through semihosting. The object comes from
 *   rnnc build examples/names_gru.nn CKPT -o names.o --prefix names \
 *              --target thumbv7em-none-eabihf
 * and needs nothing but memcpy and memset (newlib's here); startup.c and
 * mps2-an386.ld make a program for QEMU's mps2-an386 board. */
#include <stdio.h>

#include "names.h"

int main(void) {
  static const char *const surnames[] = {"Nguyen", "Kowalski", "OBrien", "Nakamura", "Schmidt"};
  for (unsigned i = 0; i < sizeof surnames / sizeof surnames[0]; i++) {
    float probs[names_NUM_CLASSES];
    int k = names_predict(surnames[i], probs);
    if (k < 0)
      return 1;
    printf("%-10s %-10s %5.1f%%\n", surnames[i], names_labels[k], (double)(100 * probs[k]));
  }
  return 0;
}

/* main.c: prints each argument's most likely class and its probability,
 * with the model rnnc_add_model compiled (lang.h, lang.o). */
#include <stdio.h>

#include "lang.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    float p[lang_NUM_CLASSES];
    int k = lang_predict(argv[i], p);
    if (k < 0)
      printf("%s: -1\n", argv[i]);
    else
      printf("%s: %d %s %.7f\n", argv[i], k, lang_labels[k], (double)p[k]);
  }
  return 0;
}

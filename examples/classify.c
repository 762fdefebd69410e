/* classify.c: the language of a surname, from a model compiled ahead of
 * time with `rnnc build`.
 *
 *   classify [--top K] [NAME...]
 *
 * Each NAME (or, with none, each line of standard input) is normalized to
 * ASCII by rnnc's normalizer, the one training used (runtime/normalize.c:
 * "Ślusàrski" -> "Slusarski", "Groß" -> "Gross"), classified by
 * names_predict, and printed with its K most likely languages (default 3),
 * in the format of `rnnc predict`. Exit status: 0, or 1 when a name could
 * not be classified (2 for bad usage).
 *
 * names_model.o and names_model.h come from
 *   rnnc build GRAPH CKPT -o names_model.o --prefix names
 * (examples/CMakeLists.txt runs it through rnnc_add_model). The program
 * links that object, the normalizer (with libunistring) and libc: no
 * LLVM, no rnnc compiler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names_model.h"
#include "runtime.h" /* normalize_ascii */

/* Why names_predict gave -1 for ascii. */
static void explain(const char *name, const char *ascii) {
  fprintf(stderr, "classify: '%s': ", name);
  size_t n = strlen(ascii), bad = strspn(ascii, names_VOCAB);
  if (n == 0)
    fprintf(stderr, "empty name\n");
  else if (bad < n)
    fprintf(stderr, "character '%c' is not in the vocabulary\n", ascii[bad]);
  else if (n > names_MAX_LEN)
    fprintf(stderr, "longer than %d characters\n", names_MAX_LEN);
  else
    fprintf(stderr, "not classified\n");
}

/* Prints name, its ASCII form when that differs, and the top K classes. */
static int classify(const char *name, int top) {
  Err e;
  size_t dropped = 0;
  char *ascii = normalize_ascii(name, strlen(name), &dropped, &e);
  if (!ascii) {
    fprintf(stderr, "classify: '%s': %s\n", name, e.msg);
    return 1;
  }
  if (dropped) { /* as in training, where such names are skipped */
    fprintf(stderr, "classify: '%s': character U+%04lX has no ASCII form\n", name,
            (unsigned long)normalize_first_dropped(name, strlen(name)));
    free(ascii);
    return 1;
  }
  float probs[names_NUM_CLASSES];
  if (names_predict(ascii, probs) < 0) {
    explain(name, ascii);
    free(ascii);
    return 1;
  }
  printf("%s", name);
  if (strcmp(ascii, name))
    printf(" (%s)", ascii);
  printf("\n");
  /* The K largest, largest first (ties: the lower class first). */
  int used[names_NUM_CLASSES] = {0};
  for (int r = 0; r < top && r < names_NUM_CLASSES; r++) {
    int best = -1;
    for (int k = 0; k < names_NUM_CLASSES; k++)
      if (!used[k] && (best < 0 || probs[k] > probs[best]))
        best = k;
    used[best] = 1;
    printf("  %-12s %5.1f%%\n", names_labels[best], 100 * probs[best]);
  }
  free(ascii);
  return 0;
}

int main(int argc, char **argv) {
  int top = 3, first = 1;
  if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    printf("usage: classify [--top K] [NAME...]\n"
           "Classifies each NAME (else each line of standard input) into one of %d\n"
           "languages and prints the K most likely (default 3).\n",
           names_NUM_CLASSES);
    return 0;
  }
  if (argc > 2 && !strcmp(argv[1], "--top")) {
    char *end;
    long k = strtol(argv[2], &end, 10);
    if (!*argv[2] || *end || k < 1 || k > names_NUM_CLASSES) {
      fprintf(stderr, "classify: --top wants a number from 1 to %d\n", names_NUM_CLASSES);
      return 2;
    }
    top = (int)k;
    first = 3;
  }
  int rc = 0;
  if (first < argc) {
    for (int i = first; i < argc; i++)
      rc |= classify(argv[i], top);
    return rc;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) >= 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = 0;
    if (n > 0)
      rc |= classify(line, top);
  }
  free(line);
  return rc;
}

/* cmd_data.c: rnnc data: a names data set, its skipped names and its split. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uniwidth.h>

#include "cli.h"
#include "runtime.h"

const char data_usage[] =
    "usage: rnnc data [--data PATH] [--vocab KIND] [--seed S] [--test-fraction F]\n"
    "\n"
    "Loads a data set (a directory of <Label>.txt files, one UTF-8 name a line;\n"
    "or a TSV or CSV file of text and label, as rnnc train --help says),\n"
    "normalizes every text as rnnc train --vocab KIND would (a directory's to\n"
    "ASCII, a file's to NFC by default), and prints the labels with their\n"
    "counts, the texts skipped and why (a character with no ASCII form or\n"
    "outside the names vocabulary, longer than " NAME_MAX_CHARS_STR " characters, ...), and\n"
    "the train/test split.\n"
    "\n"
    "  --data PATH          data directory or file (default: data/names)\n"
    "  --vocab KIND         names, ascii or unicode, as rnnc train's (default:\n"
    "                       names for a directory, unicode for a file)\n"
    "  --seed S             split seed (default: 42)\n"
    "  --test-fraction F    share of each language held out (default: 0.1)\n"
    "  -h, --help           this help\n";

int cmd_data(int argc, char **argv) {
  const char *dir = "data/names";
  uint64_t seed = 42;
  double fraction = 0.1;
  VocabKind kind = VOCAB_NAMES;
  bool kind_given = false;
  static const struct option opts[] = {
      {"data", required_argument, 0, 'd'},
      {"vocab", required_argument, 0, 'v'},
      {"seed", required_argument, 0, 's'},
      {"test-fraction", required_argument, 0, 'f'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'd':
      dir = optarg;
      break;
    case 'v':
      if (vocab_kind_parse(optarg, &kind))
        return cli_usage_error("data", "--vocab wants names, unicode or ascii, not '%s'", optarg);
      kind_given = true;
      break;
    case 's':
      if (cli_parse_u64(optarg, &seed))
        return cli_usage_error("data", "--seed wants a non-negative integer, not '%s'", optarg);
      break;
    case 'f': {
      char *end;
      fraction = strtod(optarg, &end);
      if (end == optarg || *end || !(fraction >= 0 && fraction < 1))
        return cli_usage_error("data", "--test-fraction wants a number in [0, 1), not '%s'", optarg);
      break;
    }
    case 'h':
      fputs(data_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("data", "bad option");
    }
  }
  if (optind < argc)
    return cli_usage_error("data", "unexpected argument '%s'", argv[optind]);

  Dataset ds = {0};
  Err e;
  if (!kind_given)
    kind = data_default_kind(dir);
  if (data_load(&ds, dir, NULL, 0, kind, NULL, &e) || data_split(&ds, fraction, seed, &e)) {
    cli_error("data", &e);
    data_free(&ds);
    return EXIT_BAD_INPUT;
  }
  printf("data: %s (vocabulary %s)\n", dir, vocab_kind_name(kind));
  printf("%-5s %-14s %7s %7s %7s\n", "label", "language", "names", "train", "test");
  size_t *ntr = xcalloc((size_t)ds.nlabels, sizeof *ntr);
  size_t *nte = xcalloc((size_t)ds.nlabels, sizeof *nte);
  for (size_t i = 0; i < ds.ntrain; i++)
    ntr[ds.names[ds.train[i]].label]++;
  for (size_t i = 0; i < ds.ntest; i++)
    nte[ds.names[ds.test[i]].label]++;
  for (int l = 0; l < ds.nlabels; l++) {
    char *label = shown_text(ds.labels[l], strlen(ds.labels[l]), 64); /* on one line */
    int w = u8_strwidth((const uint8_t *)label, "UTF-8"); /* columns, as %-14s pads ASCII */
    printf("%5d %s%*s %7zu %7zu %7zu\n", l, label, w < 14 ? 14 - w : 0, "", ds.per_label[l], ntr[l],
           nte[l]);
    free(label);
  }
  printf("%5s %-14s %7zu %7zu %7zu\n", "", "total", ds.nnames, ds.ntrain, ds.ntest);
  free(ntr);
  free(nte);
  printf("\nskipped: %zu name%s", ds.nskipped, ds.nskipped == 1 ? "" : "s");
  if (ds.nempty)
    printf(" (and %zu empty line%s)", ds.nempty, ds.nempty == 1 ? "" : "s");
  printf("\n");
  for (size_t i = 0; i < ds.nskipped; i++)
    printf("  %s:%d: %s: %s\n", ds.skipped[i].file, ds.skipped[i].line, ds.skipped[i].text,
           ds.skipped[i].reason);
  printf("\nsplit (seed %llu, test fraction %g): %zu train / %zu test\n",
         (unsigned long long)seed, fraction, ds.ntrain, ds.ntest);
  data_free(&ds);
  return EXIT_OK;
}


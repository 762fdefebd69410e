/* runtime.h: what the runtime exports, one section per file.
 *
 * The runtime loads data, holds parameter buffers, drives generated
 * kernels and reads and writes checkpoints. It holds no model math: that
 * lives in the graph files and reaches the runtime as compiled kernels. */
#ifndef RNNC_RUNTIME_H
#define RNNC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* ---------------------------------------------------------------- vocab.c
 * The 59-character vocabulary of the names task, index 0 = 'a'. */
#define VOCAB_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;-'"
#define VOCAB_SIZE 59
/* Index of c in VOCAB_CHARS, or -1. */
int vocab_index(unsigned char c);

/* ------------------------------------------------------------ normalize.c
 * UTF-8 name -> ASCII, as Python's unidecode does for this data set:
 * trailing whitespace stripped, NFKD, combining marks dropped, and a table
 * for letters that do not decompose (ß -> ss, ł -> l, ø -> o, ...).
 * Returns a malloc'd NUL-terminated string, or NULL with a message in e
 * when s is not valid UTF-8. Characters with no ASCII form are kept out of
 * the result and counted in *dropped (may be NULL). */
char *normalize_ascii(const char *s, size_t n, size_t *dropped, Err *e);
/* The first character of s (as a code point) that normalize_ascii leaves
 * out for want of an ASCII form, or -1 if none (or s is not valid UTF-8).
 * For error messages. */
long normalize_first_dropped(const char *s, size_t n);
/* The length of s without its trailing whitespace, whitespace as Python's
 * str.isspace (so U+00A0, U+3000, ... too). */
size_t utf8_rstrip(const char *s, size_t n);
/* s (n bytes of text from a file or a user) made fit for a message or a
 * report line: control characters and bytes that are not UTF-8 escaped
 * (\n, \t, \r, \xNN), at most max bytes, cut at a character with "..."
 * after it. Malloc'd. */
char *shown_text(const char *s, size_t n, size_t max);

/* ----------------------------------------------------------------- data.c
 * A data set: one file per label, one name per line. Names are stored as
 * character indices; one-hot vectors are never materialized. A name is at
 * most NAME_MAX_CHARS characters, as written and in its ASCII form; longer
 * ones are skipped (and refused by name_encode), which bounds the memory
 * a sequence takes in the kernels. */
#define NAME_MAX_CHARS 1000
#define NAME_MAX_CHARS_STR "1000" /* for help texts */
typedef struct Name {
  uint8_t *chars;  /* (len) vocabulary indices */
  int32_t len;
  int32_t label;   /* index into Dataset.labels */
  const char *text; /* the ASCII form, NUL-terminated */
} Name;

typedef struct Skipped {
  char *file;   /* path of the file it came from */
  int line;     /* 1-based */
  char *text;   /* the name as read (shown_text: escaped, cut at 80 bytes) */
  char *reason; /* e.g. "character '/' is not in the vocabulary" */
} Skipped;

typedef struct Dataset {
  char **labels;     /* (nlabels) language names, label order */
  int nlabels;
  size_t *per_label; /* (nlabels) names kept per label */
  Name *names;       /* (nnames) */
  size_t nnames;
  Skipped *skipped;  /* (nskipped) names skipped, with why */
  size_t nskipped;
  size_t nempty;     /* empty lines ignored */
  uint32_t *train, *test; /* indices into names, after data_split */
  size_t ntrain, ntest;
} Dataset;

/* Reads DIR/<Label>.txt for each label. With labels == NULL the labels are
 * every *.txt in dir in byte order of the file names. With a label list
 * (from a checkpoint), label i is labels[i]; dir may hold a subset of them
 * (labels without a file get no names) but no file of an unknown label.
 * Lines that are empty after stripping are counted in nempty; names that
 * cannot be encoded are listed in skipped; invalid UTF-8 is an error that
 * names the file and line. *ds is overwritten; on failure it is left empty
 * (data_free is safe either way). */
int data_load(Dataset *ds, const char *dir, char *const *labels, int nlabels,
              Err *e);
/* Seeded split stratified by label: test gets ceil(fraction * nnames)
 * names, each label's share within one name of fraction; train and test
 * come out shuffled. The same seed gives the same split on every machine.
 * fraction in [0, 1). Replaces an earlier split of ds. */
int data_split(Dataset *ds, double test_fraction, uint64_t seed, Err *e);
void data_free(Dataset *ds);
/* Normalizes one UTF-8 name and maps it to vocabulary indices. Returns the
 * length (> 0), or -1 with a message in e for an empty name, a name longer
 * than NAME_MAX_CHARS or with a character outside the vocabulary after
 * normalization. *chars is
 * malloc'd; *ascii (if not NULL) receives the ASCII form. */
int name_encode(const char *utf8, size_t n, uint8_t **chars, char **ascii,
                Err *e);

#endif

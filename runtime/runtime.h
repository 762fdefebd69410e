/* runtime.h: what the runtime exports, one section per file.
 *
 * The runtime loads data, holds parameter buffers, drives generated
 * kernels and reads and writes checkpoints. It holds no model math: that
 * lives in the graph files and reaches the runtime as compiled kernels. */
#ifndef RNNC_RUNTIME_H
#define RNNC_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* ---------------------------------------------------------------- vocab.c
 * A vocabulary: the characters a graph's one-hot input indexes, and how
 * text is normalized before it is looked up.
 *   - the names vocabulary: the 59 ASCII characters of VOCAB_CHARS (index
 *     0 = 'a'), text transliterated to ASCII, no unknown slot (a name with
 *     another character is skipped): the names data's default;
 *   - built from a data set's training names: index 0 is the unknown
 *     slot (any character the vocabulary does not hold), then every
 *     character of the training names in code point order; the text
 *     NFC-normalized (VOCAB_UNICODE) or transliterated (VOCAB_ASCII). */
#define VOCAB_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;-'"
#define VOCAB_SIZE 59
/* Vocabularies as large as this are refused (a one-hot input that wide is
 * a data set mistake, not a vocabulary). */
#define VOCAB_MAX 65536
typedef enum VocabKind { VOCAB_NAMES, VOCAB_ASCII, VOCAB_UNICODE } VocabKind;
typedef struct Vocab {
  VocabKind kind;
  int n;          /* symbols, the unknown slot included */
  int32_t *cp;    /* (n) the code point of each index; -1 for the unknown slot */
  int unknown;    /* the unknown slot's index (0), or -1 (the names vocabulary) */
} Vocab;
/* "names", "ascii", "unicode" and back. */
const char *vocab_kind_name(VocabKind k);
int vocab_kind_parse(const char *s, VocabKind *k);
/* Whether text of kind k is transliterated to ASCII (or NFC). */
static inline bool vocab_is_ascii(VocabKind k) { return k != VOCAB_UNICODE; }
void vocab_names(Vocab *v);
/* The vocabulary of kind k (not VOCAB_NAMES) of the code points of
 * seqs[0..n) (lens[i] each). */
void vocab_build(Vocab *v, VocabKind k, const int32_t *const *seqs, const int32_t *lens,
                 size_t n);
/* From a checkpoint's list: each item one character as UTF-8, "" the
 * unknown slot. Fails on an item that is not one character, a repeated
 * one, or a names vocabulary that is not VOCAB_CHARS. */
int vocab_from_list(Vocab *v, VocabKind k, char *const *items, int n, Err *e);
/* The list (malloc'd strings, "" for the unknown slot), as the checkpoint
 * and the AOT header keep it. */
char **vocab_to_list(const Vocab *v);
void vocab_free(Vocab *v);
/* The index of code point c, the unknown slot when v has no c, or -1
 * (the names vocabulary). */
int vocab_lookup(const Vocab *v, int32_t c);
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
 * A data set: text and a label per record, from a directory of <Label>.txt
 * files (one name a line) or from a TSV or CSV file of text and label
 * records. Names are stored as vocabulary indices (one-hot vectors are
 * never materialized), or as code points until data_encode. A name is at
 * most NAME_MAX_CHARS characters, as written and normalized; longer ones
 * are skipped (and refused by name_encode), which bounds the memory a
 * sequence takes in the kernels. */
#define NAME_MAX_CHARS 1000
#define NAME_MAX_CHARS_STR "1000" /* for help texts */
#define DATA_MAX_LABELS 100000
typedef struct Name {
  int32_t *chars;  /* (len) vocabulary indices (code points before data_encode) */
  int32_t len;
  int32_t label;   /* index into Dataset.labels */
  const char *text; /* the normalized form (ASCII or NFC), NUL-terminated */
} Name;

typedef struct Skipped {
  char *file;   /* path of the file it came from */
  int line;     /* 1-based */
  char *text;   /* the name as read (shown_text: escaped, cut at 80 bytes) */
  char *reason; /* e.g. "character '/' is not in the vocabulary" */
} Skipped;

typedef struct Dataset {
  char **labels;     /* (nlabels) label names, label order */
  int nlabels;
  size_t *per_label; /* (nlabels) names kept per label */
  Name *names;       /* (nnames) */
  size_t nnames;
  Skipped *skipped;  /* (nskipped) names skipped, with why */
  size_t nskipped;
  size_t nempty;     /* empty lines ignored */
  uint32_t *train, *test; /* indices into names, after data_split */
  size_t ntrain, ntest;
  bool encoded;      /* names hold vocabulary indices, not code points */
} Dataset;

/* Reads a data set from path:
 *   - a directory: DIR/<Label>.txt for each label, one name a line. With
 *     labels == NULL the labels are every *.txt in dir in byte order of
 *     the file names. With a label list (from a checkpoint), label i is
 *     labels[i]; dir may hold a subset of them (labels without a file get
 *     no names) but no file of an unknown label.
 *   - a file: TSV (text<TAB>label a line) or CSV (RFC 4180: text,label,
 *     fields quoted with "..." as needed), CSV when the name ends in
 *     .csv, TSV when it ends in .tsv, else TSV when its first line has a
 *     tab. Labels: the data's in byte order, or the label list's (a record
 *     of another label is an error); any UTF-8 but "".
 * Text is normalized as kind (vocab->kind when vocab is given) says: to
 * ASCII (names, ascii) or NFC (unicode). With a vocabulary, names are
 * encoded as they are read (a character it lacks goes to its unknown
 * slot, or skips the name); without one (vocab NULL), they keep their
 * code points for data_build_vocab and data_encode, but for kind names,
 * which has one vocabulary. Lines that are empty
 * after stripping are counted in nempty; names that cannot be encoded are
 * listed in skipped; invalid UTF-8 and a malformed table are errors that
 * name the file, line (and column). *ds is overwritten; on failure it is
 * left empty (data_free is safe either way). */
int data_load(Dataset *ds, const char *path, char *const *labels, int nlabels, VocabKind kind,
              const Vocab *vocab, Err *e);
/* Labels name the classes in predict's output and eval's confusion
 * matrix, so each must name one: 0, or -1 with e saying which label is
 * empty or which names two classes. */
int data_check_labels(char *const *labels, int n, Err *e);
/* The vocabulary kind a data set takes by default: names for a directory
 * (the names data), unicode for a TSV or CSV file. */
VocabKind data_default_kind(const char *path);
/* The vocabulary (of kind) of ds's training names (after data_split). */
void data_build_vocab(const Dataset *ds, VocabKind kind, Vocab *v);
/* Maps every name's code points to v's indices (v has an unknown slot). */
void data_encode(Dataset *ds, const Vocab *v);
/* Seeded split stratified by label: test gets ceil(fraction * nnames)
 * names, each label's share within one name of fraction; train and test
 * come out shuffled. The same seed gives the same split on every machine.
 * fraction in [0, 1). Replaces an earlier split of ds. */
int data_split(Dataset *ds, double test_fraction, uint64_t seed, Err *e);
void data_free(Dataset *ds);
/* Normalizes one UTF-8 name as v says and maps it to v's indices. Returns
 * the length (> 0), or -1 with a message in e for an empty name, a name
 * longer than NAME_MAX_CHARS or (a vocabulary without an unknown slot) a
 * character outside the vocabulary after normalization. *chars is
 * malloc'd; *text (if not NULL) receives the normalized form. */
int name_encode(const char *utf8, size_t n, const Vocab *v, int32_t **chars, char **text,
                Err *e);

#endif

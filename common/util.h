/* util.h: small pieces every stage uses: checked allocation, error
 * messages for user-facing failures, whole-file reads, a seeded RNG.
 *
 * Conventions: a function that can fail on user input returns 0 on success
 * and -1 on failure, with a message a person can act on in an Err. Internal
 * invariants are asserts that name the invariant, never an Err. */
#ifndef RNNC_UTIL_H
#define RNNC_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Exit statuses of the rnnc executable. */
enum { EXIT_OK = 0, EXIT_BAD_INPUT = 1, EXIT_USAGE = 2 };

typedef struct Err {
  char msg[2048];
} Err;

/* Formats a message into e (if not NULL) and returns -1. */
int errf(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int verrf(Err *e, const char *fmt, va_list ap);

/* Out of memory: these print "rnnc: out of memory (allocating N bytes)"
 * and exit with status 1. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* The n bytes at p, NUL bytes and all, and a NUL after them (p may be
 * NULL when n is 0). */
char *xmemdup0(const void *p, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* n bytes aligned to align (a power of two, a multiple of sizeof(void *)). */
void *xmemalign(size_t align, size_t n);
/* A large buffer (the parameters, a checkpoint's data), freed with free():
 * n bytes aligned to 64, and from 1 MiB up rounded up to whole 2 MiB
 * pages, 2 MiB-aligned, and marked for transparent huge pages
 * (MADV_HUGEPAGE; Debian's default THP mode, "madvise", gives them only on
 * request). Each 4 KiB page costs a page fault when first touched, 10-15
 * us each in a VM with page-table isolation: reading a 7.7 MB checkpoint
 * into 4 KiB pages took 1,885 faults and ~28 ms, on huge pages 4. */
void *xalloc_big(size_t n);

/* Strict number parsing, for command-line options and file metadata.
 * parse_int64: s is a decimal integer in [lo, hi]: digits only, with a '-'
 * first only when lo < 0; no spaces, no '+', no other base. parse_double:
 * s is a finite number in strtod's syntax, all of s, no leading space;
 * underflow (1e-320) is allowed, overflow (1e999) is not. Return 0, or -1
 * (*out untouched). */
int parse_int64(const char *s, int64_t lo, int64_t hi, int64_t *out);
int parse_double(const char *s, double *out);

/* Reads a whole regular file; the result is NUL-terminated (len excludes
 * it). A directory, a FIFO, a device or a socket is an error (opened
 * without blocking: a FIFO with no writer does not hang), as is a file of
 * more than max bytes (checked before reading, and while reading in case
 * it grows: "too big for <what>"); errors say why. */
char *read_file_max(const char *path, size_t max, const char *what, size_t *len, Err *e);
/* read_file_max with no limit. */
char *read_file(const char *path, size_t *len, Err *e);
/* Opens path for reading, regular files only (see read_file_max): the
 * descriptor, or -1 with a message naming path in e. */
int open_regular(const char *path, Err *e);

/* A growable byte buffer. */
typedef struct Buf {
  char *data;
  size_t len, cap;
} Buf;
void buf_put(Buf *b, const void *p, size_t n);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(Buf *b);

/* 64-bit numbers little-endian, as the file formats and the kernel cache
 * store them; buf_put_le64 appends one. */
void put_le64(unsigned char p[8], uint64_t v);
uint64_t get_le64(const unsigned char p[8]);
void buf_put_le64(Buf *b, uint64_t v);

/* Seeded generator (splitmix64-seeded xoshiro256**). Integer-only state, so
 * a seed gives the same stream on every machine and compiler. */
typedef struct Rng {
  uint64_t s[4];
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
uint32_t rng_below(Rng *r, uint32_t n); /* uniform in [0, n), unbiased; n > 0 */
float rng_uniform(Rng *r, float lo, float hi);
void rng_shuffle_u32(Rng *r, uint32_t *a, size_t n);

/* fwrite to stdout; a failure's errno is kept for close_stdout (a large
 * fwrite bypasses stdout's buffer, and the final flush then knows no
 * reason). */
void out_write(const void *p, size_t n);
/* Flushes and closes stdout. Returns 0, or -1 with a message in e when
 * something written to it was lost (a full disk, a closed stdout). */
int close_stdout(Err *e);

/* FNV-1a, 64 bits: h = FNV1A_INIT, then h = fnv1a(h, bytes) for each
 * piece. Detects any change of a single byte; not for adversaries. */
#define FNV1A_INIT 0xcbf29ce484222325ULL
uint64_t fnv1a(uint64_t h, const void *p, size_t n);

/* Monotonic clock in seconds. */
double now_seconds(void);
/* CPU time of the calling thread in seconds: what a stage costs,
 * whatever else the machine runs. */
double thread_seconds(void);

#endif

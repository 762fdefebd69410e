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

/* Out of memory is not a user error: these print and abort. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reads a whole file; the result is NUL-terminated (len excludes it). */
char *read_file(const char *path, size_t *len, Err *e);

/* A growable byte buffer. */
typedef struct Buf {
  char *data;
  size_t len, cap;
} Buf;
void buf_put(Buf *b, const void *p, size_t n);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(Buf *b);

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

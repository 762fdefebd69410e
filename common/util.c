#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int verrf(Err *e, const char *fmt, va_list ap) {
  if (e)
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  return -1;
}

int errf(Err *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verrf(e, fmt, ap);
  va_end(ap);
  return -1;
}

static void oom(size_t n) {
  fprintf(stderr, "rnnc: out of memory (allocating %zu bytes)\n", n);
  exit(EXIT_BAD_INPUT);
}

void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    oom(n);
  return p;
}

void *xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p)
    oom(count > SIZE_MAX / (size ? size : 1) ? SIZE_MAX : count * size);
  return p;
}

void *xmemalign(size_t align, size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, align, n ? n : 1))
    oom(n);
  return p;
}

void *xalloc_big(size_t n) {
  const size_t page = (size_t)2 << 20; /* x86-64's and AArch64's (4 KiB granule) huge page */
  if (n < page / 2)
    return xmemalign(64, n);
  if (n > SIZE_MAX - page)
    oom(n);
  size_t len = (n + page - 1) & ~(page - 1);
  void *p = xmemalign(page, len);
  (void)madvise(p, len, MADV_HUGEPAGE); /* advice: without THP, 4 KiB pages as before */
  return p;
}

void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p)
    oom(n);
  return p;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n) {
  n = strnlen(s, n); /* at most n bytes, and never past the string's end */
  char *p = xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *xmemdup0(const void *p, size_t n) {
  char *q = xmalloc(n + 1);
  if (n)
    memcpy(q, p, n);
  q[n] = '\0';
  return q;
}

char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *p = xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

int parse_int64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  const char *d = s + (*s == '-' && lo < 0);
  if (*d < '0' || *d > '9')
    return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (*end || errno || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

int parse_double(const char *s, double *out) {
  if (!*s || isspace((unsigned char)*s))
    return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || !isfinite(v) || (errno == ERANGE && fabs(v) > 1))
    return -1;
  *out = v;
  return 0;
}

int open_regular(const char *path, Err *e) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return errf(e, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0) {
    errf(e, "%s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    errf(e, "%s: %s", path,
         S_ISDIR(st.st_mode)    ? "is a directory, not a file"
         : S_ISFIFO(st.st_mode) ? "is a FIFO (a named pipe), not a regular file"
                                : "is a device or socket, not a regular file");
    close(fd);
    return -1;
  }
  /* Reads from here on may block, as on any regular file. */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

static int too_big(const char *path, size_t max, const char *what, Err *e) {
  return errf(e, "%s: larger than %zu MB, too big for %s (at most %zu bytes)", path, max >> 20,
              what, max);
}

char *read_file_max(const char *path, size_t max, const char *what, size_t *len, Err *e) {
  int fd = open_regular(path, e);
  if (fd < 0)
    return NULL;
  struct stat st;
  if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > max) {
    close(fd);
    too_big(path, max, what, e);
    return NULL;
  }
  Buf b = {0};
  char chunk[65536];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      errf(e, "%s: cannot read it: %s", path, strerror(errno));
      break;
    }
    if (n == 0) {
      buf_put(&b, "", 1);
      close(fd);
      if (len)
        *len = b.len - 1;
      return b.data;
    }
    if ((size_t)n > max - b.len) { /* it grew since fstat */
      too_big(path, max, what, e);
      break;
    }
    buf_put(&b, chunk, (size_t)n);
  }
  close(fd);
  buf_free(&b);
  return NULL;
}

char *read_file(const char *path, size_t *len, Err *e) {
  return read_file_max(path, SIZE_MAX, "memory", len, e);
}

void buf_put(Buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
  }
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
}

void buf_printf(Buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (b->len + (size_t)n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + (size_t)n + 1)
      cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void buf_free(Buf *b) {
  free(b->data);
  *b = (Buf){0};
}

void put_le64(unsigned char p[8], uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t get_le64(const unsigned char p[8]) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

void buf_put_le64(Buf *b, uint64_t v) {
  unsigned char p[8];
  put_le64(p, v);
  buf_put(b, p, sizeof p);
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_u64(Rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint32_t rng_below(Rng *r, uint32_t n) {
  /* Lemire's multiply-and-reject: exact and without division in the
   * common case. */
  uint64_t m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
  uint32_t low = (uint32_t)m;
  if (low < n) {
    uint32_t threshold = -n % n;
    while (low < threshold) {
      m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
      low = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

float rng_uniform(Rng *r, float lo, float hi) {
  /* 24 random bits: every value is an exact float in [0, 1). */
  float u = (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f);
  return lo + (hi - lo) * u;
}

void rng_shuffle_u32(Rng *r, uint32_t *a, size_t n) {
  for (size_t i = n; i > 1; i--) {
    uint32_t j = rng_below(r, (uint32_t)i);
    uint32_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

static int out_errno; /* the errno of a failed out_write */

void out_write(const void *p, size_t n) {
  errno = 0;
  if (fwrite(p, 1, n, stdout) != n && !out_errno)
    out_errno = errno;
}

int close_stdout(Err *e) {
  errno = 0;
  bool lost = ferror(stdout) != 0;
  if (fflush(stdout) != 0)
    lost = true;
  int err = errno ? errno : out_errno;
  if (fclose(stdout) != 0 && !lost) {
    lost = true;
    err = errno;
  }
  if (!lost)
    return 0;
  return errf(e, "cannot write standard output%s%s", err ? ": " : "", err ? strerror(err) : "");
}

uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double thread_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* fault_shim.c: an LD_PRELOAD library that the tests put under rnnc to
 * make its file writes slow or failing, as a busy or full disk would.
 *
 *   RNNC_SLOW_FSYNC_US=N     fsync and fdatasync sleep N microseconds first,
 *                            so a kill lands inside a checkpoint write
 *   RNNC_ENOSPC_FROM_WRITE=K the K-th write() to a file (counting from 1,
 *                            not to standard input/output/error) and every
 *                            later one fail with ENOSPC: the disk is full
 *   RNNC_FAIL_RENAME=K       the K-th rename() (from 1) fails with EIO
 *   RNNC_SLOW_WRITE_US=N     write() to a file (not standard input/output/
 *                            error) sleeps N microseconds first: with
 *                            --metrics-every 1, every training step does
 *                            one, so a signal lands at a step of the test's
 *                            choosing however fast the machine
 *
 * (Under ASan, the tests set ASAN_OPTIONS=verify_asan_link_order=0: this
 * library comes before the ASan runtime in the preload list.) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int fsync(int fd);
int rename(const char *from, const char *to);
int fdatasync(int fd);
ssize_t write(int fd, const void *buf, size_t n);

static long env_long(const char *name) {
  const char *s = getenv(name);
  return s ? atol(s) : 0;
}

static void sleep_us(const char *var) {
  long us = env_long(var);
  struct timespec ts = {us / 1000000, us % 1000000 * 1000};
  while (us > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  sleep_us("RNNC_SLOW_FSYNC_US");
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  sleep_us("RNNC_SLOW_FSYNC_US");
  return real(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
  static ssize_t (*real)(int, const void *, size_t);
  static long count;
  if (!real)
    real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
  long from = env_long("RNNC_ENOSPC_FROM_WRITE");
  if (fd > 2 && from > 0 && ++count >= from) {
    errno = ENOSPC;
    return -1;
  }
  if (fd > 2)
    sleep_us("RNNC_SLOW_WRITE_US");
  return real(fd, buf, n);
}

int rename(const char *from, const char *to) {
  static int (*real)(const char *, const char *);
  static long count;
  if (!real)
    real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
  long k = env_long("RNNC_FAIL_RENAME");
  if (k > 0 && ++count == k) {
    errno = EIO;
    return -1;
  }
  return real(from, to);
}

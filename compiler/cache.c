/* cache.c: compiled kernels on disk. Each run of rnnc compiles the same
 * kernels for the same graph, and LLVM is most of a short command's time,
 * so the object file of each kernel is kept in a directory and loaded
 * instead the next time.
 *
 * This layer maps a key to an object and knows nothing of what a key
 * means: jit.c makes the keys (everything the machine code depends on).
 * One entry, DIR/<FNV-1a of the key, 16 hex digits>.kernel:
 *
 *   magic "rnnc-kc1" | key length | object length | checksum | key | object
 *
 * lengths and checksum little-endian u64; the checksum is FNV-1a of the
 * whole file except itself. The object is native code this process will
 * run, so an entry is used only when
 *   - the directory and the entry are owned by this user and writable by
 *     no one else (the directory is created 0700, entries 0600),
 *   - the entry is a regular file whose size agrees with its header,
 *   - the checksum matches, and the stored key is the key, byte for byte
 *     (a file name that collides is a miss, not a hit).
 * Anything else is a miss: the caller compiles and stores, and the store
 * replaces the bad entry, unless another user owns it. The directory is
 * opened once; entries are opened relative to it with O_NOFOLLOW and
 * checked with fstat on the open file, so the file checked is the file
 * read. A store writes a temporary file and renames it over the entry:
 * processes filling the same entry at once each leave a whole entry, and a
 * reader sees a whole old entry, a whole new one, or none. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rnnc.h"

enum {
  HEADER = 32,           /* magic, key length, object length, checksum */
  CHECKSUM_AT = 24,
};
static const char magic[8] = {'r', 'n', 'n', 'c', '-', 'k', 'c', '1'};
/* Larger entries are not read (no kernel comes near it). */
static const uint64_t max_entry = (uint64_t)1 << 30;

struct Cache {
  int dir; /* the directory, open */
  uid_t uid;
};

static void entry_name(const void *key, size_t keylen, char name[32]) {
  snprintf(name, 32, "%016" PRIx64 ".kernel", fnv1a(FNV1A_INIT, key, keylen));
}

static bool trusted(const struct stat *st, uid_t uid) {
  return st->st_uid == uid && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

/* mkdir -p; what it creates is 0700 (the XDG base directory spec asks
 * that of a missing $XDG_CACHE_HOME too). */
static int make_dirs(const char *path) {
  char *p = xstrdup(path);
  int rc = 0;
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s)
      continue;
    char c = *s;
    *s = '\0';
    if (mkdir(p, 0700) && errno != EEXIST)
      rc = -1;
    *s = c;
    if (!c || rc)
      break;
  }
  free(p);
  return rc;
}

Cache *cache_open(const char *dir, Err *why) {
  if (make_dirs(dir)) {
    errf(why, "cannot create %s: %s", dir, strerror(errno));
    return NULL;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) {
    errf(why, "%s: %s", dir, strerror(errno));
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  uid_t uid = geteuid();
  if (!trusted(&st, uid)) {
    if (st.st_uid != uid)
      errf(why, "%s belongs to another user (uid %ld)", dir, (long)st.st_uid);
    else
      errf(why, "%s is writable by group or others (mode %03o; chmod 700 it)", dir,
           (unsigned)(st.st_mode & 0777));
    close(fd);
    return NULL;
  }
  Cache *c = xcalloc(1, sizeof *c);
  c->dir = fd;
  c->uid = uid;
  return c;
}

char *cache_default_dir(void) {
  const char *d = getenv("RNNC_CACHE_DIR");
  if (d && *d)
    return xstrdup(d);
  /* The spec: a relative $XDG_CACHE_HOME is invalid and ignored. */
  d = getenv("XDG_CACHE_HOME");
  if (d && d[0] == '/')
    return xasprintf("%s/rnnc", d);
  d = getenv("HOME");
  if (d && d[0] == '/')
    return xasprintf("%s/.cache/rnnc", d);
  return NULL;
}

bool cache_disabled_by_env(void) {
  const char *off = getenv("RNNC_NO_CACHE");
  return off && *off && strcmp(off, "0");
}

void cache_close(Cache *c) {
  if (!c)
    return;
  close(c->dir);
  free(c);
}

static int read_all(int fd, unsigned char *p, size_t n) {
  while (n) {
    ssize_t k = read(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static uint64_t checksum(const unsigned char *header, const void *key, size_t keylen,
                         const void *obj, size_t objlen) {
  uint64_t h = fnv1a(FNV1A_INIT, header, CHECKSUM_AT);
  h = fnv1a(h, key, keylen);
  return fnv1a(h, obj, objlen);
}

int cache_load(Cache *c, const void *key, size_t keylen, Buf *obj) {
  char name[32];
  entry_name(key, keylen, name);
  /* O_NONBLOCK: opening a FIFO must not hang (fstat then rejects it). */
  int fd = openat(c->dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -1;
  struct stat st;
  unsigned char *data = NULL;
  int rc = -1;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode) || !trusted(&st, c->uid) ||
      (uint64_t)st.st_size < HEADER + keylen || (uint64_t)st.st_size > max_entry)
    goto done;
  size_t size = (size_t)st.st_size;
  data = xmalloc(size);
  if (read_all(fd, data, size) || memcmp(data, magic, sizeof magic))
    goto done;
  uint64_t klen = get_le64(data + 8), olen = get_le64(data + 16);
  if (klen != keylen || olen != size - HEADER - keylen ||
      get_le64(data + CHECKSUM_AT) !=
          checksum(data, data + HEADER, klen, data + HEADER + klen, olen) ||
      memcmp(data + HEADER, key, keylen))
    goto done;
  buf_put(obj, data + HEADER + keylen, olen);
  rc = 0;
done:
  free(data);
  close(fd);
  return rc;
}

static int write_all(int fd, const void *p, size_t n) {
  const char *s = p;
  while (n) {
    ssize_t k = write(fd, s, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return -1;
    s += k;
    n -= (size_t)k;
  }
  return 0;
}

void cache_store(Cache *c, const void *key, size_t keylen, const void *obj, size_t objlen) {
  static atomic_uint serial; /* temporary names unique within the process */
  char name[32], tmp[96];
  entry_name(key, keylen, name);
  struct stat st;
  if (!fstatat(c->dir, name, &st, AT_SYMLINK_NOFOLLOW) && st.st_uid != c->uid)
    return; /* another user's file: leave it */
  snprintf(tmp, sizeof tmp, ".%s.%ld.%u.tmp", name, (long)getpid(), atomic_fetch_add(&serial, 1));
  int fd = openat(c->dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return;
  unsigned char header[HEADER];
  memcpy(header, magic, sizeof magic);
  put_le64(header + 8, keylen);
  put_le64(header + 16, objlen);
  put_le64(header + CHECKSUM_AT, checksum(header, key, keylen, obj, objlen));
  bool bad = fchmod(fd, 0600) || write_all(fd, header, HEADER) || write_all(fd, key, keylen) ||
             write_all(fd, obj, objlen);
  bad |= close(fd) != 0;
  if (bad || renameat(c->dir, tmp, c->dir, name))
    unlinkat(c->dir, tmp, 0);
}

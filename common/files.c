/* files.c: staged writes (see files.h). */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return xstrdup(".");
  if (slash == path)
    return xstrdup("/");
  return xstrndup(path, (size_t)(slash - path));
}

/* Permissions for the new file: those of the file it replaces, else
 * 0666 less the umask (mkstemp creates 0600). Reading the umask means
 * setting it; rnnc writes files from one thread. */
static mode_t new_mode(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
    return st.st_mode & 07777;
  mode_t mask = umask(022);
  umask(mask);
  return 0666 & ~mask;
}

int stage_open(Staged *s, const char *path, Err *e) {
  char *dir = dir_of(path);
  *s = (Staged){.path = xstrdup(path), .fd = -1};
  s->tmp = xasprintf("%s/" STAGE_PREFIX "XXXXXX", dir);
  s->fd = mkstemp(s->tmp);
  if (s->fd < 0) {
    errf(e, "%s: cannot create a file in directory %s: %s", path, dir, strerror(errno));
    free(dir);
    free(s->tmp);
    s->tmp = NULL;
    return -1;
  }
  free(dir);
  if (fchmod(s->fd, new_mode(path)) < 0)
    s->err = errno;
  return 0;
}

void stage_write(Staged *s, const void *p, size_t n) {
  const char *c = p;
  while (n > 0 && !s->err) {
    ssize_t w = write(s->fd, c, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      s->err = w < 0 ? errno : EIO;
      break;
    }
    c += w;
    n -= (size_t)w;
  }
}

int stage_close(Staged *s, Err *e) {
  if (!s->err && fsync(s->fd) < 0)
    s->err = errno;
  if (close(s->fd) < 0 && !s->err)
    s->err = errno;
  s->fd = -1;
  if (s->err) {
    errf(e, "%s: writing %s failed: %s", s->path, s->tmp, strerror(s->err));
    unlink(s->tmp);
    free(s->tmp);
    s->tmp = NULL;
    return -1;
  }
  return 0;
}

int stage_file(Staged *s, const char *path, const void *data, size_t n, Err *e) {
  if (stage_open(s, path, e))
    return -1;
  stage_write(s, data, n);
  return stage_close(s, e);
}

int rename_durable(const char *from, const char *to) {
  if (rename(from, to) < 0)
    return -1;
  char *dir = dir_of(to);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  free(dir);
  return 0;
}

int stage_commit(Staged *s, Err *e) {
  if (rename_durable(s->tmp, s->path) < 0) {
    errf(e, "%s: cannot replace it with the new file: %s", s->path, strerror(errno));
    stage_discard(s);
    return -1;
  }
  free(s->tmp);
  s->tmp = NULL;
  stage_discard(s);
  return 0;
}

void stage_discard(Staged *s) {
  if (s->tmp && s->fd >= 0)
    close(s->fd);
  if (s->tmp)
    unlink(s->tmp);
  free(s->tmp);
  free(s->path);
  *s = (Staged){.fd = -1};
}

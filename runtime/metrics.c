/* metrics.c: the --metrics log (see metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

/* The byte length of the part of text[0..n) to keep: whole lines that
 * are JSON objects of a step no later than `step`; *time is the largest
 * "time" among them. */
static size_t kept_prefix(const char *text, size_t n, int64_t step, double *time) {
  size_t keep = 0;
  *time = 0;
  while (keep < n) {
    const char *nl = memchr(text + keep, '\n', n - keep);
    if (!nl)
      break;
    size_t len = (size_t)(nl - (text + keep));
    json_error_t jerr;
    json_t *o = json_loadb(text + keep, len, 0, &jerr);
    json_t *s = json_object_get(o, "step"), *t = json_object_get(o, "time");
    bool ok = json_is_integer(s) && json_integer_value(s) <= step;
    if (ok && json_is_number(t) && json_number_value(t) > *time)
      *time = json_number_value(t);
    json_decref(o);
    if (!ok)
      break;
    keep += len + 1;
  }
  return keep;
}

int metrics_open(Metrics *mt, const char *path, int64_t step, Err *e) {
  *mt = (Metrics){.path = xstrdup(path)};
  mt->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (mt->fd < 0) {
    errf(e, "cannot write the metrics file %s: %s", path, strerror(errno));
    metrics_close(mt);
    return -1;
  }
  Buf old = {0};
  char chunk[65536];
  ssize_t got;
  while ((got = read(mt->fd, chunk, sizeof chunk)) > 0)
    buf_put(&old, chunk, (size_t)got);
  size_t keep = kept_prefix(old.data ? old.data : "", old.len, step, &mt->offset);
  int rc = 0;
  if (got < 0)
    rc = errf(e, "cannot read the metrics file %s: %s", path, strerror(errno));
  else if (keep < old.len && ftruncate(mt->fd, (off_t)keep) < 0)
    rc = errf(e, "cannot cut the metrics file %s to the checkpoint's step: %s", path,
              strerror(errno));
  buf_free(&old);
  if (rc)
    metrics_close(mt);
  mt->start = now_seconds();
  return rc;
}

double metrics_time(const Metrics *mt) { return mt->offset + (now_seconds() - mt->start); }

int metrics_write(Metrics *mt, json_t *o, Err *e) {
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
  json_decref(o);
  if (!s)
    return errf(e, "writing the metrics file %s failed: out of memory", mt->path);
  /* The line in one write (O_APPEND): a kill leaves at most this line
   * partial, and a reader never sees half of it. */
  size_t n = strlen(s);
  s[n++] = '\n'; /* json_dumps's terminating NUL makes room */
  for (size_t done = 0; done < n && !mt->err;) {
    ssize_t w = write(mt->fd, s + done, n - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      mt->err = w < 0 ? errno : EIO;
    else
      done += (size_t)w;
  }
  free(s);
  if (mt->err)
    return errf(e, "writing the metrics file %s failed: %s", mt->path, strerror(mt->err));
  return 0;
}

void metrics_close(Metrics *mt) {
  if (mt->path && mt->fd >= 0)
    close(mt->fd);
  free(mt->path);
  *mt = (Metrics){.fd = -1};
}

/* files.c: staged writes (see files.h). */
#include "files.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------ cleanup on signals */

/* The registered paths: a fixed table the handler can read without
 * allocating or locking. A slot is FREE, claimed (WRITING) by one thread
 * while it copies a path in, then SET; the handler, on whatever thread the
 * signal reaches, removes the SET ones. Writers block the signals on their
 * own thread while they change a slot. */
enum { CLEANUP_SLOTS = 8, FREE = 0, WRITING, SET };
static char cleanup_path[CLEANUP_SLOTS][PATH_MAX];
static atomic_int cleanup_state[CLEANUP_SLOTS];
/* SIGPIPE: `rnnc train ... | head -1` ends at its next line of output,
 * and leaves no lock or temporary behind. */
static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};

/* cleanup_defer_stop's state: which of SIGINT (bit 0) and SIGTERM (bit 1)
 * are deferred, and the signal recorded (0: none yet). */
static atomic_int defer_stop, stop_signal;

static void on_signal(int sig) {
  int deferred = atomic_load(&defer_stop);
  if ((sig == SIGINT && (deferred & 1)) || (sig == SIGTERM && (deferred & 2))) {
    int none = 0;
    if (atomic_compare_exchange_strong(&stop_signal, &none, sig))
      return; /* the first: the program stops when it can */
  }
  for (int i = 0; i < CLEANUP_SLOTS; i++)
    if (atomic_load_explicit(&cleanup_state[i], memory_order_acquire) == SET)
      unlink(cleanup_path[i]);
  /* Blocked while the handler runs: delivered, with the default action,
   * as it returns. */
  signal(sig, SIG_DFL);
  raise(sig);
}

static void signal_set(sigset_t *set) {
  sigemptyset(set);
  for (size_t i = 0; i < ARRAY_LEN(cleanup_signals); i++)
    sigaddset(set, cleanup_signals[i]);
}

/* Installs the handlers once; blocks the signals on this thread (restore
 * with unblock). */
static void block(sigset_t *old) {
  static atomic_flag installed = ATOMIC_FLAG_INIT;
  sigset_t set;
  signal_set(&set);
  pthread_sigmask(SIG_BLOCK, &set, old);
  if (atomic_flag_test_and_set(&installed))
    return;
  for (size_t i = 0; i < ARRAY_LEN(cleanup_signals); i++) {
    struct sigaction sa;
    if (sigaction(cleanup_signals[i], NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
      continue;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* a deferred stop returns: calls go on */
    sa.sa_mask = set;
    sigaction(cleanup_signals[i], &sa, NULL);
  }
}

static void unblock(const sigset_t *old) { pthread_sigmask(SIG_SETMASK, old, NULL); }

/* With the signals blocked on this thread. */
static void add_path(const char *path) {
  if (strlen(path) >= PATH_MAX)
    return; /* no such file can be made */
  for (int i = 0; i < CLEANUP_SLOTS; i++) {
    int free_slot = FREE;
    if (atomic_compare_exchange_strong(&cleanup_state[i], &free_slot, WRITING)) {
      strcpy(cleanup_path[i], path);
      atomic_store_explicit(&cleanup_state[i], SET, memory_order_release);
      return;
    }
  }
  assert(!"few files registered at a time: a slot is free");
}

/* With the signals blocked on this thread. */
static void remove_path(const char *path) {
  for (int i = 0; i < CLEANUP_SLOTS; i++)
    if (atomic_load_explicit(&cleanup_state[i], memory_order_acquire) == SET &&
        !strcmp(cleanup_path[i], path)) {
      atomic_store_explicit(&cleanup_state[i], FREE, memory_order_release);
      return;
    }
}

void cleanup_register(const char *path) {
  sigset_t old;
  block(&old);
  add_path(path);
  unblock(&old);
}

void cleanup_defer_stop(bool sigint, bool sigterm) {
  sigset_t old;
  block(&old); /* installs the handlers */
  atomic_store(&defer_stop, (sigint ? 1 : 0) | (sigterm ? 2 : 0));
  unblock(&old);
}

int cleanup_stop_signal(void) { return atomic_load(&stop_signal); }

void cleanup_release(const char *path) {
  sigset_t old;
  block(&old);
  remove_path(path);
  unblock(&old);
}

/* Creates a temporary DIR/.rnnc-tmp-PID-N, its name padded with '_' to at
 * least len bytes, registered before it exists: a signal, whichever thread
 * it reaches, cannot leave it behind (mkstemp then cleanup_register could:
 * blocking the signals on this thread does not keep them from another).
 * The pid keeps other processes off the name. Returns the descriptor
 * (write-only, 0600) and the malloc'd name in *tmp, or -1 with errno. */
static int make_temp(const char *dir, size_t len, char **tmp) {
  static atomic_uint serial;
  for (int tries = 0; tries < 1000; tries++) {
    char name[NAME_MAX + 1];
    int n = snprintf(name, sizeof name, STAGE_PREFIX "%ld-%u", (long)getpid(),
                     atomic_fetch_add(&serial, 1));
    while ((size_t)n < len && n < NAME_MAX)
      name[n++] = '_';
    name[n] = '\0';
    char *path = xasprintf("%s/%s", dir, name);
    sigset_t old;
    block(&old);
    add_path(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int err = errno;
    if (fd < 0)
      remove_path(path);
    unblock(&old);
    if (fd >= 0) {
      *tmp = path;
      return fd;
    }
    free(path);
    if (err != EEXIST) { /* EEXIST: left by an earlier process with this pid */
      errno = err;
      return -1;
    }
  }
  errno = EEXIST;
  return -1;
}

/* ------------------------------------------------------ staged files */

char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return xstrdup(".");
  if (slash == path)
    return xstrdup("/");
  return xstrndup(path, (size_t)(slash - path));
}

/* Permissions for the new file: those of the file it replaces, else
 * 0666 less the umask (temporaries are made 0600). Reading the umask means
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
  s->fd = make_temp(dir, 0, &s->tmp);
  if (s->fd < 0) {
    errf(e, "%s: cannot create a file in directory %s: %s", path, dir, strerror(errno));
    free(dir);
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
    cleanup_release(s->tmp);
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

int probe_dir(const char *dir, size_t len) {
  char *probe;
  int fd = make_temp(dir, len, &probe);
  if (fd < 0)
    return -1;
  close(fd);
  unlink(probe);
  cleanup_release(probe);
  free(probe);
  return 0;
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
  cleanup_release(s->tmp);
  free(s->tmp);
  s->tmp = NULL;
  stage_discard(s);
  return 0;
}

int stage_commit_both(Staged *a, Staged *b, Err *e) {
  /* a's old file, kept under a registered temporary name (a hard link:
   * the target itself stays in place until the rename replaces it). */
  char *path = xstrdup(a->path), *bpath = xstrdup(b->path), *dir = dir_of(path), *old = NULL;
  struct stat st;
  bool existed = lstat(path, &st) == 0, kept = false;
  int fd = existed ? make_temp(dir, 0, &old) : -1;
  free(dir);
  if (fd >= 0) { /* a name for the link: the file make_temp made goes */
    close(fd);
    kept = unlink(old) == 0 && link(path, old) == 0;
  }
  int rc = stage_commit(a, e);
  if (rc == 0 && stage_commit(b, e)) {
    rc = -1;
    bool mixed = false;
    if (kept)
      mixed = rename_durable(old, path) < 0;
    else if (!existed)
      unlink(path); /* there was none: none again */
    else
      mixed = true; /* no hard link here to keep the old one */
    if (mixed) {
      size_t n = strlen(e->msg);
      snprintf(e->msg + n, sizeof e->msg - n, "; %s is the new one, %s the old one", path, bpath);
    }
  }
  if (fd >= 0) {
    unlink(old);
    cleanup_release(old);
  }
  free(old);
  free(path);
  free(bpath);
  return rc;
}

void stage_discard(Staged *s) {
  if (s->tmp && s->fd >= 0)
    close(s->fd);
  if (s->tmp) {
    unlink(s->tmp);
    cleanup_release(s->tmp);
  }
  free(s->tmp);
  free(s->path);
  *s = (Staged){.fd = -1};
}

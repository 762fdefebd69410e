/* files.h: writing files so that nothing is ever half-written.
 *
 * A file is staged: written in full to a temporary beside its target
 * (same directory, so the rename cannot cross file systems), fsync'd, and
 * only then renamed over the target; the rename is made durable by
 * syncing the directory. A failure at any point leaves the target as it
 * was and removes the temporary. Temporaries (and lock files) are also
 * removed when SIGINT, SIGTERM, SIGHUP or SIGPIPE ends the process
 * (cleanup_*). */
#ifndef RNNC_FILES_H
#define RNNC_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* Temporaries are named DIR/.rnnc-tmp-PID-N. */
#define STAGE_PREFIX ".rnnc-tmp-"

typedef struct Staged {
  char *path; /* the target (malloc'd) */
  char *tmp;  /* the temporary, NULL once committed or discarded */
  int fd;     /* open while writing, else -1 */
  int err;    /* the first write's errno, 0 if none */
} Staged;

/* Creates the temporary for path, with the permissions of the file it
 * will replace (else 0666 less the umask). Returns 0, or -1 with a
 * message naming path. */
int stage_open(Staged *s, const char *path, Err *e);
/* Appends n bytes; an error is kept for stage_close to report. */
void stage_write(Staged *s, const void *p, size_t n);
/* fsyncs and closes the temporary. Returns 0, or -1 with the first error
 * (and the temporary removed). */
int stage_close(Staged *s, Err *e);
/* Renames the temporary over its target and syncs the directory. Returns
 * 0, or -1 with a message (and the temporary removed). */
int stage_commit(Staged *s, Err *e);
/* Commits a, then b; when b cannot be committed, a's target is put back
 * as it was (its old file, or none), so that an error leaves both targets
 * new or neither (a crash between the two renames can still leave one of
 * each). */
int stage_commit_both(Staged *a, Staged *b, Err *e);
/* Removes the temporary, if any, and frees s: call it after any failure
 * (stage_commit does on success). Harmless on a committed, discarded or
 * zeroed Staged. */
void stage_discard(Staged *s);
/* stage_open, stage_write and stage_close of one buffer. */
int stage_file(Staged *s, const char *path, const void *data, size_t n, Err *e);

/* Registers path, a file this process made and will rename or remove:
 * if SIGINT, SIGTERM, SIGHUP or SIGPIPE ends the process first, the file is
 * removed. The handlers are installed at the first registration (a signal
 * the process ignores stays ignored), then do their cleanup and end the
 * process as the signal would have. Staged temporaries are registered. */
void cleanup_register(const char *path);
/* Forgets path (renamed or removed). */
void cleanup_release(const char *path);
/* With sigint (sigterm), the first SIGINT (SIGTERM) does nothing but
 * record itself (cleanup_stop_signal), for a program that stops at a point
 * of its own choosing; a second signal ends the process at once, as
 * above. Both false: every signal ends it. The recorded signal stays
 * recorded. */
void cleanup_defer_stop(bool sigint, bool sigterm);
/* The signal cleanup_defer_stop recorded, or 0. Any thread. */
int cleanup_stop_signal(void);

/* Whether a file with a name of len bytes can be made in dir: makes one
 * (a temporary, registered) and removes it. Returns 0, or -1 with errno. */
int probe_dir(const char *dir, size_t len);

/* rename(from, to), then fsync of to's directory. Returns 0 or -1 with
 * errno from rename (a failed directory sync is not reported: the rename
 * is done). */
int rename_durable(const char *from, const char *to);

/* The directory part of path: "." when there is none (malloc'd). */
char *dir_of(const char *path);

#endif

/* metrics.h: rnnc train --metrics: a JSON Lines log of a training, for
 * rnnc plot and for people.
 *
 * One JSON object per line, written whole and flushed, so the file parses
 * line by line up to its last line whatever ends the process (a partial
 * last line, from a kill inside a write, is cut off by the next open).
 *   {"type": "train", "epoch", "step", "names_seen", "loss" (running),
 *    "lr", "grad_norm", "names_per_s", "time"}
 *   {"type": "eval", "epoch", "step", "names_seen", "time", "test_loss",
 *    "accuracy", "correct", "n", "labels": [...], "per_language": [...]
 *    (accuracy, null for a language with no test names), "confusion":
 *    [[...]] (rows: true language, columns: predicted), "best" (with
 *    --keep-best: whether this evaluation made the best checkpoint)}
 * "epoch" counts from 1 (the epoch in progress, or just finished), "step"
 * is the optimizer steps done, "time" the wall-clock seconds of training
 * (continued across resumed runs). */
#ifndef RNNC_METRICS_H
#define RNNC_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime.h"

struct json_t;

typedef struct Metrics {
  int fd;        /* O_APPEND */
  char *path;
  double start;  /* now_seconds() at metrics_open */
  double offset; /* "time" of the last line kept from before */
  int err;       /* the first write's errno */
} Metrics;

/* Opens path to append, creating it. Lines of steps after `step` (of a
 * run that went further than the checkpoint it resumes from, or of
 * another training), and a partial last line, are cut off first. Returns
 * 0, or -1 with a message. */
int metrics_open(Metrics *mt, const char *path, int64_t step, Err *e);
/* Seconds of training: the earlier runs' and this one's. */
double metrics_time(const Metrics *mt);
/* Writes one line (takes o's reference). Returns 0, or -1 with a message
 * when the file cannot be written. */
int metrics_write(Metrics *mt, struct json_t *o, Err *e);
void metrics_close(Metrics *mt);

#endif

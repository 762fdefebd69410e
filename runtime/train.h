/* train.h: the training driver and evaluation. */
#ifndef RNNC_TRAIN_H
#define RNNC_TRAIN_H

#include <stdbool.h>
#include <stdio.h>

#include "dist.h"
#include "model.h"

#include "metrics.h"

typedef struct EvalResult {
  int nlabels;
  size_t n, correct;
  double loss_sum;   /* cross entropy of the logits, summed over the names */
  size_t *confusion; /* (nlabels, nlabels): [truth][predicted] */
} EvalResult;

/* What train_run tells its caller. */
typedef struct TrainReport {
  int stop_signal;      /* SIGINT or SIGTERM when the run stopped early, else 0 */
  double last_accuracy; /* of the last evaluation, or -1 */
  /* The best checkpoint (TrainOptions.best): its evaluation, 0 of 0 when
   * none was written; best_epoch counts from 1 (the epoch it was in). */
  size_t best_correct, best_n;
  int best_epoch;
  int64_t best_step;
  /* The evaluation on the test split that ended the last epoch, when
   * training ended there (returned 0) and there is a test split: the
   * parameters have not changed since, so a final report needs no other
   * (rnnc train prints it). final.confusion is NULL otherwise; the caller
   * frees it with eval_free. */
  EvalResult final;
} TrainReport;

typedef struct TrainOptions {
  int epochs;        /* epochs to run now (after any the model has done; an
                      * epoch the model stopped in counts as one) */
  uint64_t seed;     /* shuffling and noise; epoch k uses (seed, k) */
  const char *out;   /* checkpoint, rewritten after every epoch and at a stop */
  const char *init;  /* NULL, or the checkpoint the run started from (--init) */
  const Vocab *vocab; /* the data's vocabulary, saved with it */
  const char *best;  /* NULL, or the checkpoint of the best test accuracy */
  int eval_every;    /* > 0: also evaluate every so many steps */
  Metrics *metrics;  /* NULL, or the log a line goes to every metrics_every steps */
  int metrics_every; /* 0 without metrics; with several ranks, rank 0 alone has
                      * metrics but all have metrics_every */
  int progress;      /* 1: a live bar (a terminal); 0: a line every few seconds */
  FILE *log;         /* progress and reports */
  TrainReport *report; /* may be NULL */
  const Dist *dist;  /* the ranks training together (NULL: this process alone) */
} TrainOptions;

/* Epoch `epoch`'s order of ds->train (ntrain indices into order) and the
 * noise generator's state at its start: the same for a run that resumes
 * there. */
void train_epoch_begin(Model *m, const Dataset *ds, uint64_t seed, int epoch, uint32_t *order);
/* The signal (SIGINT or SIGTERM) that asks training to stop now, or 0
 * (see cleanup_defer_stop). train_run asks once per step, after the step.
 * Collective with several ranks (d may be NULL: alone): the signal any
 * rank got, SIGINT first, so that all stop at the same step. */
int train_should_stop(const Dist *d);
/* Trains on ds->train, from m->epoch and m->pos (a checkpoint of a run
 * stopped mid-epoch); evaluates on ds->test after every epoch (and every
 * o->eval_every steps). Stops with an error at a NaN or infinite loss,
 * naming the name and step; the checkpoint of the last finished epoch
 * stays as it was. When train_should_stop, finishes the step, writes the
 * checkpoint with the position in the epoch and returns TRAIN_STOPPED
 * (the signal in o->report). Otherwise returns 0, or -1 on an error. */
enum { TRAIN_STOPPED = 1 };
int train_run(Model *m, const Dataset *ds, const TrainOptions *o, Err *e);
/* Accuracy and confusion over names idx[0..n). r->confusion is malloc'd. */
void evaluate(Model *m, const Dataset *ds, const uint32_t *idx, size_t n, uint64_t seed,
              const Dist *d, EvalResult *r);
void eval_print(FILE *f, const Dataset *ds, const EvalResult *r);
void eval_free(EvalResult *r);

#endif

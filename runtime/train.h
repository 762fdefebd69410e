/* train.h: the training driver and evaluation. */
#ifndef RNNC_TRAIN_H
#define RNNC_TRAIN_H

#include <stdio.h>

#include "dist.h"
#include "model.h"

typedef struct TrainOptions {
  int epochs;        /* epochs to run now (after any the model has done) */
  uint64_t seed;     /* shuffling and noise; epoch k uses (seed, k) */
  const char *out;   /* checkpoint, rewritten after every epoch */
  const Vocab *vocab; /* the data's vocabulary, saved with it */
  int progress;      /* 1: a live bar (a terminal); 0: a line every few seconds */
  FILE *log;         /* progress and reports */
  const Dist *dist;  /* the ranks training together (NULL: this process alone) */
} TrainOptions;

typedef struct EvalResult {
  int nlabels;
  size_t n, correct;
  size_t *confusion; /* (nlabels, nlabels): [truth][predicted] */
} EvalResult;

/* Epoch `epoch`'s order of ds->train (ntrain indices into order) and the
 * noise generator's state at its start: the same for a run that resumes
 * there. */
void train_epoch_begin(Model *m, const Dataset *ds, uint64_t seed, int epoch, uint32_t *order);
/* Trains on ds->train; evaluates on ds->test after every epoch. Stops
 * with an error at a NaN or infinite loss, naming the name and step; the
 * checkpoint of the last finished epoch stays as it was. */
int train_run(Model *m, const Dataset *ds, const TrainOptions *o, Err *e);
/* Accuracy and confusion over names idx[0..n). r->confusion is malloc'd. */
void evaluate(Model *m, const Dataset *ds, const uint32_t *idx, size_t n, uint64_t seed,
              const Dist *d, EvalResult *r);
void eval_print(FILE *f, const Dataset *ds, const EvalResult *r);
void eval_free(EvalResult *r);

#endif

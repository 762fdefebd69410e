/* checkpoint.h: saving and loading a model's parameters and optimizer
 * state (see checkpoint.c for the files). */
#ifndef RNNC_CHECKPOINT_H
#define RNNC_CHECKPOINT_H

#include <stdbool.h>

#include "model.h"

/* Where the optimizer state of checkpoint path lives (malloc'd). */
char *ckpt_optim_path(const char *path);
/* Writes the parameters (and, for a training model, the optimizer state
 * beside them), atomically. */
int ckpt_save(const Model *m, char *const *labels, int nlabels, const char *path, Err *e);
/* Reads the parameters of m's graph from path: every parameter and buffer
 * must be there with its shape (other tensors are ignored). With
 * with_optim, also the optimizer state beside it, when there is one.
 * *labels (malloc'd, may be NULL when the file has no label list). */
int ckpt_load(Model *m, const char *path, bool with_optim, char ***labels, int *nlabels,
              Err *e);

#endif

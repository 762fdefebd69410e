/* dist.h: data-parallel training across processes with MPI.
 *
 * Every rank holds the whole model and reads the whole data set; a global
 * batch is split into one slice of names per rank, each rank sums its
 * slice's gradients, and an allreduce adds the ranks' sums, so every rank
 * takes the same optimizer step (runtime/train.c). rnnc builds with MPI
 * when CMake finds it (RNNC_HAVE_MPI); without MPI, the same calls run one
 * process alone, and a process that a launcher started as one of several
 * refuses to train alone (dist_init).
 *
 * Every call but dist_launched_size, dist_init and dist_term_message is
 * collective: every rank makes it, in the same order. */
#ifndef RNNC_DIST_H
#define RNNC_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct Dist {
  int rank, size; /* 0, 1 when alone */
  int local;      /* ranks on this machine, this one included */
  bool mpi;       /* MPI_Init was called (dist_finalize calls MPI_Finalize) */
} Dist;

/* How many processes a launcher (mpirun, mpiexec, srun) started, from its
 * environment; 1 when none did. */
int dist_launched_size(void);
/* Joins the job when a launcher started this process as one of several:
 * with MPI, MPI_Init; without MPI, an error (each copy would train
 * alone). Alone, d is rank 0 of 1 and nothing else happens. */
int dist_init(Dist *d, Err *e);
void dist_finalize(Dist *d);
/* In place, over all ranks: the sum (every rank gets the same bits). */
void dist_sum_f32(const Dist *d, float *x, size_t n);
void dist_sum_u64(const Dist *d, uint64_t *x, size_t n);
void dist_sum_f64(const Dist *d, double *x, size_t n);
/* True when every rank passed the same h. */
bool dist_same_u64(const Dist *d, uint64_t h);
/* The lowest rank that passed failed = true, or -1 when none did: after
 * a step that can fail on some ranks only, all ranks stop together and
 * one reports. */
int dist_first_failed(const Dist *d, bool failed);
/* What this process prints on standard error if SIGTERM ends it: mpirun
 * sends SIGTERM to every rank when one dies (or when it is interrupted).
 * The first call installs the handler, which then does what the handler
 * it replaced would have done (the default: end the process). */
void dist_term_message(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Ends the whole job with exit status code. */
_Noreturn void dist_abort(const Dist *d, int code);

#endif

/* pool.h: a fixed set of threads that run numbered tasks.
 *
 * Task k always runs on thread k % nthreads (thread 0 is the caller), so
 * which thread ran what is fixed, and results that depend only on each
 * task's own inputs do not depend on timing. pthreads rather than OpenMP:
 * a static assignment needs no runtime of its own, works the same under
 * the sanitizers, and the pool lives as long as the model. */
#ifndef RNNC_POOL_H
#define RNNC_POOL_H

typedef struct Pool Pool;
typedef void PoolFn(void *ctx, int task, int thread);

/* nthreads >= 1; 1 starts no thread. */
Pool *pool_new(int nthreads);
int pool_threads(const Pool *p);
/* Runs fn(ctx, k, k % nthreads) for k in [0, ntasks) and returns when all
 * have finished. Not reentrant: one run at a time per pool. */
void pool_run(Pool *p, int ntasks, PoolFn *fn, void *ctx);
void pool_free(Pool *p);

#endif

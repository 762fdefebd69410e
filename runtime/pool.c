/* pool.c: the thread pool of pool.h: workers wait on a generation counter;
 * a run bumps it, does thread 0's share itself, then waits for the rest. */
#include "pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct Worker {
  Pool *pool;
  int index;
  pthread_t th;
} Worker;

struct Pool {
  int n;
  Worker *w;
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  unsigned long gen; /* bumped by every run */
  int pending;       /* workers still running the current generation */
  bool stop;
  PoolFn *fn;
  void *ctx;
  int ntasks;
};

static void run_share(Pool *p, int thread) {
  for (int k = thread; k < p->ntasks; k += p->n)
    p->fn(p->ctx, k, thread);
}

static void *worker_main(void *arg) {
  Worker *w = arg;
  Pool *p = w->pool;
  unsigned long seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stop && p->gen == seen)
      pthread_cond_wait(&p->start, &p->mu);
    if (p->stop)
      break;
    seen = p->gen;
    pthread_mutex_unlock(&p->mu);
    run_share(p, w->index);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0)
      pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

Pool *pool_new(int nthreads) {
  Pool *p = xcalloc(1, sizeof *p);
  p->n = nthreads < 1 ? 1 : nthreads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->start, NULL);
  pthread_cond_init(&p->done, NULL);
  p->w = xcalloc((size_t)p->n, sizeof *p->w);
  for (int i = 1; i < p->n; i++) {
    p->w[i] = (Worker){.pool = p, .index = i};
    int rc = pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]);
    if (rc) {
      fprintf(stderr, "rnnc: error: cannot start a thread: %s\n", strerror(rc));
      exit(EXIT_BAD_INPUT);
    }
  }
  return p;
}

int pool_threads(const Pool *p) { return p->n; }

void pool_run(Pool *p, int ntasks, PoolFn *fn, void *ctx) {
  if (p->n == 1 || ntasks <= 1) {
    for (int k = 0; k < ntasks; k++)
      fn(ctx, k, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->ctx = ctx;
  p->ntasks = ntasks;
  p->pending = p->n - 1;
  p->gen++;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  run_share(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->pending)
    pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

void pool_free(Pool *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n; i++)
    pthread_join(p->w[i].th, NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->start);
  pthread_cond_destroy(&p->done);
  free(p->w);
  free(p);
}

/* pool.c: the thread pool of pool.h. A run publishes its task by bumping
 * a generation counter and does thread 0's share itself; each worker runs
 * its share and counts itself done. Waiting (a worker for the next run,
 * the caller for the workers) spins on the counters for up to SPIN_SECONDS,
 * then sleeps on a condition variable: a training step runs the pool
 * several times within a millisecond, and a wake-up through the kernel
 * took 20-40 µs of each run on this 2-core VM (an idle gru.nn batch-32
 * epoch on 2 threads: 1-14% more names/s in 6 of 6 interleaved pairs;
 * with a third process busy on the 2 cores, 1% and 5% fewer in 2). */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SPIN_SECONDS 50e-6 /* how long a wait spins before it sleeps */

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
  atomic_ulong gen;    /* bumped by every run */
  atomic_int pending;  /* workers still running the current generation */
  atomic_bool stop;
  int sleepers;        /* workers asleep on start (under mu) */
  bool caller_sleeps;  /* the caller asleep on done (under mu) */
  PoolFn *fn;          /* the run's, written before gen is bumped */
  void *ctx;
  int ntasks;
};

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Spins until done(p, arg) or SPIN_SECONDS have passed; returns done(p, arg). */
static bool spin(Pool *p, bool (*done)(Pool *, unsigned long), unsigned long arg) {
  double t0 = now_seconds();
  for (int i = 1;; i++) {
    if (done(p, arg))
      return true;
    relax();
    if (i % 64 == 0 && now_seconds() - t0 > SPIN_SECONDS)
      return done(p, arg);
  }
}

static bool started(Pool *p, unsigned long seen) {
  return atomic_load_explicit(&p->gen, memory_order_acquire) != seen ||
         atomic_load_explicit(&p->stop, memory_order_acquire);
}

static bool finished(Pool *p, unsigned long unused) {
  (void)unused;
  return atomic_load_explicit(&p->pending, memory_order_acquire) == 0;
}

static void run_share(Pool *p, int thread) {
  for (int k = thread; k < p->ntasks; k += p->n)
    p->fn(p->ctx, k, thread);
}

static void *worker_main(void *arg) {
  Worker *w = arg;
  Pool *p = w->pool;
  unsigned long seen = 0;
  for (;;) {
    if (!spin(p, started, seen)) {
      pthread_mutex_lock(&p->mu);
      p->sleepers++;
      while (!started(p, seen))
        pthread_cond_wait(&p->start, &p->mu);
      p->sleepers--;
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load_explicit(&p->stop, memory_order_acquire))
      break;
    seen = atomic_load_explicit(&p->gen, memory_order_acquire);
    run_share(p, w->index);
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&p->mu); /* the caller checks pending under mu before it sleeps */
      if (p->caller_sleeps)
        pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

Pool *pool_new(int nthreads) {
  Pool *p = xcalloc(1, sizeof *p);
  p->n = nthreads < 1 ? 1 : nthreads;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->start, NULL);
  pthread_cond_init(&p->done, NULL);
  atomic_init(&p->gen, 0);
  atomic_init(&p->pending, 0);
  atomic_init(&p->stop, false);
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
  p->fn = fn;
  p->ctx = ctx;
  p->ntasks = ntasks;
  atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release); /* publishes the run */
  pthread_mutex_lock(&p->mu); /* a worker checks gen under mu before it sleeps */
  if (p->sleepers)
    pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  run_share(p, 0);
  if (!spin(p, finished, 0)) {
    pthread_mutex_lock(&p->mu);
    p->caller_sleeps = true;
    while (!finished(p, 0))
      pthread_cond_wait(&p->done, &p->mu);
    p->caller_sleeps = false;
    pthread_mutex_unlock(&p->mu);
  }
}

void pool_free(Pool *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->mu);
  atomic_store_explicit(&p->stop, true, memory_order_release);
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

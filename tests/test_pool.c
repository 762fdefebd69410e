/* test_pool.c: the thread pool (runtime/pool.c) against its contract in
 * pool.h: every task of a run runs once, task k on thread k % nthreads,
 * and all have finished when pool_run returns. Runs follow each other at
 * once (the waits spin), after pauses longer than the spin (the workers
 * sleep), and with tasks longer than the spin (the caller sleeps), so
 * both ways of waiting on both sides are taken; a lost wake-up would hang
 * (ctest's timeout) and a late one fail the checks. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"
#include "util.h"
#include "testutil.h"

enum { MAXTASKS = 40 };

typedef struct Run {
  atomic_int count[MAXTASKS]; /* how many times task k ran */
  int thread[MAXTASKS];       /* on which thread */
  double busy;                /* each task's time, seconds */
} Run;

static void pause_ns(long long ns) {
  struct timespec ts = {0, (long)ns};
  nanosleep(&ts, NULL);
}

static void task(void *ctx, int k, int thread) {
  Run *r = ctx;
  if (r->busy > 0) {
    double t0 = now_seconds();
    while (now_seconds() - t0 < r->busy)
      ;
  }
  r->thread[k] = thread;
  atomic_fetch_add(&r->count[k], 1);
}

static void check_run(Pool *p, int nthreads, int ntasks, double busy) {
  Run r;
  for (int k = 0; k < MAXTASKS; k++)
    atomic_init(&r.count[k], 0);
  memset(r.thread, 0xff, sizeof r.thread);
  r.busy = busy;
  pool_run(p, ntasks, task, &r);
  for (int k = 0; k < MAXTASKS; k++) {
    int c = atomic_load(&r.count[k]);
    if (c != (k < ntasks))
      fail_msg("%d threads, %d tasks: task %d ran %d times", nthreads, ntasks, k, c);
    if (k < ntasks && r.thread[k] != k % nthreads)
      fail_msg("%d threads: task %d ran on thread %d, not %d", nthreads, k, r.thread[k],
               k % nthreads);
  }
}

static void test_pool_runs(void **state) {
  (void)state;
  for (int n = 1; n <= 4; n++) {
    Pool *p = pool_new(n);
    assert_int_equal(pool_threads(p), n);
    for (int i = 0; i < 3000; i++) /* back to back: the waits spin */
      check_run(p, n, i % (MAXTASKS + 1), 0);
    for (int i = 0; i < 20; i++) { /* the workers asleep when the run starts */
      pause_ns(200000);
      check_run(p, n, 1 + i % MAXTASKS, 0);
    }
    for (int i = 0; i < 10; i++) /* tasks of 150 µs: the caller sleeps for the others */
      check_run(p, n, n + i % 3, 150e-6);
    pool_free(p);
  }
  pool_free(NULL);
  print_message("1 to 4 threads: 3,000 runs back to back, 20 after 200 µs pauses, 10 of "
                "150 µs tasks: each task once, on thread k %% n\n");
}

/* A pool freed while its workers sleep, and one freed at once. */
static void test_pool_free(void **state) {
  (void)state;
  Pool *p = pool_new(3);
  check_run(p, 3, 7, 0);
  pause_ns(200000);
  pool_free(p);
  pool_free(pool_new(2));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_runs),
      cmocka_unit_test(test_pool_free),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

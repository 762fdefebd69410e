/* coherence.c: what a core pays to write memory another core has just
 * read, for docs/benchmarks.md and docs/codegen.md ("Lines the other
 * cores hold").
 *
 *   ./coherence [MB]      (default 1.3: half of gru.nn's packs, what one
 *                          of two threads packs a batch)
 *
 * Two threads, pinned to CPUs 0 and 1, take turns over one buffer: the
 * writer fills it, then the reader does something with it, 200 times.
 * Printed: the writer's GB/s for each way of writing (plain stores,
 * non-temporal stores) after each thing the reader did:
 *
 *   nothing         the lines are the writer's alone (the 1-thread case)
 *   read            the reader loaded every line: both cores hold a copy,
 *                   and the writer's next store to a line waits for the
 *                   reader's copy to be dropped (the packs the chunks read,
 *                   the weights the backward reads)
 *   read, write     the reader loaded and stored every line: the line moves
 *                   to it, and back to the writer at the next store
 *
 * and the reader's GB/s. rnnc's runtime and pack kernels choose plain or
 * non-temporal stores by what this prints on the Zen 5 the issue was
 * measured on (docs/benchmarks.md). Built with -O3 -march=native
 * (bench/CMakeLists.txt); needs AVX-512F and 2 CPUs. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { REPS = 200 };
enum Reader { NOTHING, READ, READ_WRITE };
static const char *const reader_name[] = {"nothing", "read", "read, write"};

typedef struct Run {
  float *buf;
  size_t n; /* floats, a multiple of 16 */
  enum Reader reader;
  bool stream; /* the writer's stores non-temporal */
  atomic_int turn; /* 0: the writer's, 1: the reader's */
  double write_s, read_s;
} Run;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  if (pthread_setaffinity_np(pthread_self(), sizeof s, &s)) {
    fprintf(stderr, "coherence: cannot run on CPU %d (2 CPUs needed)\n", cpu);
    exit(1);
  }
}

static volatile float sink;

static void *reader(void *arg) {
  Run *r = arg;
  pin(1);
  for (int rep = 0; rep < REPS; rep++) {
    while (atomic_load(&r->turn) != 1)
      ;
    double t = now();
    __m512 s = _mm512_setzero_ps();
    for (size_t i = 0; r->reader != NOTHING && i < r->n; i += 16) {
      s = _mm512_add_ps(s, _mm512_load_ps(r->buf + i));
      if (r->reader == READ_WRITE)
        _mm512_store_ps(r->buf + i, _mm512_setzero_ps());
    }
    sink += _mm512_reduce_add_ps(s);
    r->read_s += now() - t;
    atomic_store(&r->turn, 0);
  }
  return NULL;
}

static void run(Run *r) {
  pthread_t th;
  r->write_s = r->read_s = 0;
  atomic_store(&r->turn, 0);
  if (pthread_create(&th, NULL, reader, r)) {
    fprintf(stderr, "coherence: cannot start a thread\n");
    exit(1);
  }
  for (int rep = 0; rep < REPS; rep++) {
    while (atomic_load(&r->turn) != 0)
      ;
    double t = now();
    __m512 v = _mm512_set1_ps((float)rep);
    if (r->stream) {
      for (size_t i = 0; i < r->n; i += 16)
        _mm512_stream_ps(r->buf + i, v);
      _mm_sfence();
    } else {
      for (size_t i = 0; i < r->n; i += 16)
        _mm512_store_ps(r->buf + i, v);
    }
    r->write_s += now() - t;
    atomic_store(&r->turn, 1);
  }
  pthread_join(th, NULL);
}

int main(int argc, char **argv) {
  double mb = argc > 1 ? atof(argv[1]) : 1.3;
  if (argc > 2 || !(mb > 0 && mb <= 4096)) {
    fprintf(stderr, "usage: coherence [MB]   (0 < MB <= 4096; default 1.3)\n");
    return 2;
  }
  Run r = {.n = ((size_t)(mb * 1e6) / sizeof(float) + 15) & ~(size_t)15};
  r.buf = aligned_alloc(64, r.n * sizeof(float));
  if (!r.buf) {
    fprintf(stderr, "coherence: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < r.n; i++)
    r.buf[i] = 1;
  pin(0);
  double bytes = (double)r.n * sizeof(float) * REPS;
  printf("%.2f MB, %d turns; GB/s\n%-12s %14s %14s %10s\n", (double)r.n * sizeof(float) / 1e6, REPS,
         "reader did", "writer, plain", "writer, stream", "reader");
  for (int rd = NOTHING; rd <= READ_WRITE; rd++) {
    double w[2], rs = 0;
    for (int st = 0; st < 2; st++) {
      r.reader = (enum Reader)rd;
      r.stream = st;
      run(&r);
      w[st] = bytes / r.write_s / 1e9;
      rs += r.read_s;
    }
    printf("%-12s %14.1f %14.1f", reader_name[rd], w[0], w[1]);
    if (rd == NOTHING)
      printf(" %10s\n", "-");
    else
      printf(" %10.1f\n", 2 * bytes / rs / 1e9);
  }
  free(r.buf);
  return 0;
}

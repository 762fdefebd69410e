/* driver.c: rnnc-bench, the rnnc side of bench/run.
 *
 *   rnnc-bench GRAPH [--data DIR] [--epochs N] [--seed S] [--limit N]
 *                    [--infer-reps R] [--no-eval] [--save CKPT] [--dump-test FILE]
 *
 * Does what `rnnc train` does (compile, initialize, load and split the
 * data, train batch 1 with the training set reshuffled every epoch,
 * evaluate on the test split after every epoch) through the runtime's API,
 * and times the parts apart: the compile, each epoch's training loop (the
 * calls of model_train_step only: no evaluation, no checkpoint), and
 * inference (model_forward over the test split, R passes, the median
 * pass), each by the wall clock and by the process's CPU time (which a
 * busy machine inflates less). Prints one JSON object a line on standard
 * output:
 *
 *   {"event":"compile", ...}   {"event":"epoch", ...}   {"event":"summary", ...}
 *
 * --limit N trains on the first N names of each epoch's shuffled order
 * (bench/run --quick). --no-eval skips the evaluation after each epoch
 * and --infer-reps 0 the inference timing (bench/profile.py: a profile of
 * training alone). The compile line also has the pid and the kernels'
 * addresses (bench/profile.py names the samples with them). --save writes the trained checkpoint (for rnnc
 * build); --dump-test writes the test split as lines "label len i0 i1 ..."
 * of vocabulary indices (for bench/aot.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"
#include "train.h"

static void usage(void) {
  fputs("usage: rnnc-bench GRAPH [--data DIR] [--epochs N] [--seed S] [--limit N]\n"
        "                  [--infer-reps R] [--no-eval] [--save CKPT] [--dump-test FILE]\n",
        stderr);
  exit(2);
}

/* train.c's epoch seeds, so the runs match `rnnc train` name for name. */
static uint64_t epoch_seed(uint64_t seed, int epoch) {
  return seed * 0x9e3779b97f4a7c15ULL + (uint64_t)epoch * 0xbf58476d1ce4e5b9ULL + 1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static long peak_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss; /* KiB on Linux */
}

static int dump_test(const Dataset *ds, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  for (size_t i = 0; i < ds->ntest; i++) {
    const Name *nm = &ds->names[ds->test[i]];
    fprintf(f, "%d %d", nm->label, nm->len);
    for (int k = 0; k < nm->len; k++)
      fprintf(f, " %d", nm->chars[k]);
    fputc('\n', f);
  }
  return fclose(f);
}

int main(int argc, char **argv) {
  const char *dir = "data/names", *save = NULL, *dump = NULL;
  long epochs = -1, limit = 0, reps = 5;
  int eval = 1;
  unsigned long long seed = 42;
  static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                       {"epochs", required_argument, 0, 'n'},
                                       {"seed", required_argument, 0, 's'},
                                       {"limit", required_argument, 0, 'l'},
                                       {"infer-reps", required_argument, 0, 'r'},
                                       {"save", required_argument, 0, 'o'},
                                       {"dump-test", required_argument, 0, 't'},
                                       {"no-eval", no_argument, 0, 'E'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'd': dir = optarg; break;
    case 'n': epochs = strtol(optarg, NULL, 10); break;
    case 's': seed = strtoull(optarg, NULL, 10); break;
    case 'l': limit = strtol(optarg, NULL, 10); break;
    case 'r': reps = strtol(optarg, NULL, 10); break;
    case 'o': save = optarg; break;
    case 't': dump = optarg; break;
    case 'E': eval = 0; break;
    default: usage();
    }
  }
  if (optind + 1 != argc || reps < 0 || limit < 0)
    usage();
  const char *graph = argv[optind];
  Err e;
  Model m = {0};
  Dataset ds = {0};
  ModelOptions mo = {.no_cache = true}; /* time the whole compile, every run */

  double t0 = now_seconds(), c0 = cpu_seconds();
  if (model_compile(&m, graph, &mo, &e))
    goto fail;
  double compile_wall = now_seconds() - t0, compile_cpu = cpu_seconds() - c0;
  const CompileTimes *ct = &m.times;
  double compile = ct->total;
  printf("{\"event\":\"compile\",\"graph\":\"%s\",\"ms\":%.1f,\"wall_ms\":%.1f,\"cpu_ms\":%.1f,"
         "\"front_ms\":%.1f,\"passes_ms\":%.1f,\"codegen_ms\":%.1f,\"llvm_opt_ms\":%.1f,"
         "\"machine_code_ms\":%.1f,\"params\":%zu,\"pid\":%ld,\"train_fn\":\"%p\","
         "\"forward_fn\":\"%p\"}\n",
         graph, 1e3 * compile, 1e3 * compile_wall, 1e3 * compile_cpu, 1e3 * ct->front, 1e3 * ct->passes,
         1e3 * ct->codegen, 1e3 * ct->jit.optimize, 1e3 * ct->jit.machine_code, m.nfloats, (long)getpid(),
         (void *)(uintptr_t)m.train_fn, (void *)(uintptr_t)m.fwd_fn);
  fflush(stdout);
  if (epochs < 0)
    epochs = m.train->train.epochs;
  model_init_params(&m, seed);
  if (data_load(&ds, dir, NULL, 0, VOCAB_NAMES, NULL, &e) || data_split(&ds, 0.1, seed, &e))
    goto fail;
  if (m.fwd->classes != ds.nlabels) {
    errf(&e, "%s has %d classes, the data %d languages", graph, m.fwd->classes, ds.nlabels);
    goto fail;
  }
  int tmax = 1;
  for (size_t i = 0; i < ds.nnames; i++)
    tmax = ds.names[i].len > tmax ? ds.names[i].len : tmax;
  model_reserve(&m, tmax);
  if (dump && dump_test(&ds, dump)) {
    errf(&e, "cannot write %s", dump);
    goto fail;
  }

  size_t ntrain = limit && (size_t)limit < ds.ntrain ? (size_t)limit : ds.ntrain;
  uint32_t *order = xmalloc(ds.ntrain * sizeof *order);
  double train_s = 0, train_cpu = 0, acc = 0;
  size_t trained = 0, chars = 0;
  for (int ep = 0; ep < epochs; ep++) {
    Rng r;
    rng_seed(&r, epoch_seed(seed, ep));
    memcpy(order, ds.train, ds.ntrain * sizeof *order);
    rng_shuffle_u32(&r, order, ds.ntrain);
    model_seed_noise(&m, epoch_seed(seed, ep) ^ 0x5bd1e995);
    double sum = 0, ts = now_seconds(), cs = cpu_seconds();
    for (size_t i = 0; i < ntrain; i++) {
      const Name *nm = &ds.names[order[i]];
      float loss, gnorm;
      model_train_step(&m, nm->chars, nm->len, nm->label, &loss, &gnorm);
      sum += loss;
      chars += (size_t)nm->len;
    }
    double dt = now_seconds() - ts, dc = cpu_seconds() - cs;
    train_s += dt;
    train_cpu += dc;
    trained += ntrain;
    EvalResult res = {0};
    if (eval)
      evaluate(&m, &ds, ds.test, ds.ntest, seed, &res);
    acc = res.n ? (double)res.correct / res.n : 0;
    printf("{\"event\":\"epoch\",\"epoch\":%d,\"names\":%zu,\"seconds\":%.4f,"
           "\"cpu_seconds\":%.4f,\"names_per_s\":%.1f,\"mean_loss\":%.4f,\"test_accuracy\":%.4f,\"correct\":%zu,"
           "\"test_names\":%zu}\n",
           ep + 1, ntrain, dt, dc, ntrain / dt, sum / ntrain, acc, res.correct, res.n);
    fflush(stdout);
    eval_free(&res);
  }
  free(order);
  if (save && ckpt_save(&m, ds.labels, ds.nlabels, NULL, save, &e))
    goto fail;

  /* Inference: the median of reps passes over the test split. */
  double *pass = xmalloc((size_t)(reps ? reps : 1) * sizeof *pass);
  pass[0] = 0;
  float logits[256];
  size_t test_chars = 0;
  for (size_t i = 0; i < ds.ntest; i++)
    test_chars += (size_t)ds.names[ds.test[i]].len;
  double *cpass = xmalloc((size_t)(reps ? reps : 1) * sizeof *cpass);
  cpass[0] = 0;
  for (long k = 0; k < reps; k++) {
    model_seed_noise(&m, seed);
    double ts = now_seconds(), cs = cpu_seconds();
    for (size_t i = 0; i < ds.ntest; i++) {
      const Name *nm = &ds.names[ds.test[i]];
      model_forward(&m, nm->chars, nm->len, logits);
    }
    pass[k] = now_seconds() - ts;
    cpass[k] = cpu_seconds() - cs;
  }
  qsort(pass, (size_t)reps, sizeof *pass, cmp_double);
  qsort(cpass, (size_t)reps, sizeof *cpass, cmp_double);
  double infer_us = 1e6 * pass[reps / 2] / (double)ds.ntest;
  double infer_cpu_us = 1e6 * cpass[reps / 2] / (double)ds.ntest;

  printf("{\"event\":\"summary\",\"impl\":\"rnnc\",\"graph\":\"%s\",\"epochs\":%ld,"
         "\"train_names\":%zu,\"train_seconds\":%.3f,\"train_cpu_seconds\":%.3f,"
         "\"names_per_s\":%.1f,"
         "\"cpu_names_per_s\":%.1f,\"mean_train_len\":%.3f,\"test_accuracy\":%.4f,"
         "\"infer_us_per_name\":%.2f,\"infer_cpu_us_per_name\":%.2f,"
         "\"mean_test_len\":%.3f,\"compile_ms\":%.1f,\"compile_cpu_ms\":%.1f,"
         "\"peak_rss_kb\":%ld}\n",
         graph, epochs, trained, train_s, train_cpu, train_s > 0 ? trained / train_s : 0,
         train_cpu > 0 ? trained / train_cpu : 0, trained ? (double)chars / trained : 0, acc,
         infer_us, infer_cpu_us,
         ds.ntest ? (double)test_chars / ds.ntest : 0, 1e3 * compile, 1e3 * compile_cpu,
         peak_rss_kb());
  free(pass);
  free(cpass);
  model_free(&m);
  data_free(&ds);
  return 0;
fail:
  fprintf(stderr, "rnnc-bench: error: %s\n", e.msg);
  model_free(&m);
  data_free(&ds);
  return 1;
}

/* driver.c: rnnc-bench, the rnnc side of bench/run.
 *
 *   rnnc-bench GRAPH [--data DIR] [--epochs N] [--seed S] [--limit N]
 *                    [--infer-reps R] [--no-eval] [--save CKPT] [--dump-test FILE]
 *                    [--cache] [--batch B [--threads N] [--lr X] [--eval-every K]
 *                     [--target-accuracy A] [--whole-process RNNC]]
 *
 * Does what `rnnc train` does (compile, initialize, load and split the
 * data, train with the training set reshuffled every epoch, evaluate on
 * the test split after every epoch) through the runtime's API, and times
 * the parts apart: the compile, each epoch's training loop (the training
 * calls only: no evaluation, no checkpoint), and inference (R passes over
 * the test split, the median pass), each by the wall clock and by the
 * process's CPU time (which a busy machine inflates less; with threads, it
 * is the sum over the threads). Prints one JSON object a line on standard
 * output:
 *
 *   {"event":"compile", ...}   {"event":"epoch", ...}   {"event":"summary", ...}
 *
 * Without --batch: the batch-1 recipe, model_train_step name by name, and
 * inference by model_forward, one name a call.
 *
 * With --batch B: the minibatch recipe exactly as `rnnc train --batch B
 * --threads N [--lr X]` runs it (train.c's train_run: consecutive slices of
 * B names of each epoch's order, the last one partial, one
 * model_train_batch call each), so the checkpoint is the same bytes. Every
 * K batches (--eval-every, default 50) the test split is evaluated off the
 * training clock, with the noise generator's state put back afterwards so
 * that evaluating changes nothing in the training; the summary's
 * target_seconds is the training time until the accuracy first reached
 * --target-accuracy (default 0.8), as bench/reference.py measures it.
 * Inference: model_forward_batch over the test split in blocks of B names
 * (what PyTorch's batched no_grad in bench/reference.py does) and of 1024
 * (what `rnnc eval` does), N threads.
 *
 * --whole-process RNNC then runs that binary once as `RNNC train GRAPH
 * --batch B --threads N [--lr X] --epochs E --seed S --no-cache --out TMP`
 * and times the whole process (compile from cold, data, training,
 * evaluation, checkpoints) by the wall clock and by its CPU time; without
 * --limit its checkpoint is compared byte for byte with the one this
 * driver trained (summary: whole_same_checkpoint).
 *
 * --limit N trains on the first N names of each epoch's shuffled order
 * (bench/run --quick). --no-eval skips the evaluations and --infer-reps 0
 * the inference timing (bench/profile.py: a profile of training alone).
 * The compile line also has the pid and the kernels' addresses
 * (bench/profile.py names the samples with them); --cache compiles through
 * the kernel cache as rnnc does (bench/profile.py reads the objects there)
 * instead of compiling every kernel. --save writes the
 * trained checkpoint (for rnnc build); --dump-test writes the test split as
 * lines "label len i0 i1 ..." of vocabulary indices (for bench/aot.c). */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"
#include "train.h"

static void usage(void) {
  fputs("usage: rnnc-bench GRAPH [--data DIR] [--epochs N] [--seed S] [--limit N]\n"
        "                  [--infer-reps R] [--no-eval] [--save CKPT] [--dump-test FILE] [--cache]\n"
        "                  [--batch B [--threads N] [--lr X] [--eval-every K]\n"
        "                   [--target-accuracy A] [--whole-process RNNC]]\n",
        stderr);
  exit(2);
}

typedef struct Opts {
  const char *graph, *dir, *save, *dump, *whole;
  long epochs, limit, reps, batch, threads, eval_every;
  double lr, target;
  int eval, cache;
  unsigned long long seed;
} Opts;

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

/* Test accuracy (0 without --no-eval's evaluation), the model's noise
 * generator left as it was: evaluate() reseeds it, and a graph that draws
 * noise while training (rnn.nn's h0) would otherwise train differently. */
static double test_accuracy(Model *m, const Dataset *ds, const Opts *o, size_t *correct) {
  *correct = 0;
  if (!o->eval || !ds->ntest)
    return 0;
  Rng saved = m->rng;
  EvalResult r;
  evaluate(m, ds, ds->test, ds->ntest, o->seed, NULL, &r);
  m->rng = saved;
  *correct = r.correct;
  eval_free(&r);
  return (double)r.correct / (double)r.n;
}

/* The shapes of the products the batched kernels compute (compiler/
 * batch.c): a call on a chunk of names runs its scans over the chunk's
 * longest name, step t on the names longer than t (the GEMMs of one step
 * have that many rows), and its hoisted products and weight gradients over
 * all the chunk's characters (its packed rows). bench/report.py prices
 * them with bench/roofline.c's GEMMs. */
typedef struct Shapes {
  size_t *steps; /* steps[r]: scan steps with r rows */
  size_t cap, chunks, rows, names;
} Shapes;

/* A batch of n names cut into nchunks chunks: chunk k is names[start[k]
 * .. start[k + 1]) (training: model_chunk_names), or with names NULL the
 * names [n k / nchunks, n (k + 1) / nchunks) (inference: model.c's
 * chunk_range). */
static void add_shapes(Shapes *s, const int32_t *lens, int n, int nchunks, const int32_t *names,
                       const int32_t *start) {
  for (int k = 0; k < nchunks; k++) {
    int lo = names ? start[k] : (int)((int64_t)n * k / nchunks);
    int hi = names ? start[k + 1] : (int)((int64_t)n * (k + 1) / nchunks), T = 0;
    for (int i = lo; i < hi; i++) {
      int len = lens[names ? names[i] : i];
      T = len > T ? len : T;
      s->rows += (size_t)len;
    }
    if ((size_t)(hi - lo) >= s->cap) {
      size_t cap = (size_t)(hi - lo) + 1;
      s->steps = realloc(s->steps, cap * sizeof *s->steps);
      memset(s->steps + s->cap, 0, (cap - s->cap) * sizeof *s->steps);
      s->cap = cap;
    }
    for (int t = 0; t < T; t++) {
      int running = 0;
      for (int i = lo; i < hi; i++)
        running += lens[names ? names[i] : i] > t;
      s->steps[running]++;
    }
    s->chunks++;
  }
  s->names += (size_t)n;
}

static void print_shapes(const char *phase, size_t block, Shapes *s) {
  printf("{\"event\":\"shapes\",\"phase\":\"%s\",\"block\":%zu,\"names\":%zu,\"chunks\":%zu,"
         "\"rows\":%zu,\"steps\":[",
         phase, block, s->names, s->chunks, s->rows);
  for (size_t r = 1, first = 1; r < s->cap; r++)
    if (s->steps[r]) {
      printf("%s[%zu,%zu]", first ? "" : ",", r, s->steps[r]);
      first = 0;
    }
  printf("]}\n");
  free(s->steps);
  *s = (Shapes){0};
}

/* What a training run measured. */
typedef struct Trained {
  double wall, cpu, acc;
  size_t names, chars, batches;
  double target_wall, target_cpu; /* < 0: the target was not reached */
  size_t target_names;
  Shapes shapes; /* of the batched step kernel's calls */
} Trained;

static void print_epoch(const Opts *o, int ep, size_t names, double wall, double cpu, double loss_sum,
                        double acc, size_t correct, size_t ntest, const Trained *t) {
  printf("{\"event\":\"epoch\",\"epoch\":%d,\"names\":%zu,\"seconds\":%.4f,"
         "\"cpu_seconds\":%.4f,\"names_per_s\":%.1f,\"mean_loss\":%.4f,\"test_accuracy\":%.4f,"
         "\"correct\":%zu,\"test_names\":%zu",
         ep + 1, names, wall, cpu, names / wall, loss_sum / (double)names, acc, correct,
         o->eval ? ntest : 0);
  if (o->batch > 0) {
    printf(",\"batch\":%ld,\"threads\":%ld", o->batch, o->threads);
    if (t->target_wall >= 0)
      printf(",\"target_seconds\":%.3f", t->target_wall);
    else
      printf(",\"target_seconds\":null");
  }
  printf("}\n");
  fflush(stdout);
}

/* The batch-1 recipe: model_train_step name by name. */
static void train_batch1(Model *m, const Dataset *ds, const Opts *o, uint32_t *order,
                         size_t ntrain, Trained *t) {
  for (int ep = 0; ep < o->epochs; ep++) {
    train_epoch_begin(m, ds, o->seed, ep, order);
    double sum = 0, ts = now_seconds(), cs = cpu_seconds();
    for (size_t i = 0; i < ntrain; i++) {
      const Name *nm = &ds->names[order[i]];
      float loss, gnorm;
      model_train_step(m, nm->chars, nm->len, nm->label, &loss, &gnorm);
      sum += loss;
      t->chars += (size_t)nm->len;
    }
    double dt = now_seconds() - ts, dc = cpu_seconds() - cs;
    t->wall += dt;
    t->cpu += dc;
    t->names += ntrain;
    m->epoch = ep + 1;
    size_t correct;
    t->acc = test_accuracy(m, ds, o, &correct);
    print_epoch(o, ep, ntrain, dt, dc, sum, t->acc, correct, ds->ntest, t);
  }
}

/* The minibatch recipe, batch for batch as train.c's train_run: the
 * training clock stops for the evaluations every K batches. */
static void train_batched(Model *m, const Dataset *ds, const Opts *o, uint32_t *order,
                          size_t ntrain, Trained *t) {
  size_t B = (size_t)o->batch;
  if (B > ds->ntrain) /* train_run: a batch larger than the data set is one batch */
    B = ds->ntrain;
  const int32_t **chars = xmalloc(B * sizeof *chars);
  int32_t *lens = xmalloc(B * sizeof *lens), *targets = xmalloc(B * sizeof *targets);
  float *losses = xmalloc(B * sizeof *losses);
  for (int ep = 0; ep < o->epochs; ep++) {
    train_epoch_begin(m, ds, o->seed, ep, order);
    double sum = 0, ep_wall = 0, ep_cpu = 0, ts = now_seconds(), cs = cpu_seconds();
    for (size_t i = 0; i < ntrain; i += B) {
      size_t n = ntrain - i < B ? ntrain - i : B;
      for (size_t k = 0; k < n; k++) {
        const Name *nm = &ds->names[order[i + k]];
        chars[k] = nm->chars;
        lens[k] = nm->len;
        targets[k] = nm->label;
        t->chars += (size_t)nm->len;
      }
      float loss, gnorm;
      model_train_batch(m, chars, lens, targets, (int)n, losses, &loss, &gnorm);
      for (size_t k = 0; k < n; k++)
        sum += losses[k];
      int nchunks = model_chunks((int)n);
      int32_t *plan = xmalloc((n + (size_t)nchunks + 1) * sizeof *plan);
      model_chunk_names(lens, (int)n, plan, plan + n);
      add_shapes(&t->shapes, lens, (int)n, nchunks, plan, plan + n);
      free(plan);
      t->batches++;
      size_t done = i + n;
      if (o->eval && t->target_wall < 0 && t->batches % (size_t)o->eval_every == 0 && done < ntrain) {
        ep_wall += now_seconds() - ts;
        ep_cpu += cpu_seconds() - cs;
        size_t correct;
        if (test_accuracy(m, ds, o, &correct) >= o->target) {
          t->target_wall = t->wall + ep_wall;
          t->target_cpu = t->cpu + ep_cpu;
          t->target_names = t->names + done;
        }
        ts = now_seconds(), cs = cpu_seconds();
      }
    }
    ep_wall += now_seconds() - ts;
    ep_cpu += cpu_seconds() - cs;
    t->wall += ep_wall;
    t->cpu += ep_cpu;
    t->names += ntrain;
    m->epoch = ep + 1;
    size_t correct;
    t->acc = test_accuracy(m, ds, o, &correct);
    if (o->eval && t->target_wall < 0 && t->acc >= o->target) {
      t->target_wall = t->wall;
      t->target_cpu = t->cpu;
      t->target_names = t->names;
    }
    print_epoch(o, ep, ntrain, ep_wall, ep_cpu, sum, t->acc, correct, ds->ntest, t);
  }
  free(chars);
  free(lens);
  free(targets);
  free(losses);
}

/* Median wall and CPU seconds of a pass over the test split. */
typedef struct Pass {
  double wall, cpu;
} Pass;

/* model_forward name by name (block 0), or model_forward_batch in blocks
 * of `block` names. */
static Pass infer(Model *m, const Dataset *ds, const Opts *o, size_t block) {
  long reps = o->reps;
  double *wall = xmalloc((size_t)reps * sizeof *wall), *cpu = xmalloc((size_t)reps * sizeof *cpu);
  size_t cap = block ? block : 1;
  const int32_t **chars = xmalloc(cap * sizeof *chars);
  int32_t *lens = xmalloc(cap * sizeof *lens);
  float *logits = xmalloc(cap * (size_t)model_classes(m) * sizeof *logits);
  for (long k = 0; k < reps; k++) {
    model_seed_noise(m, o->seed);
    double ts = now_seconds(), cs = cpu_seconds();
    if (!block) {
      for (size_t i = 0; i < ds->ntest; i++) {
        const Name *nm = &ds->names[ds->test[i]];
        model_forward(m, nm->chars, nm->len, logits);
      }
    } else {
      for (size_t i0 = 0; i0 < ds->ntest; i0 += block) {
        size_t n = ds->ntest - i0 < block ? ds->ntest - i0 : block;
        for (size_t i = 0; i < n; i++) {
          const Name *nm = &ds->names[ds->test[i0 + i]];
          chars[i] = nm->chars;
          lens[i] = nm->len;
        }
        model_forward_batch(m, chars, lens, (int)n, logits);
      }
    }
    wall[k] = now_seconds() - ts;
    cpu[k] = cpu_seconds() - cs;
  }
  qsort(wall, (size_t)reps, sizeof *wall, cmp_double);
  qsort(cpu, (size_t)reps, sizeof *cpu, cmp_double);
  Pass p = {wall[reps / 2], cpu[reps / 2]};
  free(wall);
  free(cpu);
  free(chars);
  free(lens);
  free(logits);
  return p;
}

/* ------------------------------------------------------ the whole process */

typedef struct Whole {
  double wall, cpu, acc;
  long rss_kb;
  int same; /* the checkpoint equals the driver's: 1, 0, or -1 (not compared) */
} Whole;

static char *slurp(const char *path, size_t *len) {
  Err e;
  return read_file(path, len, &e);
}

static int same_file(const char *a, const char *b) {
  size_t la, lb;
  char *x = slurp(a, &la), *y = slurp(b, &lb);
  int same = x && y && la == lb && !memcmp(x, y, la);
  free(x);
  free(y);
  return same;
}

/* Runs `rnnc train` for the driver's recipe in dir (a fresh directory) and
 * times the process; ours is the driver's checkpoint, or NULL. */
static int whole_process(const Opts *o, const char *dir, const char *ours, Whole *w, Err *e) {
  char *out = xasprintf("%s/whole.safetensors", dir), *log = xasprintf("%s/whole.log", dir),
       *err = xasprintf("%s/whole.err", dir);
  char epochs[32], seed[32], batch[32], threads[32], lr[64];
  snprintf(epochs, sizeof epochs, "%ld", o->epochs);
  snprintf(seed, sizeof seed, "%llu", o->seed);
  snprintf(batch, sizeof batch, "%ld", o->batch);
  snprintf(threads, sizeof threads, "%ld", o->threads);
  snprintf(lr, sizeof lr, "%.17g", o->lr);
  char *argv[] = {(char *)o->whole, "train", (char *)o->graph, "--data", (char *)o->dir,
                  "--epochs", epochs, "--seed", seed, "--batch", batch, "--threads", threads,
                  "--no-cache", "--out", out, "--lr", lr, NULL};
  if (!(o->lr > 0)) /* the graph's learning rate: the arguments end before --lr */
    argv[ARRAY_LEN(argv) - 3] = NULL;
  fflush(stdout);
  double t0 = now_seconds();
  pid_t pid = fork();
  if (pid == 0) {
    int fo = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
      _exit(127);
    execv(argv[0], argv);
    _exit(127);
  }
  int status = 0, rc = 0;
  struct rusage ru;
  if (pid < 0 || wait4(pid, &status, 0, &ru) != pid) {
    rc = errf(e, "cannot run %s", o->whole);
    goto done;
  }
  w->wall = now_seconds() - t0;
  w->cpu = ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec + ru.ru_stime.tv_sec +
           1e-6 * ru.ru_stime.tv_usec;
  w->rss_kb = ru.ru_maxrss;
  size_t len;
  char *text = slurp(log, &len);
  const char *acc = text ? strstr(text, "test accuracy: ") : NULL;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !acc) {
    char *msg = slurp(err, &len);
    rc = errf(e, "%s train failed (status %d): %s", o->whole, status, msg ? msg : "no output");
    free(msg);
    free(text);
    goto done;
  }
  w->acc = strtod(acc + strlen("test accuracy: "), NULL) / 100;
  free(text);
  w->same = -1;
  if (ours) {
    char *a = ckpt_optim_path(out), *b = ckpt_optim_path(ours);
    w->same = same_file(out, ours) && same_file(a, b);
    free(a);
    free(b);
  }
done:;
  char *opt = ckpt_optim_path(out);
  const char *files[] = {out, opt, log, err};
  for (size_t i = 0; i < ARRAY_LEN(files); i++)
    unlink(files[i]);
  free(opt);
  free(out);
  free(log);
  free(err);
  return rc;
}

/* ------------------------------------------------------------------ main */

static long opt_long(const char *s, long lo) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo)
    usage();
  return v;
}

static double opt_double(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= 0))
    usage();
  return v;
}

static void parse_opts(Opts *o, int argc, char **argv) {
  *o = (Opts){.dir = "data/names", .epochs = -1, .reps = 5, .batch = 0, .threads = 1,
              .eval_every = 50, .target = 0.8, .eval = 1, .seed = 42};
  static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                       {"epochs", required_argument, 0, 'n'},
                                       {"seed", required_argument, 0, 's'},
                                       {"limit", required_argument, 0, 'l'},
                                       {"infer-reps", required_argument, 0, 'r'},
                                       {"save", required_argument, 0, 'o'},
                                       {"dump-test", required_argument, 0, 't'},
                                       {"no-eval", no_argument, 0, 'E'},
                                       {"batch", required_argument, 0, 'b'},
                                       {"threads", required_argument, 0, 'j'},
                                       {"lr", required_argument, 0, 'L'},
                                       {"eval-every", required_argument, 0, 'k'},
                                       {"target-accuracy", required_argument, 0, 'a'},
                                       {"whole-process", required_argument, 0, 'w'},
                                       {"cache", no_argument, 0, 'c'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'd': o->dir = optarg; break;
    case 'n': o->epochs = opt_long(optarg, 0); break;
    case 's': o->seed = strtoull(optarg, NULL, 10); break;
    case 'l': o->limit = opt_long(optarg, 0); break;
    case 'r': o->reps = opt_long(optarg, 0); break;
    case 'o': o->save = optarg; break;
    case 't': o->dump = optarg; break;
    case 'E': o->eval = 0; break;
    case 'b': o->batch = opt_long(optarg, 1); break;
    case 'j': o->threads = opt_long(optarg, 1); break;
    case 'L': o->lr = opt_double(optarg); break;
    case 'k': o->eval_every = opt_long(optarg, 1); break;
    case 'a': o->target = opt_double(optarg); break;
    case 'w': o->whole = optarg; break;
    case 'c': o->cache = 1; break;
    default: usage();
    }
  }
  if (optind + 1 != argc)
    usage();
  o->graph = argv[optind];
  /* the batched options belong to the minibatch recipe */
  if (!o->batch && (o->threads != 1 || o->lr > 0 || o->whole))
    usage();
}

/* The files of a run: the directory for the whole process, and the
 * driver's own checkpoint in it. */
typedef struct Files {
  char *tmp, *ours;
} Files;

/* The address of a kernel's function `name` in m's JIT, or NULL. */
static void *part_fn(Model *m, const char *name) {
  Err e;
  return jit_lookup(m->jit, name, &e);
}

static int run(const Opts *oi, Model *m, Dataset *ds, Files *f, Err *e) {
  Opts o = *oi;
  bool batched = o.batch > 0;
  ModelOptions mo = {.no_cache = !o.cache, /* time the whole compile, every run */
                     .batch = (int)o.batch, .threads = (int)o.threads, .lr = o.lr,
                     .batched_forward = batched};
  double t0 = now_seconds(), c0 = cpu_seconds();
  if (model_compile(m, o.graph, &mo, e))
    return -1;
  double compile_wall = now_seconds() - t0, compile_cpu = cpu_seconds() - c0;
  const CompileTimes *ct = &m->times;
  double compile = ct->total;
  /* the kernels codegen cut in two (llvm.c: NAME.part1), linked from
   * objects of their own */
  void *train_part = m->train_fn ? part_fn(m, "train.part1") : NULL;
  void *forward_part = m->fwd_fn ? part_fn(m, "forward.part1") : NULL;
  printf("{\"event\":\"compile\",\"graph\":\"%s\",\"ms\":%.1f,\"wall_ms\":%.1f,\"cpu_ms\":%.1f,"
         "\"front_ms\":%.1f,\"passes_ms\":%.1f,\"codegen_ms\":%.1f,\"llvm_opt_ms\":%.1f,"
         "\"machine_code_ms\":%.1f,\"params\":%zu,\"pid\":%ld,\"train_fn\":\"%p\","
         "\"forward_fn\":\"%p\",\"step_batch_fn\":\"%p\",\"update_fn\":\"%p\","
         "\"forward_batch_fn\":\"%p\",\"train_part1_fn\":\"%p\",\"forward_part1_fn\":\"%p\","
         "\"batch\":%d,\"threads\":%d,\"unbatched\":",
         o.graph, 1e3 * compile, 1e3 * compile_wall, 1e3 * compile_cpu, 1e3 * ct->front,
         1e3 * ct->passes, 1e3 * ct->codegen, 1e3 * ct->jit.optimize, 1e3 * ct->jit.machine_code,
         m->nfloats, (long)getpid(), (void *)(uintptr_t)m->train_fn, (void *)(uintptr_t)m->fwd_fn,
         (void *)(uintptr_t)m->bstep_fn, (void *)(uintptr_t)m->update_fn,
         (void *)(uintptr_t)m->bfwd_fn, train_part, forward_part, m->batch, m->threads);
  if (m->unbatched)
    printf("\"%s\"}\n", m->unbatched); /* codegen's messages have no quotes or backslashes */
  else
    printf("null}\n");
  fflush(stdout);
  if (o.epochs < 0)
    o.epochs = m->train->train.epochs;
  model_init_params(m, o.seed);
  if (data_load(ds, o.dir, NULL, 0, VOCAB_NAMES, NULL, e) || data_split(ds, 0.1, o.seed, e))
    return -1;
  if (m->fwd->classes != ds->nlabels)
    return errf(e, "%s has %d classes, the data %d languages", o.graph, m->fwd->classes,
                ds->nlabels);
  int tmax = 1;
  for (size_t i = 0; i < ds->nnames; i++)
    tmax = ds->names[i].len > tmax ? ds->names[i].len : tmax;
  model_reserve(m, tmax);
  if (o.dump && dump_test(ds, o.dump))
    return errf(e, "cannot write %s", o.dump);

  size_t ntrain = o.limit && (size_t)o.limit < ds->ntrain ? (size_t)o.limit : ds->ntrain;
  uint32_t *order = xmalloc((ds->ntrain ? ds->ntrain : 1) * sizeof *order);
  Trained t = {.target_wall = -1, .target_cpu = -1};
  if (batched)
    train_batched(m, ds, &o, order, ntrain, &t);
  else
    train_batch1(m, ds, &o, order, ntrain, &t);
  free(order);
  if (o.save && ckpt_save(m, ds->labels, ds->nlabels, NULL, o.save, e))
    return -1;
  if (o.whole) {
    const char *base = getenv("TMPDIR");
    f->tmp = xasprintf("%s/rnnc-bench-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(f->tmp)) {
      errf(e, "cannot make a directory %s", f->tmp);
      free(f->tmp);
      f->tmp = NULL;
      return -1;
    }
    if (!o.limit) { /* the whole process trains on every name: compare */
      f->ours = xasprintf("%s/driver.safetensors", f->tmp);
      if (ckpt_save(m, ds->labels, ds->nlabels, NULL, f->ours, e))
        return -1;
    }
  }

  /* Inference: one name a call (batch 1), or blocks of B and of 1024. */
  size_t blocks[2] = {0, 0};
  int nblocks = 1;
  if (batched) {
    blocks[0] = (size_t)o.batch;
    if (o.batch != 1024)
      blocks[nblocks++] = 1024;
  }
  Pass pass[2] = {{0, 0}, {0, 0}};
  for (int b = 0; b < nblocks && o.reps > 0; b++)
    pass[b] = infer(m, ds, &o, blocks[b]);
  if (m->bstep_fn)
    print_shapes("train", (size_t)o.batch, &t.shapes);
  for (int b = 0; b < nblocks && m->bfwd_fn; b++) {
    Shapes sh = {0};
    int32_t *lens = xmalloc(blocks[b] * sizeof *lens);
    for (size_t i0 = 0; i0 < ds->ntest; i0 += blocks[b]) {
      int n = (int)(ds->ntest - i0 < blocks[b] ? ds->ntest - i0 : blocks[b]);
      for (int i = 0; i < n; i++)
        lens[i] = ds->names[ds->test[i0 + (size_t)i]].len;
      /* model_forward_batch's chunks: one per name, at most 4 per thread */
      add_shapes(&sh, lens, n, n < 4 * m->threads ? n : 4 * m->threads, NULL, NULL);
    }
    free(lens);
    print_shapes("infer", blocks[b], &sh);
  }
  free(t.shapes.steps);
  size_t test_chars = 0;
  for (size_t i = 0; i < ds->ntest; i++)
    test_chars += (size_t)ds->names[ds->test[i]].len;

  Whole w = {0};
  if (o.whole && whole_process(&o, f->tmp, f->ours, &w, e))
    return -1;

  double nt = (double)ds->ntest;
  printf("{\"event\":\"summary\",\"impl\":\"rnnc\",\"graph\":\"%s\",\"epochs\":%ld,"
         "\"train_names\":%zu,\"train_seconds\":%.3f,\"train_cpu_seconds\":%.3f,"
         "\"names_per_s\":%.1f,"
         "\"cpu_names_per_s\":%.1f,\"mean_train_len\":%.3f,\"test_accuracy\":%.4f,"
         "\"infer_us_per_name\":%.2f,\"infer_cpu_us_per_name\":%.2f,"
         "\"mean_test_len\":%.3f,\"compile_ms\":%.1f,\"compile_cpu_ms\":%.1f,"
         "\"peak_rss_kb\":%ld",
         o.graph, o.epochs, t.names, t.wall, t.cpu, t.wall > 0 ? t.names / t.wall : 0,
         t.cpu > 0 ? t.names / t.cpu : 0, t.names ? (double)t.chars / t.names : 0, t.acc,
         1e6 * pass[0].wall / nt, 1e6 * pass[0].cpu / nt, ds->ntest ? (double)test_chars / nt : 0,
         1e3 * compile, 1e3 * compile_cpu, peak_rss_kb());
  if (batched) {
    printf(",\"batch\":%ld,\"threads\":%ld,\"lr\":%g,\"batches\":%zu,\"target_accuracy\":%g,"
           "\"eval_every\":%ld",
           o.batch, o.threads, m->train->train.lr, t.batches, o.target, o.eval_every);
    if (t.target_wall >= 0)
      printf(",\"target_seconds\":%.3f,\"target_cpu_seconds\":%.3f,\"target_names\":%zu",
             t.target_wall, t.target_cpu, t.target_names);
    else
      printf(",\"target_seconds\":null,\"target_cpu_seconds\":null,\"target_names\":null");
    printf(",\"infer\":[");
    for (int b = 0; b < nblocks && o.reps > 0; b++)
      printf("%s{\"block\":%zu,\"names_per_s\":%.1f,\"cpu_names_per_s\":%.1f}", b ? "," : "",
             blocks[b], nt / pass[b].wall, nt / pass[b].cpu);
    printf("]");
    if (o.reps > 0)
      printf(",\"infer_names_per_s\":%.1f,\"infer_cpu_names_per_s\":%.1f", nt / pass[0].wall,
             nt / pass[0].cpu);
    if (o.whole)
      printf(",\"whole_seconds\":%.3f,\"whole_cpu_seconds\":%.3f,\"whole_test_accuracy\":%.4f,"
             "\"whole_peak_rss_kb\":%ld,\"whole_same_checkpoint\":%s",
             w.wall, w.cpu, w.acc, w.rss_kb, w.same < 0 ? "null" : w.same ? "true" : "false");
  }
  printf("}\n");
  return 0;
}

int main(int argc, char **argv) {
  Opts o;
  parse_opts(&o, argc, argv);
  Err e;
  Model m = {0};
  Dataset ds = {0};
  Files f = {0};
  int rc = run(&o, &m, &ds, &f, &e);
  if (rc)
    fprintf(stderr, "rnnc-bench: error: %s\n", e.msg);
  if (f.ours) {
    char *opt = ckpt_optim_path(f.ours);
    unlink(f.ours);
    unlink(opt);
    free(opt);
    free(f.ours);
  }
  if (f.tmp) {
    rmdir(f.tmp);
    free(f.tmp);
  }
  model_free(&m);
  data_free(&ds);
  return rc ? 1 : 0;
}

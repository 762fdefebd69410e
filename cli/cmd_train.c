/* cmd_train.c: rnnc train, rnnc eval and rnnc predict. */
#include <assert.h>
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uniwidth.h>

#include "checkpoint.h"
#include "cli.h"
#include "train.h"

/* The end of train's and eval's help. */
#define CACHE_HELP                                                                             \
  "  --no-cache           compile the kernels, neither loading nor storing them in\n"          \
  "                       the kernel cache (see below)\n"                                     \
  "  -h, --help           this help\n"                                                        \
  "\n"                                                                                        \
  "Compiled kernels are cached in $RNNC_CACHE_DIR, else $XDG_CACHE_HOME/rnnc,\n"              \
  "else ~/.cache/rnnc (RNNC_NO_CACHE=1: off; rm -rf the directory to clear it).\n"

const char train_usage[] =
    "usage: rnnc train GRAPH [--data PATH] [--vocab KIND] [--epochs N] [--batch B]\n"
    "                  [--threads N] [--seed S] [--lr X] [--init CKPT]\n"
    "                  [--test-fraction F] [--out CKPT] [--metrics FILE]\n"
    "                  [--metrics-every N] [--eval-every N] [--keep-best] [--no-cache]\n"
    "\n"
    "Compiles GRAPH into training kernels and trains it on a data set,\n"
    "reshuffling the training set every epoch and cutting it into batches of\n"
    "B names: one optimizer step per batch, on the mean of the batch's losses\n"
    "(the last batch of an epoch may be smaller). After each epoch it prints\n"
    "the mean training loss and the test accuracy and writes the checkpoint; at\n"
    "the end, per-language accuracy and a confusion matrix.\n"
    "\n"
    "Under mpirun -np N (when rnnc was built with MPI), N processes train as\n"
    "one: each takes 1/N of every batch, the gradients are summed across them,\n"
    "and the first alone prints and writes the checkpoint (B >= N; see\n"
    "docs/distributed.md).\n"
    "\n"
    "  --data PATH          a directory of <Label>.txt files, one text a line, or a\n"
    "                       TSV (text<TAB>label) or CSV (text,label; RFC 4180\n"
    "                       quoting) file: CSV when PATH ends in .csv, TSV when\n"
    "                       in .tsv, else TSV when the first line has a tab\n"
    "                       (default: data/names)\n"
    "  --vocab KIND         names: the 59 ASCII characters of the names task, text\n"
    "                       transliterated to ASCII, a name with another\n"
    "                       character skipped (default for a directory);\n"
    "                       unicode: every character of the training texts after\n"
    "                       NFC normalization, and an unknown slot for the rest\n"
    "                       (default for a file); ascii: the same after\n"
    "                       transliteration to ASCII. With --init, the\n"
    "                       checkpoint's vocabulary. A graph takes the size as\n"
    "                       data.vocab, the number of labels as data.classes\n"
    "  --epochs N           epochs to train (default: the graph's train setting);\n"
    "                       0 writes the starting point (initialized, or --init's)\n"
    "  --batch B            names per optimizer step (default: the graph's train\n"
    "                       setting); results do not depend on --threads\n"
    "  --threads N          threads (default: every core it may run on, shared\n"
    "                       among a machine's ranks under mpirun; 1 starts none)\n"
    "  --seed S             split, initialization, shuffling (default: 42)\n"
    "  --lr X               learning rate (default: the graph's optimizer setting)\n"
    "  --init CKPT          start from a checkpoint (rnnc's or PyTorch's safetensors);\n"
    "                       its labels and vocabulary are used, and rnnc's\n"
    "                       optimizer state beside\n"
    "                       it (CKPT.optim.safetensors) resumes training\n"
    "  --test-fraction F    share of each language held out (default: 0.1; 0: none)\n"
    "  --out CKPT           checkpoint to write (default: GRAPH's name .safetensors)\n"
    "                       and CKPT.optim.safetensors; one training at a time\n"
    "  --metrics FILE       log the training to FILE, JSON Lines (rnnc plot draws\n"
    "                       it): a line every --metrics-every steps and one per\n"
    "                       evaluation; a resumed training continues the file\n"
    "                       (lines after the checkpoint's step are cut off)\n"
    "  --metrics-every N    steps between metrics lines (default: 1000 names' worth)\n"
    "  --eval-every N       also evaluate on the test split every N steps\n"
    "  --keep-best          keep the checkpoint of the best test accuracy too, as\n"
    "                       CKPT with .best before .safetensors (and its optimizer\n"
    "                       state); a resumed training keeps it unless it does better\n"
    CACHE_HELP
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM stops training after the current step: the\n"
    "checkpoint records where in the epoch it stopped, and rnnc prints the\n"
    "command that resumes there (exit status 130 or 143); the resumed training\n"
    "ends with the same checkpoint, byte for byte, as one never stopped. A\n"
    "second Ctrl-C stops at once, leaving the last complete checkpoint.\n";

const char eval_usage[] =
    "usage: rnnc eval GRAPH CKPT [--data PATH] [--seed S] [--test-fraction F]\n"
    "                 [--threads N] [--no-cache]\n"
    "\n"
    "Accuracy, per-language accuracy and the confusion matrix of a checkpoint\n"
    "on the test split (the split that train made with the same seed), its\n"
    "text encoded with the checkpoint's vocabulary.\n"
    "\n"
    "  --data PATH          data directory or TSV/CSV file, as for train\n"
    "                       (default: data/names)\n"
    "  --threads N          threads (default: every core it may run on)\n"
    "  --seed S             split seed (default: 42)\n"
    "  --test-fraction F    share of each language held out (default: 0.1)\n"
    CACHE_HELP;

const char predict_usage[] =
    "usage: rnnc predict GRAPH CKPT NAME... [--top K | --logits] [--seed S] [--data PATH]\n"
    "                    [--no-cache]\n"
    "       rnnc predict GRAPH CKPT --input FILE [--top K | --logits] [--threads N]\n"
    "\n"
    "Classifies each NAME (any UTF-8; normalized as in training: to ASCII, or\n"
    "NFC for a unicode vocabulary, whose unknown slot takes the characters it\n"
    "lacks) and prints the K most likely labels with their probabilities. The\n"
    "checkpoint's vocabulary must be the size of GRAPH's input.\n"
    "\n"
    "With --input, the names come from FILE (- for standard input), one per\n"
    "line, and the output is tab-separated: a header, then per name the name\n"
    "as given and K columns of language and probability (with --logits: every\n"
    "language's logit). Names stream through in blocks on every thread, in\n"
    "constant memory; empty lines (or white space only) give no row; a name\n"
    "that cannot be classified is reported on standard error with its line\n"
    "number and skipped (exit status 1 at the end).\n"
    "\n"
    "  --top K        languages to show per name (default: 3)\n"
    "  --logits       print every language's raw logit instead (9 digits: exact)\n"
    "  --input FILE   names to classify, one per line (- : standard input)\n"
    "  --threads N    threads for --input (default: every usable core)\n"
    "  --seed S       noise seed for graphs with a random initial state (default: 42)\n"
    "  --data PATH    the labels of a checkpoint that has no label list (one of\n"
    "                 PyTorch's): PATH's, as for train (default: data/names)\n"
    "  --no-cache     compile the kernels, neither loading nor storing them in the\n"
    "                 kernel cache (see below)\n"
    "  -h, --help     this help\n"
    "\n"
    "The compiled kernels are cached in $RNNC_CACHE_DIR, else $XDG_CACHE_HOME/rnnc,\n"
    "else ~/.cache/rnnc (RNNC_NO_CACHE=1: off; rm -rf the directory to clear it),\n"
    "so that the next predict of the same graph starts at once.\n";

enum { MAX_BATCH = 1 << 24 };

static void free_labels(char **labels, int n) {
  for (int i = 0; i < n; i++)
    free(labels[i]);
  free(labels);
}

static char *default_out(const char *graph) {
  const char *base = strrchr(graph, '/');
  base = base ? base + 1 : graph;
  const char *dot = strrchr(base, '.');
  return xasprintf("%.*s.safetensors", dot ? (int)(dot - base) : (int)strlen(base), base);
}

/* The whole compile's time, then its stages' (summed over the kernels,
 * which compile in parallel): until training can start, so without
 * LLVM's work on the inference kernels when that goes on in the
 * background (model_wait). */
static void print_compile(FILE *f, const Model *m) {
  const CompileTimes *t = &m->times;
  const JitTimes *j = &t->jit;
  fprintf(f, "compiled %s in %.0f ms (front end %.1f, passes %.1f, codegen %.1f, LLVM %.0f, machine "
             "code %.0f, cache %.1f, link %.1f); %d of %d kernels from the cache",
          m->path, 1e3 * t->total, 1e3 * t->front, 1e3 * t->passes, 1e3 * t->codegen,
          1e3 * j->optimize, 1e3 * j->machine_code, 1e3 * j->cache, 1e3 * t->link, j->cached,
          j->kernels);
  Buf names = {0};
  int n = model_background(m, &names);
  if (n)
    fprintf(f, "; %d compiling in the background (%.*s)", n, (int)names.len, names.data);
  fprintf(f, "\n");
  buf_free(&names);
}

/* The texts' characters index the graph's input: its size must be the
 * vocabulary's. */
static int check_vocab(const Model *m, const Vocab *v, const char *whose, Err *e) {
  if (m->fwd->vocab != v->n)
    return errf(e, "%s: the graph's input has %d characters, but %s vocabulary (%s) has %d",
                m->path, m->fwd->vocab, whose, vocab_kind_name(v->kind), v->n);
  return 0;
}

static int check_model_data(const Model *m, const Dataset *ds, const Vocab *v, Err *e) {
  if (check_vocab(m, v, "the data's", e))
    return -1;
  if (m->fwd->classes != ds->nlabels)
    return errf(e, "%s has %d classes, but the data has %d labels", m->path, m->fwd->classes,
                ds->nlabels);
  return 0;
}

/* path without ".safetensors", with ".best.safetensors" (malloc'd). */
static char *best_path(const char *path) {
  size_t n = strlen(path), k = strlen(".safetensors");
  if (n > k && !strcmp(path + n - k, ".safetensors"))
    n -= k;
  return xasprintf("%.*s.best.safetensors", (int)n, path);
}

/* s as one shell word. */
static void put_word(Buf *b, const char *s) {
  if (*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+./=:,@%") ==
                strlen(s)) {
    buf_printf(b, " %s", s);
    return;
  }
  buf_printf(b, " '");
  for (; *s; s++)
    buf_printf(b, *s == '\'' ? "'\\''" : "%c", *s);
  buf_printf(b, "'");
}

/* " name X" with x's shortest decimal form that reads back as x. */
static void put_number(Buf *b, const char *name, double x) {
  char s[32];
  for (int digits = 6; digits <= 17; digits++) {
    snprintf(s, sizeof s, "%.*g", digits, x);
    if (strtod(s, NULL) == x)
      break;
  }
  buf_printf(b, " %s %s", name, s);
}

static void put_option(Buf *b, const char *name, const char *value) {
  buf_printf(b, " %s", name);
  put_word(b, value);
}

/* The vocabulary of a checkpoint's metadata, or (none: one of PyTorch's)
 * the names vocabulary. Takes meta's. */
static void take_vocab(CkptMeta *meta, Vocab *v) {
  if (meta->vocab.n) {
    *v = meta->vocab;
    meta->vocab = (Vocab){0};
  } else {
    vocab_names(v);
  }
}

static int longest(const Dataset *ds) {
  int n = 1;
  for (size_t i = 0; i < ds->nnames; i++)
    n = ds->names[i].len > n ? ds->names[i].len : n;
  return n;
}

int cmd_train(int argc, char **argv) {
  const char *dir = "data/names", *init = NULL, *out = NULL;
  uint64_t seed = 42;
  double fraction = 0.1, lr = 0;
  int epochs = -1, batch = 0, threads = cli_default_threads(), eval_every = 0, metrics_every = 0;
  const char *metrics = NULL;
  bool no_cache = false, keep_best = false, kind_given = false, threads_given = false;
  VocabKind kind = VOCAB_NAMES;
  static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                       {"vocab", required_argument, 0, 'v'},
                                       {"epochs", required_argument, 0, 'n'},
                                       {"batch", required_argument, 0, 'b'},
                                       {"threads", required_argument, 0, 't'},
                                       {"seed", required_argument, 0, 's'},
                                       {"lr", required_argument, 0, 'l'},
                                       {"init", required_argument, 0, 'i'},
                                       {"test-fraction", required_argument, 0, 'f'},
                                       {"out", required_argument, 0, 'o'},
                                       {"metrics", required_argument, 0, 'M'},
                                       {"metrics-every", required_argument, 0, 'm'},
                                       {"eval-every", required_argument, 0, 'E'},
                                       {"keep-best", no_argument, 0, 'K'},
                                       {"no-cache", no_argument, 0, 'C'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (c) {
    case 'd':
      dir = optarg;
      break;
    case 'v':
      if (vocab_kind_parse(optarg, &kind))
        return cli_usage_error("train", "--vocab wants names, unicode or ascii, not '%s'", optarg);
      kind_given = true;
      break;
    case 'n':
      if (cli_parse_int(optarg, 0, 100000, &epochs))
        return cli_usage_error("train", "--epochs wants an integer in [0, 100000], not '%s'", optarg);
      break;
    case 'b':
      if (cli_parse_int(optarg, 1, MAX_BATCH, &batch))
        return cli_usage_error("train", "--batch wants an integer in [1, %d], not '%s'", MAX_BATCH,
                               optarg);
      break;
    case 't':
      if (cli_parse_int(optarg, 1, CLI_MAX_THREADS, &threads))
        return cli_usage_error("train", "--threads wants an integer in [1, %d], not '%s'",
                               CLI_MAX_THREADS, optarg);
      threads_given = true;
      break;
    case 's':
      if (cli_parse_u64(optarg, &seed))
        return cli_usage_error("train", "--seed wants a non-negative integer, not '%s'", optarg);
      break;
    case 'l':
      if (parse_double(optarg, &lr) || !(lr > 0))
        return cli_usage_error("train", "--lr wants a positive number, not '%s'", optarg);
      if (!((float)lr > 0) || isinf((float)lr)) /* the kernels compute in float32 */
        return cli_usage_error("train",
                               "--lr %s is %s in float32, the precision training computes in "
                               "(positive floats go from %g to %g)",
                               optarg, (float)lr > 0 ? "infinite" : "0", FLT_TRUE_MIN, FLT_MAX);
      break;
    case 'i':
      init = optarg;
      break;
    case 'f':
      if (parse_double(optarg, &fraction) || !(fraction >= 0 && fraction < 1))
        return cli_usage_error("train", "--test-fraction wants a number in [0, 1), not '%s'", optarg);
      break;
    case 'o':
      out = optarg;
      break;
    case 'M':
      metrics = optarg;
      break;
    case 'm':
      if (cli_parse_int(optarg, 1, INT32_MAX, &metrics_every))
        return cli_usage_error("train", "--metrics-every wants a positive integer, not '%s'",
                               optarg);
      break;
    case 'E':
      if (cli_parse_int(optarg, 1, INT32_MAX, &eval_every))
        return cli_usage_error("train", "--eval-every wants a positive integer, not '%s'", optarg);
      break;
    case 'K':
      keep_best = true;
      break;
    case 'C':
      no_cache = true;
      break;
    case 'h':
      out_write(train_usage, strlen(train_usage)); /* over stdio's buffer: keeps the errno */
      return EXIT_OK;
    default:
      return cli_usage_error("train", "bad option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage_error("train", optind >= argc ? "missing GRAPH" : "more than one GRAPH");
  if (metrics_every && !metrics)
    return cli_usage_error("train", "--metrics-every without --metrics FILE");
  const char *graph = argv[optind];
  char *out_owned = out ? NULL : default_out(graph);
  if (!out)
    out = out_owned;
  char *best = keep_best ? best_path(out) : NULL;
  { /* no output over an input or another output */
    char *optim = ckpt_optim_path(out), *best_optim = best ? ckpt_optim_path(best) : NULL;
    const char *ins[] = {graph, dir, init, out, optim, best, best_optim};
    const char *names[] = {"the graph", "the data", "the --init checkpoint", "the --out checkpoint",
                           "the --out checkpoint's optimizer state", "the --keep-best checkpoint",
                           "its optimizer state"};
    int rc = cli_refuse_overwrite("train", "--out", out, ins, names, 2);
    if (!rc)
      rc = cli_refuse_overwrite("train", "--out's optimizer state", optim, ins, names, 3);
    if (!rc)
      rc = cli_refuse_overwrite("train", "--keep-best's checkpoint", best, ins, names, 5);
    if (!rc)
      rc = cli_refuse_overwrite("train", "--keep-best's optimizer state", best_optim, ins, names, 5);
    if (!rc)
      rc = cli_refuse_overwrite("train", "--metrics", metrics, ins, names, 7);
    free(optim);
    free(best_optim);
    if (rc) {
      free(out_owned);
      free(best);
      return rc;
    }
  }
  if (!kind_given)
    kind = data_default_kind(dir);
  Err e;
  Model m = {0};
  Dataset ds = {0};
  CkptMeta meta = {0};
  Vocab vocab = {0};
  char **labels = NULL;
  int nlabels = 0, rc = EXIT_BAD_INPUT;
  /* Under mpirun: one rank of several. Rank 0 alone prints and writes;
   * the others print only their own errors. */
  Dist dist;
  if (dist_init(&dist, &e)) {
    cli_error("train", &e);
    free(out_owned);
    free(best);
    return EXIT_BAD_INPUT;
  }
  if (!threads_given && dist.local > 1) { /* the machine's cores shared by its ranks */
    long share = sysconf(_SC_NPROCESSORS_ONLN) / dist.local;
    threads = share < 1 ? 1 : share < threads ? (int)share : threads;
  }
  FILE *log = stderr;
  if (dist.rank > 0) {
    log = fopen("/dev/null", "w");
    if (!log || !freopen("/dev/null", "w", stdout))
      dist_abort(&dist, EXIT_BAD_INPUT);
  }
  /* Setting up can fail on some ranks only (a file one machine lacks):
   * the ranks agree before training, and the first that failed reports. */
  bool ready = false;
  int reporter = 0; /* the rank that reports an error (the others exit 1 quietly) */
  CkptLock lock = {0}, best_lock = {0};
  Metrics mt = {.fd = -1};
  TrainReport report = {0};
  bool stopped = false;
  if ((dist.rank == 0 &&
       (ckpt_check_writable(out, &e) || ckpt_lock(&lock, out, &e) ||
        (best && (ckpt_check_writable(best, &e) || ckpt_lock(&best_lock, best, &e))))) ||
      (init && ckpt_read_info(init, &meta, &e)))
    goto agree;
  /* The vocabulary: --init's, the names', or the training split's (after
   * the split, below); the graph's sizes come from it and the data. */
  if (init && meta.vocab.n) {
    if (kind_given && kind != meta.vocab.kind) {
      errf(&e, "--vocab %s, but %s has a vocabulary of kind %s", vocab_kind_name(kind), init,
           vocab_kind_name(meta.vocab.kind));
      goto agree;
    }
    take_vocab(&meta, &vocab);
  } else if (kind == VOCAB_NAMES) {
    vocab_names(&vocab);
  }
  if (data_load(&ds, dir, meta.labels, meta.nlabels, kind, vocab.n ? &vocab : NULL, &e) ||
      data_split(&ds, fraction, seed, &e))
    goto agree;
  if (!vocab.n) {
    data_build_vocab(&ds, kind, &vocab);
    data_encode(&ds, &vocab);
    if (vocab.n > VOCAB_MAX) {
      errf(&e, "%s: %d characters in the training texts (at most %d)", dir, vocab.n - 1,
           VOCAB_MAX - 1);
      goto agree;
    }
  }
  ModelOptions mo = {.lr = lr, .batch = batch, .threads = threads, .batched_forward = true,
                     .background = true, .no_cache = no_cache, .sizes = {vocab.n, ds.nlabels}};
  if (model_compile(&m, graph, &mo, &e))
    goto agree;
  if (m.batch < dist.size) {
    errf(&e, "a batch of %d name%s cannot be split over %d ranks: give every rank a name at least "
             "(--batch %d or more)",
         m.batch, m.batch == 1 ? "" : "s", dist.size, dist.size);
    goto agree;
  }
  print_compile(log, &m);
  if (m.unbatched && m.batch > 1)
    fprintf(log, "note: %s; batches run one name per kernel call (slower, same results)\n",
            m.unbatched);
  if (epochs < 0)
    epochs = m.train->train.epochs;
  if (check_model_data(&m, &ds, &vocab, &e))
    goto agree;
  if (init) {
    if (ckpt_load(&m, init, true, &labels, &nlabels, &e))
      goto agree;
    fprintf(log, "initialized from %s%s", init, m.step ? " (with its optimizer state)" : "");
    if (m.pos.names)
      fprintf(log, ", stopped in epoch %d after %" PRId64 " names: resuming there", m.epoch + 1,
              m.pos.names);
    fprintf(log, "\n");
    if (m.pos.names && m.pos.seed != seed) {
      errf(&e, "%s stopped in epoch %d, whose order --seed %" PRIu64 " made: resume it with "
               "--seed %" PRIu64 " (and the same data, --test-fraction and --batch)",
           init, m.epoch + 1, m.pos.seed, m.pos.seed);
      goto agree;
    }
  } else {
    model_init_params(&m, seed);
  }
  if (!ds.ntrain) {
    errf(&e, "%s: no names to train on", dir);
    goto agree;
  }
  if (m.pos.names >= (int64_t)ds.ntrain) {
    errf(&e, "%s stopped after %" PRId64 " names of epoch %d, but %s has %zu names to train on: "
             "resume with the data (and --test-fraction) it was trained on",
         init, m.pos.names, m.epoch + 1, dir, ds.ntrain);
    goto agree;
  }
  if (dist.rank == 0 && metrics && metrics_open(&mt, metrics, m.step, &e))
    goto agree;
  ready = true;
agree:
  reporter = dist_first_failed(&dist, !ready);
  if (reporter >= 0)
    goto fail;
  reporter = 0;
  model_reserve(&m, longest(&ds));
  fprintf(log, "data %s: %zu names, %d languages, %zu train / %zu test; %d epoch%s from epoch %d, "
          "batch %d, %d thread%s\n",
          dir, ds.nnames, ds.nlabels, ds.ntrain, ds.ntest, epochs, epochs == 1 ? "" : "s",
          m.epoch + 1, m.batch, m.threads, m.threads == 1 ? "" : "s");
  if (vocab.kind != VOCAB_NAMES)
    fprintf(log, "vocabulary (%s): %d characters and the unknown slot\n",
            vocab_kind_name(vocab.kind), vocab.n - 1);
  if (ds.nskipped) { /* texts the vocabulary cannot hold: said, and where to see them */
    Buf none = {0};
    for (int l = 0; l < ds.nlabels; l++)
      if (!ds.per_label[l])
        buf_printf(&none, "%s%s", none.len ? ", " : "", ds.labels[l]);
    fprintf(log, "%s%zu text%s skipped (rnnc data --data %s --vocab %s lists them)%s%s\n",
            none.len ? "warning: " : "", ds.nskipped, ds.nskipped == 1 ? "" : "s", dir,
            vocab_kind_name(vocab.kind), none.len ? "; no text left of " : "",
            none.len ? none.data : "");
    buf_free(&none);
  }
  int start_epoch = m.epoch;
  TrainOptions to = {.epochs = epochs, .seed = seed, .out = out, .init = init, .vocab = &vocab, .best = best,
                     .eval_every = eval_every, .metrics = dist.rank == 0 && metrics ? &mt : NULL,
                     .metrics_every = !metrics       ? 0
                                      : metrics_every ? metrics_every
                                                      : (1000 + m.batch - 1) / m.batch,
                     .progress = dist.rank == 0 && isatty(fileno(stderr)), .log = log,
                     .report = &report, .dist = &dist};
  int trained = train_run(&m, &ds, &to, &e);
  if (trained == TRAIN_STOPPED) {
    int sig = report.stop_signal;
    Buf cmd = {0};
    if (dist.size > 1)
      buf_printf(&cmd, "mpirun -np %d ", dist.size);
    buf_printf(&cmd, "rnnc train");
    put_word(&cmd, graph);
    put_option(&cmd, "--init", out);
    put_option(&cmd, "--out", out);
    buf_printf(&cmd, " --epochs %d --seed %" PRIu64 " --batch %d", start_epoch + epochs - m.epoch,
               seed, m.batch);
    put_option(&cmd, "--data", dir);
    put_number(&cmd, "--test-fraction", fraction);
    if (lr > 0)
      put_number(&cmd, "--lr", lr);
    if (metrics)
      put_option(&cmd, "--metrics", metrics);
    if (metrics_every)
      buf_printf(&cmd, " --metrics-every %d", metrics_every);
    if (eval_every)
      buf_printf(&cmd, " --eval-every %d", eval_every);
    if (keep_best)
      buf_printf(&cmd, " --keep-best");
    buf_put(&cmd, "", 1);
    char where[96];
    if (m.pos.names)
      snprintf(where, sizeof where, "epoch %d, %" PRId64 " of %zu names", m.epoch + 1, m.pos.names,
               ds.ntrain);
    else
      snprintf(where, sizeof where, "the end of epoch %d", m.epoch);
    fprintf(log, "\nstopped by %s at step %" PRId64 " (%s): %s holds where. To resume:\n  %s\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", m.step, where, out, cmd.data);
    buf_free(&cmd);
    rc = 128 + sig;
    stopped = true;
    goto fail;
  }
  if (trained) /* every rank stops here at once; rank 0 reports */
    goto fail;
  /* No epoch: the checkpoint is the starting point (initialized, or
   * --init's, with the data's labels). */
  if (epochs == 0) {
    bool failed = dist.rank == 0 && ckpt_save(&m, ds.labels, ds.nlabels, &vocab, out, &e);
    if (dist_first_failed(&dist, failed) >= 0)
      goto fail;
  }
  if (ds.ntest) {
    /* the evaluation that ended training, or (no epoch run) one now */
    EvalResult r = report.final;
    report.final = (EvalResult){0};
    if (!r.confusion) {
      reporter = dist_first_failed(&dist, model_wait(&m, &e) != 0); /* if still compiling */
      if (reporter >= 0)
        goto fail;
      reporter = 0;
      evaluate(&m, &ds, ds.test, ds.ntest, seed, &dist, &r);
    }
    printf("\n");
    eval_print(stdout, &ds, &r);
    eval_free(&r);
  }
  char *opath = ckpt_optim_path(out);
  printf("\ncheckpoint: %s (optimizer state: %s)\n", out, opath);
  free(opath);
  if (best && report.best_n)
    printf("best checkpoint: %s, test accuracy %.2f%% (%zu/%zu) at epoch %d, step %" PRId64 "\n",
           best, 100.0 * report.best_correct / report.best_n, report.best_correct,
           report.best_n, report.best_epoch, report.best_step);
  else if (best)
    printf("best checkpoint: none (no evaluation: no test split)\n");
  if (metrics)
    printf("metrics: %s (rnnc plot %s -o report.svg)\n", metrics, metrics);
  rc = EXIT_OK;
fail:
  if (rc && !stopped && dist.rank == reporter) {
    if (dist.size > 1) {
      Err r = e;
      errf(&e, "rank %d of %d: %s", dist.rank, dist.size, r.msg);
    }
    cli_error("train", &e);
  }
  eval_free(&report.final);
  metrics_close(&mt);
  ckpt_unlock(&best_lock);
  ckpt_unlock(&lock);
  if (log != stderr)
    fclose(log);
  model_free(&m);
  data_free(&ds);
  ckpt_meta_free(&meta);
  vocab_free(&vocab);
  free_labels(labels, nlabels);
  free(out_owned);
  free(best);
  dist_finalize(&dist);
  return rc;
}

/* CKPT opened (ckpt_open: its header read once, for the metadata and
 * then the tensors) for GRAPH, which is checked first: a checkpoint given
 * as GRAPH is named as such. *v: its vocabulary (take_vocab). */
static int open_ckpt(const char *graph, const char *ckpt, CkptFile *c, Vocab *v, Err *e) {
  *c = (CkptFile){0};
  if (graph_file_check(graph, e) || ckpt_open(c, ckpt, e))
    return -1;
  take_vocab(&c->meta, v);
  return 0;
}

/* cli_load_model from c, CKPT opened, whose vocabulary v is (take_vocab). */
static int load_opened(Model *m, const char *graph, CkptFile *c, const char *ckpt,
                       ModelOptions *mo, int classes, const Vocab *v, char ***labels,
                       int *nlabels, Err *e) {
  mo->sizes = (DataSizes){v->n, c->meta.nlabels ? c->meta.nlabels : classes};
  if (model_compile(m, graph, mo, e) || ckpt_read_params(m, c, ckpt, labels, nlabels, e) ||
      check_vocab(m, v, "the checkpoint's", e))
    return -1;
  return 0;
}

int cli_load_model(Model *m, const char *graph, const char *ckpt, ModelOptions *mo, int classes,
                   char ***labels, int *nlabels, Vocab *v, Err *e) {
  CkptFile c;
  if (open_ckpt(graph, ckpt, &c, v, e))
    return -1;
  int rc = load_opened(m, graph, &c, ckpt, mo, classes, v, labels, nlabels, e);
  ckpt_close(&c);
  return rc;
}

/* The model and labels of GRAPH and c (CKPT opened, its vocabulary v), for
 * eval and predict. */
static int load_for_inference(Model *m, const char *graph, CkptFile *c, const char *ckpt,
                              int threads, bool batched, bool no_cache, int classes,
                              const Vocab *v, char ***labels, int *nlabels, Err *e) {
  ModelOptions mo = {.no_train = true, .threads = threads, .batched_forward = threads > 1 || batched,
                     .no_cache = no_cache};
  return load_opened(m, graph, c, ckpt, &mo, classes, v, labels, nlabels, e);
}

int cmd_eval(int argc, char **argv) {
  const char *dir = "data/names";
  uint64_t seed = 42;
  double fraction = 0.1;
  int threads = cli_default_threads();
  bool no_cache = false;
  static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                       {"seed", required_argument, 0, 's'},
                                       {"test-fraction", required_argument, 0, 'f'},
                                       {"threads", required_argument, 0, 't'},
                                       {"no-cache", no_argument, 0, 'C'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'd':
      dir = optarg;
      break;
    case 's':
      if (cli_parse_u64(optarg, &seed))
        return cli_usage_error("eval", "--seed wants a non-negative integer, not '%s'", optarg);
      break;
    case 'f':
      if (parse_double(optarg, &fraction) || !(fraction > 0 && fraction < 1))
        return cli_usage_error("eval", "--test-fraction wants a number in (0, 1), not '%s'", optarg);
      break;
    case 't':
      if (cli_parse_int(optarg, 1, CLI_MAX_THREADS, &threads))
        return cli_usage_error("eval", "--threads wants an integer in [1, %d], not '%s'",
                               CLI_MAX_THREADS, optarg);
      break;
    case 'C':
      no_cache = true;
      break;
    case 'h':
      fputs(eval_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("eval", "bad option");
    }
  }
  if (argc - optind != 2)
    return cli_usage_error("eval", "wants GRAPH and CKPT");
  Err e;
  Model m = {0};
  Dataset ds = {0};
  Vocab vocab = {0};
  CkptFile ck = {0};
  char **labels = NULL;
  int nlabels = 0, rc = EXIT_BAD_INPUT;
  /* The checkpoint's vocabulary and labels read the data, whose labels
   * size a graph that takes them from the data when the checkpoint has
   * none. */
  const char *ckpt = argv[optind + 1];
  if (open_ckpt(argv[optind], ckpt, &ck, &vocab, &e))
    goto fail;
  if (data_load(&ds, dir, ck.meta.labels, ck.meta.nlabels, vocab.kind, &vocab, &e) ||
      data_split(&ds, fraction, seed, &e) ||
      load_for_inference(&m, argv[optind], &ck, ckpt, threads, true, no_cache, ds.nlabels, &vocab,
                         &labels, &nlabels, &e) ||
      check_model_data(&m, &ds, &vocab, &e))
    goto fail;
  model_reserve(&m, longest(&ds));
  EvalResult r;
  evaluate(&m, &ds, ds.test, ds.ntest, seed, NULL, &r);
  eval_print(stdout, &ds, &r);
  eval_free(&r);
  rc = EXIT_OK;
fail:
  if (rc)
    cli_error("eval", &e);
  ckpt_close(&ck);
  model_free(&m);
  data_free(&ds);
  vocab_free(&vocab);
  free_labels(labels, nlabels);
  return rc;
}

/* Labels for checkpoint ckpt, which has no label list: those of the data
 * set in dir. */
static int fallback_labels(const char *ckpt, const char *dir, char ***labels, int *nlabels,
                           Err *e) {
  Dataset ds = {0};
  if (data_load(&ds, dir, NULL, 0, data_default_kind(dir), NULL, e)) {
    data_free(&ds);
    return errf(e, "%s: the checkpoint has no label list, and %s is not a data set to take one "
                   "from (--data PATH)",
                ckpt, dir);
  }
  *nlabels = ds.nlabels;
  *labels = xcalloc((size_t)ds.nlabels, sizeof **labels);
  for (int i = 0; i < ds.nlabels; i++)
    (*labels)[i] = xstrdup(ds.labels[i]);
  data_free(&ds);
  return 0;
}

/* The spaces that pad label s to 12 columns, as %-12s pads ASCII (a CJK
 * character takes two columns). */
static int pad12(const char *s) {
  int w = u8_strwidth((const uint8_t *)s, "UTF-8");
  return w < 12 ? 12 - w : 0;
}

typedef struct Ranked {
  int label;
  float p;
} Ranked;

static int by_prob(const void *a, const void *b) {
  const Ranked *x = a, *y = b;
  return (x->p < y->p) - (x->p > y->p);
}

/* The C classes' probabilities (a stable softmax of the logits lg), most
 * probable first. */
static void rank_classes(const float *lg, int C, Ranked *rank) {
  float mx = lg[0];
  for (int k = 1; k < C; k++)
    mx = lg[k] > mx ? lg[k] : mx;
  double sum = 0;
  for (int k = 0; k < C; k++)
    sum += exp((double)lg[k] - mx);
  for (int k = 0; k < C; k++)
    rank[k] = (Ranked){k, (float)(exp((double)lg[k] - mx) / sum)};
  qsort(rank, (size_t)C, sizeof *rank, by_prob);
}

enum { STREAM_BLOCK = 4096, MAX_LINE = 64 * 1024 };

/* One line of f into buf (at most MAX_LINE bytes; a longer line is read to
 * its end and reported by *too_long). Returns its length without the line
 * end, or -1 at the end of the file. */
static long read_line(FILE *f, char *buf, bool *too_long) {
  long n = 0;
  int ch;
  *too_long = false;
  while ((ch = getc(f)) != EOF && ch != '\n') {
    if (n < MAX_LINE)
      buf[n++] = (char)ch;
    else
      *too_long = true;
  }
  if (ch == EOF && n == 0 && !*too_long)
    return -1;
  if (n > 0 && buf[n - 1] == '\r')
    n--;
  buf[n] = '\0';
  return n;
}

/* Prints one TSV row: the name, then the top K languages and their
 * probabilities (or every logit). */
static void print_row(const char *name, const float *lg, int C, char **labels, int top,
                      bool logits_only, Ranked *rank) {
  char *shown = shown_text(name, strlen(name), SIZE_MAX); /* a tab would add a column */
  printf("%s", shown);
  free(shown);
  if (logits_only) {
    for (int k = 0; k < C; k++)
      printf("\t%.9g", lg[k]); /* 9 digits: the float itself, as NAME... --logits */
  } else {
    rank_classes(lg, C, rank);
    for (int k = 0; k < top && k < C; k++)
      printf("\t%s\t%.6f", labels[rank[k].label], rank[k].p);
  }
  printf("\n");
}

/* predict --input: names from f in blocks of STREAM_BLOCK, each block one
 * model_forward_batch. Memory: one block of names and logits. */
static int predict_stream(Model *m, const Vocab *v, char **labels, FILE *f, const char *fname,
                          int top, bool logits_only) {
  int C = model_classes(m);
  char *line = xmalloc(MAX_LINE + 1);
  char **text = xcalloc(STREAM_BLOCK, sizeof *text);
  int32_t **chars = xcalloc(STREAM_BLOCK, sizeof *chars);
  int32_t *lens = xmalloc(STREAM_BLOCK * sizeof *lens);
  float *lg = xmalloc((size_t)STREAM_BLOCK * (size_t)C * sizeof *lg);
  Ranked *rank = xmalloc((size_t)C * sizeof *rank);
  printf("name");
  if (logits_only)
    for (int k = 0; k < C; k++)
      printf("\t%s", labels[k]);
  else
    for (int k = 0; k < top && k < C; k++)
      printf("\tlanguage%d\tprobability%d", k + 1, k + 1);
  printf("\n");
  long lineno = 0, skipped = 0, done = 0;
  int read_errno = 0;
  bool eof = false;
  while (!eof) {
    int n = 0;
    while (n < STREAM_BLOCK) {
      bool too_long;
      long len = read_line(f, line, &too_long);
      if (len < 0) {
        read_errno = ferror(f) ? errno : 0;
        eof = true;
        break;
      }
      lineno++;
      if (too_long) {
        fprintf(stderr, "rnnc predict: %s:%ld: a line longer than %d bytes: skipped\n", fname,
                lineno, MAX_LINE);
        skipped++;
        continue;
      }
      if (strspn(line, " \t\r\f\v") == (size_t)len)
        continue; /* empty, or nothing but white space: the data loader's empty lines */
      Err e;
      int32_t *cs = NULL;
      int k = name_encode(line, (size_t)len, v, &cs, NULL, &e);
      if (k < 0) {
        char *shown = shown_text(line, (size_t)len, 80);
        fprintf(stderr, "rnnc predict: %s:%ld: '%s': %s\n", fname, lineno, shown, e.msg);
        free(shown);
        skipped++;
        continue;
      }
      text[n] = xstrdup(line);
      chars[n] = cs;
      lens[n] = k;
      n++;
    }
    if (n > 0 && model_forward_batch(m, (const int32_t *const *)chars, lens, n, lg))
      assert(!"load_for_inference checked the graph's vocabulary");
    for (int i = 0; i < n; i++) {
      print_row(text[i], lg + (size_t)i * (size_t)C, C, labels, top, logits_only, rank);
      free(text[i]);
      free(chars[i]);
    }
    done += n;
  }
  int rc = EXIT_OK;
  if (ferror(f)) {
    fprintf(stderr, "rnnc predict: error: reading %s failed: %s\n", fname, strerror(read_errno));
    rc = EXIT_BAD_INPUT;
  }
  if (skipped) {
    fprintf(stderr, "rnnc predict: %ld name%s classified, %ld skipped\n", done, done == 1 ? "" : "s",
            skipped);
    rc = EXIT_BAD_INPUT;
  }
  free(line);
  free(text);
  free(chars);
  free(lens);
  free(lg);
  free(rank);
  return rc;
}

int cmd_predict(int argc, char **argv) {
  int top = 3, threads = cli_default_threads();
  bool logits_only = false, top_given = false;
  uint64_t seed = 42;
  const char *input = NULL, *dir = "data/names";
  bool no_cache = false;
  static const struct option opts[] = {{"top", required_argument, 0, 'k'},
                                       {"logits", no_argument, 0, 'l'},
                                       {"seed", required_argument, 0, 's'},
                                       {"input", required_argument, 0, 'i'},
                                       {"threads", required_argument, 0, 't'},
                                       {"data", required_argument, 0, 'd'},
                                       {"no-cache", no_argument, 0, 'C'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "hk:", opts, NULL)) != -1) {
    switch (c) {
    case 'k':
      if (cli_parse_int(optarg, 1, 1000, &top))
        return cli_usage_error("predict", "--top wants a positive integer, not '%s'", optarg);
      top_given = true;
      break;
    case 'l':
      logits_only = true;
      break;
    case 'd':
      dir = optarg;
      break;
    case 'i':
      input = optarg;
      break;
    case 't':
      if (cli_parse_int(optarg, 1, CLI_MAX_THREADS, &threads))
        return cli_usage_error("predict", "--threads wants an integer in [1, %d], not '%s'",
                               CLI_MAX_THREADS, optarg);
      break;
    case 's':
      if (cli_parse_u64(optarg, &seed))
        return cli_usage_error("predict", "--seed wants a non-negative integer, not '%s'", optarg);
      break;
    case 'C':
      no_cache = true;
      break;
    case 'h':
      fputs(predict_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("predict", "bad option");
    }
  }
  if (input && argc - optind != 2)
    return cli_usage_error("predict", "wants GRAPH and CKPT, and names either as arguments or "
                                      "from --input, not both");
  if (!input && argc - optind < 3)
    return cli_usage_error("predict", "wants GRAPH, CKPT and at least one NAME (or --input FILE)");
  if (logits_only && top_given)
    return cli_usage_error("predict", "--top and --logits do not go together: --logits prints "
                                      "every language's logit");
  FILE *in = NULL;
  if (input) {
    in = strcmp(input, "-") ? fopen(input, "r") : stdin;
    struct stat st;
    if (in && fstat(fileno(in), &st) == 0 && S_ISDIR(st.st_mode)) {
      fclose(in);
      in = NULL;
      errno = EISDIR;
    }
    if (!in) {
      fprintf(stderr, "rnnc predict: error: cannot read %s: %s\n", input, strerror(errno));
      return EXIT_BAD_INPUT;
    }
  }
  Err e;
  Model m = {0};
  Vocab vocab = {0};
  CkptFile ck = {0};
  char **labels = NULL, **shown = NULL, **data_labels = NULL;
  int nlabels = 0, ndata_labels = 0, rc = EXIT_BAD_INPUT;
  /* A checkpoint without labels takes --data's (before the graph, which
   * may take its class count from them). */
  const char *ckpt = argv[optind + 1];
  if (open_ckpt(argv[optind], ckpt, &ck, &vocab, &e) ||
      (!ck.meta.labels && fallback_labels(ckpt, dir, &data_labels, &ndata_labels, &e)) ||
      load_for_inference(&m, argv[optind], &ck, ckpt, input ? threads : 1, input != NULL, no_cache,
                         ndata_labels, &vocab, &labels, &nlabels, &e)) {
    cli_error("predict", &e);
    goto done;
  }
  if (!labels) {
    labels = data_labels;
    nlabels = ndata_labels;
    data_labels = NULL;
    ndata_labels = 0;
  }
  if (nlabels != model_classes(&m)) {
    fprintf(stderr, "rnnc predict: error: %d labels for a graph of %d classes\n", nlabels,
            model_classes(&m));
    goto done;
  }
  model_seed_noise(&m, seed);
  shown = xcalloc((size_t)nlabels, sizeof *shown); /* one label, one line (or TSV cell) */
  for (int k = 0; k < nlabels; k++)
    shown[k] = shown_text(labels[k], strlen(labels[k]), 64);
  if (in) {
    rc = predict_stream(&m, &vocab, shown, in, strcmp(input, "-") ? input : "standard input", top,
                        logits_only);
    goto done;
  }
  int C = model_classes(&m);
  float *lg = xmalloc((size_t)C * sizeof *lg);
  Ranked *rank = xmalloc((size_t)C * sizeof *rank);
  rc = EXIT_OK;
  for (int i = optind + 2; i < argc; i++) {
    int32_t *chars = NULL;
    char *text = NULL; /* normalized */
    int len = name_encode(argv[i], strlen(argv[i]), &vocab, &chars, &text, &e);
    if (len < 0) {
      char *name = shown_text(argv[i], strlen(argv[i]), 80);
      fprintf(stderr, "rnnc predict: '%s': %s\n", name, e.msg);
      free(name);
      rc = EXIT_BAD_INPUT;
      continue;
    }
    if (model_forward(&m, chars, len, lg))
      assert(!"load_for_inference checked the graph's vocabulary");
    char *name = shown_text(argv[i], strlen(argv[i]), SIZE_MAX);
    printf("%s", name);
    if (strcmp(text, argv[i])) {
      char *t = shown_text(text, strlen(text), SIZE_MAX);
      printf(" (%s)", t);
      free(t);
    }
    int unknown = 0;
    for (int k = 0; k < len; k++)
      unknown += chars[k] == vocab.unknown;
    if (unknown)
      printf(" [%d character%s not in the vocabulary]", unknown, unknown == 1 ? "" : "s");
    printf("\n");
    free(name);
    if (logits_only) {
      for (int k = 0; k < C; k++)
        printf("  %s%*s %.9g\n", shown[k], pad12(shown[k]), "", lg[k]);
    } else {
      rank_classes(lg, C, rank);
      for (int k = 0; k < top && k < C; k++)
        printf("  %s%*s %5.1f%%\n", shown[rank[k].label], pad12(shown[rank[k].label]), "",
               100 * rank[k].p);
    }
    free(chars);
    free(text);
  }
  free(lg);
  free(rank);
done:
  if (in && in != stdin)
    fclose(in);
  model_free(&m);
  vocab_free(&vocab);
  ckpt_close(&ck);
  free_labels(shown, shown ? nlabels : 0);
  free_labels(labels, nlabels);
  free_labels(data_labels, ndata_labels);
  return rc;
}

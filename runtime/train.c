/* train.c: the training driver: the training set reshuffled every epoch and
 * cut into consecutive batches (the last one may be smaller), one optimizer
 * step per batch; evaluation and its report. */
#include "train.h"

#include <assert.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uniwidth.h>

#include <jansson.h>

#include "checkpoint.h"
#include "files.h"

/* Epoch k's generator: the same for a run that resumes at epoch k. */
static uint64_t epoch_seed(uint64_t seed, int epoch) {
  return seed * 0x9e3779b97f4a7c15ULL + (uint64_t)epoch * 0xbf58476d1ce4e5b9ULL + 1;
}

static int argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best])
      best = i;
  return best;
}

/* Names idx[0..n) of ds as the arrays the model's batch calls take. */
typedef struct NameBatch {
  const int32_t **chars;
  int32_t *lens, *targets;
} NameBatch;

static NameBatch batch_new(size_t cap) {
  cap = cap ? cap : 1;
  return (NameBatch){xmalloc(cap * sizeof(int32_t *)), xmalloc(cap * sizeof(int32_t)),
                     xmalloc(cap * sizeof(int32_t))};
}

static void batch_fill(NameBatch *b, const Dataset *ds, const uint32_t *idx, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const Name *nm = &ds->names[idx[i]];
    b->chars[i] = nm->chars;
    b->lens[i] = nm->len;
    b->targets[i] = nm->label;
  }
}

static void batch_free(NameBatch *b) {
  free(b->chars);
  free(b->lens);
  free(b->targets);
}

enum { EVAL_BLOCK = 1024 }; /* names per model_forward_batch call */

void evaluate(Model *m, const Dataset *ds, const uint32_t *idx, size_t n, uint64_t seed,
              const Dist *d, EvalResult *r) {
  int c = model_classes(m);
  r->nlabels = ds->nlabels;
  r->n = n;
  r->correct = 0;
  r->loss_sum = 0;
  size_t L = (size_t)ds->nlabels;
  r->confusion = xcalloc(L * L, sizeof *r->confusion);
  float *logits = xmalloc((size_t)c * EVAL_BLOCK * sizeof *logits);
  NameBatch b = batch_new(EVAL_BLOCK);
  model_seed_noise(m, seed); /* a graph with a random initial state: the same draws each time */
  /* with several ranks, each takes a slice, with the noise one process
   * would give its names */
  size_t lo = d ? n * (size_t)d->rank / (size_t)d->size : 0;
  size_t hi = d ? n * (size_t)(d->rank + 1) / (size_t)d->size : n;
  model_skip_noise(m, lo);
  for (size_t i0 = lo; i0 < hi; i0 += EVAL_BLOCK) {
    size_t k = hi - i0 < EVAL_BLOCK ? hi - i0 : EVAL_BLOCK;
    batch_fill(&b, ds, idx + i0, k);
    if (model_forward_batch(m, b.chars, b.lens, (int)k, logits))
      assert(!"data_load keeps names the model takes");
    for (size_t i = 0; i < k; i++) {
      const float *lg = logits + i * (size_t)c;
      int p = argmax(lg, c);
      int truth = b.targets[i];
      double z = 0; /* cross entropy: log-sum-exp minus the truth's logit */
      for (int j = 0; j < c; j++)
        z += exp((double)lg[j] - lg[p]);
      r->loss_sum += log(z) + lg[p] - lg[truth];
      r->correct += p == truth;
      if (p < ds->nlabels)
        r->confusion[(size_t)truth * (size_t)ds->nlabels + (size_t)p]++;
    }
  }
  batch_free(&b);
  free(logits);
  if (d && d->size > 1) {
    _Static_assert(sizeof(size_t) == sizeof(uint64_t), "confusion counts are u64");
    dist_sum_u64(d, (uint64_t *)r->confusion, L * L);
    uint64_t correct = r->correct;
    dist_sum_u64(d, &correct, 1);
    r->correct = correct;
    dist_sum_f64(d, &r->loss_sum, 1);
  }
}

void eval_free(EvalResult *r) {
  free(r->confusion);
  r->confusion = NULL;
}

/* The first k characters of UTF-8 s (bytes up to there). */
static size_t prefix_bytes(const char *s, int k) {
  size_t i = 0;
  for (int n = 0; s[i]; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80 && n++ == k) /* the (k+1)-th starts */
      break;
  return i;
}

/* s, at most k characters of it, padded with spaces to width columns
 * (printf pads bytes, which misaligns UTF-8; a CJK character takes two
 * columns). */
static void put_cell(FILE *f, const char *s, int k, int width, bool right) {
  size_t n = prefix_bytes(s, k);
  int chars = u8_width((const uint8_t *)s, n, "UTF-8");
  if (right)
    fprintf(f, "%*s", width > chars ? width - chars : 0, "");
  fprintf(f, "%.*s", (int)n, s);
  if (!right)
    fprintf(f, "%*s", width > chars ? width - chars : 0, "");
}

/* The shortest abbreviation, from 3 to 12 characters, that tells every
 * label apart (3 for data/names), or 0 when labels share 12. */
static int abbreviation(char *const *labels, int L) {
  for (int k = 3; k <= 12; k++) {
    bool unique = true;
    for (int a = 0; a < L && unique; a++)
      for (int b = a + 1; b < L && unique; b++) {
        size_t na = prefix_bytes(labels[a], k), nb = prefix_bytes(labels[b], k);
        unique = na != nb || memcmp(labels[a], labels[b], na);
      }
    if (unique)
      return k;
  }
  return 0;
}

void eval_print(FILE *f, const Dataset *ds, const EvalResult *r) {
  int L = ds->nlabels;
  char **name = xcalloc((size_t)L, sizeof *name); /* escaped: one line each */
  for (int l = 0; l < L; l++)
    name[l] = shown_text(ds->labels[l], strlen(ds->labels[l]), 64);
  fprintf(f, "test accuracy: %.2f%% (%zu of %zu)\n\n", r->n ? 100.0 * r->correct / r->n : 0,
          r->correct, r->n);
  fprintf(f, "%-12s %8s %6s\n", "language", "accuracy", "names");
  for (int l = 0; l < L; l++) {
    size_t tot = 0;
    for (int p = 0; p < L; p++)
      tot += r->confusion[(size_t)l * L + p];
    put_cell(f, name[l], 64, 12, false);
    if (tot)
      fprintf(f, " %7.1f%% %6zu\n", 100.0 * r->confusion[(size_t)l * L + l] / tot, tot);
    else
      fprintf(f, " %8s %6zu\n", "-", tot);
  }
  /* Columns headed by the labels' shortest distinct abbreviation, or, when
   * labels share 12 characters, by their numbers. */
  int k = abbreviation(name, L), w = k > 3 ? k : 4;
  char **head = xcalloc((size_t)L, sizeof *head);
  for (int l = 0; l < L; l++)
    head[l] = k ? xstrdup(name[l]) : xasprintf("%d", l);
  fprintf(f, "\nconfusion matrix (rows: true language, columns: predicted%s)\n%*s",
          k ? "" : "; by number", w, "");
  for (int p = 0; p < L; p++) {
    fputc(' ', f);
    put_cell(f, head[p], k ? k : 12, w, true);
  }
  fprintf(f, "\n");
  for (int l = 0; l < L; l++) {
    put_cell(f, head[l], k ? k : 12, w, false);
    for (int p = 0; p < L; p++)
      fprintf(f, " %*zu", w, r->confusion[(size_t)l * L + p]);
    fprintf(f, "\n");
  }
  if (!k)
    for (int l = 0; l < L; l++)
      fprintf(f, "%s%d %s", l ? ", " : "  ", l, name[l]);
  fprintf(f, "%s", k ? "" : "\n");
  for (int l = 0; l < L; l++) {
    free(name[l]);
    free(head[l]);
  }
  free(name);
  free(head);
}

static void fmt_time(char *buf, size_t n, double s) {
  if (!(s >= 0) || s > 359999)
    snprintf(buf, n, "--:--");
  else if (s >= 3600)
    snprintf(buf, n, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
  else
    snprintf(buf, n, "%d:%02d", (int)s / 60, (int)s % 60);
}

/* What the progress line shows. */
typedef struct Progress {
  int epoch, epochs;         /* from 1 */
  size_t done, total;        /* names of this epoch */
  double rate;               /* names/s */
  double loss;               /* running */
  double eta;                /* seconds to the end of the run, or -1 */
  double elapsed;            /* of this epoch in this run */
  double accuracy;           /* of the last evaluation, or -1 */
} Progress;

static void progress(const TrainOptions *o, const Progress *p, bool final) {
  char eta[32], el[32], acc[48] = "";
  fmt_time(eta, sizeof eta, p->eta);
  fmt_time(el, sizeof el, p->elapsed);
  if (p->accuracy >= 0)
    snprintf(acc, sizeof acc, "%stest %.1f%%", o->progress ? "  " : ", ", 100 * p->accuracy);
  if (o->progress) {
    int width = 24, fill = p->total ? (int)(width * p->done / p->total) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
      bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(o->log, "\r\033[Kepoch %d/%d [%s] %5.1f%% %zu/%zu  %.0f names/s  loss %.4f%s  %s %s",
            p->epoch, p->epochs, bar, p->total ? 100.0 * p->done / p->total : 100.0, p->done,
            p->total, p->rate, p->loss, acc, final ? "took" : "ETA", final ? el : eta);
    if (final)
      fprintf(o->log, "\n");
  } else {
    fprintf(o->log, "epoch %d/%d: %zu/%zu names, %.0f names/s, running loss %.4f%s, %s %s\n",
            p->epoch, p->epochs, p->done, p->total, p->rate, p->loss, acc,
            final ? "took" : "ETA", final ? el : eta);
  }
  fflush(o->log);
}

void train_epoch_begin(Model *m, const Dataset *ds, uint64_t seed, int epoch, uint32_t *order) {
  Rng r;
  rng_seed(&r, epoch_seed(seed, epoch));
  memcpy(order, ds->train, ds->ntrain * sizeof *order);
  rng_shuffle_u32(&r, order, ds->ntrain);
  model_seed_noise(m, epoch_seed(seed, epoch) ^ 0x5bd1e995);
}

/* Which name of a batch to blame for a non-finite loss or norm: the first
 * whose own loss is not finite, else (a norm) the first name. */
static size_t culprit(const float *losses, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(losses[i]))
      return i;
  return 0;
}

int train_should_stop(const Dist *d) {
  int sig = cleanup_stop_signal();
  if (!d || d->size == 1)
    return sig;
  uint64_t got[2] = {sig == SIGINT, sig == SIGTERM};
  dist_sum_u64(d, got, 2);
  return got[0] ? SIGINT : got[1] ? SIGTERM : 0;
}

/* rc of a write that rank 0 alone made (-1, e set there, when it failed):
 * agreed, so that every rank stops when it failed (rank 0 reports). */
static int rank0_wrote(const Dist *d, int rc, const char *what, Err *e) {
  if (d->size > 1 && dist_first_failed(d, rc != 0) >= 0 && rc == 0)
    rc = errf(e, "rank 0 could not write %s", what);
  return rc;
}

/* The gradients' norm for the metrics: the kernels' when the graph clips
 * (before clipping), else that of the gradient the last step applied. */
static double grad_norm(const Model *m, float kernel_norm) {
  if (m->train->train.clip_norm > 0)
    return kernel_norm;
  const float *g = m->state + SLOT_GRAD * m->nfloats;
  double sum = 0;
  for (int p = 0; p < m->fwd->nparams; p++) {
    const Param *pa = &m->fwd->params[p];
    if (pa->trainable)
      for (size_t i = 0; i < type_numel(pa->type); i++)
        sum += (double)g[pa->offset + i] * g[pa->offset + i];
  }
  return sqrt(sum);
}

/* Where a run is, for evaluations and the best checkpoint. */
typedef struct Run {
  Model *m;
  const Dataset *ds;
  const TrainOptions *o;
  const Dist *d;
  TrainReport rep;
  int epoch;          /* from 1 */
  int64_t seen;       /* names trained on since the first epoch */
} Run;

static json_t *json_counts(const size_t *x, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(a, json_integer((json_int_t)x[i]));
  return a;
}

/* An evaluation on the test split, between steps, by every rank (each
 * takes a slice): its metrics line, and with o->best the best checkpoint
 * (which records m->pos: it resumes where it was made), which rank 0
 * alone writes (other ranks have no o->metrics). The noise generator is
 * left as training had it. */
static int eval_point(Run *r, EvalResult *res, Err *e) {
  Model *m = r->m;
  const Dataset *ds = r->ds;
  const TrainOptions *o = r->o;
  Rng keep = m->rng;
  *res = (EvalResult){0};
  int waited = model_wait(m, e); /* the inference kernels, if still compiling */
  if (r->d->size > 1 && dist_first_failed(r->d, waited != 0) >= 0 && waited == 0)
    waited = errf(e, "another rank's kernels failed to compile");
  if (waited)
    return -1;
  evaluate(m, ds, ds->test, ds->ntest, o->seed, r->d, res);
  m->rng = keep;
  double acc = res->n ? (double)res->correct / res->n : 0;
  r->rep.last_accuracy = acc;
  /* Strictly better than the best so far (the same test set: compare the
   * counts). */
  bool best = o->best && (r->rep.best_n == 0 || res->correct * r->rep.best_n >
                                                    r->rep.best_correct * res->n);
  if (best) {
    char count[64], at[64];
    snprintf(count, sizeof count, "%zu/%zu", res->correct, res->n);
    snprintf(at, sizeof at, "%d", r->epoch);
    char *keys[] = {"test_correct", "test_epoch"}, *vals[] = {count, at};
    int rc = r->d->rank == 0 && ckpt_save_meta(m, ds->labels, ds->nlabels, o->vocab, o->best,
                                               keys, vals, 2, e)
                 ? -1
                 : 0;
    if (rank0_wrote(r->d, rc, o->best, e))
      return -1;
    r->rep.best_correct = res->correct;
    r->rep.best_n = res->n;
    r->rep.best_epoch = r->epoch;
    r->rep.best_step = m->step;
  }
  if (!o->metrics)
    return rank0_wrote(r->d, 0, "the metrics", e);
  int L = ds->nlabels;
  json_t *labels = json_array(), *per = json_array(), *conf = json_array();
  for (int l = 0; l < L; l++) {
    size_t tot = 0;
    for (int p = 0; p < L; p++)
      tot += res->confusion[(size_t)l * L + p];
    json_array_append_new(labels, json_string(ds->labels[l]));
    json_array_append_new(per, tot ? json_real((double)res->confusion[(size_t)l * L + l] / tot)
                                   : json_null());
    json_array_append_new(conf, json_counts(res->confusion + (size_t)l * L, L));
  }
  json_t *line = json_pack("{sssisIsIsfsfsfsIsIsosososb}", "type", "eval", "epoch", r->epoch,
                           "step", (json_int_t)m->step, "names_seen", (json_int_t)r->seen,
                           "time", metrics_time(o->metrics), "test_loss",
                           res->n ? res->loss_sum / res->n : 0.0, "accuracy", acc, "correct",
                           (json_int_t)res->correct, "n", (json_int_t)res->n, "labels", labels,
                           "per_language", per, "confusion", conf, "best", best);
  return rank0_wrote(r->d, metrics_write(o->metrics, line, e), "the metrics", e);
}

/* The learning rate of step `step` (1-based), for the metrics: grad.c's
 * scheduled_lr, which the update kernel computes, here in double. */
static double step_lr(const TrainConfig *t, int64_t step) {
  double lr = t->lr;
  if (t->sched != SCHED_CONSTANT) {
    double d = (double)step - 1 - t->warmup;
    if (t->warmup && d < 0)
      d = 0;
    double frac = d / t->decay;
    if (t->sched == SCHED_STEP)
      lr *= pow(t->gamma, floor(frac));
    else
      lr = t->min_lr + (t->lr - t->min_lr) * (1 + cos(3.14159265358979323846 * fmin(frac, 1))) / 2;
  }
  if (t->warmup)
    lr *= fmin((double)step / t->warmup, 1);
  return lr;
}

static int train_line(Run *r, double loss, double gnorm, double rate, Err *e) {
  const TrainOptions *o = r->o;
  json_t *line = json_pack("{sssisIsIsfsfsfsfsf}", "type", "train", "epoch", r->epoch, "step",
                           (json_int_t)r->m->step, "names_seen", (json_int_t)r->seen, "loss", loss,
                           "lr", step_lr(&r->m->train->train, r->m->step), "grad_norm", gnorm,
                           "names_per_s", rate, "time", metrics_time(o->metrics));
  return metrics_write(o->metrics, line, e);
}

/* The best checkpoint of an earlier run of this training (resumed): its
 * evaluation, so that only a better one replaces it. */
static void read_best(const char *path, TrainReport *rep) {
  StFile f;
  Err ignored;
  if (st_load_header(&f, path, &ignored))
    return;
  const char *count = st_meta(&f, "test_correct"), *ep = st_meta(&f, "test_epoch");
  const char *step = st_meta(&f, "step");
  size_t c, n;
  int epoch;
  long long s;
  if (count && ep && step && sscanf(count, "%zu/%zu", &c, &n) == 2 && c <= n && n > 0 &&
      sscanf(ep, "%d", &epoch) == 1 && sscanf(step, "%lld", &s) == 1) {
    rep->best_correct = c;
    rep->best_n = n;
    rep->best_epoch = epoch;
    rep->best_step = s;
  }
  st_free(&f);
}

/* A checksum of the parameters and the optimizer's state. */
static uint64_t state_hash(const Model *m) {
  return fnv1a(FNV1A_INIT, m->state, m->nslots * m->nfloats * sizeof(float));
}

/* One optimizer step on a batch of n names spread over the ranks: this
 * rank's slice of the batch, the ranks' gradient sums and every name's
 * loss added by allreduces (timed into *t_reduce), the update. */
static void dist_step(Model *m, const Dist *d, const NameBatch *b, size_t n, float *losses,
                      float *mean_loss, float *grad_norm, double *t_reduce) {
  size_t lo = n * (size_t)d->rank / (size_t)d->size;
  size_t hi = n * (size_t)(d->rank + 1) / (size_t)d->size;
  memset(losses, 0, n * sizeof *losses);
  if (model_batch_gradient(m, b->chars + lo, b->lens + lo, b->targets + lo, (int)(hi - lo),
                           (int)lo, (int)n, losses + lo))
    assert(!"data_load keeps names the model takes");
  double t0 = now_seconds();
  dist_sum_f32(d, m->state + SLOT_GRAD * m->nfloats, m->nfloats);
  dist_sum_f32(d, losses, n);
  *t_reduce += now_seconds() - t0;
  *grad_norm = model_batch_update(m, (long)n);
  double s = 0;
  for (size_t k = 0; k < n; k++)
    s += losses[k];
  *mean_loss = (float)(s / (double)n);
}

int train_run(Model *m, const Dataset *ds, const TrainOptions *o, Err *e) {
  static const Dist alone = {.rank = 0, .size = 1, .local = 1};
  const Dist *d = o->dist ? o->dist : &alone;
  uint32_t *order = xmalloc((ds->ntrain ? ds->ntrain : 1) * sizeof *order);
  int first = m->epoch, last = m->epoch + o->epochs;
  size_t B = (size_t)m->batch;
  if (B > ds->ntrain && ds->ntrain) /* a batch larger than the data set is one batch */
    B = ds->ntrain;
  NameBatch b = batch_new(B);
  float *losses = xmalloc(B * sizeof *losses);
  int rc = 0;
  char *saved = NULL; /* the last checkpoint written, for the NaN message */
  Run run = {.m = m, .ds = ds, .o = o, .d = d, .rep = {.last_accuracy = -1}};
  int stop_sig = 0;
  if (o->best && m->step > 0 && d->rank == 0)
    read_best(o->best, &run.rep);
  /* A checkpoint of a run stopped mid-epoch resumes there. */
  TrainPosition resume = m->pos;
  size_t run_names = (size_t)o->epochs * ds->ntrain, run_done = 0;
  run_names -= o->epochs ? (size_t)resume.names : 0;
  double t_run = now_seconds();
  /* Under mpirun SIGTERM is not deferred: mpirun sends it to every rank
   * when one dies (whose allreduces would never return) or when mpirun is
   * interrupted, then SIGKILL seconds later; rank 0 ends with
   * dist_term_message's message. SIGINT sent to the ranks stops them all
   * at one step (train_should_stop agrees on it). */
  cleanup_defer_stop(true, d->size == 1);
  for (int ep = first; ep < last && rc == 0; ep++) {
    if (d->size > 1 && d->rank == 0) {
      /* where to resume: the last checkpoint written, or --init's */
      const char *from = saved ? saved : o->init;
      dist_term_message("\nrnnc train: error: rank 0 of %d was ended by SIGTERM in epoch %d: "
                        "mpirun ends every rank when one fails (see its message) or when it "
                        "is interrupted. %s%s%s%s\n",
                        d->size, ep + 1,
                        saved  ? "The last checkpoint is "
                        : from ? "This run wrote no checkpoint; it started from "
                               : "This run wrote no checkpoint.",
                        from ? from : "", from ? ": resume with --init " : "", from ? from : "");
    }
    if (d->size > 1 && ep == first) /* after the message: mpirun may end this rank from now on */
      fprintf(o->log, "%d ranks: each takes 1/%d of every batch (%zu or %zu names) and splits it "
                      "over its threads\n",
              d->size, d->size, B / (size_t)d->size, (B + (size_t)d->size - 1) / (size_t)d->size);
    train_epoch_begin(m, ds, o->seed, ep, order);
    size_t start = 0;
    double sum = 0, running = 0;
    if (ep == first && resume.names > 0) {
      start = (size_t)resume.names;
      m->rng = resume.rng;
      sum = resume.loss_sum;
      running = resume.running;
      m->pos = (TrainPosition){0};
    }
    run.epoch = ep + 1;
    double t0 = now_seconds(), last_report = t0, t_reduce = 0;
    Progress pr = {.epoch = ep + 1, .epochs = last, .total = ds->ntrain,
                   .accuracy = run.rep.last_accuracy};
    for (size_t i = start; i < ds->ntrain; i += B) {
      size_t n = ds->ntrain - i < B ? ds->ntrain - i : B;
      batch_fill(&b, ds, order + i, n);
      float loss, gnorm;
      if (d->size > 1)
        dist_step(m, d, &b, n, losses, &loss, &gnorm, &t_reduce);
      else if (model_train_batch(m, b.chars, b.lens, b.targets, (int)n, losses, &loss, &gnorm))
        assert(!"data_load keeps names the model takes");
      if (!isfinite(loss) || !isfinite(gnorm)) {
        /* Without clipping gnorm is 0, or NaN for any gradient not finite. */
        const char *what = !isfinite(loss)                ? isnan(loss) ? "the loss is NaN"
                                                                        : "the loss is infinite"
                           : m->train->train.clip_norm <= 0 ? "a gradient is NaN or infinite"
                           : isnan(gnorm)                   ? "the gradient norm is NaN"
                                                            : "the gradient norm is infinite";
        size_t k = culprit(losses, n);
        const Name *nm = &ds->names[order[i + k]];
        char where[128];
        if (B == 1)
          snprintf(where, sizeof where, "name %zu of %zu", i + 1, ds->ntrain);
        else
          snprintf(where, sizeof where, "batch %zu of %zu, name %zu of %zu", i / B + 1,
                   (ds->ntrain + B - 1) / B, i + k + 1, ds->ntrain);
        rc = errf(e, "%s at epoch %d, %s ('%s', %s), step %lld: training stopped; %s%s", what,
                  ep + 1, where, nm->text, ds->labels[nm->label], (long long)m->step,
                  saved ? "the last good checkpoint is " : "no checkpoint was written",
                  saved ? saved : "");
        break;
      }
      for (size_t k = 0; k < n; k++) {
        sum += losses[k];
        running = i + k ? 0.99 * running + 0.01 * losses[k] : losses[k];
      }
      stop_sig = train_should_stop(d);
      bool epoch_end = i + n == ds->ntrain;
      double now = now_seconds();
      run_done += n;
      run.seen = (int64_t)ep * (int64_t)ds->ntrain + (int64_t)(i + n);
      pr.done = i + n;
      pr.elapsed = now - t0;
      pr.rate = now > t_run ? run_done / (now - t_run) : 0;
      pr.eta = pr.rate > 0 ? (run_names - run_done) / pr.rate : -1;
      pr.loss = running;
      if (o->metrics_every > 0 && m->step % o->metrics_every == 0) {
        int w = o->metrics ? train_line(&run, running, grad_norm(m, gnorm), pr.rate, e) : 0;
        if (rank0_wrote(d, w, "the metrics", e)) {
          rc = -1;
          break;
        }
      }
      /* Mid-epoch: the position, for the best checkpoint or a stop. */
      m->pos = (TrainPosition){.names = (int64_t)(i + n), .seed = o->seed, .rng = m->rng,
                               .loss_sum = sum, .running = running};
      if (o->eval_every > 0 && m->step % o->eval_every == 0 && ds->ntest && !epoch_end) {
        EvalResult res;
        rc = eval_point(&run, &res, e);
        eval_free(&res);
        pr.accuracy = run.rep.last_accuracy;
        if (rc)
          break;
      }
      if (stop_sig && !epoch_end) {
        rc = o->out && d->rank == 0 && ckpt_save(m, ds->labels, ds->nlabels, o->vocab, o->out, e)
                 ? -1
                 : 0;
        rc = rank0_wrote(d, rc, o->out ? o->out : "", e) ? -1 : TRAIN_STOPPED;
        break;
      }
      m->pos = (TrainPosition){0};
      if (now - last_report > (o->progress ? 0.1 : 5.0)) {
        progress(o, &pr, false);
        last_report = now;
      }
    }
    if (rc)
      break;
    double took = now_seconds() - t0;
    pr.elapsed = took;
    progress(o, &pr, true);
    if (d->size > 1) {
      size_t steps = (ds->ntrain - start + B - 1) / B;
      fprintf(o->log, "epoch %d: %d ranks, %.1f KB of gradient added up a step: the "
                      "allreduces took %.3f ms a step, %.1f%% of the epoch's training time\n",
              ep + 1, d->size, m->nfloats * sizeof(float) / 1e3, 1e3 * t_reduce / (double)steps,
              took > 0 ? 100 * t_reduce / took : 0);
    }
    m->epoch = ep + 1;
    double mean = ds->ntrain ? sum / ds->ntrain : 0;
    if (!dist_same_u64(d, state_hash(m))) {
      rc = errf(e, "after epoch %d the %d ranks' parameters differ: training stopped (the last "
                   "checkpoint is %s)",
                ep + 1, d->size, saved ? saved : "not written");
      break;
    }
    if (ds->ntest) {
      EvalResult res;
      rc = eval_point(&run, &res, e);
      if (rc == 0)
        fprintf(o->log, "epoch %d: mean training loss %.4f, test accuracy %.2f%% (%zu/%zu)\n",
                ep + 1, mean, 100.0 * res.correct / res.n, res.correct, res.n);
      if (rc == 0 && ep + 1 == last)
        run.rep.final = res; /* the run's last: the report's */
      else
        eval_free(&res);
      if (rc)
        break;
    } else {
      fprintf(o->log, "epoch %d: mean training loss %.4f (no test split)\n", ep + 1, mean);
    }
    if (o->out) { /* rank 0 writes; if it cannot, every rank stops */
      rc = d->rank == 0 && ckpt_save(m, ds->labels, ds->nlabels, o->vocab, o->out, e) ? -1 : 0;
      if (rank0_wrote(d, rc, o->out, e)) {
        rc = -1;
        break;
      }
      free(saved);
      saved = xasprintf("%s (epoch %d)", o->out, ep + 1);
    }
    if (ep + 1 < last && (stop_sig = train_should_stop(d)))
      rc = TRAIN_STOPPED;
  }
  cleanup_defer_stop(false, false);
  if (rc == TRAIN_STOPPED)
    run.rep.stop_signal = stop_sig;
  if (rc) /* not where training ended */
    eval_free(&run.rep.final);
  if (o->report)
    *o->report = run.rep;
  else
    eval_free(&run.rep.final);
  free(saved);
  free(order);
  free(losses);
  batch_free(&b);
  return rc;
}

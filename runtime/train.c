/* train.c: the training driver: the training set reshuffled every epoch and
 * cut into consecutive batches (the last one may be smaller), one optimizer
 * step per batch; evaluation and its report. */
#include "train.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uniwidth.h>

#include "checkpoint.h"

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
      int p = argmax(logits + i * (size_t)c, c);
      int truth = b.targets[i];
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

static void progress(const TrainOptions *o, int epoch, int epochs, size_t done, size_t total,
                     double elapsed, double loss, bool final) {
  double rate = elapsed > 0 ? done / elapsed : 0;
  char eta[32], el[32];
  fmt_time(eta, sizeof eta, rate > 0 ? (total - done) / rate : -1);
  fmt_time(el, sizeof el, elapsed);
  if (o->progress) {
    int width = 24, fill = total ? (int)(width * done / total) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
      bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(o->log, "\r\033[Kepoch %d/%d [%s] %5.1f%% %zu/%zu  %.0f names/s  loss %.4f  %s %s",
            epoch, epochs, bar, total ? 100.0 * done / total : 100.0, done, total, rate, loss,
            final ? "took" : "ETA", final ? el : eta);
    if (final)
      fprintf(o->log, "\n");
  } else {
    fprintf(o->log, "epoch %d/%d: %zu/%zu names, %.0f names/s, running loss %.4f, %s %s\n", epoch,
            epochs, done, total, rate, loss, final ? "took" : "ETA", final ? el : eta);
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
  for (int ep = first; ep < last && rc == 0; ep++) {
    if (d->size > 1 && d->rank == 0)
      dist_term_message("\nrnnc train: error: rank 0 of %d was ended by SIGTERM in epoch %d: "
                        "mpirun ends every rank when one fails (see its message) or when it "
                        "is interrupted. %s%s%s%s\n",
                        d->size, ep + 1, saved ? "The last checkpoint is " : "",
                        saved ? saved : "This run wrote no checkpoint",
                        saved ? ": resume with --init " : "", saved ? o->out : "");
    if (d->size > 1 && ep == first) /* after the message: mpirun may end this rank from now on */
      fprintf(o->log, "%d ranks: each takes 1/%d of every batch (%zu or %zu names) and splits it "
                      "over its threads\n",
              d->size, d->size, B / (size_t)d->size, (B + (size_t)d->size - 1) / (size_t)d->size);
    train_epoch_begin(m, ds, o->seed, ep, order);
    double t0 = now_seconds(), last_report = t0, sum = 0, running = 0, t_reduce = 0;
    for (size_t i = 0; i < ds->ntrain; i += B) {
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
      double now = now_seconds();
      if (now - last_report > (o->progress ? 0.1 : 5.0)) {
        progress(o, ep + 1, last, i + n, ds->ntrain, now - t0, running, false);
        last_report = now;
      }
    }
    if (rc)
      break;
    double took = now_seconds() - t0;
    progress(o, ep + 1, last, ds->ntrain, ds->ntrain, took, running, true);
    if (d->size > 1) {
      size_t steps = (ds->ntrain + B - 1) / B;
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
      evaluate(m, ds, ds->test, ds->ntest, o->seed, d, &res);
      fprintf(o->log, "epoch %d: mean training loss %.4f, test accuracy %.2f%% (%zu/%zu)\n",
              ep + 1, mean, 100.0 * res.correct / res.n, res.correct, res.n);
      eval_free(&res);
    } else {
      fprintf(o->log, "epoch %d: mean training loss %.4f (no test split)\n", ep + 1, mean);
    }
    if (o->out) { /* rank 0 writes; if it cannot, every rank stops */
      if (d->rank == 0 && ckpt_save(m, ds->labels, ds->nlabels, o->vocab, o->out, e))
        rc = -1;
      if (dist_first_failed(d, rc != 0) >= 0) {
        rc = rc ? rc : errf(e, "rank 0 could not write the checkpoint %s", o->out);
        break;
      }
      free(saved);
      saved = xasprintf("%s (epoch %d)", o->out, ep + 1);
    }
  }
  free(saved);
  free(order);
  free(losses);
  batch_free(&b);
  return rc;
}

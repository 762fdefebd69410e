/* checkpoint.c: model checkpoints as safetensors.
 *
 * A checkpoint is a pair of files. PATH holds the parameters and buffers
 * under their PyTorch state_dict names, so it loads with load_state_dict;
 * its __metadata__ has the label list, the vocabulary, the graph's file
 * name and hash, the step, the epoch and the pair id. Lists (labels,
 * vocabulary) are JSON arrays of strings inside their metadata string, so
 * a label may hold a comma, a quote or a newline (and a vocabulary
 * character need not be one byte); files written before ("format":
 * "rnnc-1") joined them with commas, and still load. The optimizer state
 * goes beside it, in OPATH = PATH with ".safetensors" replaced by
 * ".optim.safetensors": "<name>.exp_avg" and "<name>.exp_avg_sq" per
 * trainable parameter, and the same metadata.
 *
 * The pair id makes the two files one: a 64-bit hash of the step, the
 * epoch and every float of both files, so saves with different contents
 * (two trainings into one --out) have different ids, and the same training
 * resumed writes the same bytes. A loader takes the optimizer file with
 * the weights' pair id and step, and refuses any other.
 *
 * Two files cannot be renamed at once, so a save keeps the old pair
 * loadable until the new one is complete (W0 + O0 on disk, W1 + O1 new):
 *   1. W1 and O1 are staged in full (files.h: temporaries, fsync'd);
 *   2. O0 is renamed to OPATH.prev        W0 + prev:  the old pair
 *   3. O1 is renamed to OPATH             W0 + prev:  the old pair
 *   4. W1 is renamed to PATH              W1 + O1:    the new pair
 *   5. OPATH.prev is removed.
 * Each rename is synced before the next, so a kill at any moment leaves
 * the old pair or the new one; a failed write (ENOSPC) can only be in
 * step 1, and a failure at step 4 puts O0 back. The loader looks for the
 * weights' optimizer state in OPATH, then in OPATH.prev. When prev
 * already holds W0's optimizer state (a save stopped between 3 and 4),
 * step 2 keeps it.
 *
 * A training stopped inside an epoch (rnnc train interrupted) records
 * where in the metadata's "position", a JSON object: the names of the
 * epoch done, the seed that shuffled it, the noise generator's state (four
 * 64-bit words in hex) and the epoch's loss sum and running loss. A
 * checkpoint at an epoch's end has none, so a resumed training ends with
 * the bytes of one never stopped.
 *
 * Checkpoints written before pair ids ("format": "rnnc-1") pair by step.
 * A lock file, PATH.lock, keeps a second training from writing the same
 * checkpoint. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "safetensors.h"

/* The result of reading a checkpoint's optimizer state. */
enum { MOMENTS_NONE, MOMENTS_LOADED, MOMENTS_MISMATCH };

char *ckpt_optim_path(const char *path) {
  size_t n = strlen(path);
  const char *ext = ".safetensors";
  size_t k = strlen(ext);
  if (n > k && !strcmp(path + n - k, ext))
    return xasprintf("%.*s.optim.safetensors", (int)(n - k), path);
  return xasprintf("%s.optim.safetensors", path);
}

/* Where a save keeps the old optimizer state while it renames. */
static char *prev_path(const char *opath) { return xasprintf("%s.prev", opath); }

/* Whether f was written by rnnc (its "format" is rnnc-N): then "step"
 * and "epoch" are rnnc's counts, and an optimizer file may be beside it.
 * Other files (PyTorch's) may use those keys for anything. */
static bool is_rnnc(const StFile *f) {
  const char *format = st_meta(f, "format");
  return format && !strncmp(format, "rnnc-", 5);
}

/* A 64-bit hash of n floats, on top of h. */
static uint64_t hash_floats(uint64_t h, const float *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &p[i], sizeof u);
    h = (h ^ u) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  return h;
}

/* The pair id of a save: the step, the epoch and every float it writes. */
static uint64_t pair_id(const Model *m) {
  uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)m->step * 0x9e3779b97f4a7c15ULL;
  h ^= (uint64_t)(uint32_t)m->epoch;
  h = hash_floats(h, m->state, m->nfloats);
  if (m->train) {
    h = hash_floats(h, m->state + SLOT_M * m->nfloats, m->nfloats);
    h = hash_floats(h, m->state + SLOT_V * m->nfloats, m->nfloats);
  }
  return h;
}

/* Whether optimizer file o belongs to weights file w: the same step and
 * the same pair id (or, for files written before pair ids, none). */
static bool same_pair(const StFile *w, const StFile *o) {
  const char *pw = st_meta(w, "pair"), *po = st_meta(o, "pair");
  const char *sw = st_meta(w, "step"), *so = st_meta(o, "step");
  if (!sw || !so || strcmp(sw, so))
    return false;
  if (pw || po)
    return pw && po && !strcmp(pw, po);
  return true;
}

/* Step 2 of a save (see the top): before the new optimizer state replaces
 * opath, the state that belongs to the weights at path goes to ppath,
 * unless it is there already; anything else at ppath is stale. */
static int keep_prev(const char *path, const char *opath, const char *ppath, Err *e) {
  StFile w, o;
  Err ignored;
  bool o_pairs = false, p_pairs = false;
  if (st_load_header(&w, path, &ignored) == 0) {
    if (st_load_header(&o, opath, &ignored) == 0)
      o_pairs = same_pair(&w, &o);
    st_free(&o);
    if (!o_pairs && st_load_header(&o, ppath, &ignored) == 0)
      p_pairs = same_pair(&w, &o);
    st_free(&o);
  }
  st_free(&w);
  if (o_pairs && rename_durable(opath, ppath) < 0)
    return errf(e, "%s: cannot rename it to %s: %s", opath, ppath, strerror(errno));
  if (!o_pairs && !p_pairs)
    unlink(ppath);
  return 0;
}

static void free_list(char **items, int n) {
  for (int i = 0; i < n; i++)
    free(items[i]);
  free(items);
}

char *ckpt_json_list(char *const *items, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++)
    if (json_array_append_new(a, json_string(items[i])) < 0) {
      json_decref(a);
      return NULL;
    }
  char *s = json_dumps(a, JSON_COMPACT);
  json_decref(a);
  return s;
}

char *ckpt_vocab_list(void) {
  char *chars[VOCAB_SIZE], one[VOCAB_SIZE][2];
  for (int i = 0; i < VOCAB_SIZE; i++) {
    one[i][0] = VOCAB_CHARS[i];
    one[i][1] = '\0';
    chars[i] = one[i];
  }
  return ckpt_json_list(chars, VOCAB_SIZE);
}

static StTensor tensor_of(const Param *p, float *data) {
  StTensor t = {.name = p->name, .ndim = p->type.rank, .data = data};
  for (int d = 0; d < p->type.rank; d++)
    t.shape[d] = p->type.dim[d];
  t.nelem = type_numel(p->type);
  return t;
}

/* m->pos as the metadata's "position" (malloc'd). */
static char *position_json(const TrainPosition *p) {
  char seed[24], rng[4][24];
  snprintf(seed, sizeof seed, "%016" PRIx64, p->seed);
  json_t *words = json_array();
  for (int i = 0; i < 4; i++) {
    snprintf(rng[i], sizeof rng[i], "%016" PRIx64, p->rng.s[i]);
    json_array_append_new(words, json_string(rng[i]));
  }
  json_t *o = json_pack("{sIsssosfsf}", "names", (json_int_t)p->names, "seed", seed, "rng", words,
                        "loss_sum", p->loss_sum, "running_loss", p->running);
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(o);
  return s;
}

static bool parse_hex64(const char *s, uint64_t *v) {
  char *end;
  if (!s || strlen(s) != 16 || strspn(s, "0123456789abcdef") != 16)
    return false;
  *v = strtoull(s, &end, 16);
  return true;
}

/* The metadata's "position", when there is one, into *p. */
static int read_position(const StFile *f, const char *path, TrainPosition *p, Err *e) {
  *p = (TrainPosition){0};
  const char *value = st_meta(f, "position");
  if (!value || !is_rnnc(f))
    return 0;
  json_error_t jerr;
  json_t *o = json_loads(value, 0, &jerr), *words = NULL;
  json_int_t names = 0;
  const char *seed = NULL;
  bool ok = o && !json_unpack(o, "{sIsssosFsF}", "names", &names, "seed", &seed, "rng", &words,
                              "loss_sum", &p->loss_sum, "running_loss", &p->running);
  ok = ok && names > 0 && names <= ((int64_t)1 << 53) && parse_hex64(seed, &p->seed) &&
       json_is_array(words) && json_array_size(words) == 4 && isfinite(p->loss_sum) &&
       isfinite(p->running);
  for (size_t i = 0; ok && i < 4; i++)
    ok = parse_hex64(json_string_value(json_array_get(words, i)), &p->rng.s[i]);
  ok = ok && (p->rng.s[0] | p->rng.s[1] | p->rng.s[2] | p->rng.s[3]); /* xoshiro: never all 0 */
  json_decref(o);
  if (!ok) {
    char *shown = shown_text(value, strlen(value), 80);
    errf(e, "%s: metadata \"position\" is '%s', not where a training stopped (names, seed, rng, "
            "loss_sum, running_loss): a damaged or hand-edited checkpoint",
         path, shown);
    free(shown);
    *p = (TrainPosition){0};
    return -1;
  }
  p->names = names;
  return 0;
}

int ckpt_save(const Model *m, char *const *labels, int nlabels, const Vocab *v, const char *path,
              Err *e) {
  return ckpt_save_meta(m, labels, nlabels, v, path, NULL, NULL, 0, e);
}

int ckpt_save_meta(const Model *m, char *const *labels, int nlabels, const Vocab *v,
                   const char *path, char *const *extra_keys, char *const *extra_vals, int nextra,
                   Err *e) {
  const Graph *g = m->fwd;
  char step[32], hash[32], epoch[16], pair[32];
  snprintf(step, sizeof step, "%" PRId64, m->step);
  snprintf(epoch, sizeof epoch, "%d", m->epoch);
  snprintf(hash, sizeof hash, "%016" PRIx64, m->hash);
  snprintf(pair, sizeof pair, "%016" PRIx64, pair_id(m));
  Vocab names_vocab = {0};
  if (!v) {
    vocab_names(&names_vocab);
    v = &names_vocab;
  }
  char **items = vocab_to_list(v);
  char *label_list = ckpt_json_list(labels, nlabels), *vocab = ckpt_json_list(items, v->n);
  free_list(items, v->n);
  if (!label_list) {
    free(vocab);
    return errf(e, "%s: a label is not valid UTF-8", path);
  }
  const char *base = strrchr(m->path, '/');
  base = base ? base + 1 : m->path;
  char *fixed_keys[] = {"format",      "labels", "vocab", "vocab_kind", "graph",
                        "graph_fnv1a", "step",   "epoch", "pair"};
  char *fixed_vals[] = {"rnnc-2", label_list, vocab, (char *)vocab_kind_name(v->kind),
                        (char *)base, hash, step, epoch, pair};
  int nmeta = (int)ARRAY_LEN(fixed_keys);
  char **keys = xcalloc((size_t)nmeta + (size_t)nextra + 1, sizeof *keys);
  char **vals = xcalloc((size_t)nmeta + (size_t)nextra + 1, sizeof *vals);
  memcpy(keys, fixed_keys, sizeof fixed_keys);
  memcpy(vals, fixed_vals, sizeof fixed_vals);
  char *position = NULL;
  if (m->pos.names > 0) {
    keys[nmeta] = "position";
    vals[nmeta++] = position = position_json(&m->pos);
  }
  for (int i = 0; i < nextra; i++) {
    keys[nmeta] = extra_keys[i];
    vals[nmeta++] = extra_vals[i];
  }
  StTensor *ts = xcalloc((size_t)2 * g->nparams + 1, sizeof *ts);
  char **names = xcalloc((size_t)2 * g->nparams + 1, sizeof *names);
  char *opath = ckpt_optim_path(path), *ppath = prev_path(opath);
  Staged so = {.fd = -1}, sw = {.fd = -1};
  int n = 0, rc = -1;
  if (m->train) {
    for (int p = 0; p < g->nparams; p++) {
      const Param *pa = &g->params[p];
      if (!pa->trainable)
        continue;
      ts[n] = tensor_of(pa, m->state + SLOT_M * m->nfloats + pa->offset);
      ts[n].name = names[n] = xasprintf("%s.exp_avg", pa->name);
      n++;
      ts[n] = tensor_of(pa, m->state + SLOT_V * m->nfloats + pa->offset);
      ts[n].name = names[n] = xasprintf("%s.exp_avg_sq", pa->name);
      n++;
    }
    if (st_stage(&so, opath, ts, n, keys, vals, nmeta, e))
      goto out;
  }
  n = 0;
  for (int p = 0; p < g->nparams; p++)
    ts[n++] = tensor_of(&g->params[p], m->state + g->params[p].offset);
  if (st_stage(&sw, path, ts, n, keys, vals, nmeta, e))
    goto out;
  /* Both files are complete: now the renames (steps 2-5 at the top). */
  if (m->train && (keep_prev(path, opath, ppath, e) || stage_commit(&so, e)))
    goto out;
  if (stage_commit(&sw, e)) {
    if (m->train && rename_durable(ppath, opath) < 0) /* put the old state back */
      unlink(opath);
    goto out;
  }
  if (m->train)
    unlink(ppath);
  rc = 0;
out:
  stage_discard(&so);
  stage_discard(&sw);
  for (int i = 0; i < 2 * g->nparams + 1; i++)
    free(names[i]);
  free(ts);
  free(names);
  free(opath);
  free(ppath);
  free(label_list);
  free(vocab);
  free(position);
  free(keys);
  free(vals);
  vocab_free(&names_vocab);
  return rc;
}

/* A list in f's metadata: a JSON array of strings (rnnc-2), or items
 * joined by commas (rnnc-1, whose labels could not hold a comma; files of
 * other origin may be either). *items is NULL when f has no such key. */
static int read_list(const StFile *f, const char *key, const char *path, char ***items, int *n,
                     Err *e) {
  const char *value = st_meta(f, key), *format = st_meta(f, "format");
  *items = NULL;
  *n = 0;
  if (!value)
    return 0;
  bool json_only = format && strcmp(format, "rnnc-1") && is_rnnc(f);
  json_error_t jerr;
  json_t *a = value[0] == '[' ? json_loads(value, 0, &jerr) : NULL;
  if (a && json_is_array(a)) {
    size_t len = json_array_size(a);
    char **out = xcalloc(len ? len : 1, sizeof *out);
    size_t k = 0;
    for (; k < len && json_is_string(json_array_get(a, k)); k++)
      out[k] = xstrdup(json_string_value(json_array_get(a, k)));
    json_decref(a);
    if (k == len && len <= INT_MAX) {
      *items = out;
      *n = (int)len;
      return 0;
    }
    free_list(out, (int)k);
    return errf(e, "%s: metadata \"%s\": item %zu is not a string", path, key, k);
  }
  json_decref(a);
  if (json_only) {
    char *shown = shown_text(value, strlen(value), 60);
    errf(e, "%s: metadata \"%s\" is \"%s\", not a JSON list of strings", path, key, shown);
    free(shown);
    return -1;
  }
  int count = 1;
  for (const char *p = value; *p; p++)
    count += *p == ',';
  char **out = xcalloc((size_t)count, sizeof *out);
  int k = 0;
  for (const char *p = value;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    out[k++] = xstrndup(p, len);
    if (!end)
      break;
    p = end + 1;
  }
  *items = out;
  *n = k;
  return 0;
}

/* f's vocabulary: a list of characters ("" the unknown slot; rnnc-1: the
 * characters in one string) and its kind ("vocab_kind"; the names
 * vocabulary when there is none). v->n is 0 when f names no vocabulary. */
static int read_vocab(const StFile *f, const char *path, Vocab *v, Err *e) {
  const char *value = st_meta(f, "vocab"), *kind = st_meta(f, "vocab_kind");
  *v = (Vocab){0};
  if (!value)
    return 0;
  VocabKind k = VOCAB_NAMES;
  if (kind && vocab_kind_parse(kind, &k)) {
    char *shown = shown_text(kind, strlen(kind), 40);
    errf(e, "%s: metadata \"vocab_kind\" is \"%s\", not names, ascii or unicode", path, shown);
    free(shown);
    return -1;
  }
  char **chars;
  int n;
  if (value[0] == '[') {
    if (read_list(f, "vocab", path, &chars, &n, e))
      return -1;
  } else { /* the characters in one string (rnnc-1: the names vocabulary) */
    n = (int)strlen(value);
    chars = xcalloc((size_t)n + 1, sizeof *chars);
    for (int i = 0; i < n; i++)
      chars[i] = xstrndup(value + i, 1);
  }
  Err why;
  int rc = vocab_from_list(v, k, chars, n, &why);
  free_list(chars, n);
  if (rc)
    return errf(e, "%s: the checkpoint's vocabulary: %s", path, why.msg);
  return 0;
}

/* The index of x[0..n)'s first NaN or infinity, or n. Blocks without
 * one are checked with a loop the compiler vectorizes (no early exit):
 * a warm predict of gru.nn spent 7.7 M instructions, a quarter of its
 * own, checking its 643 k parameters one at a time. */
static size_t first_nonfinite(const float *x, size_t n) {
  enum { BLOCK = 1024 };
  for (size_t lo = 0; lo < n; lo += BLOCK) {
    size_t hi = n - lo < BLOCK ? n : lo + BLOCK;
    int bad = 0;
    for (size_t i = lo; i < hi; i++)
      bad |= !(fabsf(x[i]) <= FLT_MAX); /* NaN compares false */
    if (bad)
      for (size_t i = lo; i < hi; i++)
        if (!isfinite(x[i]))
          return i;
  }
  return n;
}

/* Reads the tensors named like g's parameters (with suffix) from f (open:
 * st_open) straight into a slot. On an error the slot holds what was read
 * until then. */
static int copy_in(const Graph *g, const StFile *f, const char *path, const char *suffix,
                   float *slot, bool trainable_only, Err *e) {
  for (int p = 0; p < g->nparams; p++) {
    const Param *pa = &g->params[p];
    if (trainable_only && !pa->trainable)
      continue;
    char name[300];
    snprintf(name, sizeof name, "%s%s", pa->name, suffix);
    const StTensor *t = st_find(f, name);
    char want[64];
    type_str(pa->type, want, sizeof want);
    if (!t)
      return errf(e, "%s: no tensor '%s' (the graph %s needs %s %s): a checkpoint of another "
                     "graph?",
                  path, name, g->src ? g->src->path : "", name, want);
    if (t->i32)
      return errf(e, "%s: tensor '%s' is I32, but a parameter is F32 (float32)", path, name);
    bool same = t->ndim == pa->type.rank;
    for (int d = 0; same && d < t->ndim; d++)
      same = t->shape[d] == pa->type.dim[d];
    if (!same) {
      Buf b = {0};
      for (int d = 0; d < t->ndim; d++)
        buf_printf(&b, "%s%" PRId64, d ? ", " : "", t->shape[d]);
      buf_put(&b, "", 1);
      errf(e, "%s: tensor '%s' is [%s], but the graph %s declares %s: a checkpoint of another "
              "graph?",
           path, name, b.data ? b.data : "", g->src ? g->src->path : "", want);
      buf_free(&b);
      return -1;
    }
    float *to = slot + pa->offset;
    if (st_read(f, t, to, path, e))
      return -1;
    size_t i = first_nonfinite(to, t->nelem);
    if (i < t->nelem)
      return errf(e, "%s: tensor '%s' has %s value (element %zu): the state of a training "
                     "that diverged? It would make every result NaN",
                  path, name, isnan(to[i]) ? "a NaN" : "an infinite", i);
  }
  return 0;
}

/* The largest step and epoch a checkpoint may name: a step count exact in
 * a double; epochs that leave room for --epochs (at most 100000) in an
 * int. */
#define CKPT_MAX_STEP ((int64_t)1 << 53)
#define CKPT_MAX_EPOCH 1000000000

/* The "step" and "epoch" of an rnnc checkpoint (0 when absent or not
 * rnnc's), or an error naming path and the value when one is not a count
 * in range. */
static int read_counts(const StFile *f, const char *path, int64_t *step, int *epoch, Err *e) {
  const char *keys[2] = {"step", "epoch"};
  const int64_t max[2] = {CKPT_MAX_STEP, CKPT_MAX_EPOCH};
  int64_t v[2] = {0, 0};
  for (int i = 0; i < 2 && is_rnnc(f); i++) {
    const char *s = st_meta(f, keys[i]);
    if (s && parse_int64(s, 0, max[i], &v[i])) {
      char *shown = shown_text(s, strlen(s), 40);
      errf(e, "%s: metadata \"%s\" is \"%s\", not an integer in [0, %lld]: a damaged or "
              "hand-edited checkpoint",
           path, keys[i], shown, (long long)max[i]);
      free(shown);
      return -1;
    }
  }
  *step = v[0];
  *epoch = (int)v[1];
  return 0;
}

/* The optimizer state that belongs to weights w (from path): in OPATH,
 * else in OPATH.prev (a save stopped between its renames). MOMENTS_NONE
 * when there is no optimizer file; MOMENTS_MISMATCH (with a message) when
 * there are, but none of w's pair (one of another training, or one that
 * cannot be read: each said as such); -1 on an error. */
static int load_optim(Model *m, const StFile *w, const char *path, Err *e) {
  char *opath = ckpt_optim_path(path), *ppath = prev_path(opath);
  const char *cand[2] = {opath, ppath};
  Buf why = {0}, unreadable = {0};
  int rc = MOMENTS_NONE;
  for (int i = 0; i < 2 && rc == MOMENTS_NONE; i++) {
    struct stat st;
    if (stat(cand[i], &st) < 0 && errno == ENOENT)
      continue;
    StFile o;
    Err oe;
    if (st_open(&o, cand[i], &oe)) {
      buf_printf(&unreadable, "%s%s", unreadable.len ? "; " : "", oe.msg);
      continue;
    }
    if (same_pair(w, &o)) {
      if (copy_in(m->fwd, &o, cand[i], ".exp_avg", m->state + SLOT_M * m->nfloats, true, e) ||
          copy_in(m->fwd, &o, cand[i], ".exp_avg_sq", m->state + SLOT_V * m->nfloats, true, e))
        rc = -1;
      else
        rc = MOMENTS_LOADED;
    } else if (i == 0) {
      const char *ws = st_meta(w, "step"), *os = st_meta(&o, "step");
      const char *wp = st_meta(w, "pair"), *op = st_meta(&o, "pair");
      buf_printf(&why, ": the weights were saved at step %s (pair id %s), the optimizer state at "
                       "step %s (pair id %s)",
                 ws ? ws : "?", wp ? wp : "none", os ? os : "?", op ? op : "none");
    }
    st_free(&o);
  }
  if (rc == MOMENTS_NONE && why.len) {
    errf(e, "%s and %s are not one checkpoint%s%s%s%s. They come from two trainings, or a "
            "file was copied or replaced by hand: resume from a complete pair, or delete %s to "
            "resume with a fresh optimizer state",
         path, opath, why.data, unreadable.len ? " (and " : "",
         unreadable.len ? unreadable.data : "", unreadable.len ? ")" : "", opath);
    rc = MOMENTS_MISMATCH;
  } else if (rc == MOMENTS_NONE && unreadable.len) {
    errf(e, "the optimizer state beside %s cannot be read (%s): resume from a complete pair, "
            "or delete %s to resume with a fresh optimizer state",
         path, unreadable.data, opath);
    rc = MOMENTS_MISMATCH;
  }
  buf_free(&why);
  buf_free(&unreadable);
  free(opath);
  free(ppath);
  return rc;
}

/* Whether the weights file at path is no longer the one w was read from
 * (a training saved a new pair meanwhile). */
static bool replaced(const StFile *w, const char *path) {
  StFile now;
  Err ignored;
  if (st_load_header(&now, path, &ignored))
    return false;
  const char *a = st_meta(w, "pair"), *b = st_meta(&now, "pair");
  bool changed = (a || b) && !(a && b && !strcmp(a, b));
  st_free(&now);
  return changed;
}

static int check_meta_labels(const CkptMeta *meta, const char *path, Err *e) {
  Err why;
  if (!data_check_labels(meta->labels, meta->nlabels, &why))
    return 0;
  return errf(e, "%s: metadata \"labels\": %s", path, why.msg);
}

int ckpt_read_meta(const StFile *f, const char *path, CkptMeta *meta, Err *e) {
  *meta = (CkptMeta){.rnnc = is_rnnc(f)};
  if (read_counts(f, path, &meta->step, &meta->epoch, e) ||
      read_position(f, path, &meta->pos, e) || read_vocab(f, path, &meta->vocab, e) ||
      read_list(f, "labels", path, &meta->labels, &meta->nlabels, e) ||
      check_meta_labels(meta, path, e)) {
    ckpt_meta_free(meta);
    return -1;
  }
  return 0;
}

void ckpt_meta_free(CkptMeta *meta) {
  free_list(meta->labels, meta->nlabels);
  vocab_free(&meta->vocab);
  *meta = (CkptMeta){0};
}

int ckpt_read_info(const char *path, CkptMeta *meta, Err *e) {
  StFile f;
  *meta = (CkptMeta){0};
  if (st_load_header(&f, path, e))
    return -1;
  int rc = ckpt_read_meta(&f, path, meta, e);
  st_free(&f);
  return rc;
}

int ckpt_open(CkptFile *c, const char *path, Err *e) {
  *c = (CkptFile){0};
  if (st_open(&c->st, path, e))
    return -1;
  if (ckpt_read_meta(&c->st, path, &c->meta, e)) {
    st_free(&c->st);
    return -1;
  }
  return 0;
}

void ckpt_close(CkptFile *c) {
  st_free(&c->st);
  ckpt_meta_free(&c->meta);
}

/* m's parameters from c, and its label count checked against m's classes. */
static int read_params(Model *m, const CkptFile *c, const char *path, Err *e) {
  if (copy_in(m->fwd, &c->st, path, "", m->state, false, e))
    return -1;
  if (c->meta.labels && c->meta.nlabels != m->fwd->classes)
    return errf(e, "%s: the checkpoint has %d labels, but the graph %s has %d classes", path,
                c->meta.nlabels, m->path, m->fwd->classes);
  return 0;
}

/* What a load sets before it reads: no labels, the counts of a fresh
 * model. */
static void reset_loaded(Model *m, char ***labels, int *nlabels) {
  *labels = NULL;
  *nlabels = 0;
  m->step = 0;
  m->epoch = 0;
  m->pos = (TrainPosition){0};
}

/* Moves c's labels to *labels. */
static void take_labels(CkptFile *c, char ***labels, int *nlabels) {
  *labels = c->meta.labels;
  *nlabels = c->meta.nlabels;
  c->meta.labels = NULL;
  c->meta.nlabels = 0;
}

int ckpt_read_params(Model *m, CkptFile *c, const char *path, char ***labels, int *nlabels,
                     Err *e) {
  reset_loaded(m, labels, nlabels);
  if (read_params(m, c, path, e))
    return -1;
  take_labels(c, labels, nlabels);
  return 0;
}

/* load_once's result when a training replaced the files as they were read. */
enum { LOAD_AGAIN = 1 };

static int load_once(Model *m, const char *path, bool with_optim, bool may_retry, char ***labels,
                     int *nlabels, Err *e) {
  CkptFile c;
  reset_loaded(m, labels, nlabels);
  if (ckpt_open(&c, path, e))
    return -1;
  int rc = read_params(m, &c, path, e);
  if (rc == 0 && with_optim && m->train && c.meta.rnnc) {
    /* Resume the optimizer when its state is beside the weights. */
    int got = load_optim(m, &c.st, path, e);
    rc = got == MOMENTS_MISMATCH ? (may_retry && replaced(&c.st, path) ? LOAD_AGAIN : -1)
         : got < 0              ? -1
                                : 0;
    if (got == MOMENTS_LOADED) {
      m->step = c.meta.step;
      m->epoch = c.meta.epoch;
      m->pos = c.meta.pos;
    }
  }
  if (rc == 0)
    take_labels(&c, labels, nlabels);
  ckpt_close(&c);
  return rc;
}

int ckpt_load(Model *m, const char *path, bool with_optim, char ***labels, int *nlabels,
              Err *e) {
  /* A training writing path while we read it: the weights and the
   * optimizer state can be of different saves; then read both again. */
  for (int attempt = 0;; attempt++) {
    int rc = load_once(m, path, with_optim, attempt < 3, labels, nlabels, e);
    if (rc != LOAD_AGAIN)
      return rc;
  }
}

static char *lock_path(const char *path) { return xasprintf("%s.lock", path); }

int ckpt_check_writable(const char *path, Err *e) {
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  if (!*path)
    return errf(e, "cannot write a checkpoint with an empty name");
  if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
    return errf(e, "cannot write the checkpoint '%s': that is a directory, not a file name (say "
                   "%s%smodel.safetensors)",
                path, path, *base ? "/" : "");
  char *dir = dir_of(path), *opath = ckpt_optim_path(path);
  char *names[] = {(char *)path, opath, prev_path(opath), lock_path(path)};
  int rc = 0;
  size_t longest = 0;
  for (size_t i = 0; i < ARRAY_LEN(names) && rc == 0; i++) {
    struct stat st;
    const char *b = strrchr(names[i], '/');
    b = b ? b + 1 : names[i];
    longest = strlen(b) > longest ? strlen(b) : longest;
    if (stat(names[i], &st) == 0) {
      if (S_ISDIR(st.st_mode))
        rc = errf(e, "cannot write the checkpoint %s: %s is a directory", path, names[i]);
      else if (!S_ISREG(st.st_mode))
        rc = errf(e, "cannot write the checkpoint %s: %s is not a regular file", path, names[i]);
    } else if (errno != ENOENT) {
      rc = errf(e, "cannot write the checkpoint %s: %s: %s", path, names[i], strerror(errno));
    }
  }
  if (rc == 0) {
    /* A file with a name as long as the longest of them, in their
     * directory: the names fit the file system, and it can be written. */
    if (probe_dir(dir, longest) < 0)
      rc = errf(e, "cannot write the checkpoint %s: %s", path, strerror(errno));
  }
  for (size_t i = 1; i < ARRAY_LEN(names); i++)
    free(names[i]);
  free(dir);
  return rc;
}

int ckpt_lock(CkptLock *l, const char *path, Err *e) {
  l->path = lock_path(path);
  l->fd = -1;
  for (int tries = 0;; tries++) {
    int fd = open(l->path, O_RDWR | O_CREAT | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) {
      errf(e, "cannot write the checkpoint %s: cannot create its lock file %s: %s", path, l->path,
           strerror(errno));
      break;
    }
    struct stat a, b;
    if (fstat(fd, &a) < 0 || !S_ISREG(a.st_mode)) {
      errf(e, "cannot write the checkpoint %s: its lock file %s is not a regular file", path,
           l->path);
      close(fd);
      break;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
      if (errno == EWOULDBLOCK) {
        char buf[32] = {0};
        long pid = 0;
        if (pread(fd, buf, sizeof buf - 1, 0) > 0)
          pid = strtol(buf, NULL, 10);
        char who[64] = "another rnnc";
        if (pid > 0)
          snprintf(who, sizeof who, "another rnnc (pid %ld)", pid);
        errf(e, "%s is being written by %s, which holds its lock %s: two trainings into one "
                "checkpoint would mix their files; wait for it to finish, or choose another --out",
             path, who, l->path);
      } else {
        errf(e, "cannot lock %s: %s", l->path, strerror(errno));
      }
      close(fd);
      break;
    }
    /* The holder before us removes the file as it finishes: the lock
     * counts only if path still names the file we locked. */
    if (stat(l->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      l->fd = fd;
      cleanup_register(l->path);
      char pid[32];
      int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
      if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) != n) {
        /* the pid is for another process's message only */
      }
      return 0;
    }
    close(fd);
    if (tries == 100) {
      errf(e, "cannot lock %s: it keeps being replaced", l->path);
      break;
    }
  }
  free(l->path);
  l->path = NULL;
  return -1;
}

void ckpt_unlock(CkptLock *l) {
  if (l->path && l->fd >= 0) {
    unlink(l->path); /* while holding the lock: see ckpt_lock */
    cleanup_release(l->path);
    close(l->fd);
  }
  free(l->path);
  *l = (CkptLock){.fd = -1};
}

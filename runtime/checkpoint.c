/* checkpoint.c: model checkpoints as safetensors.
 *
 * PATH holds the parameters and buffers under their PyTorch state_dict
 * names, so it loads with load_state_dict; its __metadata__ has the label
 * list, the vocabulary, the graph's file name and hash, and the step.
 * The optimizer state goes beside it, in PATH with ".safetensors"
 * replaced by ".optim.safetensors": "<name>.exp_avg" and
 * "<name>.exp_avg_sq" per trainable parameter, and the step. Each file is
 * written atomically (temporary file, then rename); the optimizer file is
 * written first, and the weights file names the step both share. */
#include "checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

char *ckpt_optim_path(const char *path) {
  size_t n = strlen(path);
  const char *ext = ".safetensors";
  size_t k = strlen(ext);
  if (n > k && !strcmp(path + n - k, ext))
    return xasprintf("%.*s.optim.safetensors", (int)(n - k), path);
  return xasprintf("%s.optim.safetensors", path);
}

static char *join_labels(char *const *labels, int n) {
  Buf b = {0};
  for (int i = 0; i < n; i++)
    buf_printf(&b, "%s%s", i ? "," : "", labels[i]);
  buf_put(&b, "", 1);
  return b.data;
}

static StTensor tensor_of(const Param *p, float *data) {
  StTensor t = {.name = p->name, .ndim = p->type.rank, .data = data};
  for (int d = 0; d < p->type.rank; d++)
    t.shape[d] = p->type.dim[d];
  t.nelem = type_numel(p->type);
  return t;
}

int ckpt_save(const Model *m, char *const *labels, int nlabels, const char *path, Err *e) {
  const Graph *g = m->fwd;
  char step[32], hash[32], epoch[16];
  snprintf(step, sizeof step, "%" PRId64, m->step);
  snprintf(epoch, sizeof epoch, "%d", m->epoch);
  snprintf(hash, sizeof hash, "%016" PRIx64, m->hash);
  char *label_list = join_labels(labels, nlabels);
  const char *base = strrchr(m->path, '/');
  base = base ? base + 1 : m->path;
  char *keys[] = {"format", "labels", "vocab", "graph", "graph_fnv1a", "step", "epoch"};
  char *vals[] = {"rnnc-1", label_list, VOCAB_CHARS, (char *)base, hash, step, epoch};
  StTensor *ts = xcalloc((size_t)2 * g->nparams + 1, sizeof *ts);
  char **names = xcalloc((size_t)2 * g->nparams + 1, sizeof *names);
  int n = 0, rc = 0;
  /* The optimizer's moments first: the weights file is the one a reader
   * trusts, and it is renamed into place last. */
  char *opath = ckpt_optim_path(path);
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
  if (m->train)
    rc = st_save(opath, ts, n, keys, vals, 7, e);
  for (int i = 0; i < n; i++)
    free(names[i]);
  n = 0;
  for (int p = 0; rc == 0 && p < g->nparams; p++)
    ts[n++] = tensor_of(&g->params[p], m->state + g->params[p].offset);
  if (rc == 0)
    rc = st_save(path, ts, n, keys, vals, 7, e);
  free(ts);
  free(names);
  free(opath);
  free(label_list);
  return rc;
}

static int split_labels(const char *list, char ***labels, int *n) {
  int count = 1;
  for (const char *p = list; *p; p++)
    count += *p == ',';
  char **out = xcalloc((size_t)count, sizeof *out);
  int k = 0;
  const char *p = list;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    out[k++] = xstrndup(p, len);
    if (!end)
      break;
    p = end + 1;
  }
  *labels = out;
  *n = k;
  return 0;
}

/* Copies the tensors named like g's parameters (with suffix) into a slot. */
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
    memcpy(slot + pa->offset, t->data, t->nelem * sizeof(float));
  }
  return 0;
}

int ckpt_load(Model *m, const char *path, bool with_optim, char ***labels, int *nlabels,
              Err *e) {
  StFile f;
  if (st_load(&f, path, e))
    return -1;
  int rc = copy_in(m->fwd, &f, path, "", m->state, false, e);
  const char *list = st_meta(&f, "labels");
  *labels = NULL;
  *nlabels = 0;
  if (rc == 0 && list)
    split_labels(list, labels, nlabels);
  if (rc == 0 && list && *nlabels != m->fwd->classes) {
    rc = errf(e, "%s: the checkpoint has %d labels, but the graph %s has %d classes", path,
              *nlabels, m->path, m->fwd->classes);
  }
  const char *vocab = st_meta(&f, "vocab");
  if (rc == 0 && vocab && strcmp(vocab, VOCAB_CHARS))
    rc = errf(e, "%s: the checkpoint's vocabulary differs from rnnc's (\"%s\")", path, vocab);
  const char *step = st_meta(&f, "step");
  m->step = 0;
  m->epoch = 0;
  if (rc == 0 && with_optim && m->train) {
    /* Resume the optimizer when its state is beside the weights. */
    char *opath = ckpt_optim_path(path);
    StFile o;
    Err oe;
    if (st_load(&o, opath, &oe) == 0) {
      const char *ostep = st_meta(&o, "step");
      if (!step || !ostep || strcmp(step, ostep))
        rc = errf(e, "%s and %s are from different steps (%s, %s)", path, opath,
                  step ? step : "?", ostep ? ostep : "?");
      if (rc == 0)
        rc = copy_in(m->fwd, &o, opath, ".exp_avg", m->state + SLOT_M * m->nfloats, true, e);
      if (rc == 0)
        rc = copy_in(m->fwd, &o, opath, ".exp_avg_sq", m->state + SLOT_V * m->nfloats, true, e);
      if (rc == 0) {
        const char *ep = st_meta(&f, "epoch");
        m->step = strtoll(step, NULL, 10);
        m->epoch = ep ? atoi(ep) : 0;
      }
      st_free(&o);
    }
    free(opath);
  }
  st_free(&f);
  if (rc) {
    for (int i = 0; i < *nlabels; i++)
      free((*labels)[i]);
    free(*labels);
    *labels = NULL;
    *nlabels = 0;
  }
  return rc;
}

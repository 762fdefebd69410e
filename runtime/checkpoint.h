/* checkpoint.h: saving and loading a model's parameters and optimizer
 * state (see checkpoint.c for the files). */
#ifndef RNNC_CHECKPOINT_H
#define RNNC_CHECKPOINT_H

#include <stdbool.h>

#include "model.h"
#include "safetensors.h"

/* Where the optimizer state of checkpoint path lives (malloc'd). */
char *ckpt_optim_path(const char *path);
/* Writes the parameters (and, for a training model, the optimizer state
 * beside them) as one pair: whatever happens, the files on disk are the
  * old pair or the new one (see checkpoint.c). v: the vocabulary (NULL:
  * the names'). */
int ckpt_save(const Model *m, char *const *labels, int nlabels, const Vocab *v, const char *path,
              Err *e);
/* ckpt_save with n more metadata keys and values (the report of a best
 * checkpoint). */
int ckpt_save_meta(const Model *m, char *const *labels, int nlabels, const Vocab *v,
                   const char *path, char *const *keys, char *const *vals, int n, Err *e);
/* Reads the parameters of m's graph from path: every parameter and buffer
 * must be there with its shape (other tensors are ignored). With
 * with_optim, also the optimizer state beside it, when there is one (then
 * m->step, m->epoch and m->pos are the checkpoint's); optimizer files
 * that are not of path's pair are an error. *labels (malloc'd, may be
 * NULL when the file has no label list). */
int ckpt_load(Model *m, const char *path, bool with_optim, char ***labels, int *nlabels,
              Err *e);

/* Metadata lists as checkpoints hold them: items[0..n) as a JSON array of
 * strings (malloc'd), or NULL when one is not UTF-8; the names
 * vocabulary's characters, one string each (rnnc import writes them too). */
char *ckpt_json_list(char *const *items, int n);
char *ckpt_vocab_list(void);

/* Fails (with a message) when the checkpoint cannot be written at path:
 * a directory's name, the checkpoint's files (weights, optimizer state and
 * the names a save and its lock use) existing as directories or special
 * files, or names too long for the file system or a directory that cannot
 * be written. For a check before training. */
int ckpt_check_writable(const char *path, Err *e);

/* What a checkpoint's metadata says, read and checked (ckpt_load does it;
 * exported for the fuzzer): the label list (NULL when the file has none),
  * the vocabulary (n = 0 when the file has none: PyTorch's), and for
  * rnnc's checkpoints the step, the epoch and the position in it. */
typedef struct CkptMeta {
  char **labels; /* (nlabels) malloc'd */
  int nlabels;
  Vocab vocab;
  int64_t step;  /* 0 unless rnnc */
  int epoch;     /* 0 unless rnnc */
  bool rnnc;     /* written by rnnc ("format": "rnnc-N") */
  TrainPosition pos; /* "position": a training stopped mid-epoch; else 0 */
} CkptMeta;
int ckpt_read_meta(const StFile *f, const char *path, CkptMeta *meta, Err *e);
void ckpt_meta_free(CkptMeta *meta);
/* The metadata of the checkpoint at path (its header only). */
int ckpt_read_info(const char *path, CkptMeta *meta, Err *e);

/* A checkpoint open for reading: its header read and checked once, its
 * metadata, and the file kept open, for a command that needs the metadata
 * before it can build the model (the sizes, the vocabulary) and then its
 * parameters: the parameters come from the same file even if a training
 * renames a new checkpoint over path meanwhile. */
typedef struct CkptFile {
  StFile st;
  CkptMeta meta;
} CkptFile;
int ckpt_open(CkptFile *c, const char *path, Err *e);
/* ckpt_load without the optimizer state, from c (opened from path): the
 * parameters read straight into m's, and c's labels moved to *labels. */
int ckpt_read_params(Model *m, CkptFile *c, const char *path, char ***labels, int *nlabels,
                     Err *e);
/* Frees c, closing its file; harmless on a zeroed or failed CkptFile. */
void ckpt_close(CkptFile *c);

/* An exclusive lock on writing a checkpoint (PATH.lock, holding the
 * owner's pid), for as long as a training runs. */
typedef struct CkptLock {
  char *path;
  int fd;
} CkptLock;
/* Takes the lock of checkpoint path, or fails with a message naming the
 * process that holds it. */
int ckpt_lock(CkptLock *l, const char *path, Err *e);
/* Releases and removes the lock; harmless on a zeroed or failed lock. */
void ckpt_unlock(CkptLock *l);

#endif

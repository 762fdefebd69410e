/* safetensors.h: checkpoints in the safetensors format: F32 tensors (and
 * I32 ones, read only: test fixtures hold character indices).
 *
 * A safetensors file is
 *   u64 N (little-endian) | N bytes of JSON header | data section
 * The header is an object: tensor name -> {"dtype": "F32", "shape": [d0,
 * ...], "data_offsets": [begin, end]}, offsets in bytes from the start of
 * the data section, plus an optional "__metadata__": object of string ->
 * string. Tensor data is raw little-endian, row-major.
 *
 * st_load is as strict as the reference implementation (the Rust
 * `safetensors` crate that PyTorch users load with), restricted to F32: the
 * header starts with '{', and the tensors tile the data section with no
 * gap, no overlap and nothing after the last one. Anything else, a
 * truncated or corrupted file included, is an error that names the file,
 * the tensor and the problem; the reader never reads outside what it has
 * read from the file.
 *
 * st_save writes tensors in the order given, data contiguous, the header
 * padded with spaces to a multiple of 8 bytes (as the Rust crate does), so
 * the result loads with safetensors.torch.load_file and PyTorch's
 * load_state_dict. It writes atomically (files.h): a temporary file in the
 * target's directory, fsync, rename over the target. On failure the
 * temporary is removed and an existing file at path is left as it was.
 *
 * Needs only util.h (Err) and files.h. Requires a little-endian host. */
#ifndef RNNC_SAFETENSORS_H
#define RNNC_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "files.h"
#include "util.h"

#define ST_MAX_DIMS 8
/* Header lengths above this are rejected as corrupt (the Rust crate's limit). */
#define ST_MAX_HEADER 100000000u

typedef struct StTensor {
  char *name;
  int ndim;                     /* 0..ST_MAX_DIMS; 0 is a scalar (nelem 1) */
  int64_t shape[ST_MAX_DIMS];   /* (ndim) */
  size_t nelem;                 /* product of shape */
  float *data;                  /* (nelem), row-major, aligned for float; NULL for I32 */
  bool i32;                     /* st_load: an I32 tensor, in idata */
  int32_t *idata;               /* (nelem) when i32 */
  size_t offset;                /* read: where its bytes begin in the data section */
} StTensor;

typedef struct StFile {
  StTensor *tensors; /* (ntensors) in header order */
  int ntensors;
  char **meta_keys;  /* (nmeta) __metadata__, in header order */
  char **meta_vals;  /* (nmeta) */
  int nmeta;
  void *blob;        /* the data section; every tensors[i].data points into it */
  int fd;            /* st_open's file, when open */
  bool open;
  uint64_t data_at;  /* the data section's offset in the file */
} StFile;

/* Reads path into *f. Returns 0, or -1 with a message in e naming path, the
 * tensor (when there is one) and the problem; *f is then empty (st_free on
 * it is harmless). Names are unique; every tensor's data is float-aligned
 * and owned by f. */
int st_load(StFile *f, const char *path, Err *e);

/* st_load without the data: the header validated as st_load does it
 * (names, shapes, metadata, the ranges against the file's size), every
 * tensor's data NULL. For reading a file's metadata. */
int st_load_header(StFile *f, const char *path, Err *e);

/* st_load_header, the file kept open: st_read then reads the tensors'
 * data from it, each where the caller wants it (a model's parameters),
 * without a copy of the whole data section. The file is the one the
 * header was read from, even if path is replaced meanwhile (a training
 * renaming its new checkpoint over it). st_free closes it. */
int st_open(StFile *f, const char *path, Err *e);

/* Reads the data of t, one of f's tensors (f from st_open), into dst
 * (t->nelem 4-byte elements). Returns 0, or -1 with a message naming path
 * and the tensor: the file shrank since st_open, or an I/O error. */
int st_read(const StFile *f, const StTensor *t, void *dst, const char *path, Err *e);

/* The tensor called name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);

/* The metadata value of key, or NULL. */
const char *st_meta(const StFile *f, const char *key);

/* Writes ts[0..n) and, when nmeta > 0, the metadata pairs (meta_keys[i],
 * meta_vals[i]) to path, atomically (see above). Each ts[i].nelem must be
 * the product of its shape; data may be NULL only when nelem is 0. Returns
 * 0, or -1 with a message in e: duplicate or reserved tensor names, strings
 * that are not UTF-8, a directory that cannot be written, a path that is a
 * directory, I/O errors. */
int st_save(const char *path, const StTensor *ts, int n, char *const *meta_keys,
            char *const *meta_vals, int nmeta, Err *e);

/* st_save's first half: the file complete and fsync'd in a temporary
 * beside path, to be renamed into place with stage_commit or dropped with
 * stage_discard (which the caller calls after a failure too). */
int st_stage(Staged *s, const char *path, const StTensor *ts, int n, char *const *meta_keys,
             char *const *meta_vals, int nmeta, Err *e);

/* Frees everything f holds and empties it. */
void st_free(StFile *f);

#endif

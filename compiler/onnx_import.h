/* onnx_import.h: ONNX models -> a graph file and its parameters (see
 * onnx_import.c). Its own header, beside rnnc.h: the importer does not use
 * the IR; it writes the graph language, which the front end then compiles
 * like any graph file. */
#ifndef RNNC_ONNX_IMPORT_H
#define RNNC_ONNX_IMPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "safetensors.h"
#include "util.h"

typedef struct ImportOptions {
  bool onehot;         /* the sequence input is one-hot characters: input x : onehot[T, V] */
  const char *input;   /* the graph input that is the sequence; NULL: the only graph input
                        * that is neither an initializer nor bound */
  const char *output;  /* the graph output that is the logits; NULL: the first */
  const StTensor *bind; /* (nbind) graph inputs given values: they become parameters */
  int nbind;
  const char *source;  /* for the graph file's header comment (the model's path) */
} ImportOptions;

typedef struct Imported {
  Buf nn;             /* the graph file's text (NUL-terminated) */
  StTensor *tensors;  /* (ntensors) every param and buffer of the graph, by its name */
  int ntensors;
  int vocab, classes; /* the input's width, the output's size */
  bool onehot;        /* the input is characters (--onehot, or an embedding's indices) */
} Imported;

/* Translates the ONNX model in data[0..len) into a graph file and its
 * parameters. Returns 0, or -1 with a message in e: not an ONNX model, an
 * op, attribute or data type the graph language cannot express (naming the
 * node, its op and the attribute), a shape that depends on the sequence
 * length where a number is needed. *out is then empty. */
int onnx_import(const void *data, size_t len, const ImportOptions *o, Imported *out, Err *e);
void imported_free(Imported *im);

/* A serialized TensorProto (ONNX's test data: input_0.pb) as float32 in *t
 * (name and data malloc'd; integer tensors are converted). */
int onnx_read_tensor(const void *data, size_t len, StTensor *t, Err *e);
void onnx_tensor_free(StTensor *t);

#endif

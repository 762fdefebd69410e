/* compile.c: the front end's driver. One place fixes the stage order:
 * tokenize, parse, lower, then the verifier. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

/* A safetensors file: a little-endian header length, then '{' (a
 * checkpoint given where the graph goes). */
static bool looks_like_safetensors(const char *text, size_t len) {
  if (len < 9 || text[8] != '{')
    return false;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | (unsigned char)text[i];
  return n >= 2 && n <= len - 8;
}

Graph *compile_graph(const char *path, const char *text, size_t len, Err *e) {
  if (looks_like_safetensors(text, len)) {
    errf(e, "%s: error: this is a safetensors file (a checkpoint), not a graph file; GRAPH comes "
            "first, CKPT second",
         path);
    return NULL;
  }
  /* A UTF-8 byte order mark, as some editors write, is not the graph's
   * (data files accept it too). */
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
    return compile_graph(path, text + 3, len - 3, e);
  Src *src = xcalloc(1, sizeof *src);
  src->path = xstrdup(path);
  src->text = xstrndup(text, len);
  src->len = len;
  if (memchr(text, '\0', len)) {
    /* Report the NUL at its position; the lexer sees only the text before it. */
    src->len = strlen(src->text);
  }
  Arena arena = {0};
  Diag d = {.err = e, .src = src};
  Graph *volatile g = NULL;
  if (setjmp(d.jb)) {
    arena_free(&arena);
    free(src->path);
    free(src->text);
    free(src);
    return NULL;
  }
  if (src->len != len) {
    int line = 1, col = 1;
    for (size_t i = 0; i < src->len; i++, col++)
      if (src->text[i] == '\n')
        line++, col = 0;
    error_at(&d, (Pos){line, col}, "NUL byte in graph file");
  }
  Token *toks = tokenize(src, &d, &arena);
  Program *prog = parse(toks, &d, &arena);
  g = lower(prog, src, &d);
  arena_free(&arena);
  g->src = src;
  if (graph_verify(g, e)) {
    graph_free(g);
    return NULL;
  }
  return g;
}

char *read_graph(const char *path, size_t *len, Err *e) {
  return read_file_max(path, GRAPH_MAX_BYTES, "a graph file", len, e);
}

Graph *compile_graph_file(const char *path, Err *e) {
  size_t len;
  char *text = read_graph(path, &len, e);
  if (!text)
    return NULL;
  Graph *g = compile_graph(path, text, len, e);
  free(text);
  return g;
}

/* The middle end, in one place: simplify the forward graph, differentiate
 * it (for training), simplify again. The verifier runs after each pass.
 * stop: PASSES_GRAD stops after grad (what --emit grad shows). */
int graph_passes(Graph *g, bool train, PassStop stop, Err *e) {
  if (stop == PASSES_FRONT)
    return 0;
  if (graph_optimize(g, false, e))
    return -1;
  if (train && grad(g, e))
    return -1;
  if (stop == PASSES_GRAD)
    return 0;
  return graph_optimize(g, true, e);
}

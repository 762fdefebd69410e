/* cmd_build.c: rnnc build GRAPH CKPT -o DIR/NAME.o: an object file and a C
 * header for ahead-of-time inference (compiler/obj.c). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "rnnc.h"

const char build_usage[] =
    "usage: rnnc build GRAPH CKPT -o DIR/NAME.o [--prefix P] [--target TRIPLE] [--cpu CPU]\n"
    "\n"
    "Compiles GRAPH's inference kernel with CKPT's weights baked in (read-only\n"
    "data) into a relocatable object DIR/NAME.o, and writes the C header\n"
    "DIR/NAME.h beside it. The object needs nothing but libc and libm (no LLVM,\n"
    "no rnnc library) and defines, for prefix P:\n"
    "\n"
    "  int P_forward(const int32_t *chars, int32_t len, float *logits);\n"
    "  int P_predict(const char *ascii_name, float *probs);\n"
    "  extern const char *const P_labels[P_NUM_CLASSES];   (CKPT's label list)\n"
    "\n"
    "and the header P_NUM_CLASSES, P_VOCAB, P_VOCAB_SIZE, P_MAX_LEN. A random\n"
    "initial state (noise) is zeros in the object, so results are deterministic.\n"
    "See docs/aot.md.\n"
    "\n"
    "  -o, --output DIR/NAME.o   the object to write (NAME.h goes beside it)\n"
    "  --prefix P                symbol prefix, a C identifier (default: NAME)\n"
    "  --target TRIPLE           target triple (default: the host's, e.g.\n"
    "                            x86_64-pc-linux-gnu); this build has x86 only\n"
    "  --cpu CPU                 generic: runs on any x86-64; host: this machine's\n"
    "                            CPU and features (default); or an LLVM CPU name\n"
    "                            such as znver3 or skylake-avx512\n"
    "  -h, --help                this help\n";

/* A file written next to its destination, renamed into place by commit. */
typedef struct Pending {
  const char *path;
  char *tmp;
} Pending;

/* Permissions as a new file gets them: 0666 less the umask. */
static mode_t new_file_mode(void) {
  mode_t mask = umask(022);
  umask(mask);
  return 0666 & ~mask;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int stage_file(Pending *f, const char *path, const Buf *data, Err *e) {
  f->path = path;
  const char *slash = strrchr(path, '/');
  f->tmp = slash ? xasprintf("%.*s/.rnnc-build-XXXXXX", (int)(slash - path), path)
                 : xstrdup(".rnnc-build-XXXXXX");
  int fd = mkstemp(f->tmp);
  if (fd < 0) {
    errf(e, "cannot write %s: %s", path, strerror(errno));
    free(f->tmp);
    f->tmp = NULL;
    return -1;
  }
  if (fchmod(fd, new_file_mode()) < 0 || write_all(fd, data->data, data->len) < 0 ||
      fsync(fd) < 0) {
    errf(e, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  if (close(fd) < 0)
    return errf(e, "cannot write %s: %s", path, strerror(errno));
  return 0;
}

static void discard(Pending *f) {
  if (f->tmp)
    unlink(f->tmp);
  free(f->tmp);
  f->tmp = NULL;
}

/* "DIR/NAME.o" -> "NAME" (malloc'd), or NULL when it does not end in .o. */
static char *object_stem(const char *path) {
  size_t n = strlen(path);
  if (n < 2 || strcmp(path + n - 2, ".o"))
    return NULL;
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t len = (size_t)(path + n - 2 - base);
  return len ? xstrndup(base, len) : NULL;
}

int cmd_build(int argc, char **argv) {
  const char *out = NULL, *prefix = NULL, *triple = NULL, *cpu = NULL;
  static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                       {"prefix", required_argument, 0, 'p'},
                                       {"target", required_argument, 0, 't'},
                                       {"cpu", required_argument, 0, 'c'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'p':
      prefix = optarg;
      break;
    case 't':
      if (!*optarg)
        return cli_usage_error("build", "--target wants a triple such as x86_64-pc-linux-gnu");
      triple = optarg;
      break;
    case 'c':
      if (!*optarg)
        return cli_usage_error("build", "--cpu wants generic, host or a CPU name");
      cpu = optarg;
      break;
    case 'h':
      fputs(build_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("build", "bad option");
    }
  }
  if (argc - optind < 2)
    return cli_usage_error("build", "wants GRAPH and CKPT");
  if (argc - optind > 2)
    return cli_usage_error("build", "unexpected argument '%s'", argv[optind + 2]);
  if (!out)
    return cli_usage_error("build", "wants -o DIR/NAME.o (the object; NAME.h goes beside it)");
  char *stem = object_stem(out);
  if (!stem)
    return cli_usage_error("build", "-o wants a path ending in NAME.o, not '%s'", out);
  Err e;
  if (obj_check_cpu(cpu, &e)) {
    free(stem);
    return cli_usage_error("build", "--cpu: %s", e.msg);
  }
  if (obj_check_prefix(prefix ? prefix : stem, &e)) {
    free(stem);
    return prefix ? cli_usage_error("build", "--prefix: %s", e.msg)
                  : cli_usage_error("build", "the object's name %s; choose one with --prefix",
                                    e.msg);
  }
  const char *graph = argv[optind], *ckpt = argv[optind + 1];
  char *header = xasprintf("%.*s.h", (int)(strlen(out) - 2), out);

  Model m = {0};
  ModelOptions mo = {.no_train = true, .no_kernels = true}; /* obj.c compiles its own */
  char **labels = NULL;
  int nlabels = 0, rc = EXIT_BAD_INPUT;
  Buf object = {0}, text = {0};
  Pending fo = {0}, fh = {0};
  if (model_compile(&m, graph, &mo, &e) || ckpt_load(&m, ckpt, false, &labels, &nlabels, &e))
    goto fail;
  if (!labels) {
    errf(&e, "%s has no label list (metadata \"labels\"); %s_labels needs one (checkpoints that "
             "rnnc train writes have it)",
         ckpt, prefix ? prefix : stem);
    goto fail;
  }
  char *source = xasprintf("%s with the weights of %s", graph, ckpt);
  ObjOptions o = {.prefix = prefix ? prefix : stem,
                  .triple = triple,
                  .cpu = cpu,
                  .vocab = VOCAB_CHARS,
                  .labels = labels,
                  .values = m.state,
                  .source = source};
  ObjInfo info;
  const char *base = strrchr(out, '/');
  int bad = obj_emit(m.fwd, &o, &object, &info, &e);
  if (!bad)
    obj_header(m.fwd, &o, &info, base ? base + 1 : out, &text);
  free(source);
  if (bad)
    goto fail;
  /* Both files complete beside their destinations before either is
   * renamed: an error leaves the old files (or none) in place. */
  if (stage_file(&fo, out, &object, &e) || stage_file(&fh, header, &text, &e))
    goto fail;
  if (rename(fo.tmp, out) < 0) {
    errf(&e, "cannot write %s: %s", out, strerror(errno));
    goto fail;
  }
  free(fo.tmp);
  fo.tmp = NULL;
  if (rename(fh.tmp, header) < 0) {
    errf(&e, "cannot write %s: %s (%s was written)", header, strerror(errno), out);
    goto fail;
  }
  free(fh.tmp);
  fh.tmp = NULL;
  printf("wrote %s (%zu bytes: %s, CPU %s) and %s\n", out, object.len, info.triple, info.cpu,
         header);
  rc = EXIT_OK;
fail:
  if (rc)
    fprintf(stderr, "rnnc build: error: %s\n", e.msg);
  discard(&fo);
  discard(&fh);
  buf_free(&object);
  buf_free(&text);
  for (int i = 0; i < nlabels; i++)
    free(labels[i]);
  free(labels);
  model_free(&m);
  free(header);
  free(stem);
  return rc;
}

/* cmd_build.c: rnnc build GRAPH CKPT -o DIR/NAME.o: an object file and a C
 * header for ahead-of-time inference (compiler/obj.c). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "files.h"
#include "rnnc.h"

const char build_usage[] =
    "usage: rnnc build GRAPH CKPT -o DIR/NAME.o [--prefix P] [--target TRIPLE] [--cpu CPU]\n"
    "                  [--quantize int8] [--no-batch-kernel]\n"
    "       rnnc build GRAPH CKPT -o DIR/NAME.wasm [--prefix P] [--cpu CPU] [--quantize int8]\n"
    "       rnnc build [--target TRIPLE] --cpu help\n"
    "\n"
    "Compiles GRAPH's inference kernel with CKPT's weights baked in (read-only\n"
    "data) into a relocatable object DIR/NAME.o, and writes the C header\n"
    "DIR/NAME.h beside it. The object needs nothing from the C library but\n"
    "memcpy, memmove and memset (no libm, no heap, no LLVM, no rnnc library)\n"
    "and defines, for prefix P:\n"
    "\n"
    "  int P_forward(const int32_t *chars, int32_t len, float *logits);\n"
    "  int P_predict(const char *name, float *probs);   (UTF-8, normalized)\n"
    "  extern const char *const P_labels[P_NUM_CLASSES];   (CKPT's label list)\n"
    "\n"
    "and the header P_NUM_CLASSES, P_VOCAB_SIZE, P_VOCAB_CHARS (CKPT's\n"
    "vocabulary), P_UNKNOWN_INDEX, P_NORMALIZATION, P_MAX_LEN, and the stack\n"
    "and sizes it needs (P_VOCAB too, for a vocabulary of ASCII characters).\n"
    "A random initial state (noise) is zeros in the object, so results are\n"
    "deterministic. With -o DIR/NAME.wasm, it writes a\n"
    "WebAssembly module that imports nothing (linked by LLVM's wasm-ld, from\n"
    "lld-19) and DIR/NAME.mjs, a JavaScript module that loads it and classifies\n"
    "names. See docs/aot.md.\n"
    "\n"
    "  -o, --output FILE         DIR/NAME.o: the object (NAME.h goes beside it);\n"
    "                            DIR/NAME.wasm: a module (NAME.mjs beside it)\n"
    "  --prefix P                symbol prefix, a C identifier (default: NAME)\n"
    "  --target TRIPLE           target triple (default: the host's, e.g.\n"
    "                            x86_64-pc-linux-gnu); see the list below\n"
    "  --cpu CPU                 host: this machine's CPU and all its features\n"
    "                            (the default for the host's architecture);\n"
    "                            generic: the target's baseline (the default for\n"
    "                            other targets); or a CPU name such as znver3,\n"
    "                            cortex-a76, sifive-u74 or cortex-m7. --cpu help\n"
    "                            lists the target's CPUs\n"
    "  --quantize int8           the matrices of the products as int8 with a scale\n"
    "                            per row: an object about 4x smaller, within a\n"
    "                            few tenths of a point of the float accuracy;\n"
    "                            for a CPU with int8 dot products (AArch64's\n"
    "                            sdot: cortex-a76, ...; x86's vpdpbusd:\n"
    "                            AVX512-VNNI or AVX-VNNI, znver4, icelake-server,\n"
    "                            alderlake, ...) the products' inputs are int8\n"
    "                            too, summed in int32\n"
    "                            (docs/aot.md, \"int8 weights\")\n"
    "  --no-batch-kernel         P_forward_batch calls P_forward name by name\n"
    "                            instead of a batched kernel with matrix\n"
    "                            products, whose transposed copies of the\n"
    "                            weights make a float object about twice as big\n"
    "                            (bare-metal and int8 objects never have one)\n"
    "  -h, --help                this help\n"
    "\n";

/* "DIR/NAME.ext" -> "NAME" (malloc'd), or NULL when path does not end in
 * ext after a name. */
static char *output_stem(const char *path, const char *ext) {
  size_t n = strlen(path), k = strlen(ext);
  if (n < k || strcmp(path + n - k, ext))
    return NULL;
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t len = (size_t)(path + n - k - base);
  return len ? xstrndup(base, len) : NULL;
}

extern char **environ;

/* Runs LLVM 19's wasm-ld (Debian's lld-19: LLVM's bin directory, or
 * wasm-ld-19 on PATH) with argv[1..]; its output goes into the error. */
static int run_wasm_ld(char **argv, Err *e) {
  static const char *const tools[] = {RNNC_LLVM_BINDIR "/wasm-ld", "wasm-ld-19"};
  int fds[2];
  if (pipe(fds) < 0)
    return errf(e, "running wasm-ld: %s", strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  pid_t pid;
  int err = ENOENT;
  for (size_t i = 0; i < ARRAY_LEN(tools) && err == ENOENT; i++) {
    argv[0] = (char *)tools[i];
    err = strchr(tools[i], '/') ? posix_spawn(&pid, tools[i], &fa, NULL, argv, environ)
                                : posix_spawnp(&pid, tools[i], &fa, NULL, argv, environ);
  }
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  Buf out = {0};
  char chunk[4096];
  ssize_t k;
  while (!err && ((k = read(fds[0], chunk, sizeof chunk)) > 0 || (k < 0 && errno == EINTR)))
    if (k > 0)
      buf_put(&out, chunk, (size_t)k);
  close(fds[0]);
  int status = 0;
  if (!err)
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
  int rc = 0;
  if (err == ENOENT)
    rc = errf(e, "writing a .wasm module needs wasm-ld, LLVM 19's WebAssembly linker (Debian "
                 "package lld-19); or write NAME.o with --target wasm32 and link it yourself");
  else if (err)
    rc = errf(e, "running %s: %s", argv[0], strerror(err));
  else if (!WIFEXITED(status) || WEXITSTATUS(status))
    rc = errf(e, "%s failed:\n%.*s", argv[0], (int)out.len, out.data ? out.data : "");
  buf_free(&out);
  return rc;
}

/* The WebAssembly module of a wasm32 object: linked with no entry point,
 * exporting P_forward, P_predict, its memory and __heap_base (where the
 * JavaScript wrapper puts inputs and results), with the stack first in
 * memory (an overflow traps instead of overwriting the weights) and large
 * enough for P_STACK_BYTES and the functions' frames. The object and the
 * module pass through temporary files beside out. */
static int link_wasm(const char *out, const Buf *object, const char *prefix,
                     size_t stack_bytes, Buf *module, Err *e) {
  Staged fo = {.fd = -1}, fm = {.fd = -1};
  int rc = -1;
  if (stage_file(&fo, out, object->data, object->len, e) || stage_file(&fm, out, NULL, 0, e))
    goto done;
  char stack[64], fwd[OBJ_MAX_PREFIX + 32], pred[OBJ_MAX_PREFIX + 32];
  snprintf(stack, sizeof stack, "stack-size=%zu", (stack_bytes + 2 * 65536 - 1) / 65536 * 65536);
  snprintf(fwd, sizeof fwd, "--export=%s_forward", prefix);
  snprintf(pred, sizeof pred, "--export=%s_predict", prefix);
  char *argv[] = {NULL, "--no-entry", "--stack-first", "-z", stack, fwd, pred,
                  "--export=__heap_base", "-o", fm.tmp, fo.tmp, NULL};
  if (run_wasm_ld(argv, e))
    goto done;
  size_t len;
  char *data = read_file(fm.tmp, &len, e);
  if (!data)
    goto done;
  buf_put(module, data, len);
  free(data);
  rc = 0;
done:
  stage_discard(&fo);
  stage_discard(&fm);
  return rc;
}

void build_help(FILE *f) {
  Buf b = {0};
  target_help(&b);
  fputs(build_usage, f);
  fputs(b.data, f);
  buf_free(&b);
}

int cmd_build(int argc, char **argv) {
  const char *out = NULL, *prefix = NULL, *triple = NULL, *cpu = NULL;
  bool quantize = false, no_batch = false;
  static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                       {"prefix", required_argument, 0, 'p'},
                                       {"target", required_argument, 0, 't'},
                                       {"cpu", required_argument, 0, 'c'},
                                       {"quantize", required_argument, 0, 'q'},
                                       {"no-batch-kernel", no_argument, 0, 'B'},
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
    case 'q':
      if (strcmp(optarg, "int8"))
        return cli_usage_error("build", "--quantize wants int8, not '%s'", optarg);
      quantize = true;
      break;
    case 'B':
      no_batch = true;
      break;
    case 'h':
      build_help(stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("build", "bad option");
    }
  }
  Err e;
  if (cpu && !strcmp(cpu, "help")) {
    Buf b = {0};
    if (target_cpus(triple, &b, &e))
      return cli_usage_error("build", "--cpu help: %s", e.msg);
    fputs(b.data, stdout);
    buf_free(&b);
    return EXIT_OK;
  }
  if (argc - optind < 2)
    return cli_usage_error("build", "wants GRAPH and CKPT");
  if (argc - optind > 2)
    return cli_usage_error("build", "unexpected argument '%s'", argv[optind + 2]);
  if (!out)
    return cli_usage_error("build", "wants -o DIR/NAME.o (the object; NAME.h goes beside it) "
                                    "or -o DIR/NAME.wasm");
  char *stem = output_stem(out, ".o");
  bool wasm = !stem && (stem = output_stem(out, ".wasm"));
  if (!stem)
    return cli_usage_error("build", "-o wants a path ending in NAME.o or NAME.wasm, not '%s'",
                           out);
  if (wasm && !triple)
    triple = "wasm32";
  if (wasm && strncmp(triple, "wasm32", 6)) {
    free(stem);
    return cli_usage_error("build", "-o %s: a .wasm module is for --target wasm32, not %s", out,
                           triple);
  }
  TargetChoice tc;
  if (target_choose(triple, cpu, &tc, &e)) {
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
  /* beside the object, its C header; beside a wasm module, its JS module */
  char *header =
      xasprintf("%.*s.%s", (int)(strlen(out) - (wasm ? 5 : 2)), out, wasm ? "mjs" : "h");
  {
    const char *ins[] = {graph, ckpt}, *names[] = {"the graph", "the checkpoint"};
    int bad = cli_refuse_overwrite("build", "-o", out, ins, names, 2);
    if (!bad)
      bad = cli_refuse_overwrite("build", wasm ? "its JS module" : "its header", header, ins, names, 2);
    if (bad) {
      free(stem);
      free(header);
      return bad;
    }
  }

  Model m = {0};
  ModelOptions mo = {.no_train = true, .no_kernels = true}; /* obj.c compiles its own */
  char **labels = NULL;
  int nlabels = 0, rc = EXIT_BAD_INPUT;
  Buf object = {0}, text = {0};
  Staged fo = {.fd = -1}, fh = {.fd = -1};
  Vocab vocab = {0};
  char **vocab_list = NULL;
  if (cli_load_model(&m, graph, ckpt, &mo, 0, &labels, &nlabels, &vocab, &e))
    goto fail;
  vocab_list = vocab_to_list(&vocab);
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
                  .vocab = vocab_list,
                  .unknown = vocab.unknown,
                  .normalization = vocab_is_ascii(vocab.kind) ? "ascii" : "nfc",
                  .labels = labels,
                  .values = m.state,
                  .source = source,
                  .quantize = quantize,
                  .no_batch_kernel = no_batch};
  ObjInfo info;
  const char *base = strrchr(out, '/');
  base = base ? base + 1 : out;
  int bad = obj_emit(m.fwd, &o, &object, &info, &e);
  if (!bad && wasm) {
    Buf module = {0};
    bad = link_wasm(out, &object, o.prefix, info.stack_bytes, &module, &e);
    buf_free(&object);
    object = module;
    if (!bad)
      obj_js_module(m.fwd, &o, &info, base, &text);
  } else if (!bad) {
    obj_header(m.fwd, &o, &info, base, &text);
  }
  free(source);
  if (bad)
    goto fail;
  /* Both files complete beside their destinations before either is
   * renamed, and the first put back should the second fail: an error
   * leaves the old files (or none) in place. */
  if (stage_file(&fo, out, object.data, object.len, &e) ||
      stage_file(&fh, header, text.data, text.len, &e) || stage_commit_both(&fo, &fh, &e))
    goto fail;
  printf("wrote %s (%zu bytes: %s, CPU %s%s%s%s) and %s\n", out, object.len, info.triple, info.cpu,
         !quantize ? "" : ", int8 weights", info.int8_dot ? " and " : "", int8_dot_name(info.int8_dot),
         header);
  rc = EXIT_OK;
fail:
  if (rc)
    cli_error("build", &e);
  stage_discard(&fo);
  stage_discard(&fh);
  buf_free(&object);
  buf_free(&text);
  for (int i = 0; i < nlabels; i++)
    free(labels[i]);
  free(labels);
  for (int i = 0; vocab_list && i < vocab.n; i++)
    free(vocab_list[i]);
  free(vocab_list);
  vocab_free(&vocab);
  model_free(&m);
  free(header);
  free(stem);
  return rc;
}

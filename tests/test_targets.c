/* test_targets.c: rnnc build for the targets other than the host, each run
 * where it runs:
 *   aarch64-linux-gnu, riscv64-linux-gnu: linked with Debian's cross gcc,
 *     run under qemu-user;
 *   thumbv7em-none-eabihf: linked with arm-none-eabi-gcc and newlib
 *     (examples/cortex-m: startup code and the memory map of QEMU's
 *     mps2-an386 board), run on that emulated Cortex-M4F through
 *     semihosting.
 *   wasm32: a module (-o NAME.wasm) with no imports, run under node through
 *     its JavaScript wrapper (tests/targets/run_wasm.mjs).
 * For each target and both graphs (the golden checkpoints), the object is
 * linked with tests/targets/driver.c, whose output (the logits' bits) must
 * equal the host JIT's logits within 1e-5, P_predict must agree with
 * P_forward, bad inputs must give their error codes, and the header must
 * compile as C99 and as C++ with the target's compilers. The object may
 * need nothing from the C library but memcpy, memmove and memset.
 * int8 objects for an AArch64 CPU with sdot (int8 x int8 products) run
 * under qemu-aarch64's "max" CPU, against the reference interpreter's
 * int8 arithmetic (test_aarch64_sdot).
 *
 * The tools come from Debian (sh scripts/install-deps --test); a missing
 * one fails the test with the package to install. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

typedef struct Target {
  const char *name, *triple;
  const char *cc, *cxx, *cc_package; /* compilers, and the Debian packages with them */
  const char *flags;                 /* to compile and link a program */
  const char *run, *run_package;     /* the command that runs it, before the program */
  const char *nm;                    /* lists an object's undefined symbols */
} Target;

static Target aarch64 = {"aarch64", "aarch64-linux-gnu", "aarch64-linux-gnu-gcc",
                         "aarch64-linux-gnu-g++", "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu",
                         "", "qemu-aarch64 -L /usr/aarch64-linux-gnu", "qemu-user",
                         "aarch64-linux-gnu-nm -u"};
/* An AArch64 CPU with the dotprod extension (sdot), which qemu's "max"
 * CPU emulates. */
static Target aarch64_dot = {"aarch64-dot", "aarch64-linux-gnu", "aarch64-linux-gnu-gcc",
                             "aarch64-linux-gnu-g++", "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu",
                             "", "qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu", "qemu-user",
                             "aarch64-linux-gnu-nm -u"};
static Target riscv64 = {"riscv64", "riscv64-linux-gnu", "riscv64-linux-gnu-gcc",
                         "riscv64-linux-gnu-g++", "gcc-riscv64-linux-gnu g++-riscv64-linux-gnu",
                         "", "qemu-riscv64 -L /usr/riscv64-linux-gnu", "qemu-user",
                         "riscv64-linux-gnu-nm -u"};
static Target cortex_m4 = {"cortex-m4", "thumbv7em-none-eabihf", "arm-none-eabi-gcc",
                           "arm-none-eabi-g++", "gcc-arm-none-eabi libnewlib-arm-none-eabi",
                           NULL /* set up with the paths of examples/cortex-m */,
                           "qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic -monitor none "
                           "-serial none -semihosting-config enable=on,target=native -kernel",
                           "qemu-system-arm", "arm-none-eabi-nm -u"};

typedef struct Model {
  const char *graph, *ckpt, *prefix;
  bool quantize;          /* --quantize int8 */
  const char *cpu;        /* --cpu, or NULL: the target's default */
  const char *names_ckpt; /* the checkpoint whose golden names to run (NULL: ckpt); set for an
                           * untrained model (tails_checkpoint), whose logits are too close for
                           * its classes to be checked */
} Model;

static const Model models[] = {
    {"graphs/gru.nn", "tests/golden/gru_seed42.safetensors", "gru", false, NULL, NULL},
    {"graphs/rnn.nn", "tests/golden/rnn_seed42.safetensors", "names_rnn", false, NULL, NULL},
};
static const Model gru8 = {"graphs/gru.nn", "tests/golden/gru_seed42.safetensors", "gru8", true, NULL, NULL};
/* int8 weights on an AArch64 CPU with sdot: int8 x int8 products */
static const Model models_dot[] = {
    {"graphs/gru.nn", "tests/golden/gru_seed42.safetensors", "gru8", true, "cortex-a76", NULL},
    {"graphs/rnn.nn", "tests/golden/rnn_seed42.safetensors", "rnn8", true, "cortex-a76", NULL},
};

/* The sdot objects against the reference interpreter's int8 arithmetic
 * (test_aarch64_sdot): the tolerance of the float objects, as the two
 * differ only in the roundings of the elementwise functions (measured:
 * 1.0e-8 gru.nn, 1.2e-7 rnn.nn), which have moved no quantized input
 * across a rounding boundary; the int8 x float logits are more than 10
 * times as far (checked; measured: 5.2e-4 gru.nn, 2.6e-3 rnn.nn). */
#define INT8_DOT_TOL 1e-5

static char *workdir, *root;

/* Fails unless the first word of cmd is a program on PATH. */
static void need(const char *cmd, const char *package) {
  size_t n = strcspn(cmd, " ");
  if (sh("command -v '%.*s' >/dev/null 2>&1", (int)n, cmd))
    fail_msg("'%.*s' is not installed: it is in the Debian package %s (sh scripts/install-deps "
             "--test installs every tool the tests use)",
             (int)n, cmd, package);
}

/* The Cortex-M4's flags, with linker script ld (malloc'd). */
static char *m4_flags(const char *ld) {
  return xasprintf("-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 "
                   "--specs=rdimon.specs -nostartfiles -Wl,-z,noexecstack -T '%s' "
                   "'%s/examples/cortex-m/startup.c'",
                   ld, root);
}

static int setup(void **state) {
  (void)state;
  const char *tmp = getenv("RNNC_TMP_DIR");
  workdir = xasprintf("%s/targets.%d", tmp ? tmp : "/tmp", (int)getpid());
  root = src_path(".");
  char *ld = xasprintf("%s/examples/cortex-m/mps2-an386.ld", root);
  cortex_m4.flags = m4_flags(ld);
  free(ld);
  return mkdir(workdir, 0777);
}

static int teardown(void **state) {
  (void)state;
  sh("rm -rf '%s'", workdir);
  free(workdir);
  free(root);
  free((char *)cortex_m4.flags);
  return 0;
}

/* And run_wasm.mjs, for the JavaScript wrapper's checks. */
static const char wasm_tail[] = "forward []: RangeError\n"
                                "forward maxLen+1: RangeError\n"
                                "forward index 59: RangeError\n"
                                "forward index -1: RangeError\n"
                                "forward index 1.5: RangeError\n"
                                "forward index '1': RangeError\n"
                                "forward maxLen: 18\n"
                                "predict '': null\n"
                                "predict 'a/b': null\n"
                                "predict 'Jos\xc3\xa9': null\n"
                                "predict 'a\\0b': null\n"
                                "predict undefined: null\n"
                                "predict maxLen: true\n"
                                "predict maxLen+1: null\n"
                                "predict 100 KB: null\n"
                                "labels: Arabic Vietnamese\n"
                                "done\n";

/* nm -u lists only the block operations LLVM may emit: memcpy, memmove,
 * memset, or on ARM EABI targets their run-time ABI names (__aeabi_memcpy4,
 * __aeabi_memclr8, ...), which every ARM C library has too. */
static bool block_op(const char *sym) {
  if (!strncmp(sym, "__aeabi_mem", 11))
    sym += 8; /* "memcpy4", "memclr8", ... */
  return !strncmp(sym, "memcpy", 6) || !strncmp(sym, "memmove", 7) || !strncmp(sym, "memset", 6) ||
         !strncmp(sym, "memclr", 6);
}

static void check_undefined(const Target *t, const char *obj) {
  char *out = xasprintf("%s/nm.txt", workdir);
  if (sh("%s '%s' > '%s'", t->nm, obj, out))
    fail_msg("%s %s failed", t->nm, obj);
  char *text = read_text(out);
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char *sym = strrchr(line, ' ');
    sym = sym ? sym + 1 : line;
    if (!block_op(sym))
      fail_msg("%s needs '%s', which is not memcpy, memmove or memset", obj, sym);
  }
  free(text);
  free(out);
}

static void need_tools(const Target *t) {
  need(t->cc, t->cc_package);
  need(t->cxx, t->cc_package);
  need(t->run, t->run_package);
  need(t->nm, t->cc_package);
}

/* rnnc build for target t (extra: more options, or ""), linked with the
 * driver by the target's compiler with flags: the object's path
 * (malloc'd), or NULL when the link failed (its output in *log). */
static char *build_and_link(const Target *t, const Model *m, const char *flags, char **log) {
  char *obj = xasprintf("%s/%s_%s.o", workdir, t->name, m->prefix);
  char *hdr = xasprintf("%s/%s_%s.h", workdir, t->name, m->prefix);
  char *exe = xasprintf("%s/%s_%s", workdir, t->name, m->prefix);
  rnnc_build(m->graph, m->ckpt, obj,
             (BuildFlags){.prefix = m->prefix, .target = t->triple, .cpu = m->cpu,
                          .quantize = m->quantize});
  check_undefined(t, obj);
  static const char *const check[] = {"-std=c99 -x c", "-x c++"};
  for (int k = 0; k < 2; k++)
    if (sh("%s %s -Wall -Wextra -pedantic -Werror -fsyntax-only -DP=%s -include '%s' "
           "-include '%s' '%s/tests/targets/header_check.c'",
           k ? t->cxx : t->cc, check[k], m->prefix, hdr, hdr, root))
      fail_msg("%s does not compile with %s %s", hdr, k ? t->cxx : t->cc, check[k]);
  char *out = xasprintf("%s.link.txt", exe);
  int st = sh("%s -std=c99 -O2 -Wall -Wextra -pedantic -Werror %s -DP=%s -include '%s' -I '%s' "
              "'%s/tests/targets/driver.c' '%s' -o '%s' > '%s' 2>&1",
              t->cc, flags, m->prefix, hdr, workdir, root, obj, exe, out);
  *log = read_text(out);
  free(out);
  free(obj);
  free(hdr);
  if (st) {
    free(exe);
    return NULL;
  }
  return exe;
}

/* Build, check the header as C99 and C++, link the driver (with flags),
 * run it, compare with the JIT. */
static void run_model(const Target *t, const Model *m, const char *flags) {
  /* The golden names only: emulated, the gru takes about 30 ms a character
   * on aarch64 (max-length names still run, in the driver's bad inputs). */
  NameList ns = name_list_load(m->names_ckpt ? m->names_ckpt : m->ckpt, false);
  write_driver_names(workdir, &ns);
  char *log, *exe = build_and_link(t, m, flags, &log);
  if (!exe)
    fail_msg("linking %s's %s with %s failed:\n%s", t->name, m->prefix, t->cc, log);
  free(log);
  char *out = xasprintf("%s.out", exe);
  int st = sh("timeout 600 %s '%s' > '%s'", t->run, exe, out);
  char *text = read_text(out);
  if (st)
    fail_msg("%s %s exited with %d:\n%s", t->run, exe, st, text);
  char *what = xasprintf("%s %s", t->name, m->prefix);
  /* with sdot: the interpreter's int8 arithmetic, and the float model's
   * classes on the golden names */
  bool dot = t == &aarch64_dot;
  int C;
  float *fl = dot && !m->names_ckpt ? jit_logits(m->graph, m->ckpt, &ns, &C, false) : NULL;
  check_aot_output(what, m->graph, m->ckpt, &ns, text,
                   &(AotCheck){.tol = dot ? INT8_DOT_TOL : 1e-5, .quantized = m->quantize,
                               .int8_dot = dot, .same_class = fl, .tail = driver_tail});
  free(fl);
  free(what);
  free(text);
  name_list_free(&ns);
  free(exe);
  free(out);
}

static void run_target(const Target *t) {
  need_tools(t);
  for (size_t g = 0; g < ARRAY_LEN(models); g++)
    run_model(t, &models[g], t->flags);
}

/* wasm32: the module of -o NAME.wasm has no imports and, through its
 * JavaScript wrapper under node, computes the JIT's logits; the header of
 * an object for wasm32 (-o NAME.o) compiles with clang for wasm32. */
static void test_wasm32(void **state) {
  (void)state;
  need("node", "nodejs");
  need("wasm-ld-19", "lld-19");
  need("clang-19", "clang-19");
  for (size_t g = 0; g < ARRAY_LEN(models); g++) {
    const Model *m = &models[g];
    NameList ns = name_list_load(m->ckpt, false);
    write_driver_names(workdir, &ns);
    char *wasm = xasprintf("%s/%s.wasm", workdir, m->prefix);
    char *js = xasprintf("%s/%s.mjs", workdir, m->prefix);
    char *obj = xasprintf("%s/%s_wasm.o", workdir, m->prefix);
    char *hdr = xasprintf("%s/%s_wasm.h", workdir, m->prefix);
    char *out = xasprintf("%s/%s_wasm.out", workdir, m->prefix);
    free(rnnc_expect(0, (const char *const[]){"build", m->graph, m->ckpt, "-o", wasm, "--prefix",
                                              m->prefix, NULL}));
    int st = sh("node '%s/tests/targets/run_wasm.mjs' '%s' '%s/names.json' > '%s' 2>&1", root, js,
                workdir, out);
    char *text = read_text(out);
    if (st)
      fail_msg("node run_wasm.mjs %s exited with %d:\n%s", js, st, text);
    const char *imports = "imports: 0\n";
    if (strncmp(text, imports, strlen(imports)))
      fail_msg("%s has imports (it must have none):\n%s", wasm, text);
    char *what = xasprintf("wasm32 %s", m->prefix);
    check_aot_output(what, m->graph, m->ckpt, &ns, text + strlen(imports),
                     &(AotCheck){.tol = 1e-5, .tail = wasm_tail});
    free(what);
    free(text);

    free(rnnc_expect(0, (const char *const[]){"build", m->graph, m->ckpt, "-o", obj, "--prefix",
                                              m->prefix, "--target", "wasm32", NULL}));
    static const char *const check[] = {"-std=c99 -x c", "-x c++"};
    for (int k = 0; k < 2; k++)
      if (sh("clang-19 --target=wasm32 %s -Wall -Wextra -pedantic -Werror -fsyntax-only -DP=%s "
             "-include '%s' -include '%s' '%s/tests/targets/header_check.c'",
             check[k], m->prefix, hdr, hdr, root))
        fail_msg("%s does not compile with clang-19 --target=wasm32 %s", hdr, check[k]);
    name_list_free(&ns);
    free(wasm);
    free(js);
    free(obj);
    free(hdr);
    free(out);
  }
}

static void test_aarch64(void **state) {
  (void)state;
  run_target(&aarch64);
}

/* int8 weights for an AArch64 CPU with sdot (cortex-a76): the object's
 * products are sdot instructions, its logits the reference interpreter's
 * int8 arithmetic's (interp_set_object) within INT8_DOT_TOL, and its
 * classes the float model's on the golden names. For the generic AArch64
 * CPU (no dotprod) the int8 object has no sdot. */
static void test_aarch64_sdot(void **state) {
  (void)state;
  need_tools(&aarch64_dot);
  need("aarch64-linux-gnu-objdump", "binutils-aarch64-linux-gnu");
  for (size_t g = 0; g < ARRAY_LEN(models_dot); g++) {
    run_model(&aarch64_dot, &models_dot[g], "");
    char *obj = xasprintf("%s/%s_%s.o", workdir, aarch64_dot.name, models_dot[g].prefix);
    int n = count_disassembled("aarch64-linux-gnu-objdump", obj, "\tsdot\t");
    print_message("%s: %d sdot instructions\n", obj, n);
    if (n == 0)
      fail_msg("%s (for %s) has no sdot instruction", obj, models_dot[g].cpu);
    free(obj);
  }
  for (size_t g = 0; g < ARRAY_LEN(models_dot); g++)
    check_int8_reference_differs(models_dot[g].graph, models_dot[g].ckpt, models_dot[g].prefix,
                                 INT8_DOT_TOL);
  /* rows of 48 and 40 bytes: sdot's 16-byte steps, then the last 8 bytes
   * of each 40-byte row one at a time */
  char *tails = tails_checkpoint(workdir);
  Model t = {TAILS_GRAPH, tails, "tails8", true, "cortex-a76", models_dot[0].ckpt};
  run_model(&aarch64_dot, &t, "");
  check_int8_reference_differs(t.graph, t.ckpt, t.prefix, INT8_DOT_TOL);
  free(tails);
  Model generic = models_dot[1];
  generic.cpu = NULL;
  char *obj = xasprintf("%s/generic8.o", workdir);
  free(rnnc_expect(0, (const char *const[]){"build", generic.graph, generic.ckpt, "-o", obj, "--target",
                                            aarch64.triple, "--quantize", "int8", NULL}));
  if (count_disassembled("aarch64-linux-gnu-objdump", obj, "\tsdot\t"))
    fail_msg("%s, for the generic AArch64 CPU (no dotprod), has sdot instructions", obj);
  free(obj);
}

static void test_riscv64(void **state) {
  (void)state;
  run_target(&riscv64);
}

static void test_cortex_m4(void **state) {
  (void)state;
  need(cortex_m4.cc, cortex_m4.cc_package);
  if (sh("test -f \"$(%s -mcpu=cortex-m4 -mfloat-abi=hard -print-file-name=rdimon.specs)\"",
         cortex_m4.cc))
    fail_msg("newlib for arm-none-eabi is not installed: it is in the Debian package "
             "libnewlib-arm-none-eabi (sh scripts/install-deps --test)");
  run_target(&cortex_m4);
  /* examples/cortex-m/classify.c as docs/aot.md builds it (with rnn.nn's
   * golden checkpoint for the model): five names, exit status 0. */
  char *obj = xasprintf("%s/names.o", workdir), *exe = xasprintf("%s/classify.elf", workdir);
  char *out = xasprintf("%s/classify.out", workdir);
  free(rnnc_expect(0, (const char *const[]){"build", models[1].graph, models[1].ckpt, "-o", obj,
                                            "--prefix", "names", "--target", cortex_m4.triple,
                                            NULL}));
  if (sh("%s -O2 -Wall -Wextra -Werror %s -I '%s' '%s/examples/cortex-m/classify.c' '%s' -o '%s'",
         cortex_m4.cc, cortex_m4.flags, workdir, root, obj, exe))
    fail_msg("examples/cortex-m/classify.c does not build");
  int st = sh("timeout 600 %s '%s' > '%s'", cortex_m4.run, exe, out);
  char *text = read_text(out);
  int lines = 0;
  for (const char *p = text; (p = strchr(p, '\n')); p++)
    lines++;
  if (st || lines != 5)
    fail_msg("examples/cortex-m/classify.c: exit %d, output:\n%s", st, text);
  free(text);
  free(obj);
  free(exe);
  free(out);
}

/* gru.nn with int8 weights on a microcontroller with 1 MB of flash and
 * 512 KB of RAM (an STM32F7's): the board's memory map cut down, in which
 * the float object does not link. */
static void test_cortex_m4_1mb(void **state) {
  (void)state;
  need_tools(&cortex_m4);
  char *board = xasprintf("%s/examples/cortex-m/mps2-an386.ld", root);
  char *ld = read_text(board);
  char *flash = strstr(ld, "LENGTH = 4M"), *ram = flash ? strstr(flash + 1, "LENGTH = 4M") : NULL;
  if (!ram)
    fail_msg("%s: no FLASH and RAM of LENGTH = 4M to cut down", board);
  memcpy(flash, "LENGTH = 1M", 11);
  *ram = '\0';
  char *small = xasprintf("%s/m4-1m.ld", workdir);
  Buf b = {0};
  buf_printf(&b, "%sLENGTH = 512K%s", ld, ram + 11);
  write_text(small, b.data);
  char *flags = m4_flags(small);
  NameList ns = name_list_load(models[0].ckpt, false);
  write_driver_names(workdir, &ns);
  name_list_free(&ns);
  char *log, *exe = build_and_link(&cortex_m4, &models[0], flags, &log);
  if (exe || !strstr(log, "region `FLASH' overflowed"))
    fail_msg("the float gru.nn links in 1 MB of flash, or fails otherwise:\n%s", log);
  free(log);
  run_model(&cortex_m4, &gru8, flags);
  char *sizes = xasprintf("%s/size.txt", workdir);
  assert_int_equal(sh("arm-none-eabi-size '%s/cortex-m4_gru8' > '%s'", workdir, sizes), 0);
  char *text = read_text(sizes);
  print_message("gru.nn with int8 weights in 1 MB of flash, 512 KB of RAM:\n%s", text);
  free(text);
  free(sizes);
  free(flags);
  buf_free(&b);
  free(small);
  free(ld);
  free(board);
}

/* A back end rnnc is not tested with that cannot compile the graph is an
 * error, exit status 1, with nothing leaked: LLVM's fatal errors (sparc:
 * "over-aligned dynamic alloca"; msp430: "Cannot select") and the back
 * ends that emit no objects at all (nvptx64, xcore). */
static void test_untested_backends(void **state) {
  (void)state;
  static const char *const cases[][2] = {{"sparc", "LLVM cannot go on: "},
                                         {"msp430", "LLVM cannot go on: "},
                                         {"nvptx64", "emitting the object file: "},
                                         {"xcore", "emitting the object file: "}};
  char *obj = xasprintf("%s/untested.o", workdir);
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *out = rnnc_expect(1, (const char *const[]){"build", models[1].graph, models[1].ckpt, "-o",
                                                     obj, "--target", cases[i][0], NULL});
    assert_contains(out, cases[i][1]);
    free(out);
  }
  free(obj);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_untested_backends),
      cmocka_unit_test(test_aarch64),
      cmocka_unit_test(test_aarch64_sdot),
      cmocka_unit_test(test_riscv64),
      cmocka_unit_test(test_cortex_m4),
      cmocka_unit_test(test_cortex_m4_1mb),
      cmocka_unit_test(test_wasm32),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

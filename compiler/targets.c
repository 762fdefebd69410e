/* targets.c: what rnnc compiles for. The back ends of the linked libLLVM
 * (Debian's libLLVM-19 has 21) are initialized on demand: the JIT needs
 * only the native one, and `rnnc build --target TRIPLE` the one the triple
 * names. The architectures rnnc tests (tests/test_targets.c runs what it
 * builds for each) have a default CPU and the list of CPUs --cpu accepts:
 * LLVM ignores an unknown CPU name with a warning and aborts on some known
 * ones (a 32-bit CPU for x86_64 or riscv64), so the names are checked here. */
#include <llvm-c/Core.h>
#include <llvm-c/Object.h>
#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

/* ------------------------------------------------------------- back ends */

/* Every back end of LLVM's configuration, in its own list (Targets.def;
 * each also has an asm printer in Debian's build). [first, end) are the
 * targets its TargetInfo registered: the registry prepends, so they are
 * the head of the list once that TargetInfo has run. */
typedef struct Backend {
  void (*info)(void), (*target)(void), (*mc)(void), (*printer)(void);
  LLVMTargetRef first, end;
} Backend;

static Backend backends[] = {
#define LLVM_TARGET(T)                                                                             \
  {LLVMInitialize##T##TargetInfo, LLVMInitialize##T##Target, LLVMInitialize##T##TargetMC,         \
   LLVMInitialize##T##AsmPrinter, NULL, NULL},
#include <llvm/Config/Targets.def>
};

/* Called first on the main thread (jit_new, or target_machine for rnnc
 * build), before any compile thread starts; the first call's host_code
 * (the process compiles for this machine, not a --target) decides the
 * code generator's options for the whole process. */
void target_init_native(bool host_code) {
  static bool done;
  if (!done) {
    /* No loop strength reduction in the code generator: it and the scalar
     * evolution it asks for were ~30% of the machine code's cost; without
     * it gru.nn's kernels compile ~13% faster (bench/run --quick: 384-390
     * -> 324-341 ms), at the same speed within the noise of this shared
     * machine (training 1,913-2,192 vs 1,957-2,022 names/s, inference
     * 145-160 vs 158-163 us/name). It moves addresses and induction
     * variables, never arithmetic: results are bit for bit the same.
     * For this machine, nor the two instruction schedulers (before and
     * after register allocation), ~12% of the rest of the machine code's
     * cost: on the Zen 5 (bench/run --quick --models gru, 3 runs each)
     * compile 371 -> 286 ms, batch-1 training 1,958 -> 2,183 names/s, the
     * AOT object's inference 109.4 -> 89.7 us/name, the JIT's the same
     * (146.2, 146.6); the batched kernels the same within the noise. An
     * out-of-order x86 core reorders them itself; the in-order cores of
     * `rnnc build --target` (Cortex-M, some RISC-V) keep them.
     * Scheduling reorders instructions, never changes them. */
    const char *const args[] = {"rnnc", "-disable-lsr", "-enable-misched=false",
                                "-post-RA-scheduler=false"};
    LLVMParseCommandLineOptions(host_code ? (int)ARRAY_LEN(args) : 2, args, NULL);
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    LLVMInitializeNativeAsmParser();
    done = true;
  }
}

/* Registers every back end's name and triples (a few objects each: cheap);
 * the code generators stay uninitialized until a triple needs one. */
static void register_target_infos(void) {
  static bool done;
  if (done)
    return;
  for (size_t i = 0; i < ARRAY_LEN(backends); i++) {
    backends[i].end = LLVMGetFirstTarget();
    backends[i].info(); /* a no-op for a back end registered already (the native one) */
    backends[i].first = LLVMGetFirstTarget();
  }
  done = true;
}

/* The code generator of t, a registered target. */
static void init_backend(LLVMTargetRef t) {
  if (LLVMTargetHasTargetMachine(t))
    return; /* initialized already (the native back end) */
  for (size_t i = 0; i < ARRAY_LEN(backends); i++)
    for (LLVMTargetRef u = backends[i].first; u && u != backends[i].end; u = LLVMGetNextTarget(u))
      if (u == t) {
        backends[i].target();
        backends[i].mc();
        backends[i].printer();
        return;
      }
}

/* Appends item to a comma-separated list indented by two spaces and
 * wrapped at 76 columns; *col is the current line's length. */
static void list_item(Buf *b, size_t *col, const char *item) {
  size_t n = strlen(item);
  if (*col && *col + n + 2 > 76) {
    buf_printf(b, ",\n");
    *col = 0;
  }
  buf_printf(b, "%s%s", *col ? ", " : "  ", item);
  *col += n + 2;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names of every back end's targets (architectures), sorted, wrapped. */
static void list_backends(Buf *b) {
  register_target_infos();
  const char *names[128];
  size_t n = 0, col = 0;
  for (LLVMTargetRef t = LLVMGetFirstTarget(); t && n < ARRAY_LEN(names); t = LLVMGetNextTarget(t))
    names[n++] = LLVMGetTargetName(t);
  qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++)
    list_item(b, &col, names[i]);
  buf_printf(b, "\n");
}

LLVMTargetMachineRef target_machine(const char *triple, const char *cpu, const char *features,
                                    LLVMRelocMode reloc, Err *e) {
  char *norm_triple = NULL, *host_cpu = NULL, *host_features = NULL;
  target_init_native(!triple);
  /* LLVM takes the triple's components by position: "thumbv7em-none-eabihf"
   * would have the OS "eabihf" and no environment (soft-float calls), where
   * the normal form is "thumbv7em-none-unknown-eabihf" (as clang makes it). */
  if (triple) {
    register_target_infos();
    triple = norm_triple = LLVMNormalizeTargetTriple(triple);
  } else {
    triple = norm_triple = LLVMGetDefaultTargetTriple();
  }
  if (!cpu) {
    cpu = host_cpu = LLVMGetHostCPUName();
    features = host_features = LLVMGetHostCPUFeatures();
  }
  LLVMTargetRef target;
  char *msg = NULL;
  LLVMTargetMachineRef tm = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    Buf names = {0};
    list_backends(&names);
    errf(e, "target %s: %s; this rnnc has the back ends:\n%.*s", triple, msg,
         (int)names.len - 1, names.data);
    buf_free(&names);
    LLVMDisposeMessage(msg);
  } else {
    init_backend(target);
    tm = LLVMCreateTargetMachine(target, triple, cpu, features ? features : "",
                                 LLVMCodeGenLevelAggressive, reloc, LLVMCodeModelDefault);
    if (!tm)
      errf(e, "cannot make a target machine for %s (cpu %s)", triple, cpu);
  }
  LLVMDisposeMessage(norm_triple);
  LLVMDisposeMessage(host_cpu);
  LLVMDisposeMessage(host_features);
  return tm;
}

int target_emit(LLVMTargetMachineRef tm, LLVMModuleRef m, LLVMCodeGenFileType type,
                LLVMMemoryBufferRef *mb, char **msg) {
  *mb = NULL;
  *msg = NULL;
  if (!LLVMTargetMachineEmitToMemoryBuffer(tm, m, type, msg, mb))
    return 0;
  if (*mb) /* what LLVM had written before it failed (nvptx64, xcore) */
    LLVMDisposeMemoryBuffer(*mb);
  *mb = NULL;
  return -1;
}

char *target_asm_text(LLVMTargetMachineRef tm, LLVMModuleRef m) {
  char *msg = NULL, *text = NULL;
  LLVMMemoryBufferRef mb;
  if (!target_emit(tm, m, LLVMAssemblyFile, &mb, &msg)) {
    size_t n = LLVMGetBufferSize(mb);
    text = xmalloc(n + 1); /* NUL-terminated: the buffer need not be */
    memcpy(text, LLVMGetBufferStart(mb), n);
    text[n] = '\0';
    LLVMDisposeMemoryBuffer(mb);
  }
  LLVMDisposeMessage(msg);
  return text;
}

/* Whether tm computes llvm.fma.f32 with an instruction: compiles a call to
 * it and looks for a call to libm's fmaf in the object. */
bool target_has_fma(LLVMTargetMachineRef tm) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("fma_probe", ctx);
  LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx);
  LLVMTypeRef params[3] = {f32, f32, f32};
  LLVMValueRef fn = LLVMAddFunction(m, "probe", LLVMFunctionType(f32, params, 3, 0));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
  unsigned id = LLVMLookupIntrinsicID("llvm.fma", 8);
  LLVMValueRef args[3] = {LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2)};
  LLVMBuildRet(b, LLVMBuildCall2(b, LLVMIntrinsicGetType(ctx, id, &f32, 1),
                                 LLVMGetIntrinsicDeclaration(m, id, &f32, 1), args, 3, ""));
  LLVMDisposeBuilder(b);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  bool fma = true; /* when the object cannot be read: the intrinsic stays */
  char *msg = NULL;
  LLVMMemoryBufferRef mb;
  if (!target_emit(tm, m, LLVMObjectFile, &mb, &msg)) {
    LLVMBinaryRef bin = LLVMCreateBinary(mb, ctx, &msg);
    if (bin) {
      LLVMSymbolIteratorRef s = LLVMObjectFileCopySymbolIterator(bin);
      for (; !LLVMObjectFileIsSymbolIteratorAtEnd(bin, s); LLVMMoveToNextSymbol(s)) {
        const char *name = LLVMGetSymbolName(s);
        fma &= !(name && !strcmp(name, "fmaf"));
      }
      LLVMDisposeSymbolIterator(s);
      LLVMDisposeBinary(bin);
    }
    LLVMDisposeMemoryBuffer(mb);
  }
  LLVMDisposeMessage(msg);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  return fma;
}

/* tm's int8 dot product instructions: compiles a sum of the products of
 * n bytes (16 sign-extended pairs on AArch64; on x86-64, 64 pairs of an
 * unsigned byte and a signed one), which the back end makes sdot where
 * the CPU has it (ARMv8.2's optional dotprod, standard from ARMv8.4), or
 * vpdpbusd where it has AVX512-VNNI (on zmm registers) or AVX-VNNI (ymm
 * only), and looks for it in the assembly. (The C API cannot list a named
 * CPU's features, and calling the intrinsics on a CPU without them would
 * abort in instruction selection.) */
Int8Dot target_int8_dot(LLVMTargetMachineRef tm) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  bool arm64 = !strncmp(triple, "aarch64", 7) || !strncmp(triple, "arm64", 5);
  bool x86 = !strncmp(triple, "x86_64", 6);
  if (!arm64 && !x86) {
    LLVMDisposeMessage(triple);
    return INT8_DOT_NONE;
  }
  unsigned n = x86 ? 64 : 16;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("dot_probe", ctx);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(ctx), pty = LLVMPointerTypeInContext(ctx, 0);
  LLVMTypeRef v8 = LLVMVectorType(LLVMInt8TypeInContext(ctx), n), v32 = LLVMVectorType(i32, n);
  LLVMTypeRef params[2] = {pty, pty};
  LLVMValueRef fn = LLVMAddFunction(m, "probe", LLVMFunctionType(i32, params, 2, 0));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
  LLVMValueRef x = LLVMBuildLoad2(b, v8, LLVMGetParam(fn, 0), "");
  x = x86 ? LLVMBuildZExt(b, x, v32, "") : LLVMBuildSExt(b, x, v32, "");
  LLVMValueRef y = LLVMBuildSExt(b, LLVMBuildLoad2(b, v8, LLVMGetParam(fn, 1), ""), v32, "");
  LLVMValueRef prod = LLVMBuildMul(b, x, y, "");
  unsigned id = LLVMLookupIntrinsicID("llvm.vector.reduce.add", 22);
  LLVMBuildRet(b, LLVMBuildCall2(b, LLVMIntrinsicGetType(ctx, id, &v32, 1),
                                 LLVMGetIntrinsicDeclaration(m, id, &v32, 1), &prod, 1, ""));
  LLVMDisposeBuilder(b);
  Int8Dot dot = INT8_DOT_NONE;
  char *text = target_asm_text(tm, m);
  if (text) {
    /* not in a name: "\tsdot\tv0.4s, ...", "\tvpdpbusd\t(%rsi), %zmm0, %zmm1" */
    const char *p = strstr(text, arm64 ? "\tsdot\t" : "\tvpdpbusd\t");
    if (p && arm64)
      dot = INT8_DOT_SDOT;
    else if (p) {
      const char *end = strchr(p, '\n'), *z = strstr(p, "zmm");
      bool zmm = z && (!end || z < end);
      dot = zmm ? INT8_DOT_VNNI512 : INT8_DOT_VNNI256;
    }
    free(text);
  }
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  return dot;
}

const char *int8_dot_name(Int8Dot d) {
  return d == INT8_DOT_SDOT ? "sdot" : d == INT8_DOT_NONE ? "" : "vpdpbusd";
}

/* --------------------------------------------------- tested architectures */

/* The CPU names LLVM 19's x86 back end knows, less the 32-bit-only ones
 * (`llc -mtriple=x86_64 -mcpu=help`, each tried): LLVM aborts on a 32-bit
 * one ("64-bit code requested on a subtarget that doesn't support it"). */
static const char *const x86_64_cpus[] = {
    "alderlake", "amdfam10", "arrowlake", "arrowlake-s", "arrowlake_s", "athlon-fx", "athlon64",
    "athlon64-sse3", "atom", "atom_sse4_2", "atom_sse4_2_movbe", "barcelona", "bdver1",
    "bdver2", "bdver3", "bdver4", "bonnell", "broadwell", "btver1", "btver2", "cannonlake",
    "cascadelake", "clearwaterforest", "cooperlake", "core-avx-i", "core-avx2", "core2",
    "core_2_duo_sse4_1", "core_2_duo_ssse3", "core_2nd_gen_avx", "core_3rd_gen_avx",
    "core_4th_gen_avx", "core_4th_gen_avx_tsx", "core_5th_gen_avx", "core_5th_gen_avx_tsx",
    "core_aes_pclmulqdq", "core_i7_sse4_2", "corei7", "corei7-avx", "emeraldrapids", "goldmont",
    "goldmont-plus", "goldmont_plus", "gracemont", "grandridge", "graniterapids",
    "graniterapids-d", "graniterapids_d", "haswell", "icelake-client", "icelake-server",
    "icelake_client", "icelake_server", "ivybridge", "k8", "k8-sse3", "knl", "knm", "lunarlake",
    "meteorlake", "mic_avx512", "nehalem", "nocona", "opteron", "opteron-sse3", "pantherlake",
    "penryn", "raptorlake", "rocketlake", "sandybridge", "sapphirerapids", "sierraforest",
    "silvermont", "skx", "skylake", "skylake-avx512", "skylake_avx512", "slm", "tigerlake",
    "tremont", "westmere", "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "znver1", "znver2",
    "znver3", "znver4", "znver5",
};

/* `llc -mtriple=aarch64-linux-gnu -mcpu=help`: all have the FP/SIMD unit. */
static const char *const aarch64_cpus[] = {
    "a64fx", "ampere1", "ampere1a", "ampere1b", "apple-a10", "apple-a11", "apple-a12",
    "apple-a13", "apple-a14", "apple-a15", "apple-a16", "apple-a17", "apple-a7", "apple-m4",
    "carmel", "cortex-a34", "cortex-a35", "cortex-a510", "cortex-a520", "cortex-a520ae",
    "cortex-a53", "cortex-a55", "cortex-a57", "cortex-a65", "cortex-a65ae", "cortex-a710",
    "cortex-a715", "cortex-a72", "cortex-a720", "cortex-a720ae", "cortex-a725", "cortex-a73",
    "cortex-a75", "cortex-a76", "cortex-a76ae", "cortex-a77", "cortex-a78", "cortex-a78ae",
    "cortex-a78c", "cortex-r82", "cortex-r82ae", "cortex-x1", "cortex-x1c", "cortex-x2",
    "cortex-x3", "cortex-x4", "cortex-x925", "exynos-m3", "exynos-m4", "exynos-m5", "falkor",
    "kryo", "neoverse-512tvb", "neoverse-e1", "neoverse-n1", "neoverse-n2", "neoverse-n3",
    "neoverse-v1", "neoverse-v2", "neoverse-v3", "neoverse-v3ae", "oryon-1", "saphira",
    "thunderx", "thunderx2t99", "thunderx3t110", "thunderxt81", "thunderxt83", "thunderxt88",
    "tsv110",
};

/* `llc -mtriple=riscv64-linux-gnu -mcpu=help`, the RV64 CPUs with the F and
 * D extensions: LLVM aborts on an RV32 CPU, and one without D would use the
 * soft-float ABI (and libgcc's float routines), which does not link with
 * Debian's lp64d libraries. */
static const char *const riscv64_cpus[] = {
    "sifive-p450", "sifive-p670",  "sifive-s54", "sifive-s76",      "sifive-u54",
    "sifive-u74",  "sifive-x280", "spacemit-x60", "veyron-v1", "xiangshan-nanhu",
};

/* The M-profile cores of `llc -mtriple=thumbv7em-none-eabihf -mcpu=help`
 * that have a floating-point unit (without one, every float operation
 * becomes a call to libgcc, against the hard-float ABI of the triple). */
static const char *const thumbv7em_cpus[] = {
    "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p", "cortex-m52", "cortex-m55", "cortex-m85",
};

/* LLVM 19's WebAssembly CPUs: every one gets bulk memory (below). */
static const char *const wasm32_cpus[] = {"bleeding-edge", "mvp"};

typedef struct Arch {
  const char *name;             /* the triple's architecture, its first component */
  const char *example;          /* the triple the tests use */
  const char *generic;          /* the CPU of --cpu generic, the default for a cross build */
  const char *generic_features; /* added to generic's */
  const char *always;           /* features added for every CPU */
  const char *means;            /* what --cpu generic runs on */
  const char *const *cpus;
  size_t ncpus;
} Arch;

static const Arch arches[] = {
    {"x86_64", "x86_64-pc-linux-gnu", "x86-64", "", "", "any x86-64", x86_64_cpus,
     ARRAY_LEN(x86_64_cpus)},
    {"aarch64", "aarch64-linux-gnu", "generic", "", "", "any AArch64: ARMv8-A, FP and SIMD",
     aarch64_cpus, ARRAY_LEN(aarch64_cpus)},
    /* RV64GC, the baseline of Debian's riscv64 */
    {"riscv64", "riscv64-linux-gnu", "generic-rv64", "+m,+a,+f,+d,+c", "", "any RV64GC",
     riscv64_cpus, ARRAY_LEN(riscv64_cpus)},
    {"thumbv7em", "thumbv7em-none-eabihf", "cortex-m4", "", "",
     "Cortex-M4F and the M cores after it with an FPU", thumbv7em_cpus,
     ARRAY_LEN(thumbv7em_cpus)},
    /* SIMD128 and non-trapping conversions: every browser since 2021, Node
     * 16.4. Bulk memory (since 2020) for every CPU: memcpy and memset become
     * memory.copy and memory.fill instead of functions the module would
     * have to import. */
    {"wasm32", "wasm32", "generic", "+simd128,+nontrapping-fptoint", "+bulk-memory",
     "any engine with SIMD128", wasm32_cpus, ARRAY_LEN(wasm32_cpus)},
};

/* The architecture of a triple: "x86_64" of "x86_64-pc-linux-gnu". */
static size_t arch_len(const char *triple) { return strcspn(triple, "-"); }

static bool same_arch(const char *a, const char *b) {
  return arch_len(a) == arch_len(b) && !strncmp(a, b, arch_len(a));
}

/* The tested architecture of triple (NULL: the host's), or NULL; *native:
 * whether it is the host's architecture. */
static const Arch *find_arch(const char *triple, bool *native) {
  char *host = LLVMGetDefaultTargetTriple();
  *native = !triple || same_arch(triple, host);
  const char *t = triple ? triple : host;
  const Arch *a = NULL;
  for (size_t i = 0; i < ARRAY_LEN(arches) && !a; i++)
    if (same_arch(t, arches[i].name))
      a = &arches[i];
  LLVMDisposeMessage(host);
  return a;
}

static int untested_arch(const char *triple, Err *e) {
  return errf(e, "rnnc knows the CPUs of x86_64, aarch64, riscv64, thumbv7em and wasm32 only; "
                 "for %s, use generic (LLVM's default CPU)",
              triple ? triple : "this machine");
}

int target_choose(const char *triple, const char *cpu, TargetChoice *c, Err *e) {
  bool native;
  const Arch *a = find_arch(triple, &native);
  memset(c, 0, sizeof *c);
  /* PIC for objects linked into the programs and shared libraries of an
   * OS; bare metal (OS "none") and WebAssembly are linked statically. */
  c->bare = triple && (!strncmp(triple, "wasm", 4) || strstr(triple, "-none"));
  c->reloc = c->bare ? LLVMRelocStatic : LLVMRelocPIC;
  if (!cpu || !strcmp(cpu, "host") || !strcmp(cpu, "native")) {
    if (native) {
      c->host = true;
      return 0;
    }
    if (cpu)
      return errf(e, "'%s' is this machine's CPU, which does not run %s code: use generic or a "
                     "CPU of that architecture",
                  cpu, triple);
    cpu = "generic";
  }
  bool generic = !strcmp(cpu, "generic");
  if (!a)
    return generic ? 0 : untested_arch(triple, e); /* cpu "", no features: LLVM's default */
  if (generic) {
    snprintf(c->cpu, sizeof c->cpu, "%s", a->generic);
    snprintf(c->features, sizeof c->features, "%s%s%s", a->generic_features,
             *a->generic_features && *a->always ? "," : "", a->always);
    snprintf(c->means, sizeof c->means, "%s", a->means);
    return 0;
  }
  for (size_t i = 0; i < a->ncpus; i++)
    if (!strcmp(cpu, a->cpus[i])) {
      snprintf(c->cpu, sizeof c->cpu, "%s", cpu);
      snprintf(c->features, sizeof c->features, "%s", a->always);
      return 0;
    }
  return errf(e, "'%s' is not a CPU of %s that LLVM 19 knows (see rnnc build --target %s --cpu "
                 "help)",
              cpu, a->name, a->example);
}

void target_help(Buf *b) {
  buf_printf(b, "Targets rnnc is tested with (--target), and what --cpu generic means for\n"
                "each; it is the default but for the host's architecture (default: host):\n");
  for (size_t i = 0; i < ARRAY_LEN(arches); i++)
    buf_printf(b, "  %-22s %s\n", arches[i].example, arches[i].means);
  buf_printf(b, "Every architecture this build has a back end for (those not above are\n"
                "untested, and compiled for LLVM's default CPU):\n");
  list_backends(b);
}

int target_cpus(const char *triple, Buf *b, Err *e) {
  bool native;
  const Arch *a = find_arch(triple, &native);
  if (!a)
    return untested_arch(triple, e);
  buf_printf(b, "CPUs for %s (--cpu):\n", triple ? triple : "this machine");
  if (native)
    buf_printf(b, "  host: this machine's CPU and all its features\n");
  buf_printf(b, "  generic: %s (LLVM's %s%s%s)\n", a->means, a->generic,
             *a->generic_features ? " with " : "", a->generic_features);
  size_t col = 0;
  for (size_t i = 0; i < a->ncpus; i++)
    list_item(b, &col, a->cpus[i]);
  buf_printf(b, "\n");
  return 0;
}

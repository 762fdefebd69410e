/* jit.c: the optimization pipelines, and ORC LLJIT for running kernels
 * in-process (for the host: target_machine in targets.c): each kernel is
 * compiled to an object file (or taken from the kernel cache, cache.c,
 * keyed by the graph it is made from, before any codegen) and linked. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include <link.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Object.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

static int llvm_err(Err *e, const char *what, LLVMErrorRef err) {
  char *msg = LLVMGetErrorMessage(err); /* consumes err */
  errf(e, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return -1;
}

/* The kernels' pipeline: what LLVM's O3 (default<O3>, loop unrolling off)
 * does to the IR codegen emits, without its passes that change nothing in
 * it. Each pass of O3 was removed in turn, and kept where the objects of
 * the four kernels (rnn.nn and gru.nn, train and forward) changed for any
 * of znver3, haswell, x86-64 and skylake-avx512: with this pipeline the
 * objects are byte for byte those of O3, and the pipeline costs 29% fewer
 * instructions (callgrind, gru.nn's train kernel; a third of its compile).
 * Gone: the inliner and other interprocedural passes (a kernel is one
 * function), loop-idiom, unswitching, DSE, memcpyopt, loop-load-elim, SCCP,
 * jump threading, the second GVN... and four of O3's nine instcombines.
 * Kept although they change nothing today, as cheap insurance for loops of
 * other shapes: loop-rotate (the vectorizer wants rotated loops) and
 * infer-alignment. AOT objects (obj.c) keep default<O3>: their wrappers
 * need the inliner. */
/* Spelled out: instcombine's textual default also verifies that its one
 * iteration reached a fixpoint (another run, and a fatal error if not). */
#define INSTCOMBINE "instcombine<no-verify-fixpoint>"
static const char kernel_pipeline[] =
    /* codegen's output cleaned up: its allocas, the constant global of
     * the scratch size, CSE */
    "inferattrs,function<eager-inv>(simplifycfg,sroa<modify-cfg>,early-cse),ipsccp,"
    /* O3's function simplification, less what finds nothing to do */
    "function<eager-inv>(" INSTCOMBINE ",early-cse<memssa>,correlated-propagation," INSTCOMBINE
    ",simplifycfg<switch-range-to-icmp>,reassociate,loop-mssa(licm,loop-rotate,licm),"
    "simplifycfg<switch-range-to-icmp>," INSTCOMBINE ",loop(indvars),gvn,loop-mssa(licm),"
    INSTCOMBINE "),"
    "function-attrs,globalopt,"
    /* vectorization and the cleanup after it */
    "function<eager-inv>(loop(loop-rotate,loop-deletion),loop-vectorize,infer-alignment,"
    INSTCOMBINE ",simplifycfg<forward-switch-cond;switch-range-to-icmp;switch-to-lookup;"
    "no-keep-loops;hoist-common-insts;sink-common-insts>,slp-vectorizer," INSTCOMBINE
    ",loop-mssa(licm),instsimplify,tailcallelim,"
    "simplifycfg<switch-range-to-icmp;speculate-unpredictables>),"
    "globaldce";
#undef INSTCOMBINE

static int verify(LLVMModuleRef m, Err *e) {
  char *msg = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    errf(e, "internal error: generated LLVM IR does not verify: %s", msg);
    LLVMDisposeMessage(msg);
    return -1;
  }
  LLVMDisposeMessage(msg);
  return 0;
}

/* No reciprocal or reciprocal square root estimates in m's functions
 * (clang's default unless -mrecip). With fast math, x86's back end
 * otherwise computes 1 / sqrt(x) as rsqrtss and a Newton step, and that
 * estimate's bits differ between CPUs (Intel's and AMD's tables, qemu's
 * exact value): gru.nn's Adam bias correction did, so the same kernels,
 * compiled for the same named CPU, trained to other bits on a Zen 5 and
 * on a Xeon. */
static void no_estimates(LLVMModuleRef m) {
  static const char k[] = "reciprocal-estimates", v[] = "none";
  LLVMAttributeRef a =
      LLVMCreateStringAttribute(LLVMGetModuleContext(m), k, sizeof k - 1, v, sizeof v - 1);
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f))
      LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, a);
}

static int run_passes(LLVMModuleRef m, LLVMTargetMachineRef tm, const char *passes, Err *e) {
  if (verify(m, e))
    return -1;
  no_estimates(m);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, layout);
  LLVMDisposeTargetData(layout);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
  /* No loop unrolling: the vectorizer already interleaves the hot loops,
   * and unrolling every loop of a kernel tripled the machine code and
   * quadrupled compile time (gru.nn: 800 ms -> 230 ms without it) for no
   * measurable speed. */
  LLVMPassBuilderOptionsSetLoopUnrolling(opts, 0);
  LLVMErrorRef err = LLVMRunPasses(m, passes, tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err)
    return llvm_err(e, "optimizing", err);
  return 0;
}

int optimize_module(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *e) {
  return run_passes(m, tm, "default<O3>", e);
}

int optimize_kernel(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *e) {
  return run_passes(m, tm, kernel_pipeline, e);
}

struct Jit {
  LLVMOrcLLJITRef jit;
  char *cpu, *features; /* what the kernels are compiled for */
  Buf id; /* what machine code depends on besides the module (see identity) */
};

/* Appends the GNU build ID of the loaded ELF module (the executable or a
 * shared library) that contains addr, as hex; -1 if it has none. */
typedef struct BuildIdQuery {
  uintptr_t addr;
  Buf *out;
  int rc;
} BuildIdQuery;

static int build_id_of(struct dl_phdr_info *info, size_t size, void *data) {
  BuildIdQuery *q = data;
  bool contains = false;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    if (ph->p_type == PT_LOAD && q->addr >= lo && q->addr - lo < ph->p_memsz)
      contains = true;
  }
  if (!contains)
    return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE)
      continue;
    /* Notes: a header, the name and the description, each padded to the
     * segment's alignment (4, or 8 for segments of 8-aligned notes). */
    size_t align = ph->p_align == 8 ? 8 : 4;
    const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
    while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
      const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)(const void *)p;
      const char *name = p + sizeof *n;
      const unsigned char *desc =
          (const unsigned char *)name + ((n->n_namesz + align - 1) & ~(align - 1));
      p = (const char *)desc + ((n->n_descsz + align - 1) & ~(align - 1));
      if (p > end)
        break;
      if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && !memcmp(name, "GNU", 4) &&
          n->n_descsz) {
        for (size_t k = 0; k < n->n_descsz; k++)
          buf_printf(q->out, "%02x", desc[k]);
        q->rc = 0;
        return 1;
      }
    }
  }
  return 1;
}

static int append_build_id(const void *addr, Buf *out) {
  BuildIdQuery q = {(uintptr_t)addr, out, -1};
  dl_iterate_phdr(build_id_of, &q);
  return q.rc;
}

/* The cache key's first part: everything but the graph and the kernel kind
 * that the machine code depends on. rnnc's code generator and optimization pipeline are in
 * the build ID of the binary that holds this code (a rebuilt rnnc never
 * loads the kernels of another build); LLVM's, when it is a shared library,
 * in that library's. Without a build ID it stays empty, and nothing is
 * cached. */
static void identity(Jit *j) {
  Buf self = {0}, llvm = {0};
  if (append_build_id((const void *)(uintptr_t)jit_new, &self))
    return;
  bool llvm_apart = !append_build_id((const void *)(uintptr_t)LLVMGetVersion, &llvm) &&
                    (llvm.len != self.len || memcmp(llvm.data, self.data, self.len));
  unsigned major, minor, patch;
  LLVMGetVersion(&major, &minor, &patch);
  char *triple = LLVMGetDefaultTargetTriple(); /* kernel_target_machine's */
  buf_printf(&j->id, "rnnc %s, build ID %.*s\nLLVM %u.%u.%u", RNNC_VERSION, (int)self.len,
             self.data, major, minor, patch);
  if (llvm_apart)
    buf_printf(&j->id, ", build ID %.*s", (int)llvm.len, llvm.data);
  buf_printf(&j->id, "\ntriple %s\ncpu %s\nfeatures %s\nPIC, small code model\n\n", triple, j->cpu,
             j->features);
  LLVMDisposeMessage(triple);
  buf_free(&self);
  buf_free(&llvm);
}

/* PIC and the small code model: what LLJIT's linker (JITLink) wants, and
 * what LLJIT itself compiles IR with. One for each compile: a target
 * machine is not to be shared between threads. */
static LLVMTargetMachineRef kernel_target_machine(const Jit *j, Err *e) {
  return target_machine(NULL, j->cpu, j->features, LLVMRelocPIC, e);
}

Simd jit_simd(const Jit *j) {
  if (*j->features) { /* the host's: no target machine needed (~0.8 M instructions) */
    char *triple = LLVMGetDefaultTargetTriple(); /* kernel_target_machine's */
    Simd s = simd_of_features(triple, j->features);
    LLVMDisposeMessage(triple);
    return s;
  }
  Err e;
  LLVMTargetMachineRef tm = kernel_target_machine(j, &e);
  Simd s = tm ? simd_of(tm) : (Simd){.lanes = 4, .regs = 16}; /* SSE2's, which every x86-64 has */
  if (tm)
    LLVMDisposeTargetMachine(tm);
  return s;
}

Jit *jit_new(const char *cpu, Err *e) {
  target_init_native(true);
  Jit *j = xcalloc(1, sizeof *j);
  /* LLJIT only links: rnnc compiles every kernel with its own target
   * machine (kernel_target_machine, for j->cpu and j->features) and adds
   * the object. What LLJIT takes from its target machine builder is the
   * host's triple (how to link) and the data layout (how names are
   * mangled), which no CPU changes; the two target machines it builds
   * from it (the data layout, an IR compiler it never runs) are the
   * generic CPU's, not the host's: a znver5's ~100 features and what they
   * imply cost ~1.5 M instructions of a warm predict's ~12 M. */
  LLVMTargetMachineRef tm = target_machine(NULL, cpu ? cpu : "generic", "", LLVMRelocDefault, e);
  if (!tm) {
    free(j);
    return NULL;
  }
  LLVMOrcJITTargetMachineBuilderRef jtmb =
      LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm); /* takes tm */
  LLVMErrorRef err;
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb); /* takes jtmb */
  err = LLVMOrcCreateLLJIT(&j->jit, builder);                   /* takes builder */
  if (err) {
    llvm_err(e, "creating the JIT", err);
    free(j);
    return NULL;
  }
  /* Resolve what the objects call (powf for Adam's bias correction,
   * memcpy, memset) from the process. */
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (err) {
    llvm_err(e, "JIT symbol search", err);
    jit_free(j);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen); /* takes gen */
  if (cpu) {
    j->cpu = xstrdup(cpu);
    j->features = xstrdup("");
  } else {
    char *name = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
    j->cpu = xstrdup(name);
    j->features = xstrdup(features);
    LLVMDisposeMessage(name);
    LLVMDisposeMessage(features);
  }
  identity(j);
  return j;
}

static int emit_object(LLVMTargetMachineRef tm, LLVMModuleRef m, Buf *obj, Err *e) {
  char *msg = NULL;
  LLVMMemoryBufferRef mb;
  if (target_emit(tm, m, LLVMObjectFile, &mb, &msg)) {
    errf(e, "generating machine code: %s", msg);
    LLVMDisposeMessage(msg);
    return -1;
  }
  buf_put(obj, LLVMGetBufferStart(mb), LLVMGetBufferSize(mb));
  LLVMDisposeMemoryBuffer(mb);
  return 0;
}

static int compile_module(const Jit *j, LLVMModuleRef m, Buf *obj, JitTimes *t, Err *e) {
  double t0 = thread_seconds();
  LLVMTargetMachineRef tm = kernel_target_machine(j, e);
  int rc = tm ? optimize_kernel(m, tm, e) : -1;
  double t1 = thread_seconds();
  if (!rc)
    rc = emit_object(tm, m, obj, e);
  t->optimize += t1 - t0;
  t->machine_code += thread_seconds() - t1;
  if (tm)
    LLVMDisposeTargetMachine(tm);
  return rc;
}

/* ------------------------------------------------------------------ parts */

/* A kernel that codegen cut in parts (CodegenOptions.parts: NAME,
 * NAME.part1, ..., each calling the next) is compiled as one module per
 * part, at once, on threads of their own (the rest of a cold start waits
 * for the training kernel, the largest): module k is the kernel's with
 * every other part's body dropped (made available_externally, which
 * elim-avail-extern turns into a declaration), so its object defines part
 * k and calls part k + 1, which the JIT links. The objects are kept in one
 * Buf: OBJECTS_MAGIC, then each as a little-endian u64 length and its
 * bytes (jit_add_object takes that or one object). */
static const char OBJECTS_MAGIC[8] = "rncobjs1";

/* each_object's callback: 0 to go on. */
typedef int EachObject(void *ctx, const void *obj, size_t len);
enum { OBJECTS_CUT = -2 };

/* Calls fn on each object of a kernel's objects objs[0..len) (one object
 * file, or OBJECTS_MAGIC and length-prefixed ones) in order; returns the
 * first nonzero fn returns, OBJECTS_CUT when the framing ends inside an
 * object, else 0. */
static int each_object(const void *objs, size_t len, EachObject *fn, void *ctx) {
  const unsigned char *p = objs, *end = p + len;
  if (len < sizeof OBJECTS_MAGIC || memcmp(p, OBJECTS_MAGIC, sizeof OBJECTS_MAGIC))
    return fn(ctx, objs, len);
  for (p += sizeof OBJECTS_MAGIC; p < end;) {
    uint64_t n = (size_t)(end - p) >= 8 ? get_le64(p) : UINT64_MAX;
    if (n > (uint64_t)(end - p) - 8)
      return OBJECTS_CUT;
    int rc = fn(ctx, p + 8, (size_t)n);
    if (rc)
      return rc;
    p += 8 + n;
  }
  return 0;
}

/* Part k's number if name is that of part k > 0 of a kernel (NAME.partK),
 * else 0. */
static int part_number(const char *name) {
  const char *p = strstr(name, ".part");
  if (!p)
    return 0;
  char *end;
  long k = strtol(p + 5, &end, 10);
  return *end || k < 1 || k >= MAX_KERNEL_PARTS ? 0 : (int)k;
}

/* How many parts m's kernel has (1: it is not cut). */
static int count_parts(LLVMModuleRef m) {
  int n = 1;
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    size_t len;
    int k = part_number(LLVMGetValueName2(f, &len));
    if (k >= n && !LLVMIsDeclaration(f))
      n = k + 1;
  }
  return n;
}

/* m reduced to part k: every other function with a body and external
 * linkage (the other parts; the kernel itself, part 0, in a later part's
 * module) made a declaration, and the internal functions part k does not
 * call (a batched kernel's GEMM tiles) dropped before they are optimized. */
static int keep_part(LLVMModuleRef m, int k, Err *e) {
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    size_t len;
    if (LLVMIsDeclaration(f) || LLVMGetLinkage(f) != LLVMExternalLinkage ||
        part_number(LLVMGetValueName2(f, &len)) == k)
      continue;
    LLVMSetLinkage(f, LLVMAvailableExternallyLinkage);
  }
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMErrorRef err = LLVMRunPasses(m, "elim-avail-extern,globaldce", NULL, opts);
  LLVMDisposePassBuilderOptions(opts);
  return err ? llvm_err(e, "dropping the other parts", err) : 0;
}

typedef struct PartJob {
  const Jit *j;
  const char *bitcode; /* the whole module's */
  size_t len;
  int part;
  Buf obj;
  JitTimes t;
  Err e;
  int rc;
} PartJob;

/* A context's diagnostics (by default an error exits the process): the
 * first error's kept in the PartJob's Err. */
static void part_diagnostic(LLVMDiagnosticInfoRef di, void *arg) {
  PartJob *p = arg;
  if (LLVMGetDiagInfoSeverity(di) != LLVMDSError || p->e.msg[0])
    return;
  char *msg = LLVMGetDiagInfoDescription(di);
  errf(&p->e, "internal error: a kernel's bitcode does not read back: %s", msg);
  LLVMDisposeMessage(msg);
}

/* Part p->part of the module in p->bitcode, in a context of its own. */
static void *compile_part(void *arg) {
  PartJob *p = arg;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMContextSetDiagnosticHandler(ctx, part_diagnostic, p);
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRange(p->bitcode, p->len, "kernel", 0);
  LLVMModuleRef m = NULL;
  p->rc = -1;
  if (LLVMParseBitcodeInContext2(ctx, mb, &m)) {
    if (!p->e.msg[0])
      errf(&p->e, "internal error: a kernel's bitcode does not read back");
  } else if (!keep_part(m, p->part, &p->e))
    p->rc = compile_module(p->j, m, &p->obj, &p->t, &p->e);
  if (m)
    LLVMDisposeModule(m);
  LLVMDisposeMemoryBuffer(mb);
  LLVMContextDispose(ctx);
  return NULL;
}

static void put_object(Buf *objs, const Buf *obj) {
  buf_put_le64(objs, obj->len);
  buf_put(objs, obj->data, obj->len);
}

int jit_compile(const Jit *j, LLVMModuleRef m, Buf *obj, JitTimes *t, Err *e) {
  int n = count_parts(m);
  if (n == 1) {
    int rc = compile_module(j, m, obj, t, e);
    t->kernels += !rc;
    return rc;
  }
  if (verify(m, e)) /* before the bitcode: a module that does not verify may not read back */
    return -1;
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(m);
  PartJob job[MAX_KERNEL_PARTS] = {0};
  pthread_t th[MAX_KERNEL_PARTS];
  bool started[MAX_KERNEL_PARTS] = {0};
  for (int k = 1; k < n; k++) {
    job[k] = (PartJob){.j = j, .bitcode = LLVMGetBufferStart(bc), .len = LLVMGetBufferSize(bc),
                       .part = k};
    started[k] = !pthread_create(&th[k], NULL, compile_part, &job[k]); /* else after part 0 */
  }
  Buf first = {0};
  int rc = keep_part(m, 0, e) || compile_module(j, m, &first, t, e) ? -1 : 0;
  for (int k = 1; k < n; k++) {
    if (started[k])
      pthread_join(th[k], NULL);
    else
      compile_part(&job[k]);
  }
  LLVMDisposeMemoryBuffer(bc);
  Buf all = {0}; /* appended to obj only whole: every part compiled */
  buf_put(&all, OBJECTS_MAGIC, sizeof OBJECTS_MAGIC);
  put_object(&all, &first);
  for (int k = 1; k < n; k++) {
    t->optimize += job[k].t.optimize;
    t->machine_code += job[k].t.machine_code;
    if (!rc && job[k].rc)
      rc = errf(e, "%s", job[k].e.msg);
    put_object(&all, &job[k].obj);
    buf_free(&job[k].obj);
  }
  if (!rc)
    buf_put(obj, all.data, all.len);
  buf_free(&all);
  buf_free(&first);
  t->kernels += !rc;
  return rc;
}

/* A cache entry's value: the kernel's ABI, ABI_FIELDS little-endian u64
 * (scratch_fixed, scratch_per_t, scratch_per_b, noise, packed, extra),
 * then the object. */
enum { ABI_FIELDS = 6, ABI_BYTES = 8 * ABI_FIELDS };

static void put_abi(Buf *b, const KernelAbi *abi) {
  const uint64_t v[ABI_FIELDS] = {abi->scratch_fixed, abi->scratch_per_t, abi->scratch_per_b,
                                  abi->noise,         abi->packed,        abi->extra};
  for (int i = 0; i < ABI_FIELDS; i++)
    buf_put_le64(b, v[i]);
}

static KernelAbi get_abi(const unsigned char *p) {
  uint64_t v[ABI_FIELDS];
  for (int i = 0; i < ABI_FIELDS; i++)
    v[i] = get_le64(p + 8 * i);
  return (KernelAbi){.scratch_fixed = (size_t)v[0], .scratch_per_t = (size_t)v[1],
                     .scratch_per_b = (size_t)v[2], .noise = (size_t)v[3],
                     .packed = (size_t)v[4], .extra = v[5] != 0};
}

void jit_kernel_key(const Jit *j, KernelKind kind, const Graph *g, Simd simd, Buf *key) {
  buf_put(key, j->id.data, j->id.len);
  buf_printf(key, "kernel %s\nsimd %d lanes, %d registers, %d lanes for products\n",
             kernel_name(kind), simd.lanes, simd.regs, simd.mv_lanes);
  graph_key(g, key);
}

/* Whether the object file obj defines `name` (in one of its sections): 1,
 * 0 when it does not, -1 when it is no object file LLVM reads. */
static int object_defines(const void *obj, size_t len, const char *name) {
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, len, "cached kernel");
  LLVMContextRef ctx = LLVMContextCreate();
  char *msg = NULL;
  LLVMBinaryRef bin = LLVMCreateBinary(mb, ctx, &msg);
  LLVMDisposeMessage(msg);
  int rc = -1;
  if (bin) {
    LLVMBinaryType t = LLVMBinaryGetType(bin);
    bool object = t == LLVMBinaryTypeCOFF || (t >= LLVMBinaryTypeELF32L && t <= LLVMBinaryTypeMachO64B);
    LLVMSymbolIteratorRef s = object ? LLVMObjectFileCopySymbolIterator(bin) : NULL;
    LLVMSectionIteratorRef sec = s ? LLVMObjectFileCopySectionIterator(bin) : NULL;
    rc = sec ? 0 : -1;
    for (; sec && rc == 0 && !LLVMObjectFileIsSymbolIteratorAtEnd(bin, s); LLVMMoveToNextSymbol(s)) {
      const char *sym = LLVMGetSymbolName(s);
      if (sym && !strcmp(sym, name)) {
        LLVMMoveToContainingSection(sec, s); /* an undefined symbol has none */
        rc = !LLVMObjectFileIsSectionIteratorAtEnd(bin, sec);
      }
    }
    if (sec)
      LLVMDisposeSectionIterator(sec);
    if (s)
      LLVMDisposeSymbolIterator(s);
    LLVMDisposeBinary(bin);
  }
  LLVMDisposeMemoryBuffer(mb);
  LLVMContextDispose(ctx);
  return rc;
}

typedef struct Defines {
  const char *name;
  bool found;
} Defines;

static int object_defines_fn(void *ctx, const void *obj, size_t len) {
  Defines *d = ctx;
  int rc = object_defines(obj, len, d->name);
  d->found |= rc == 1;
  return rc < 0 ? -1 : 0;
}

/* Whether obj, a kernel's objects from the cache (each_object's), is whole
 * object files of which one defines `name`. The cache's checks say who
 * wrote an entry and that it is whole, not that the JIT can link it: an
 * entry that passes them with anything else in it (written by hand, or by
 * a tool gone wrong) is a miss, compiled again and replaced, where adding
 * it would fail, or the kernel's lookup after it. */
static bool defines_kernel(const void *obj, size_t len, const char *name) {
  Defines d = {name, false};
  return !each_object(obj, len, object_defines_fn, &d) && d.found;
}

int jit_kernel_begin(const Jit *j, KernelKind kind, const Graph *g, Simd simd, Cache *c, Buf *obj,
                     KernelAbi *abi, JitPending *p, JitTimes *t, Err *e) {
  double t0 = thread_seconds();
  *p = (JitPending){0};
  if (c && j->id.len) {
    Buf val = {0};
    jit_kernel_key(j, kind, g, simd, &p->key);
    if (!cache_load(c, p->key.data, p->key.len, &val) && val.len > ABI_BYTES &&
        defines_kernel(val.data + ABI_BYTES, val.len - ABI_BYTES, kernel_name(kind))) {
      *abi = get_abi((const unsigned char *)val.data);
      buf_put(obj, val.data + ABI_BYTES, val.len - ABI_BYTES);
      buf_free(&val);
      buf_free(&p->key);
      t->cache += thread_seconds() - t0;
      t->kernels++;
      t->cached++;
      return 0;
    }
    buf_free(&val); /* a miss, or a value without an ABI and the kernel: rebuilt and stored */
  }
  double t1 = thread_seconds();
  t->cache += t1 - t0;
  p->ctx = LLVMContextCreate();
  p->mod = LLVMModuleCreateWithNameInContext(kernel_name(kind), p->ctx);
  *abi = (KernelAbi){0}; /* what codegen leaves unset is stored as 0 */
  int rc = kernel_emit_simd(kind, g, p->mod, simd, abi, e);
  t->codegen += thread_seconds() - t1;
  if (rc)
    jit_kernel_drop(p);
  return rc;
}

int jit_kernel_finish(const Jit *j, Cache *c, JitPending *p, Buf *obj, const KernelAbi *abi,
                      JitTimes *t, Err *e) {
  if (!p->mod)
    return 0;
  size_t start = obj->len;
  int rc = jit_compile(j, p->mod, obj, t, e);
  if (!rc && p->key.len) {
    double t2 = thread_seconds();
    Buf val = {0};
    put_abi(&val, abi);
    buf_put(&val, obj->data + start, obj->len - start);
    cache_store(c, p->key.data, p->key.len, val.data, val.len);
    buf_free(&val);
    t->cache += thread_seconds() - t2;
  }
  jit_kernel_drop(p);
  return rc;
}

void jit_kernel_drop(JitPending *p) {
  if (p->mod)
    LLVMDisposeModule(p->mod);
  if (p->ctx)
    LLVMContextDispose(p->ctx);
  buf_free(&p->key);
  *p = (JitPending){0};
}

int jit_kernel(const Jit *j, KernelKind kind, const Graph *g, Simd simd, Cache *c, Buf *obj,
               KernelAbi *abi, JitTimes *t, Err *e) {
  JitPending p;
  int rc = jit_kernel_begin(j, kind, g, simd, c, obj, abi, &p, t, e);
  return rc ? rc : jit_kernel_finish(j, c, &p, obj, abi, t, e);
}

static int add_one_object(Jit *j, const void *obj, size_t len, Err *e) {
  /* Copied: the JIT keeps the buffer, and links it at the first lookup. */
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, len, "kernel");
  LLVMErrorRef err =
      LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), mb); /* takes mb */
  return err ? llvm_err(e, "adding a kernel to the JIT", err) : 0;
}

typedef struct Adding {
  Jit *j;
  Err *e;
} Adding;

static int add_one_object_fn(void *ctx, const void *obj, size_t len) {
  Adding *a = ctx;
  return add_one_object(a->j, obj, len, a->e);
}

int jit_add_object(Jit *j, const void *obj, size_t len, Err *e) {
  int rc = each_object(obj, len, add_one_object_fn, &(Adding){j, e});
  return rc == OBJECTS_CUT ? errf(e, "internal error: a kernel's objects are cut short") : rc;
}

void *jit_lookup(Jit *j, const char *name, Err *e) {
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef err = LLVMOrcLLJITLookup(j->jit, &addr, name);
  if (err) {
    llvm_err(e, "JIT lookup", err);
    return NULL;
  }
  return (void *)(uintptr_t)addr;
}

void jit_free(Jit *j) {
  if (!j)
    return;
  if (j->jit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
    if (err)
      LLVMConsumeError(err);
  }
  free(j->cpu);
  free(j->features);
  buf_free(&j->id);
  free(j);
}

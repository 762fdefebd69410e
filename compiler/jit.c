/* jit.c: the optimization pipeline, and ORC LLJIT for running kernels
 * in-process (for the host: target_machine in targets.c). */
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

#include "rnnc.h"

static int llvm_err(Err *e, const char *what, LLVMErrorRef err) {
  char *msg = LLVMGetErrorMessage(err); /* consumes err */
  errf(e, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return -1;
}

int optimize_module(LLVMModuleRef m, LLVMTargetMachineRef tm, Err *e) {
  char *msg = NULL;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    errf(e, "internal error: generated LLVM IR does not verify: %s", msg);
    LLVMDisposeMessage(msg);
    return -1;
  }
  LLVMDisposeMessage(msg);
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
  LLVMErrorRef err = LLVMRunPasses(m, "default<O3>", tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err)
    return llvm_err(e, "optimizing", err);
  return 0;
}

struct Jit {
  LLVMOrcLLJITRef jit;
  LLVMOrcThreadSafeContextRef tsc;
  LLVMTargetMachineRef tm; /* for the optimization pipeline */
};

Jit *jit_new(const char *cpu, Err *e) {
  target_init_native();
  Jit *j = xcalloc(1, sizeof *j);
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMErrorRef err = NULL;
  if (cpu) {
    /* A named CPU: the code is the same on every machine that runs its
     * instructions. The builder takes its own target machine. */
    LLVMTargetMachineRef tm = target_machine(NULL, cpu, "", LLVMRelocDefault, e);
    if (!tm) {
      free(j);
      return NULL;
    }
    jtmb = LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm); /* takes tm */
  } else {
    err = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
  }
  if (err) {
    llvm_err(e, "detecting the host", err);
    free(j);
    return NULL;
  }
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb); /* takes jtmb */
  err = LLVMOrcCreateLLJIT(&j->jit, builder);                   /* takes builder */
  if (err) {
    llvm_err(e, "creating the JIT", err);
    free(j);
    return NULL;
  }
  /* Resolve libm's functions (powf for Adam's bias correction) from the
   * process. */
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
  if (err) {
    llvm_err(e, "JIT symbol search", err);
    jit_free(j);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen); /* takes gen */
  j->tsc = LLVMOrcCreateNewThreadSafeContext();
  j->tm = target_machine(NULL, cpu, cpu ? "" : NULL, LLVMRelocDefault, e);
  if (!j->tm) {
    jit_free(j);
    return NULL;
  }
  return j;
}

LLVMContextRef jit_context(Jit *j) { return LLVMOrcThreadSafeContextGetContext(j->tsc); }
LLVMTargetMachineRef jit_target_machine(Jit *j) { return j->tm; }

int jit_add_module(Jit *j, LLVMModuleRef m, Err *e) {
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, j->tsc); /* takes m */
  /* Takes tsm, on failure too (LLJIT.h): never dispose of it here. */
  LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm);
  if (err)
    return llvm_err(e, "adding a module to the JIT", err);
  return 0;
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
  if (j->tsc)
    LLVMOrcDisposeThreadSafeContext(j->tsc);
  if (j->tm)
    LLVMDisposeTargetMachine(j->tm);
  free(j);
}

/* heap.c: the rnnc executable's heap starts on huge pages.
 *
 * A short command (a warm `rnnc predict`) fills ~160 pages of malloc's
 * heap, most of them in LLVM's static constructors (its command-line
 * options registering themselves), each a page fault: 10-15 us each on a
 * VM, where a 2 MB huge page costs about as much as ten. Before any
 * constructor of the executable runs (.preinit_array), this
 *
 * - moves the break to a 2 MB boundary, where malloc's heap then starts;
 * - frees a 4 MB block that malloc took with mmap, which raises malloc's
 *   mmap threshold to 4 MB (glibc's own dynamic threshold: what it does
 *   after any such free) and its trim threshold to 8 MB;
 * - takes and frees a block just under 4 MB, now from the heap, which
 *   stays 4 MB long (below the trim threshold);
 * - asks for huge pages there: MADV_HUGEPAGE (the second 2 MB are a huge
 *   page at their first touch) and MADV_COLLAPSE (the first 2 MB, whose
 *   first page malloc has touched already; Linux 6.1 and later).
 *
 * Everything is advice: without transparent huge pages, or with another
 * malloc (ASan's, which does not use the break), the heap works as before.
 * The warm predict: 478 -> 322 page faults (docs/benchmarks.md,
 * "Start-up"). Allocations of 128 KB to 4 MB then come from the heap from
 * the start rather than after glibc raises its threshold; results are
 * bit for bit the same. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif

static void heap_on_huge_pages(int argc, char **argv, char **envp) {
  (void)argc;
  (void)argv;
  (void)envp;
  const uintptr_t huge = (uintptr_t)2 << 20, block = (uintptr_t)4 << 20;
  uintptr_t cur = (uintptr_t)sbrk(0);
  uintptr_t aligned = (cur + huge - 1) & ~(huge - 1);
  if (cur == (uintptr_t)-1 || sbrk((intptr_t)(aligned - cur)) == (void *)-1)
    return;
  void *volatile p = malloc(block); /* volatile: the compiler keeps the pair */
  free(p);
  p = malloc(block - ((uintptr_t)64 << 10));
  free(p);
  uintptr_t end = (uintptr_t)sbrk(0);
  if (end == (uintptr_t)-1 || end < aligned + huge)
    return;
  (void)madvise((void *)aligned, (end - aligned) & ~(huge - 1), MADV_HUGEPAGE);
  (void)madvise((void *)aligned, huge, MADV_COLLAPSE);
}

__attribute__((section(".preinit_array"), used)) static void (*const heap_preinit)(int, char **,
                                                                                 char **) =
    heap_on_huge_pages;

/* startup.c: reset for a Cortex-M4F under QEMU (mps2-an386.ld), with
 * newlib's semihosting (rdimon) for standard output and the exit status.
 * The vector table holds the initial stack pointer and the reset handler;
 * the handler turns the FPU on (code compiled for the hard-float ABI
 * faults without it), copies .data, clears .bss, opens the semihosting
 * streams, runs main and exits with its status through semihosting. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern int main(void);
extern void initialise_monitor_handles(void);

extern uint32_t __stack_top, __data_start, __data_end, __data_load, __bss_start__, __bss_end__;

void reset_handler(void);
void fault_handler(void);

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&__stack_top, /* initial SP */
    reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
};

void reset_handler(void) {
  /* CPACR: full access to coprocessors 10 and 11, the FPU */
  *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  memcpy(&__data_start, &__data_load, (size_t)((char *)&__data_end - (char *)&__data_start));
  memset(&__bss_start__, 0, (size_t)((char *)&__bss_end__ - (char *)&__bss_start__));
  initialise_monitor_handles();
  exit(main());
}

/* exit() runs the C library's destructors, then _fini, which a C
 * program's startup files would define: there is nothing to finish. */
void _fini(void);
void _fini(void) {}

/* A fault (a stack overflow into nothing, an FPU instruction with the FPU
 * off): exit with status 3 instead of spinning. */
void fault_handler(void) { _Exit(3); }

/* aot_m4.c: counts the instructions an object of `rnnc build --target
 * thumbv7em-none-eabihf` executes per name, on QEMU's Cortex-M4F board.
 *
 *   arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2 \
 *       --specs=rdimon.specs -nostartfiles -Wl,-z,noexecstack \
 *       -T examples/cortex-m/mps2-an386.ld -I DIR -DAOT_HEADER='"NAME.h"' -DAOT_PREFIX=NAME \
 *       examples/cortex-m/startup.c bench/aot_m4.c DIR/NAME.o -o aot_m4.elf
 *   qemu-system-arm -M mps2-an386 -cpu cortex-m4 -icount shift=0 -nographic -monitor none \
 *       -serial none -semihosting-config enable=on,target=native -kernel aot_m4.elf
 *
 * QEMU does not model the M4's timing, but with -icount shift=0 every
 * instruction takes 1 ns of virtual time, and SysTick (on the board's
 * 25 MHz clock) counts that time: the program calibrates instructions per
 * tick on a loop of known length, then times NAME_forward on each name
 * below and prints one JSON line: instructions per name and per character
 * (the mean over the names, whose mean length is that of the test split's
 * names, about 7). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include AOT_HEADER

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FORWARD CAT(AOT_PREFIX, _forward)
#define VOCAB CAT(AOT_PREFIX, _VOCAB)
#define NCLASS CAT(AOT_PREFIX, _NUM_CLASSES)
#define STR2(a) #a
#define STR(a) STR2(a)

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

/* SysTick counts down from 2^24 - 1 on the processor clock; no interrupt. */
static void systick_start(void) {
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 5;
}

static uint32_t ticks_since(uint32_t start) { return (start - SYST_CVR) & 0xFFFFFF; }

/* n iterations of a two-instruction loop. */
static void spin(uint32_t n) {
  __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

int main(void) {
  static const char *const names[] = {"Nguyen", "Kowalski", "OBrien",   "Nakamura", "Schmidt",
                                      "Abbas",  "Rossi",    "Dvorak",   "Gonzalez", "Yoon",
                                      "Zhang",  "Ferreira", "Kuznetsov", "MacLeod", "Papadopoulos"};
  enum { N = sizeof names / sizeof names[0] };
  systick_start();
  uint32_t t0 = SYST_CVR;
  spin(1000000);
  double per_tick = 2e6 / ticks_since(t0);
  double total = 0;
  int chars = 0;
  for (int i = 0; i < N; i++) {
    int32_t c[64];
    int len = (int)strlen(names[i]);
    for (int k = 0; k < len; k++)
      c[k] = (int32_t)(strchr(VOCAB, names[i][k]) - VOCAB);
    float logits[NCLASS];
    t0 = SYST_CVR;
    if (FORWARD(c, len, logits))
      return 1;
    total += ticks_since(t0) * per_tick;
    chars += len;
  }
  printf("{\"event\":\"aot_m4\",\"prefix\":\"%s\",\"names\":%d,\"mean_len\":%.2f,"
         "\"instructions_per_name\":%.0f,\"instructions_per_char\":%.0f,"
         "\"instructions_per_tick\":%.1f}\n",
         STR(AOT_PREFIX), N, (double)chars / N, total / N,
         total / chars, per_tick);
  return 0;
}

// SPDX-License-Identifier: MIT
// A USDT probe with a semaphore: the program prepares the probe only while a tracer counts
// itself in bpftime_test_gated_semaphore (in the .probes section, as <sys/sdt.h> expects).
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

__extension__ unsigned short bpftime_test_gated_semaphore __attribute__((unused))
__attribute__((section(".probes")));

unsigned short usdt_gated_semaphore(void) {
    return *(volatile unsigned short *)&bpftime_test_gated_semaphore;
}

// Fires the probe when a tracer is attached; returns 1 then, 0 otherwise.
__attribute__((noinline)) int usdt_gated(int value) {
    if (usdt_gated_semaphore() != 0) {
        STAP_PROBE1(bpftime_test, gated, value * 3);
        return 1;
    }
    return 0;
}

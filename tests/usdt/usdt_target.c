// SPDX-License-Identifier: MIT
// A program with USDT probes (<sys/sdt.h>) of 0, 2 and 6 arguments of mixed sizes and signs in
// registers, in memory and as constants, and one probe guarded by a semaphore
// (usdt_gated.c). It fires each probe ROUNDS times and prints what it passed, so a test can
// compare what the probes' programs saw with what the program says.
//   usdt_target ROUNDS          fire every probe ROUNDS times
//   usdt_target --semaphore     print "semaphore on" once the gated probe's semaphore is
//                               counted up, then "semaphore off" once it is back to 0 (10 s
//                               limit each; exit 1 on a timeout)
#include <sys/sdt.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int usdt_gated(int value);
unsigned short usdt_gated_semaphore(void);

struct record {
    int16_t s16;
    uint64_t u64;
};

// Values read through volatile objects, so that the compiler cannot fold them into constants.
static volatile int8_t v_s8 = -7;
static volatile uint8_t v_u8 = 250;
static volatile int32_t v_s32 = -100000;
static volatile int64_t v_s64 = -5000000000LL;
static volatile int32_t v_two = -42;
static volatile uint64_t v_big = 0xfedcba9876543210ULL;
// Written between the probes: each probe site is a one-byte nop, and sites closer together
// than the five bytes a hook replaces could not each have one.
static volatile int apart;

__attribute__((noinline)) static void fire(const struct record *r) {
    int8_t s8 = v_s8;
    uint8_t u8 = v_u8;
    int32_t s32 = v_s32;
    int64_t s64 = v_s64;
    int32_t two_a = v_two;
    uint64_t two_b = v_big;
    STAP_PROBE(bpftime_test, zero);
    apart = 1;
    STAP_PROBE2(bpftime_test, two, two_a, two_b);
    apart = 2;
    // r->s16 and r->u64 stay in memory, 65000 is a constant, the rest are registers.
    STAP_PROBE6(bpftime_test, six, s8, u8, r->s16, (uint16_t)65000, s32 + (int32_t)r->u64 * 0, s64);
    apart = 3; // nor may a site sit just before the function's return
}

static int wait_semaphore(int on) {
    for (int i = 0; i < 2000; i++) {
        if ((usdt_gated_semaphore() != 0) == on) {
            printf("semaphore %s\n", on ? "on" : "off");
            fflush(stdout);
            return 0;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("semaphore still %s after 10 s\n", on ? "off" : "on");
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--semaphore") == 0) {
        return wait_semaphore(1) || wait_semaphore(0);
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s ROUNDS | --semaphore\n", argv[0]);
        return 2;
    }
    long rounds = strtol(argv[1], NULL, 10);
    struct record rec = {-1234, 77};
    long gated = 0;
    for (long i = 0; i < rounds; i++) {
        fire(&rec);
        gated += usdt_gated((int)i);
    }
    printf("fired %ld: two %d %llu six %d %u %d %u %d %lld\n", rounds, (int)v_two,
           (unsigned long long)v_big, (int)v_s8, (unsigned)v_u8, (int)rec.s16, 65000u, (int)v_s32,
           (long long)v_s64);
    printf("gated %ld\n", gated);
    return 0;
}

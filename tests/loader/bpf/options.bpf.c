// SPDX-License-Identifier: MIT
// A tool's options as libbpf-tools declare them: `const volatile` globals in .rodata that the
// loader sets before load (a skeleton's rodata pointer, `bpftime load --set`), plus .data and
// .bss variables. Each program returns one of them.
#include <linux/bpf.h>
#include <stdbool.h>

#include <bpf/bpf_helpers.h>

enum mode { MODE_COUNT = 1, MODE_TIME = 2 };
struct range {
    int low, high;
};

const volatile int targ_pid = 0;
const volatile unsigned long long min_us = 10;
const volatile bool verbose = false;
const volatile char comm[16] = "none";
const volatile unsigned int levels[4] = {1, 2, 3, 4};
const volatile signed char offset = -1;
const volatile enum mode mode = MODE_COUNT;
const volatile struct range range = {0, 100};
int initial = 5;
int counter;

SEC("test")
int get_pid(void *ctx __attribute__((unused))) {
    return targ_pid;
}

SEC("test")
int get_min_us(void *ctx __attribute__((unused))) {
    return (int)(min_us >> 32) * 1000 + (int)(min_us & 0xffffffff);
}

SEC("test")
int get_verbose(void *ctx __attribute__((unused))) {
    return verbose;
}

// The string's length and its first byte: 1000 * length + comm[0].
SEC("test")
int get_comm(void *ctx __attribute__((unused))) {
    int n = 0;
    for (int i = 0; i < 16; i++) {
        if (comm[i] == 0) {
            break;
        }
        n++;
    }
    return n * 1000 + comm[0];
}

SEC("test")
int get_levels(void *ctx __attribute__((unused))) {
    return levels[0] * 1000 + levels[2];
}

SEC("test")
int get_offset(void *ctx __attribute__((unused))) {
    return offset;
}

SEC("test")
int get_mode(void *ctx __attribute__((unused))) {
    return mode;
}

SEC("test")
int get_data(void *ctx __attribute__((unused))) {
    return initial * 1000 + counter + range.low;
}

char LICENSE[] SEC("license") = "GPL";

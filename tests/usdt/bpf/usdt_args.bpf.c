// SPDX-License-Identifier: MIT
// Records what the USDT probes of usdt_target pass, read with libbpf's usdt.bpf.h, so the test
// compares it with what the program printed; the same object runs under the kernel's uprobes.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <stdbool.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

/// [0] zero: calls, [1] its bpf_usdt_arg_cnt;
/// [2] two: calls, [3] arg count, [4] [5] its arguments;
/// [6] six: calls, [7] arg count, [8]-[13] its arguments, [14] bpf_usdt_cookie,
/// [15] what bpf_usdt_arg gives for argument 7 (-ENOENT);
/// [16] gated: calls, [17] its argument the last time.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 18);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");

static void put(__u32 index, __u64 value) {
    bpf_map_update_elem(&seen, &index, &value, BPF_ANY);
}

static void count(__u32 index) {
    __u64 *n = bpf_map_lookup_elem(&seen, &index);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
}

SEC("usdt")
int usdt_zero(struct pt_regs *ctx) {
    count(0);
    put(1, bpf_usdt_arg_cnt(ctx));
    return 0;
}

SEC("usdt")
int BPF_USDT(usdt_two, int a, unsigned long b) {
    count(2);
    put(3, bpf_usdt_arg_cnt(ctx));
    put(4, (__u64)(long)a);
    put(5, b);
    return 0;
}

SEC("usdt")
int usdt_six(struct pt_regs *ctx) {
    long v = 0;
    count(6);
    put(7, bpf_usdt_arg_cnt(ctx));
    for (int i = 0; i < 6; i++) {
        bpf_usdt_arg(ctx, i, &v);
        put(8 + i, v);
    }
    put(14, bpf_usdt_cookie(ctx));
    put(15, bpf_usdt_arg(ctx, 6, &v));
    return 0;
}

// Found by name in $PATH, as libbpf finds a binary named without a '/'.
SEC("usdt/usdt_target:bpftime_test:gated")
int BPF_USDT(usdt_gated, int value) {
    count(16);
    put(17, (__u64)(long)value);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

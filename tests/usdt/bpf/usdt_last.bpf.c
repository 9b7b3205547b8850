// SPDX-License-Identifier: MIT
// Counts usdt_near_ret's probe bpftime_test:last (a site right before a `ret`) and sums its
// two arguments, read with libbpf's usdt.bpf.h; the same object runs under the kernel's
// uprobes.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <stdbool.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

/// [0] calls, [1] the sum of the first argument (3 * a, signed), [2] the sum of the second,
/// [3] bpf_usdt_arg_cnt the last time.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} last_seen SEC(".maps");

static void add(__u32 index, __u64 value) {
    __u64 *v = bpf_map_lookup_elem(&last_seen, &index);
    if (v) {
        __sync_fetch_and_add(v, value);
    }
}

SEC("usdt")
int usdt_last(struct pt_regs *ctx) {
    long a = 0, b = 0;
    bpf_usdt_arg(ctx, 0, &a);
    bpf_usdt_arg(ctx, 1, &b);
    add(0, 1);
    add(1, (__u64)a);
    add(2, (__u64)b);
    __u32 three = 3;
    __u64 n = (__u64)bpf_usdt_arg_cnt(ctx);
    bpf_map_update_elem(&last_seen, &three, &n, BPF_ANY);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

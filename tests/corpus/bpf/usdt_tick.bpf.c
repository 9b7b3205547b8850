// SPDX-License-Identifier: MIT
// A USDT probe read with libbpf's usdt.bpf.h: counts corpus:tick and sums its two arguments.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <stdbool.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

/// [0] calls, [1] the sum of the first argument, [2] of the second.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} ticks SEC(".maps");

static void add(__u32 index, __u64 v) {
    __u64 *n = bpf_map_lookup_elem(&ticks, &index);
    if (n) {
        __sync_fetch_and_add(n, v);
    }
}

SEC("usdt/corpus_target:corpus:tick")
int BPF_USDT(on_tick, long i, long tenfold) {
    add(0, 1);
    add(1, i);
    add(2, tenfold);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

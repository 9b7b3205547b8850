// SPDX-License-Identifier: MIT
// The counting programs of the uprobe benchmark: the least a probe does (one array counter on
// entry; a counter and a sum of returned values on return), so the benchmark measures what a
// probe costs rather than what a program does.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// [0]: calls seen on entry; [1]: returns seen; [2]: the sum of the returned values.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} totals SEC(".maps");

SEC("uprobe")
int count_entry(struct pt_regs *ctx) {
    __u32 key = 0;
    __u64 *n = bpf_map_lookup_elem(&totals, &key);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
    return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(count_return, long ret) {
    __u32 key = 1;
    __u64 *n = bpf_map_lookup_elem(&totals, &key);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
    key = 2;
    __u64 *sum = bpf_map_lookup_elem(&totals, &key);
    if (sum) {
        __sync_fetch_and_add(sum, (__u64)ret);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

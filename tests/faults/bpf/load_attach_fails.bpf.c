// SPDX-License-Identifier: MIT
// An object loaded with `bpftime load --attach` whose first program attaches and whose second
// names a function libc does not have (tests/faults/load_rollback_test.sh): the load fails after
// the first link was made, and everything it made is destroyed.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} calls SEC(".maps");

static __always_inline int count(void) {
    __u32 key = 0;
    __u64 *v = bpf_map_lookup_elem(&calls, &key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    }
    return 0;
}

SEC("uprobe//lib/x86_64-linux-gnu/libc.so.6:malloc")
int BPF_KPROBE(counts_malloc) {
    return count();
}

SEC("uprobe//lib/x86_64-linux-gnu/libc.so.6:bpftime_no_such_function")
int BPF_KPROBE(counts_nothing) {
    return count();
}

// SPDX-License-Identifier: MIT
// A tool with `const volatile` options, as the libbpf tools take their flags: counts and sums
// the values of corpus_work calls of one kind (targ_kind, -1 for all), odd values only when
// odd_only is set, plus a scale factor.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <stdbool.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile int targ_kind = -1;
const volatile bool odd_only = false;
const volatile __u32 scale = 1;

/// [0] calls counted, [1] the sum of their values times scale.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} work SEC(".maps");

static void add(__u32 index, __u64 v) {
    __u64 *n = bpf_map_lookup_elem(&work, &index);
    if (n) {
        __sync_fetch_and_add(n, v);
    }
}

SEC("uprobe/corpus_target:corpus_work")
int BPF_KPROBE(on_work, int kind, int value) {
    if (targ_kind >= 0 && kind != targ_kind) {
        return 0;
    }
    if (odd_only && value % 2 == 0) {
        return 0;
    }
    add(0, 1);
    add(1, (__u64)value * scale);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

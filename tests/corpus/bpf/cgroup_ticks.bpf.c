// SPDX-License-Identifier: MIT
// A cgroup-filtered counter, as the libbpf tools' -c/--cgroup: counts corpus_tick calls of
// processes in the cgroup of slot 0 of `filter` (or below it) apart from all calls.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
    __uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} filter SEC(".maps");

/// [0] calls from inside the cgroup, [1] every call.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} ticks SEC(".maps");

static void add(__u32 index) {
    __u64 *n = bpf_map_lookup_elem(&ticks, &index);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
}

SEC("uprobe/corpus_target:corpus_tick")
int BPF_KPROBE(count_tick) {
    add(1);
    if (bpf_current_task_under_cgroup(&filter, 0) == 1) {
        add(0);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

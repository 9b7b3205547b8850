// SPDX-License-Identifier: MIT
// Counts a probed function's calls, and separately those made by processes in the cgroup (or
// below it) that slot 0 of `filter` holds: the filter the libbpf tools apply with -c/--cgroup.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// Slot 0: the cgroup to count, set from user space with a cgroup directory's fd.
struct {
    __uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} filter SEC(".maps");

/// [0]: calls from inside the cgroup; [1]: every call; [2]: calls where the filter failed
/// (its slot empty).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

static void add(__u32 index) {
    __u64 *n = bpf_map_lookup_elem(&counts, &index);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
}

SEC("uprobe")
int BPF_KPROBE(count_in_cgroup) {
    add(1);
    long in = bpf_current_task_under_cgroup(&filter, 0);
    if (in < 0) {
        add(2);
    } else if (in == 1) {
        add(0);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

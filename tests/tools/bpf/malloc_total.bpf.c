// SPDX-License-Identifier: MIT
// Counts malloc() calls per process: every call, and the calls of the tests' marker size.
// Attached with the command line to libc.so.6:malloc, on the kernel or through the agent.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define MARKER_SIZE 12345

/// pid -> calls of any size.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u64);
} all_calls SEC(".maps");

/// pid -> calls of MARKER_SIZE bytes.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u64);
} marker_calls SEC(".maps");

static void count(void *map, __u32 pid) {
    __u64 one = 1;
    __u64 *n = bpf_map_lookup_elem(map, &pid);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else if (bpf_map_update_elem(map, &pid, &one, BPF_NOEXIST) != 0) {
        n = bpf_map_lookup_elem(map, &pid);
        if (n) {
            __sync_fetch_and_add(n, 1);
        }
    }
}

SEC("uprobe")
int BPF_KPROBE(count_malloc, unsigned long size) {
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    count(&all_calls, pid);
    if (size == MARKER_SIZE) {
        count(&marker_calls, pid);
    }
    return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

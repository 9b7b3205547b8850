// SPDX-License-Identifier: MIT
// A per-process malloc counter in the shape of memleak's and malloccount's: a uprobe on libc's
// malloc counts the calls of processes named targ_comm whose size is at least min_size, by pid.
// Both filters are `const volatile` options, set with `bpftime load --set` before the load.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "comm_filter.h"

const volatile __u64 min_size = 0;

/// pid -> calls.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u64);
} calls SEC(".maps");

SEC("uprobe/libc.so.6:malloc")
int BPF_KPROBE(count_malloc, __u64 size) {
    if (size < min_size || !comm_matches()) {
        return 0;
    }
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    __u64 one = 1, *n = bpf_map_lookup_elem(&calls, &pid);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else {
        bpf_map_update_elem(&calls, &pid, &one, BPF_NOEXIST);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
/*
 * funclat: a log2 histogram of a user-space function's latency (entry to return), as
 * bcc's funclatency. The loader attaches both programs to the function it is given.
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "funclat.h"

/* Set by the loader before load. */
const volatile __u32 targ_pid = 0;
const volatile __u32 units = FUNCLAT_NSEC;

/* Entry times by thread id. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 10240);
    __type(key, __u32);
    __type(value, __u64);
} starts SEC(".maps");

/* The histogram, in .bss: the loader reads it through the skeleton. */
__u32 hist[FUNCLAT_SLOTS] = {};

/* funclatency's slots: slot i holds [2^i, 2^(i+1)), slot 0 also holds 0. */
static __always_inline __u32 log2_slot(__u64 v) {
    __u32 slot = 0;

    /* Bounded: at most 63 halvings. */
    for (int i = 0; i < 63 && v > 1; i++) {
        v >>= 1;
        slot++;
    }
    return slot;
}

SEC("uprobe")
int BPF_KPROBE(func_entry) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    __u64 now;

    if (targ_pid && (id >> 32) != targ_pid)
        return 0;
    now = bpf_ktime_get_ns();
    bpf_map_update_elem(&starts, &tid, &now, BPF_ANY);
    return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(func_exit) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    __u64 *start, delta;
    __u32 slot;

    start = bpf_map_lookup_elem(&starts, &tid);
    if (!start)
        return 0;
    delta = bpf_ktime_get_ns() - *start;
    bpf_map_delete_elem(&starts, &tid);
    if (units == FUNCLAT_USEC)
        delta /= 1000;
    else if (units == FUNCLAT_MSEC)
        delta /= 1000000;
    slot = log2_slot(delta);
    if (slot >= FUNCLAT_SLOTS)
        slot = FUNCLAT_SLOTS - 1;
    __sync_fetch_and_add(&hist[slot], 1);
    return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// SPDX-License-Identifier: MIT
/*
 * rbevents: one ring-buffer record per call of a user-space function (pid, tid, its first
 * three arguments, comm), which the loader prints as they come.
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "rbevents.h"

/* Set by the loader before load (-p PID); 0 takes every process. */
const volatile __u32 targ_pid = 0;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(call_event, long a, long b, long c) {
    __u64 id = bpf_get_current_pid_tgid();
    struct rb_event *e;

    if (targ_pid && (id >> 32) != targ_pid)
        return 0;
    e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    e->pid = id >> 32;
    e->tid = (__u32)id;
    e->args[0] = a;
    e->args[1] = b;
    e->args[2] = c;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    bpf_ringbuf_submit(e, 0);
    return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

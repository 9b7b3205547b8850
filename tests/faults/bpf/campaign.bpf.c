// SPDX-License-Identifier: MIT
// The writers of the fault campaign (tests/faults/campaign.sh): every probed call counts once
// under its process's id, so each process that survives a round can be checked exactly; the
// ring-buffer producer also writes a record per call.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// Probed calls per process id.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u64);
} per_pid SEC(".maps");

/// One record per producer call: the producer's process id and its count so far.
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 65536);
} events SEC(".maps");

/// A slot per command-line update loop: the last value each wrote.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u64);
} updates SEC(".maps");

struct event {
    __u32 pid;
    __u32 pad;
    __u64 seq;
};

static __u64 count_call(__u32 pid) {
    __u64 one = 1;
    __u64 *n = bpf_map_lookup_elem(&per_pid, &pid);
    if (n) {
        return __sync_fetch_and_add(n, 1) + 1;
    }
    // One process inserts its own key; a thread of it may have inserted it first.
    if (bpf_map_update_elem(&per_pid, &pid, &one, BPF_NOEXIST) == 0) {
        return 1;
    }
    n = bpf_map_lookup_elem(&per_pid, &pid);
    return n ? __sync_fetch_and_add(n, 1) + 1 : 0;
}

SEC("uprobe")
int count_pid(struct pt_regs *ctx) {
    count_call(bpf_get_current_pid_tgid() >> 32);
    return 0;
}

SEC("uprobe")
int produce(struct pt_regs *ctx) {
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    __u64 seq = count_call(pid);
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(struct event), 0);
    if (e) {
        e->pid = pid;
        e->pad = 0;
        e->seq = seq;
        bpf_ringbuf_submit(e, 0);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Logs an event per call into a ring buffer: reserve/submit in one program, output in another.
// Uses a .bss counter and a .rodata setting so the loader's global-data relocations are used.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

/// One record of the ring buffer, as a consumer reads it.
struct event {
    __u64 ts;
    __u32 pid;
    __u32 seq;
    char comm[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} events SEC(".maps");

/// Log one call in sample_every (a loader may change it before the program runs).
const volatile __u32 sample_every = 1;

/// Calls seen so far, by both programs.
__u64 seq = 0;

static __always_inline int sampled(__u64 n) {
    return sample_every <= 1 || n % sample_every == 0;
}

static __always_inline void fill(struct event *e, __u64 n) {
    e->ts = bpf_ktime_get_ns();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->seq = (__u32)n;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/// Reserves a record in place and submits it; returns 1 when logged, 0 when skipped or full.
SEC("test")
int log_reserve(void *ctx __attribute__((unused))) {
    __u64 n = __sync_fetch_and_add(&seq, 1);
    if (!sampled(n))
        return 0;
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    fill(e, n);
    bpf_ringbuf_submit(e, 0);
    return 1;
}

/// Builds the record on the stack and copies it in; returns 1 when logged, 0 otherwise.
SEC("test")
int log_output(void *ctx __attribute__((unused))) {
    __u64 n = __sync_fetch_and_add(&seq, 1);
    if (!sampled(n))
        return 0;
    struct event e = {};
    fill(&e, n);
    return bpf_ringbuf_output(&events, &e, sizeof(e), 0) == 0;
}

char LICENSE[] SEC("license") = "GPL";

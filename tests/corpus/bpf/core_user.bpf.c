// SPDX-License-Identifier: MIT
// BPF_CORE_READ of a user structure the target passes by pointer: the target's struct
// timespec, read through a CO-RE definition. The structure must be known to the kernel's BTF
// for libbpf to relocate against it (a type only the program knows has no candidate there and
// its reads are poisoned), so the definition names the kernel's struct timespec64, whose layout
// the user one shares; in user space the compiled layout stands.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct timespec64 {
    long long tv_sec;
    long tv_nsec;
} __attribute__((preserve_access_index));

/// [0] calls, [1] the sum of tv_sec, [2] the sum of tv_nsec.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} visits SEC(".maps");

static void add(__u32 index, __u64 v) {
    __u64 *n = bpf_map_lookup_elem(&visits, &index);
    if (n) {
        __sync_fetch_and_add(n, v);
    }
}

SEC("uprobe/corpus_target:corpus_visit")
int BPF_KPROBE(on_visit, const struct timespec64 *ts) {
    add(0, 1);
    add(1, BPF_CORE_READ_USER(ts, tv_sec));
    add(2, BPF_CORE_READ_USER(ts, tv_nsec));
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

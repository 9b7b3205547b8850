// SPDX-License-Identifier: MIT
// A counter guarded by a bpf_spin_lock in its map value: increments that are plain loads and
// stores, exact only because the lock is taken.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct guarded {
    struct bpf_spin_lock lock;
    __u32 pad;
    __u64 count;
    __u64 twice;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct guarded);
} counter SEC(".maps");

SEC("syscall")
__u64 locked_add(void *ctx) {
    __u32 zero = 0;
    struct guarded *g = bpf_map_lookup_elem(&counter, &zero);
    if (!g) {
        return 0;
    }
    bpf_spin_lock(&g->lock);
    __u64 c = g->count;
    g->twice += 2;
    g->count = c + 1;
    bpf_spin_unlock(&g->lock);
    return c + 1;
}

/// Ends holding the lock (Linux's verifier refuses this; bpftime releases it and counts a fault).
SEC("syscall")
__u64 forgets_unlock(void *ctx) {
    __u32 zero = 0;
    struct guarded *g = bpf_map_lookup_elem(&counter, &zero);
    if (!g) {
        return 0;
    }
    bpf_spin_lock(&g->lock);
    g->count++;
    return 1;
}

char LICENSE[] SEC("license") = "GPL";

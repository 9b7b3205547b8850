// SPDX-License-Identifier: MIT
// Maps of maps as libbpf declares them: an array of maps and a hash of maps whose values are
// `__array(values, struct inner)`, started with inner maps by their initialisers (.maps
// relocations). Raw tracepoint programs, so the same object runs in bpftime and in the kernel
// (BPF_PROG_TEST_RUN) and both can be compared: each looks up the inner map the `choice` array
// names by key and counts into its slot.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct inner {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
};

struct inner counts_a SEC(".maps");
struct inner counts_b SEC(".maps");
struct inner counts_c SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 4);
    __type(key, __u32);
    __array(values, struct inner);
} outer_array SEC(".maps") = {
    .values = {[0] = &counts_a, [1] = &counts_b},
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __uint(max_entries, 4);
    __type(key, __u32);
    __array(values, struct inner);
} outer_hash SEC(".maps") = {
    .values = {[2] = &counts_c},
};

/// Which entry of the outer map to use and which slot of its inner map to count in; `found`
/// is set to 1 when the outer entry held a map, 2 when the inner slot was counted too.
struct choice {
    __u32 key;
    __u32 slot;
    __u32 found;
    __u32 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct choice);
} choice SEC(".maps");

static __always_inline int count_in(void *outer) {
    __u32 zero = 0;
    struct choice *c = bpf_map_lookup_elem(&choice, &zero);
    if (!c) {
        return 0;
    }
    __u32 key = c->key;
    c->found = 0;
    void *inner = bpf_map_lookup_elem(outer, &key);
    if (!inner) {
        return 0;
    }
    c->found = 1;
    __u32 slot = c->slot;
    __u64 *n = bpf_map_lookup_elem(inner, &slot);
    if (!n) {
        return 0;
    }
    __sync_fetch_and_add(n, 1);
    c->found = 2;
    return 0;
}

SEC("raw_tp")
int count_array(void *ctx) {
    return count_in(&outer_array);
}

SEC("raw_tp")
int count_hash(void *ctx) {
    return count_in(&outer_hash);
}

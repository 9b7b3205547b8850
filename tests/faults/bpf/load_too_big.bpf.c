// SPDX-License-Identifier: MIT
// An object whose first maps fit a small segment and whose last one does not
// (tests/faults/load_rollback_test.sh): its load fails at `big` after the others were made,
// an outer map holding an inner map among them.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct inner {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
};

struct inner held SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 2);
    __type(key, __u32);
    __array(values, struct inner);
} holder SEC(".maps") = {
    .values = {[0] = &held},
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u64);
} small SEC(".maps");

/// 8 MiB of values: more than the test's segment holds.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1 << 20);
    __type(key, __u32);
    __type(value, __u64);
} big SEC(".maps");

SEC("uprobe")
int count_big(void *ctx) {
    __u32 key = 0;
    __u64 *v = bpf_map_lookup_elem(&big, &key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    }
    return 0;
}

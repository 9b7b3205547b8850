// SPDX-License-Identifier: MIT
// An object whose maps are made before its second program is refused
// (tests/faults/load_rollback_test.sh): `redirects` calls bpf_redirect, a networking helper
// user space does not have, so the load fails after the maps and `counts_calls` were made.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct inner {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
};

struct inner slots SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __uint(max_entries, 2);
    __type(key, __u32);
    __array(values, struct inner);
} by_key SEC(".maps") = {
    .values = {[1] = &slots},
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} calls SEC(".maps");

SEC("uprobe")
int counts_calls(void *ctx) {
    __u32 key = 0;
    __u64 *v = bpf_map_lookup_elem(&calls, &key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    }
    return 0;
}

SEC("uprobe")
int redirects(void *ctx) {
    return (int)bpf_redirect(1, 0);
}

// SPDX-License-Identifier: MIT
// Fills a hash map: each run inserts the next 25,000 keys (key -> key * 3), so four runs make
// a map of 100,000 entries for the dump tests.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 131072);
    __type(key, __u32);
    __type(value, __u64);
} big SEC(".maps");

__u32 next_key = 0;

SEC("test")
__u64 fill(void *ctx) {
    __u32 start = next_key;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < 25000; i++) {
        __u32 key = start + i;
        __u64 value = (__u64)key * 3;
        bpf_map_update_elem(&big, &key, &value, BPF_ANY);
    }
    next_key = start + 25000;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

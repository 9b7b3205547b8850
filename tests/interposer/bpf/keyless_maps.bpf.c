// SPDX-License-Identifier: MIT
// A queue, a bloom filter and an LPM trie as libbpf creates them from BTF map definitions; the
// loader uses them through libbpf's map API (NULL keys for the queue and the bloom filter).
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_QUEUE);
    __uint(max_entries, 4);
    __type(value, __u64);
} queue SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
    __uint(max_entries, 32);
    __uint(map_extra, 3);
    __type(value, __u64);
} bloom SEC(".maps");

struct route_key {
    __u32 prefixlen;
    __u8 addr[4];
};

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct route_key);
    __type(value, __u64);
} routes SEC(".maps");

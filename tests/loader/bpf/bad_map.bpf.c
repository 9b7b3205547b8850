// SPDX-License-Identifier: MIT
// A map type bpftime does not implement: the loader must refuse it by name.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u32);
} pending SEC(".maps");

SEC("test")
int lookup(void *ctx __attribute__((unused))) {
    __u32 k = 1;
    return bpf_map_lookup_elem(&pending, &k) != 0;
}

char LICENSE[] SEC("license") = "GPL";

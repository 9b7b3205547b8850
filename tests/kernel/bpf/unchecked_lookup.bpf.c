// SPDX-License-Identifier: MIT
// A uprobe program the kernel verifier refuses: it uses a map lookup's result without
// checking it for NULL. bpftime's own loader takes it; only the kernel says no.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} values SEC(".maps");

SEC("uprobe")
int unchecked_lookup(void *ctx) {
    __u32 key = 0;
    __u64 *value = bpf_map_lookup_elem(&values, &key);
    return (int)*value;
}

char LICENSE[] SEC("license") = "GPL";

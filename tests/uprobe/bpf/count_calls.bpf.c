// SPDX-License-Identifier: MIT
// Counts a function's calls and returns: programs without loops or helper calls (the map
// lookups are the JIT's inline ones), whose code keeps the vector state.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/// [0] entries, [1] returns.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} calls SEC(".maps");

static __always_inline void add(__u32 key) {
    __u64 *n = bpf_map_lookup_elem(&calls, &key);
    if (n)
        __sync_fetch_and_add(n, 1);
}

SEC("uprobe")
int count_entry(void *ctx) {
    add(0);
    return 0;
}

SEC("uretprobe")
int count_return(void *ctx) {
    add(1);
    return 0;
}

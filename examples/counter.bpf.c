// SPDX-License-Identifier: MIT
// Counts calls per key. The context is a struct counter_ctx: programs see r1 pointing at it.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

/// What the host passes to the programs.
struct counter_ctx {
    __u32 key;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} totals SEC(".maps");

/// Adds one to counts[ctx->key] and returns the new count.
SEC("test")
__u64 count_calls(struct counter_ctx *ctx) {
    __u32 key = ctx->key;
    __u64 *count = bpf_map_lookup_elem(&counts, &key);
    if (!count) {
        __u64 zero = 0;
        // Another caller may insert the key first: NOEXIST keeps its count, then we add.
        bpf_map_update_elem(&counts, &key, &zero, BPF_NOEXIST);
        count = bpf_map_lookup_elem(&counts, &key);
        if (!count)
            return 0;
    }
    return __sync_fetch_and_add(count, 1) + 1;
}

/// Adds one to totals[ctx->key % 16] and returns the new total.
SEC("test")
__u64 count_array(struct counter_ctx *ctx) {
    __u32 key = ctx->key % 16;
    __u64 *total = bpf_map_lookup_elem(&totals, &key);
    if (!total)
        return 0;
    return __sync_fetch_and_add(total, 1) + 1;
}

char LICENSE[] SEC("license") = "GPL";

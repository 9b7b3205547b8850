// SPDX-License-Identifier: MIT
// bpf_loop and bpf_for_each_map_elem: a loop summing squares into the caller's stack, and walks
// over an array and a hash that sum keys and values and double the values in place.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct bpf_map; // the callbacks' first argument, opaque to programs

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, __u64);
} numbers SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u64);
} table SEC(".maps");

struct sums {
    __u64 keys;
    __u64 values;
    __u64 stop_at;
};

static long add_square(__u64 index, void *ctx) {
    __u64 *sum = ctx;
    *sum += index * index;
    return *sum > 1000000 ? 1 : 0;
}

/// The sum of i * i for i below the context's first u32 (stopping past 1,000,000), times 1000,
/// plus the number of iterations bpf_loop reports.
SEC("test")
__u64 squares(__u32 *n) {
    __u64 sum = 0;
    long iterations = bpf_loop(*n, add_square, &sum, 0);
    return sum * 1000 + iterations;
}

static long sum_and_double(struct bpf_map *map, __u32 *key, __u64 *value, struct sums *s) {
    s->keys += *key;
    s->values += *value;
    *value *= 2;
    return *key == s->stop_at ? 1 : 0;
}

/// Walks the array (stopping at the key in the context's first u32): returns elements visited
/// << 48 | sum of keys << 32 | sum of values, and doubles the values it visits.
SEC("test")
__u64 walk_array(__u32 *stop_at) {
    struct sums s = {0, 0, *stop_at};
    long n = bpf_for_each_map_elem(&numbers, sum_and_double, &s, 0);
    return (__u64)n << 48 | s.keys << 32 | s.values;
}

SEC("test")
__u64 walk_hash(__u32 *stop_at) {
    struct sums s = {0, 0, *stop_at};
    long n = bpf_for_each_map_elem(&table, sum_and_double, &s, 0);
    return (__u64)n << 48 | s.keys << 32 | s.values;
}

/// A loop of more than bpf_loop allows: -E2BIG.
SEC("test")
__u64 too_many(void *ctx) {
    __u64 sum = 0;
    return bpf_loop((1 << 23) + 1, add_square, &sum, 0);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Counts read() calls asking for exactly MARK_SIZE bytes (the calls a test makes on purpose),
// on the syscall tracepoint sys_enter_read.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define MARK_SIZE 4242

/// The kernel's syscalls:sys_enter_* layout: common fields, the number, the arguments.
struct sys_enter_ctx {
    unsigned long long common;
    long nr;
    unsigned long args[6];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} marked_reads SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_read")
int count_read(struct sys_enter_ctx *ctx) {
    __u32 key = 0;
    if (ctx->args[2] != MARK_SIZE)
        return 0;
    __u64 *n = bpf_map_lookup_elem(&marked_reads, &key);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}

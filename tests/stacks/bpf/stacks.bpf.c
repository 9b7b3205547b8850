// SPDX-License-Identifier: MIT
// Counts the user stacks a probed function is called from (bpf_get_stackid into a stack trace
// map, as bcc's stackcount and profile do) and keeps the last stack bpf_get_stack gave.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define DEPTH 32

struct {
    __uint(type, BPF_MAP_TYPE_STACK_TRACE);
    __uint(max_entries, 1024);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, DEPTH * sizeof(__u64));
} stacks SEC(".maps");

/// Calls per stack id.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

struct last_stack {
    __s64 rc; // what bpf_get_stack returned
    __u64 ips[4];
};

/// [0]: failed bpf_get_stackid calls; [1]: what bpf_get_stackid without BPF_F_USER_STACK gave.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __s64);
} errors SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct last_stack);
} last SEC(".maps");

SEC("uprobe")
int count_stacks(struct pt_regs *ctx) {
    __u32 zero = 0, one = 1;
    long id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
    if (id < 0) {
        __s64 *failed = bpf_map_lookup_elem(&errors, &zero);
        if (failed) {
            __sync_fetch_and_add(failed, 1);
        }
    } else {
        __u32 key = (__u32)id;
        __u64 *n = bpf_map_lookup_elem(&counts, &key);
        if (n) {
            __sync_fetch_and_add(n, 1);
        } else {
            __u64 first = 1;
            bpf_map_update_elem(&counts, &key, &first, BPF_NOEXIST);
        }
    }
    __s64 *kernel = bpf_map_lookup_elem(&errors, &one);
    if (kernel) {
        *kernel = bpf_get_stackid(ctx, &stacks, 0);
    }
    struct last_stack *l = bpf_map_lookup_elem(&last, &zero);
    if (l) {
        l->rc = bpf_get_stack(ctx, l->ips, sizeof l->ips, BPF_F_USER_STACK);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

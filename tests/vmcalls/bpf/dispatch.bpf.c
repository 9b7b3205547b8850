// SPDX-License-Identifier: MIT
// A tail-call dispatcher: a program array of three handlers, chosen by the first u32 of the
// context or, when that is 0xff, by the value in the `choice` array. A handler gives
// 100 * (its number) + the context's second u32; a missing one leaves the dispatcher to give
// 900 + what bpf_tail_call returned (negated).
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
} handlers SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} choice SEC(".maps");

struct request {
    __u32 handler;
    __u32 arg;
};

SEC("syscall")
__u64 dispatch(struct request *req) {
    __u32 index = req->handler;
    if (index == 0xff) {
        __u32 zero = 0;
        __u32 *chosen = bpf_map_lookup_elem(&choice, &zero);
        if (chosen == 0) {
            return 0;
        }
        index = *chosen;
    }
    long err = bpf_tail_call(req, &handlers, index);
    return 900 - err;
}

SEC("syscall")
__u64 handler1(struct request *req) {
    return 100 + req->arg;
}

SEC("syscall")
__u64 handler2(struct request *req) {
    return 200 + req->arg;
}

// Goes on to handler 1 with its argument doubled: tail calls chain.
SEC("syscall")
__u64 handler3(struct request *req) {
    req->arg *= 2;
    bpf_tail_call(req, &handlers, 1);
    return 333;
}

// A program of another type (kprobe, as uprobes are): refused as a member of `handlers`, whose
// callers are syscall programs.
SEC("uprobe")
int other_type(void *ctx) {
    return 7;
}

char LICENSE[] SEC("license") = "GPL";

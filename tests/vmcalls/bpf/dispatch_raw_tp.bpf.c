// SPDX-License-Identifier: MIT
// dispatch.bpf.c's dispatcher as raw tracepoint programs, which the kernel runs with
// BPF_PROG_TEST_RUN and lets tail-call (syscall programs are sleepable, and the kernel keeps
// program arrays from those): the context is two u64 arguments, the handler's index and a
// number. Handler n gives 100 * n + the number; handler 3 goes on to handler 1; a missing
// handler leaves the dispatcher to give 900.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
} handlers SEC(".maps");

SEC("raw_tp")
int dispatch(__u64 *args) {
    bpf_tail_call(args, &handlers, (__u32)args[0]);
    return 900;
}

SEC("raw_tp")
int handler1(__u64 *args) {
    return 100 + (int)args[1];
}

SEC("raw_tp")
int handler2(__u64 *args) {
    return 200 + (int)args[1];
}

SEC("raw_tp")
int handler3(__u64 *args) {
    bpf_tail_call(args, &handlers, 1);
    return 333;
}

// A program of another type (kprobe, as uprobes are): refused as a member of `handlers`.
SEC("uprobe")
int other_type(void *ctx) {
    return 7;
}

char LICENSE[] SEC("license") = "GPL";

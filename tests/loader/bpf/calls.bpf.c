// SPDX-License-Identifier: MIT
// Linker cases: nested bpf-to-bpf calls, a subprogram shared by two programs, a callback
// address (bpf_loop) and .data variables at non-zero offsets.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

__u64 first_var = 1;
__u64 second_var = 2;

static __noinline __u64 leaf(__u64 x) {
    return x * 3 + second_var;
}

static __noinline __u64 middle(__u64 x) {
    return leaf(x) + 1;
}

static int add_index(__u32 index, void *ctx) {
    *(__u64 *)ctx += index;
    return 0;
}

/// middle(7) = 7 * 3 + 2 + 1 = 24.
SEC("test")
__u64 nested(void *ctx __attribute__((unused))) {
    return middle(7);
}

/// leaf(first_var) = 1 * 3 + 2 = 5.
SEC("test")
__u64 shared(void *ctx __attribute__((unused))) {
    return leaf(first_var);
}

/// 0 + 1 + 2 + 3 = 6.
SEC("test")
__u64 with_callback(void *ctx __attribute__((unused))) {
    __u64 sum = 0;
    bpf_loop(4, add_index, &sum, 0);
    return sum;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Programs for the run counters: one that returns, one that reads outside its memory (a
// fault), one that loops until the host's instruction budget stops it (a budget stop).
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

SEC("test")
__u64 returns(void *ctx) {
    return 7;
}

SEC("test")
__u64 reads_out_of_bounds(__u8 *ctx) {
    const volatile __u8 *p = ctx;
    return p[65536];
}

SEC("test")
__u64 loops_for_ever(__u64 *ctx) {
    volatile __u64 n = 1;
    while (n != 0)
        n++;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

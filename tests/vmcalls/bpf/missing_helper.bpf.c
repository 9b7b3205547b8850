// SPDX-License-Identifier: MIT
// Calls bpf_get_stack (67), a helper bpftime does not have: refused at load, by name.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

SEC("test")
__u64 wants_stack(void *ctx) {
    __u64 buf[4];
    return bpf_get_stack(ctx, buf, sizeof buf, 0);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Calls bpf_get_numa_node_id (42), a helper bpftime does not have: refused at load, by name.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

SEC("test")
__u64 wants_numa_node(void *ctx) {
    return bpf_get_numa_node_id();
}

char LICENSE[] SEC("license") = "GPL";

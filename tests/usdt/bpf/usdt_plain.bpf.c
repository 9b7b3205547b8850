// SPDX-License-Identifier: MIT
// A usdt program that does not read its arguments through libbpf's usdt.bpf.h: it has no
// __bpf_usdt_specs map, so attaching it at a USDT probe is refused.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

SEC("usdt")
int usdt_plain(void *ctx) {
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// A kprobe and a kretprobe on the kernel function behind uname(2), for processes named
// targ_comm.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// [0] kprobe, [1] kretprobe returning 0.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");

#include "comm_count.h"

SEC("kprobe/__x64_sys_newuname")
int BPF_KPROBE(uname_kprobe) {
    if (comm_matches()) {
        add(0);
    }
    return 0;
}

SEC("kretprobe/__x64_sys_newuname")
int BPF_KRETPROBE(uname_return, long ret) {
    if (ret == 0 && comm_matches()) {
        add(1);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// fentry and fexit programs (BPF trampolines on a kernel function, checked against its BTF) on
// the target's uname calls, for processes named targ_comm.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// [0] fentry, [1] fexit.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");

#include "comm_count.h"

SEC("fentry/__x64_sys_newuname")
int BPF_PROG(uname_entry) {
    if (comm_matches()) {
        add(0);
    }
    return 0;
}

SEC("fexit/__x64_sys_newuname")
int BPF_PROG(uname_exit) {
    if (comm_matches()) {
        add(1);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

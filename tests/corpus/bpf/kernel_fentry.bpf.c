// SPDX-License-Identifier: MIT
// fentry and fexit programs (BPF trampolines on a kernel function, checked against its BTF) on
// the target's uname calls, for processes named targ_comm.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile char targ_comm[16] = "";

/// [0] fentry, [1] fexit.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");

static int comm_matches(void) {
    char comm[16];
    bpf_get_current_comm(comm, sizeof comm);
    for (int i = 0; i < 16; i++) {
        if (comm[i] != targ_comm[i]) {
            return 0;
        }
        if (comm[i] == 0) {
            break;
        }
    }
    return 1;
}

static void add(__u32 index) {
    __u64 *n = bpf_map_lookup_elem(&seen, &index);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
}

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

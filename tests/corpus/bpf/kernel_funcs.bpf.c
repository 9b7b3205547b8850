// SPDX-License-Identifier: MIT
// BTF-typed raw tracepoints, which only the kernel provider attaches: the target's uname calls
// (system call 63) seen at sys_enter and sys_exit, for processes named targ_comm. Kernel
// structures are read with BPF_CORE_READ through partial definitions (libbpf relocates the
// fields' offsets against the kernel's BTF): the task's tgid, and orig_ax of the registers
// (pt_regs___kernel is a flavour of the kernel's struct pt_regs, not the uapi one).
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct task_struct {
    int tgid;
} __attribute__((preserve_access_index));

struct pt_regs___kernel {
    unsigned long orig_ax;
} __attribute__((preserve_access_index));

/// [0] kretprobe (returning 0), [1] kprobe, [2] tp_btf sys_enter of uname (63), [3] kprobe calls
/// whose CO-RE read of the task's tgid matched bpf_get_current_pid_tgid.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");

#include "comm_count.h"

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id) {
    if (id != 63 || !comm_matches()) {
        return 0;
    }
    add(0);
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    if ((__u32)BPF_CORE_READ(task, tgid) == (__u32)(bpf_get_current_pid_tgid() >> 32)) {
        add(1);
    }
    return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs___kernel *regs, long ret) {
    if (ret == 0 && BPF_CORE_READ(regs, orig_ax) == 63 && comm_matches()) {
        add(2);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

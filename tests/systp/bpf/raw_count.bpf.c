// SPDX-License-Identifier: MIT
// Counts system calls per process and number on the raw tracepoints sys_enter and sys_exit
// (strace -c's table), checking that the pt_regs the context points at names the same call.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/// Exits are counted under nr | EXIT_BIT; calls whose registers disagree with the context
/// under MISMATCH.
#define EXIT_BIT 0x80000000u
#define MISMATCH 0xffffffffu

struct call_key {
    __u32 pid;
    __u32 nr;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192);
    __type(key, struct call_key);
    __type(value, __u64);
} calls SEC(".maps");

static void count(__u32 nr) {
    struct call_key key = {.pid = (__u32)(bpf_get_current_pid_tgid() >> 32), .nr = nr};
    __u64 one = 1;
    __u64 *n = bpf_map_lookup_elem(&calls, &key);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else if (bpf_map_update_elem(&calls, &key, &one, BPF_NOEXIST) != 0) {
        n = bpf_map_lookup_elem(&calls, &key);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
}

SEC("raw_tracepoint/sys_enter")
int count_enter(struct bpf_raw_tracepoint_args *ctx) {
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    unsigned long orig = 0;
    bpf_probe_read_kernel(&orig, sizeof orig, &regs->orig_rax);
    count(orig == ctx->args[1] ? (__u32)ctx->args[1] : MISMATCH);
    return 0;
}

SEC("raw_tp/sys_exit")
int count_exit(struct bpf_raw_tracepoint_args *ctx) {
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    unsigned long orig = 0, ax = 0;
    bpf_probe_read_kernel(&orig, sizeof orig, &regs->orig_rax);
    bpf_probe_read_kernel(&ax, sizeof ax, &regs->rax);
    count(ax == ctx->args[1] ? (__u32)orig | EXIT_BIT : MISMATCH);
    return 0;
}

/// raw_syscalls:sys_enter and sys_exit (what syscount attaches), as their tracefs formats lay
/// them out; counted under nr | ALL_BIT (and EXIT_BIT for exits).
#define ALL_BIT 0x40000000u

struct raw_syscalls_enter {
    __u64 common;
    long id;
    unsigned long args[6];
};

struct raw_syscalls_exit {
    __u64 common;
    long id;
    long ret;
};

SEC("tracepoint/raw_syscalls/sys_enter")
int count_all_enter(struct raw_syscalls_enter *ctx) {
    count((__u32)ctx->id | ALL_BIT);
    return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int count_all_exit(struct raw_syscalls_exit *ctx) {
    count((__u32)ctx->id | ALL_BIT | EXIT_BIT);
    return 0;
}

// SPDX-License-Identifier: MIT
// Counts the returns of clone, clone3, fork and vfork in the parent and in the child, as
// syscount and its kind see them: at raw_syscalls:sys_exit, at syscalls:sys_exit_NAME and at
// the raw tracepoint sys_exit. Only threads named "systp-clones" (the clone test's target and
// what it starts) count, so the kernel's run sees the same calls as user space's.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/// Slot = source * 8 + child * 4 + kind: source 0 raw_syscalls:sys_exit, 1 syscalls:sys_exit_*,
/// 2 raw sys_exit; child 1 where the call returned 0; kind 0 clone, 1 clone3, 2 fork, 3 vfork.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 24);
    __type(key, __u32);
    __type(value, __u64);
} returns SEC(".maps");

struct raw_syscalls_exit {
    __u64 common;
    long id;
    long ret;
};

struct syscall_exit {
    __u64 common;
    int nr;
    long ret;
};

static const char wanted_comm[] = "systp-clones";

static int ours(void) {
    char comm[16] = {};
    bpf_get_current_comm(comm, sizeof comm);
    for (int i = 0; i < (int)sizeof wanted_comm; i++)
        if (comm[i] != wanted_comm[i])
            return 0;
    return 1;
}

static void count(__u32 source, long nr, long ret) {
    __u32 kind;
    switch (nr) {
    case 56:
        kind = 0;
        break;
    case 435:
        kind = 1;
        break;
    case 57:
        kind = 2;
        break;
    case 58:
        kind = 3;
        break;
    default:
        return;
    }
    if (!ours())
        return;
    __u32 slot = source * 8 + (ret == 0 ? 4 : 0) + kind;
    __u64 *n = bpf_map_lookup_elem(&returns, &slot);
    if (n)
        __sync_fetch_and_add(n, 1);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int all_exit(struct raw_syscalls_exit *ctx) {
    count(0, ctx->id, ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_clone")
int exit_clone(struct syscall_exit *ctx) {
    count(1, ctx->nr, ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_clone3")
int exit_clone3(struct syscall_exit *ctx) {
    count(1, ctx->nr, ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_fork")
int exit_fork(struct syscall_exit *ctx) {
    count(1, ctx->nr, ctx->ret);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_vfork")
int exit_vfork(struct syscall_exit *ctx) {
    count(1, ctx->nr, ctx->ret);
    return 0;
}

SEC("raw_tp/sys_exit")
int raw_exit(struct bpf_raw_tracepoint_args *ctx) {
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    unsigned long orig = 0;
    bpf_probe_read_kernel(&orig, sizeof orig, &regs->orig_rax);
    count(2, (long)orig, (long)ctx->args[1]);
    return 0;
}

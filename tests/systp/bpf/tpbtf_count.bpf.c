// SPDX-License-Identifier: MIT
// getpid() calls of one process counted at the BTF-typed raw tracepoints sys_enter and sys_exit
// (tp_btf, which libbpf attaches with BPF_LINK_CREATE and BPF_TRACE_RAW_TP); and a plain raw_tp
// program, which that command must refuse.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/// config[0]: the process (tgid) counted.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} config SEC(".maps");

/// counts[0]: getpid enters, [1]: getpid exits.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

static int ours(void) {
    __u32 zero = 0;
    __u32 *pid = bpf_map_lookup_elem(&config, &zero);
    return pid && *pid == (__u32)(bpf_get_current_pid_tgid() >> 32);
}

static void note(__u32 slot) {
    __u64 *n = bpf_map_lookup_elem(&counts, &slot);
    if (n)
        __sync_fetch_and_add(n, 1);
}

/// sys_enter(struct pt_regs *regs, long id)
SEC("tp_btf/sys_enter")
int getpid_enter(unsigned long long *ctx) {
    if (ctx[1] == 39 && ours())
        note(0);
    return 0;
}

/// sys_exit(struct pt_regs *regs, long ret): the number from the registers.
SEC("tp_btf/sys_exit")
int getpid_exit(unsigned long long *ctx) {
    struct pt_regs *regs = (struct pt_regs *)ctx[0];
    unsigned long nr = 0;
    bpf_probe_read_kernel(&nr, sizeof nr, &regs->orig_rax);
    if (nr == 39 && ours())
        note(1);
    return 0;
}

SEC("raw_tp/sys_enter")
int plain_raw(struct bpf_raw_tracepoint_args *ctx) {
    return ctx->args[1] == 0;
}

// SPDX-License-Identifier: MIT
// Records what getpgid's tracepoints give their programs, as the kernel lays the contexts out:
// sys_enter_getpgid, sys_exit_getpgid, and raw_syscalls:sys_enter for getpgid's calls only.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#define NR_GETPGID 121 /* x86-64 */

/// syscalls:sys_enter_* and raw_syscalls:sys_enter: common fields, the number, the arguments.
struct sys_enter_ctx {
    unsigned long long common;
    long nr;
    unsigned long args[6];
};

/// syscalls:sys_exit_*: common fields, the number, the return value.
struct sys_exit_ctx {
    unsigned long long common;
    long nr;
    long ret;
};

/// [0] enters, [1] their common fields, [2] their number (8 bytes: the int and its padding),
/// [3..8] their arguments; [9] exits, [10] their common fields, [11] their number, [12] the
/// return value; [13] raw_syscalls:sys_enter calls of getpgid, [14] their common fields,
/// [15] their first argument; [16] calls of getpgid_enter_timed, [17] its last time.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 18);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");

static __always_inline void put(__u32 key, __u64 value) {
    __u64 *slot = bpf_map_lookup_elem(&seen, &key);
    if (slot)
        *slot = value;
}

static __always_inline void add(__u32 key) {
    __u64 *slot = bpf_map_lookup_elem(&seen, &key);
    if (slot)
        __sync_fetch_and_add(slot, 1);
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int getpgid_enter(struct sys_enter_ctx *ctx) {
    add(0);
    put(1, ctx->common);
    put(2, ctx->nr);
    for (int i = 0; i < 6; i++)
        put(3 + i, ctx->args[i]);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_getpgid")
int getpgid_exit(struct sys_exit_ctx *ctx) {
    add(9);
    put(10, ctx->common);
    put(11, ctx->nr);
    put(12, ctx->ret);
    return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int any_enter(struct sys_enter_ctx *ctx) {
    if (ctx->nr != NR_GETPGID)
        return 0;
    add(13);
    put(14, ctx->common);
    put(15, ctx->args[0]);
    return 0;
}

/// A second enter program that calls a helper (so its code is not the JIT's vector-free kind).
SEC("tracepoint/syscalls/sys_enter_getpgid")
int getpgid_enter_timed(struct sys_enter_ctx *ctx) {
    add(16);
    put(17, bpf_ktime_get_ns());
    return 0;
}

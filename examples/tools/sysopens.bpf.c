// SPDX-License-Identifier: MIT
// sysopens: opensnoop's shape on the syscall tracepoints. sys_enter_openat keeps the path
// pointer and flags per thread; sys_exit_openat reads the path and writes a ring-buffer
// record with the return value.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "sysopens.h"

char LICENSE[] SEC("license") = "GPL";

/* 0: every process; else the process (tgid) to report. */
const volatile __u32 target_pid = 0;

struct open_args {
    const char *path;
    __s32 flags;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, struct open_args);
} starts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    if (target_pid != 0 && (id >> 32) != target_pid)
        return 0;
    struct open_args args = {.path = (const char *)ctx->args[1], .flags = (__s32)ctx->args[2]};
    bpf_map_update_elem(&starts, &tid, &args, BPF_ANY);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    struct open_args *args = bpf_map_lookup_elem(&starts, &tid);
    if (!args)
        return 0;
    struct open_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (e) {
        e->pid = id >> 32;
        e->flags = args->flags;
        e->ret = ctx->ret;
        bpf_probe_read_user_str(e->path, sizeof(e->path), args->path);
        bpf_ringbuf_submit(e, 0);
    }
    bpf_map_delete_elem(&starts, &tid);
    return 0;
}

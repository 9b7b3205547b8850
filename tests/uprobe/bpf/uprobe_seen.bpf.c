// SPDX-License-Identifier: MIT
// What a uprobe program sees at a probed function: the six argument registers, the return
// value, the probed address, the calling thread, and memory the caller points at (read with
// bpf_probe_read_user and sent through a ring buffer).
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

// libbpf before 1.2 has no sixth parameter in bpf_tracing.h; on x86-64 it is r9.
#ifndef PT_REGS_PARM6
#define PT_REGS_PARM6(x) (__PT_REGS_CAST(x)->r9)
#endif

/// The last call seen.
struct seen {
    __u64 parm[6];
    __u64 entry_ip;
    __u64 entry_pid_tgid;
    __u64 ret;
    __u64 return_ip;
    __u64 return_pid_tgid;
    __u64 entries;
    __u64 returns;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct seen);
} seen SEC(".maps");

/// One record per call of the text function.
struct text_event {
    __u64 pid_tgid;
    __u64 func_ip;
    __u64 tag;
    __s64 read_result;
    char text[32];
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} events SEC(".maps");

static struct seen *the_seen(void) {
    __u32 key = 0;
    return bpf_map_lookup_elem(&seen, &key);
}

SEC("uprobe")
int BPF_KPROBE(args_entry, long a, long b, long c, long d, long e) {
    struct seen *s = the_seen();
    if (!s) {
        return 0;
    }
    s->parm[0] = (__u64)a;
    s->parm[1] = (__u64)b;
    s->parm[2] = (__u64)c;
    s->parm[3] = (__u64)d;
    s->parm[4] = (__u64)e;
    s->parm[5] = (__u64)PT_REGS_PARM6(ctx);
    s->entry_ip = bpf_get_func_ip(ctx);
    s->entry_pid_tgid = bpf_get_current_pid_tgid();
    __sync_fetch_and_add(&s->entries, 1);
    return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(args_return, long ret) {
    struct seen *s = the_seen();
    if (!s) {
        return 0;
    }
    s->ret = (__u64)ret;
    s->return_ip = bpf_get_func_ip(ctx);
    s->return_pid_tgid = bpf_get_current_pid_tgid();
    __sync_fetch_and_add(&s->returns, 1);
    return 0;
}

SEC("uprobe")
int BPF_KPROBE(text_entry, const char *text, long tag) {
    struct text_event ev = {};
    ev.pid_tgid = bpf_get_current_pid_tgid();
    ev.func_ip = bpf_get_func_ip(ctx);
    ev.tag = (__u64)tag;
    ev.read_result = bpf_probe_read_user(ev.text, sizeof(ev.text), text);
    bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Probes for the interposer's tests, loaded by an unmodified libbpf loader: per-cookie call
// counts in a hash map, a .bss counter the loader reads through its mmap, and one ring-buffer
// record per call holding the call's second argument.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 16384);
} events SEC(".maps");

/// Calls seen by on_entry (the loader reads it through the .bss mmap).
__u64 hits = 0;
/// Added to every record: its initial value (.data) reaches the map at load.
__u64 bias = 1;

SEC("uprobe")
int on_entry(struct pt_regs *ctx) {
    __u32 key = (__u32)bpf_get_attach_cookie(ctx);
    __u64 one = 1, *count = bpf_map_lookup_elem(&counts, &key);
    if (count) {
        __sync_fetch_and_add(count, 1);
    } else {
        bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
    }
    __sync_fetch_and_add(&hits, 1);
    __u64 *record = bpf_ringbuf_reserve(&events, sizeof(__u64), 0);
    if (record) {
        *record = PT_REGS_PARM2(ctx) + bias;
        bpf_ringbuf_submit(record, 0);
    }
    return 0;
}

SEC("uretprobe")
int on_return(struct pt_regs *ctx) {
    __u32 key = 1000 + (__u32)bpf_get_attach_cookie(ctx);
    __u64 one = 1, *count = bpf_map_lookup_elem(&counts, &key);
    if (count) {
        __sync_fetch_and_add(count, 1);
    } else {
        bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

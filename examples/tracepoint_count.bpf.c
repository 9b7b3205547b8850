// SPDX-License-Identifier: MIT
// A kernel tracepoint program (the kernel provider): counts getpid() calls per process and
// sends each caller's process id to a ring buffer.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

/// Calls per process id.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __u64);
} getpid_calls SEC(".maps");

/// One record per call: the caller's process id (4 bytes).
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} getpid_events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx) {
    __u32 pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
    __u64 one = 1;
    __u64 *n = bpf_map_lookup_elem(&getpid_calls, &pid);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else if (bpf_map_update_elem(&getpid_calls, &pid, &one, BPF_NOEXIST) != 0) {
        n = bpf_map_lookup_elem(&getpid_calls, &pid);
        if (n) {
            __sync_fetch_and_add(n, 1);
        }
    }
    bpf_ringbuf_output(&getpid_events, &pid, sizeof pid, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

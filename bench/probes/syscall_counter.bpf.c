// SPDX-License-Identifier: MIT
// The program of the syscall tracepoint benchmark: counts getpid calls (the least a program
// does, so the benchmark measures the tracepoint, not the program; no helper runs: the
// kernel's tracepoint counts every process's calls, the user-space one this process's).
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

/// [0]: getpid calls seen.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} getpids SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx) {
    __u32 key = 0;
    __u64 *n = bpf_map_lookup_elem(&getpids, &key);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

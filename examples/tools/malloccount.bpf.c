// SPDX-License-Identifier: MIT
/* malloccount: counts malloc() calls per process and per size, as a libbpf-bootstrap tool. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "malloccount.h"

/* Set by the loader before load (-p PID); 0 counts every process. */
const volatile __u32 targ_pid = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 10240);
    __type(key, struct malloc_key);
    __type(value, __u64);
} counts SEC(".maps");

SEC("uprobe//lib/x86_64-linux-gnu/libc.so.6:malloc")
int BPF_KPROBE(malloc_enter, size_t size) {
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct malloc_key key = {};
    __u64 one = 1, *count;

    if (targ_pid && pid != targ_pid)
        return 0;
    key.pid = pid;
    key.size = size;
    count = bpf_map_lookup_elem(&counts, &key);
    if (!count) {
        /* Another thread may have made the entry meanwhile: then add to it. */
        if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) == 0)
            return 0;
        count = bpf_map_lookup_elem(&counts, &key);
        if (!count)
            return 0;
    }
    __sync_fetch_and_add(count, 1);
    return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

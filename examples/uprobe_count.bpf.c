// SPDX-License-Identifier: MIT
// Counts the calls of a probed function by its first argument and sums what it returns.
// Written with libbpf's bpf_tracing.h, so the same object runs as a kernel uprobe (the kernel
// provider) or in user space.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// Calls per first argument.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u64);
    __type(value, __u64);
} calls SEC(".maps");

/// [0]: calls seen on entry; [1]: returns seen; [2]: the sum of the returned values;
/// [3]: the attach cookie of the entry probe's link.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u64);
} totals SEC(".maps");

static void add(__u32 index, __u64 n) {
    __u64 *total = bpf_map_lookup_elem(&totals, &index);
    if (total) {
        __sync_fetch_and_add(total, n);
    }
}

SEC("uprobe")
int BPF_KPROBE(count_entry, long key) {
    __u64 k = (__u64)key;
    __u64 one = 1;
    add(0, 1);
    __u32 cookie_index = 3;
    __u64 cookie = bpf_get_attach_cookie(ctx);
    bpf_map_update_elem(&totals, &cookie_index, &cookie, BPF_ANY);
    __u64 *n = bpf_map_lookup_elem(&calls, &k);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else if (bpf_map_update_elem(&calls, &k, &one, BPF_NOEXIST) != 0) {
        // Another thread inserted the key first.
        n = bpf_map_lookup_elem(&calls, &k);
        if (n) {
            __sync_fetch_and_add(n, 1);
        }
    }
    return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(count_return, long ret) {
    add(1, 1);
    add(2, (__u64)ret);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

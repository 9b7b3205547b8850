// SPDX-License-Identifier: MIT
// The bpf_snprintf calls of snprintf_bad.bpf.c with their formats built on the stack, so that
// no loader knows them (the kernel's verifier refuses such a format; bpftime checks it when it
// runs and gives -EINVAL). Each result goes to rc[i] of the array `out`.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __s64[5]);
} out SEC(".maps");

SEC("raw_tp")
int format_at_run(void *ctx) {
    __u32 zero = 0;
    __s64 *rc = bpf_map_lookup_elem(&out, &zero);
    if (!rc) {
        return 0;
    }
    char text[16];
    volatile char fmt[8] = {'%', 'q', 0, 0, 0, 0, 0, 0};
    __u64 args[13] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    rc[0] = bpf_snprintf(text, sizeof text, (const char *)fmt, args, 8);
    fmt[1] = 'd', fmt[2] = ' ', fmt[3] = '%', fmt[4] = 'd';
    rc[1] = bpf_snprintf(text, sizeof text, (const char *)fmt, args, 8);
    fmt[2] = 0;
    rc[2] = bpf_snprintf(text, sizeof text, (const char *)fmt, args, 7);
    rc[3] = bpf_snprintf(text, sizeof text, (const char *)fmt, args, sizeof args);
    rc[4] = bpf_snprintf(text, sizeof text, (const char *)fmt, args, 8);
    return 0;
}

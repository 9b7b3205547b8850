// SPDX-License-Identifier: MIT
// Error injection: open_config(path, which, ...) of override_target returns -ENOENT without
// running when which is 3; every other call runs unharmed.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define ENOENT 2

SEC("uprobe")
int BPF_KPROBE(inject_enoent, const char *path, long which) {
    if (which == 3) {
        bpf_override_return(ctx, -ENOENT);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Error injection in the uprobe tests: ut_square(7) returns 1234 without running; other calls
// run as they are.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("uprobe")
int override_square(struct pt_regs *ctx) {
    if (PT_REGS_PARM1(ctx) == 7) {
        bpf_override_return(ctx, 1234);
    }
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

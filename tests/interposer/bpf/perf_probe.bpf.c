// SPDX-License-Identifier: MIT
// A uprobe that outputs through a perf event array, read by libbpf's perf_buffer in the loader:
// one sample per call holding the call's second argument plus one, written to this CPU's ring,
// and the results of outputs to a slot out of range and to an empty slot, kept in .bss.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, sizeof(__u32));
} samples SEC(".maps");

/// Never given perf events: every slot is empty.
struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, sizeof(__u32));
    __uint(max_entries, 4);
} unused SEC(".maps");

/// The last results of bpf_perf_event_output: an index out of range, an empty slot, the sample.
long out_of_range = 1, empty_slot = 1, sample_rc = 1;

SEC("uprobe")
int on_call(struct pt_regs *ctx) {
    __u64 value = PT_REGS_PARM2(ctx) + 1;
    sample_rc = bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &value, sizeof value);
    out_of_range = bpf_perf_event_output(ctx, &samples, 100000, &value, sizeof value);
    empty_slot = bpf_perf_event_output(ctx, &unused, 1, &value, sizeof value);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

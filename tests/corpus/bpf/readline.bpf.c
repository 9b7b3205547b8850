// SPDX-License-Identifier: MIT
// bashreadline's shape: a uretprobe on a function returning the line it read sends the line
// through a ring buffer, in call order.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct line_event {
    char line[32];
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} lines SEC(".maps");

SEC("uretprobe/corpus_target:corpus_readline")
int BPF_KRETPROBE(printret, const char *ret) {
    if (!ret) {
        return 0;
    }
    struct line_event *e = bpf_ringbuf_reserve(&lines, sizeof *e, 0);
    if (!e) {
        return 0;
    }
    __builtin_memset(e->line, 0, sizeof e->line);
    bpf_probe_read_user_str(e->line, sizeof e->line, ret);
    bpf_ringbuf_submit(e, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

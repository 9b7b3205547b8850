// SPDX-License-Identifier: MIT
// A uprobe program whose helpers copy and measure strings (glibc's vector string functions on
// the host's side): what it records shows it ran, the probed function's registers must not
// change.
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/// What the program saw: its runs, the length of the text (with its NUL) and the text.
struct copied {
    __u64 runs;
    __s64 length;
    char text[192];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct copied);
} copies SEC(".maps");

SEC("uprobe")
int copy_text(struct pt_regs *ctx) {
    __u32 key = 0;
    struct copied *c = bpf_map_lookup_elem(&copies, &key);
    if (!c) {
        return 0;
    }
    const char *text = (const char *)PT_REGS_PARM3(ctx);
    c->length = bpf_probe_read_user_str(c->text, sizeof c->text, text);
    char again[192];
    bpf_probe_read_user(again, sizeof again, text);
    c->runs++;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

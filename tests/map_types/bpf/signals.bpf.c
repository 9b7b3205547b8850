// SPDX-License-Identifier: MIT
// bpf_send_signal and bpf_send_signal_thread with the signal number from the context; each
// returns what the helper gave.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct signal_args {
    __u32 sig;
    __u32 pad;
    __s64 rc;
};

SEC("uprobe")
int send_to_process(struct signal_args *a) {
    a->rc = bpf_send_signal(a->sig);
    return 0;
}

SEC("uprobe")
int send_to_thread(struct signal_args *a) {
    a->rc = bpf_send_signal_thread(a->sig);
    return 0;
}

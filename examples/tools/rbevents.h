/* SPDX-License-Identifier: MIT */
/* What rbevents' eBPF program and its loader share. */
#ifndef RBEVENTS_H
#define RBEVENTS_H

#define RBEVENTS_COMM_LEN 16

/* One call of the probed function. */
struct rb_event {
    __u32 pid;
    __u32 tid;
    __u64 args[3];
    char comm[RBEVENTS_COMM_LEN];
};

#endif

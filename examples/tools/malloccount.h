/* SPDX-License-Identifier: MIT */
/* What malloccount's eBPF program and its loader share. */
#ifndef MALLOCCOUNT_H
#define MALLOCCOUNT_H

/* One row of the table: the calls of one process with one size. */
struct malloc_key {
    __u32 pid;
    __u32 pad;
    __u64 size;
};

#endif

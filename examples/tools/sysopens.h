/* SPDX-License-Identifier: MIT */
/* What sysopens' eBPF program and its loader share. */
#ifndef SYSOPENS_H
#define SYSOPENS_H

#define SYSOPENS_PATH_LEN 128

/* One openat call, reported when it returns. */
struct open_event {
    __u32 pid;
    __s32 flags;
    __s64 ret;
    char path[SYSOPENS_PATH_LEN];
};

#endif

// SPDX-License-Identifier: MIT
// What the kernel-only corpus objects share: the command name they count for (set with
// `bpftime load --set targ_comm=NAME`) and a counter in their `seen` array. Included after the
// object defines `seen`.
#ifndef BPFTIME_CORPUS_COMM_COUNT_H
#define BPFTIME_CORPUS_COMM_COUNT_H

const volatile char targ_comm[16] = "";

/// Whether the current task is named targ_comm.
static int comm_matches(void) {
    char comm[16];
    bpf_get_current_comm(comm, sizeof comm);
    for (int i = 0; i < 16; i++) {
        if (comm[i] != targ_comm[i]) {
            return 0;
        }
        if (comm[i] == 0) {
            break;
        }
    }
    return 1;
}

/// Adds one to seen[index].
static void add(__u32 index) {
    __u64 *n = bpf_map_lookup_elem(&seen, &index);
    if (n) {
        __sync_fetch_and_add(n, 1);
    }
}

#endif

// SPDX-License-Identifier: MIT
// The command-name filter of corpus objects shaped like libbpf-tools' (`targ_comm`, set with
// `bpftime load --set targ_comm=NAME`; empty matches only a task with an empty name).
#ifndef BPFTIME_CORPUS_COMM_FILTER_H
#define BPFTIME_CORPUS_COMM_FILTER_H

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

#endif

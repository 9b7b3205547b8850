// SPDX-License-Identifier: MIT
// A libbpf loader of tpbtf_count.bpf.o: loads it, counts process PID, attaches getpid_enter
// and getpid_exit with bpf_program__attach_trace (BPF_LINK_CREATE with BPF_TRACE_RAW_TP), tries
// the same command on the plain raw_tp program and BPF_RAW_TRACEPOINT_OPEN with a name on a
// tp_btf program (and prints the errors), prints "attached"; on SIGINT prints
// "enters N exits N" and exits 0.
// Usage: tpbtf_loader OBJECT PID
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t slot(int fd, uint32_t key) {
    uint64_t v = 0;
    if (bpf_map_lookup_elem(fd, &key, &v) != 0)
        return UINT64_MAX;
    return v;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s OBJECT PID\n", argv[0]);
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj) != 0) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    uint32_t zero = 0, pid = (uint32_t)strtoul(argv[2], NULL, 10);
    if (bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "config"), &zero, &pid, 0) != 0) {
        fprintf(stderr, "cannot set the pid: %s\n", strerror(errno));
        return 1;
    }
    const char *names[] = {"getpid_enter", "getpid_exit"};
    for (int i = 0; i < 2; i++) {
        struct bpf_program *p = bpf_object__find_program_by_name(obj, names[i]);
        struct bpf_link *l = p ? bpf_program__attach_trace(p) : NULL;
        if (!l) {
            fprintf(stderr, "cannot attach %s: %s\n", names[i], strerror(errno));
            return 1;
        }
    }
    struct bpf_program *plain = bpf_object__find_program_by_name(obj, "plain_raw");
    int fd = bpf_link_create(bpf_program__fd(plain), 0, BPF_TRACE_RAW_TP, NULL);
    printf("plain raw_tp link_create: %s\n", fd >= 0 ? "accepted" : strerror(errno));
    fd = bpf_raw_tracepoint_open(
        "sys_enter", bpf_program__fd(bpf_object__find_program_by_name(obj, "getpid_enter")));
    printf("named raw_tracepoint_open of a tp_btf program: %s\n",
           fd >= 0 ? "accepted" : strerror(errno));
    printf("attached\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    int counts = bpf_object__find_map_fd_by_name(obj, "counts");
    printf("enters %llu exits %llu\n", (unsigned long long)slot(counts, 0),
           (unsigned long long)slot(counts, 1));
    bpf_object__close(obj);
    return 0;
}

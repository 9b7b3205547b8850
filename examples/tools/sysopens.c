// SPDX-License-Identifier: MIT
/*
 * sysopens: prints one line per openat call as it returns (pid, flags, return value, path),
 * from the syscall tracepoints sys_enter_openat and sys_exit_openat and a ring buffer. Stops
 * on Ctrl-C. A libbpf skeleton loader.
 *
 * Usage: sysopens [-p PID]
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/types.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sysopens.h"
#include "sysopens.skel.h"

static volatile sig_atomic_t exiting;

static void sig_handler(int sig) {
    (void)sig;
    exiting = 1;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_DEBUG && !getenv("SYSOPENS_DEBUG"))
        return 0;
    return vfprintf(stderr, format, args);
}

static int handle_event(void *ctx, void *data, size_t size) {
    const struct open_event *e = data;

    (void)ctx;
    if (size < sizeof(*e))
        return 0;
    printf("pid %u flags %d ret %lld path %.*s\n", e->pid, e->flags, (long long)e->ret,
           SYSOPENS_PATH_LEN, e->path);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    struct ring_buffer *rb = NULL;
    struct sysopens_bpf *skel;
    long pid = 0;
    int opt, err = 0;

    while ((opt = getopt(argc, argv, "p:h")) != -1) {
        switch (opt) {
        case 'p':
            pid = strtol(optarg, NULL, 10);
            if (pid <= 0) {
                fprintf(stderr, "sysopens: invalid PID '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            fprintf(stderr, "Usage: %s [-p PID]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    libbpf_set_print(libbpf_print_fn);
    signal(SIGINT, sig_handler);
    signal(SIGTERM, sig_handler);

    skel = sysopens_bpf__open();
    if (!skel) {
        fprintf(stderr, "failed to open the BPF skeleton\n");
        return 1;
    }
    skel->rodata->target_pid = (__u32)pid;
    err = sysopens_bpf__load(skel);
    if (err) {
        fprintf(stderr, "failed to load the BPF skeleton: %d\n", err);
        goto out;
    }
    err = sysopens_bpf__attach(skel);
    if (err) {
        fprintf(stderr, "failed to attach the BPF programs: %d\n", err);
        goto out;
    }
    rb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
    if (!rb) {
        err = -errno;
        fprintf(stderr, "failed to create the ring buffer: %d\n", err);
        goto out;
    }
    printf("Tracing openat... Hit Ctrl-C to end.\n");
    fflush(stdout);
    while (!exiting) {
        err = ring_buffer__poll(rb, 100);
        if (err == -EINTR) {
            err = 0;
            break;
        }
        if (err < 0) {
            fprintf(stderr, "error polling the ring buffer: %d\n", err);
            break;
        }
        err = 0;
    }
out:
    ring_buffer__free(rb);
    sysopens_bpf__destroy(skel);
    return err < 0 ? -err : err;
}

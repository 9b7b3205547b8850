// SPDX-License-Identifier: MIT
/*
 * rbevents: prints one line per call of a user-space function, from the records its eBPF
 * program writes into a ring buffer (ring_buffer__poll). Stops on Ctrl-C or after -d SECONDS.
 * A libbpf skeleton loader.
 *
 * Usage: rbevents [-p PID] [-d SECONDS] BINARY:FUNCTION
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <limits.h>
#include <linux/types.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rbevents.h"
#include "rbevents.skel.h"

static volatile sig_atomic_t exiting;

static void sig_handler(int sig) {
    (void)sig;
    exiting = 1;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_DEBUG && !getenv("RBEVENTS_DEBUG"))
        return 0;
    return vfprintf(stderr, format, args);
}

static void usage(const char *prog) {
    fprintf(stderr,
            "Usage: %s [-p PID] [-d SECONDS] BINARY:FUNCTION\n"
            "Prints a line per call of FUNCTION in BINARY: pid, tid, comm and its\n"
            "first three arguments, until Ctrl-C or for SECONDS.\n",
            prog);
}

static int handle_event(void *ctx, void *data, size_t size) {
    const struct rb_event *e = data;

    (void)ctx;
    if (size < sizeof(*e))
        return 0;
    printf("pid %u tid %u comm %.*s args %lld %lld %lld\n", e->pid, e->tid, RBEVENTS_COMM_LEN,
           e->comm, (long long)e->args[0], (long long)e->args[1], (long long)e->args[2]);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    LIBBPF_OPTS(bpf_uprobe_opts, uopts);
    struct ring_buffer *rb = NULL;
    struct rbevents_bpf *skel;
    struct bpf_link *link = NULL;
    long pid = 0, duration = 0;
    struct timespec start, now;
    char binary[PATH_MAX];
    const char *func;
    int opt, err = 0;

    while ((opt = getopt(argc, argv, "p:d:h")) != -1) {
        switch (opt) {
        case 'p':
            pid = strtol(optarg, NULL, 10);
            if (pid <= 0) {
                fprintf(stderr, "rbevents: invalid PID '%s'\n", optarg);
                return 2;
            }
            break;
        case 'd':
            duration = strtol(optarg, NULL, 10);
            if (duration <= 0) {
                fprintf(stderr, "rbevents: invalid duration '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            usage(argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (optind != argc - 1 || !strchr(argv[optind], ':')) {
        usage(argv[0]);
        return 2;
    }
    func = strrchr(argv[optind], ':') + 1;
    snprintf(binary, sizeof(binary), "%.*s", (int)(func - 1 - argv[optind]), argv[optind]);
    if (!*func || !*binary) {
        usage(argv[0]);
        return 2;
    }
    libbpf_set_print(libbpf_print_fn);

    skel = rbevents_bpf__open();
    if (!skel) {
        fprintf(stderr, "rbevents: failed to open the BPF skeleton\n");
        return 1;
    }
    skel->rodata->targ_pid = (__u32)pid;
    err = rbevents_bpf__load(skel);
    if (err) {
        fprintf(stderr, "rbevents: failed to load the BPF skeleton: %d\n", err);
        goto cleanup;
    }
    uopts.func_name = func;
    link = bpf_program__attach_uprobe_opts(skel->progs.call_event, pid ? (pid_t)pid : -1, binary, 0,
                                           &uopts);
    if (!link) {
        err = -errno;
        fprintf(stderr, "rbevents: cannot attach to %s in %s: %s\n", func, binary, strerror(errno));
        goto cleanup;
    }
    rb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
    if (!rb) {
        err = -errno;
        fprintf(stderr, "rbevents: failed to create the ring buffer: %s\n", strerror(errno));
        goto cleanup;
    }
    signal(SIGINT, sig_handler);
    signal(SIGTERM, sig_handler);
    printf("Tracing calls of %s in %s... Hit Ctrl-C to end.\n", func, binary);
    fflush(stdout);

    clock_gettime(CLOCK_MONOTONIC, &start);
    while (!exiting) {
        err = ring_buffer__poll(rb, 100 /* ms */);
        if (err == -EINTR) {
            err = 0;
            break;
        }
        if (err < 0) {
            fprintf(stderr, "rbevents: polling the ring buffer failed: %d\n", err);
            break;
        }
        err = 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (duration && now.tv_sec - start.tv_sec >= duration)
            break;
    }
    /* Records written before the stop are still printed. */
    ring_buffer__consume(rb);
cleanup:
    ring_buffer__free(rb);
    bpf_link__destroy(link);
    rbevents_bpf__destroy(skel);
    return err ? 1 : 0;
}

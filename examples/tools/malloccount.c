// SPDX-License-Identifier: MIT
/*
 * malloccount: counts malloc() calls per process and per size until Ctrl-C (or -d SECONDS),
 * then prints the table. A libbpf skeleton loader, as libbpf-bootstrap's tools are.
 *
 * Usage: malloccount [-p PID] [-d SECONDS]
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

#include "malloccount.h"
#include "malloccount.skel.h"

static volatile sig_atomic_t exiting;

static void sig_handler(int sig) {
    (void)sig;
    exiting = 1;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_DEBUG && !getenv("MALLOCCOUNT_DEBUG"))
        return 0;
    return vfprintf(stderr, format, args);
}

static void usage(const char *prog) {
    fprintf(stderr,
            "Usage: %s [-p PID] [-d SECONDS]\n"
            "Counts malloc() calls per process and size; prints the table on Ctrl-C\n"
            "or after SECONDS.\n",
            prog);
}

struct row {
    struct malloc_key key;
    __u64 count;
};

static int by_pid_then_size(const void *a, const void *b) {
    const struct row *x = a, *y = b;

    if (x->key.pid != y->key.pid)
        return x->key.pid < y->key.pid ? -1 : 1;
    if (x->key.size != y->key.size)
        return x->key.size < y->key.size ? -1 : 1;
    return 0;
}

static int print_counts(int fd) {
    struct malloc_key key, next, *prev = NULL;
    struct row *rows = NULL;
    size_t n = 0, cap = 0;
    int err;

    while ((err = bpf_map_get_next_key(fd, prev, &next)) == 0) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            rows = realloc(rows, cap * sizeof(*rows));
            if (!rows)
                return -ENOMEM;
        }
        rows[n].key = next;
        if (bpf_map_lookup_elem(fd, &next, &rows[n].count) == 0)
            n++;
        key = next;
        prev = &key;
    }
    if (errno != ENOENT) {
        err = -errno;
        fprintf(stderr, "malloccount: reading the counts failed: %s\n", strerror(errno));
        free(rows);
        return err;
    }
    if (n > 0) /* qsort of a null array is undefined even for 0 items */
        qsort(rows, n, sizeof(*rows), by_pid_then_size);
    printf("%8s %12s %10s\n", "PID", "SIZE", "COUNT");
    for (size_t i = 0; i < n; i++)
        printf("%8u %12llu %10llu\n", rows[i].key.pid, (unsigned long long)rows[i].key.size,
               (unsigned long long)rows[i].count);
    free(rows);
    return 0;
}

int main(int argc, char **argv) {
    struct malloccount_bpf *skel;
    long pid = 0, duration = 0;
    int opt, err;

    while ((opt = getopt(argc, argv, "p:d:h")) != -1) {
        switch (opt) {
        case 'p':
            pid = strtol(optarg, NULL, 10);
            if (pid <= 0) {
                fprintf(stderr, "malloccount: invalid PID '%s'\n", optarg);
                return 2;
            }
            break;
        case 'd':
            duration = strtol(optarg, NULL, 10);
            if (duration <= 0) {
                fprintf(stderr, "malloccount: invalid duration '%s'\n", optarg);
                return 2;
            }
            break;
        default:
            usage(argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    libbpf_set_print(libbpf_print_fn);

    skel = malloccount_bpf__open();
    if (!skel) {
        fprintf(stderr, "malloccount: failed to open the BPF skeleton\n");
        return 1;
    }
    skel->rodata->targ_pid = (__u32)pid;
    err = malloccount_bpf__load(skel);
    if (err) {
        fprintf(stderr, "malloccount: failed to load the BPF skeleton: %d\n", err);
        goto cleanup;
    }
    err = malloccount_bpf__attach(skel);
    if (err) {
        fprintf(stderr, "malloccount: failed to attach the BPF skeleton: %d\n", err);
        goto cleanup;
    }
    signal(SIGINT, sig_handler);
    signal(SIGTERM, sig_handler);
    if (pid)
        printf("Tracing malloc() calls of PID %ld... Hit Ctrl-C to end.\n", pid);
    else
        printf("Tracing malloc() calls... Hit Ctrl-C to end.\n");
    fflush(stdout);

    for (long waited = 0; !exiting && (!duration || waited < duration * 10); waited++)
        usleep(100000);
    printf("\n");
    err = print_counts(bpf_map__fd(skel->maps.counts));
cleanup:
    malloccount_bpf__destroy(skel);
    return err ? 1 : 0;
}

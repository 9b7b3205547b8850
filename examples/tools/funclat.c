// SPDX-License-Identifier: MIT
/*
 * funclat: the latency of a user-space function as a log2 histogram, printed on Ctrl-C (or
 * after -d SECONDS) as bcc's funclatency prints it. A libbpf skeleton loader.
 *
 * Usage: funclat [-u | -m] [-p PID] [-d SECONDS] BINARY:FUNCTION
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
#include <unistd.h>

#include "funclat.h"
#include "funclat.skel.h"

static volatile sig_atomic_t exiting;

static void sig_handler(int sig) {
    (void)sig;
    exiting = 1;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_DEBUG && !getenv("FUNCLAT_DEBUG"))
        return 0;
    return vfprintf(stderr, format, args);
}

static void usage(const char *prog) {
    fprintf(stderr,
            "Usage: %s [-u | -m] [-p PID] [-d SECONDS] BINARY:FUNCTION\n"
            "Histogram of FUNCTION's latency in BINARY (nanoseconds; -u microseconds,\n"
            "-m milliseconds), printed on Ctrl-C or after SECONDS.\n",
            prog);
}

static void print_stars(unsigned int val, unsigned int val_max, int width) {
    int num_stars = val_max ? (int)((unsigned long long)val * width / val_max) : 0;
    int i;

    for (i = 0; i < num_stars && i < width; i++)
        putchar('*');
    for (; i < width; i++)
        putchar(' ');
    if (val > val_max)
        putchar('+');
}

/* The histogram in funclatency's layout: one line per slot up to the last one used. */
static void print_log2_hist(const __u32 *vals, int n, const char *unit) {
    unsigned int val_max = 0;
    int idx_max = -1;

    for (int i = 0; i < n; i++) {
        if (vals[i] > 0)
            idx_max = i;
        if (vals[i] > val_max)
            val_max = vals[i];
    }
    if (idx_max < 0)
        return;
    printf("%*s%-*s : count    distribution\n", idx_max <= 32 ? 5 : 15, "", idx_max <= 32 ? 19 : 29,
           unit);
    for (int i = 0; i <= idx_max; i++) {
        unsigned long long low = i == 0 ? 0 : 1ULL << i;
        unsigned long long high = (1ULL << (i + 1)) - 1;

        printf("%*llu -> %-*llu : %-8u |", idx_max <= 32 ? 10 : 20, low, idx_max <= 32 ? 10 : 20,
               high, vals[i]);
        print_stars(vals[i], val_max, 40);
        printf("|\n");
    }
}

int main(int argc, char **argv) {
    LIBBPF_OPTS(bpf_uprobe_opts, uopts);
    const char *unit = "nsecs";
    __u32 units = FUNCLAT_NSEC;
    struct funclat_bpf *skel;
    struct bpf_link *entry = NULL, *exit_link = NULL;
    long pid = 0, duration = 0;
    char binary[PATH_MAX];
    const char *func;
    int opt, err = 0;

    while ((opt = getopt(argc, argv, "ump:d:h")) != -1) {
        switch (opt) {
        case 'u':
            units = FUNCLAT_USEC;
            unit = "usecs";
            break;
        case 'm':
            units = FUNCLAT_MSEC;
            unit = "msecs";
            break;
        case 'p':
            pid = strtol(optarg, NULL, 10);
            if (pid <= 0) {
                fprintf(stderr, "funclat: invalid PID '%s'\n", optarg);
                return 2;
            }
            break;
        case 'd':
            duration = strtol(optarg, NULL, 10);
            if (duration <= 0) {
                fprintf(stderr, "funclat: invalid duration '%s'\n", optarg);
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

    skel = funclat_bpf__open();
    if (!skel) {
        fprintf(stderr, "funclat: failed to open the BPF skeleton\n");
        return 1;
    }
    skel->rodata->targ_pid = (__u32)pid;
    skel->rodata->units = units;
    err = funclat_bpf__load(skel);
    if (err) {
        fprintf(stderr, "funclat: failed to load the BPF skeleton: %d\n", err);
        goto cleanup;
    }
    uopts.func_name = func;
    uopts.retprobe = false;
    entry = bpf_program__attach_uprobe_opts(skel->progs.func_entry, pid ? (pid_t)pid : -1, binary,
                                            0, &uopts);
    if (!entry) {
        err = -errno;
        fprintf(stderr, "funclat: cannot attach to %s in %s: %s\n", func, binary, strerror(errno));
        goto cleanup;
    }
    uopts.retprobe = true;
    exit_link = bpf_program__attach_uprobe_opts(skel->progs.func_exit, pid ? (pid_t)pid : -1,
                                                binary, 0, &uopts);
    if (!exit_link) {
        err = -errno;
        fprintf(stderr, "funclat: cannot attach to the return of %s in %s: %s\n", func, binary,
                strerror(errno));
        goto cleanup;
    }
    signal(SIGINT, sig_handler);
    signal(SIGTERM, sig_handler);
    printf("Tracing %s in %s... Hit Ctrl-C to end.\n", func, binary);
    fflush(stdout);

    for (long waited = 0; !exiting && (!duration || waited < duration * 10); waited++)
        usleep(100000);
    printf("\n");
    print_log2_hist(skel->bss->hist, FUNCLAT_SLOTS, unit);
    printf("Exiting trace of %s\n", func);
cleanup:
    bpf_link__destroy(exit_link);
    bpf_link__destroy(entry);
    funclat_bpf__destroy(skel);
    return err ? 1 : 0;
}

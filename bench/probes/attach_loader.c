// SPDX-License-Identifier: MIT
/*
 * A plain libbpf loader for the interposer benchmark: opens OBJECT, loads it, attaches PROGRAM
 * as a uprobe at FUNCTION of BINARY in process PID, says "attached" and keeps the link until
 * its standard input closes. Run under `bpftime load`, its link lives in the segment.
 *
 * Usage: attach_loader OBJECT PROGRAM BINARY FUNCTION PID
 */
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    LIBBPF_OPTS(bpf_uprobe_opts, opts);
    struct bpf_object *obj;
    struct bpf_program *prog;
    struct bpf_link *link;
    char c;

    if (argc != 6) {
        fprintf(stderr, "usage: %s OBJECT PROGRAM BINARY FUNCTION PID\n", argv[0]);
        return 2;
    }
    obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj) != 0) {
        fprintf(stderr, "attach_loader: cannot load %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    prog = bpf_object__find_program_by_name(obj, argv[2]);
    if (!prog) {
        fprintf(stderr, "attach_loader: no program %s in %s\n", argv[2], argv[1]);
        return 1;
    }
    opts.func_name = argv[4];
    link = bpf_program__attach_uprobe_opts(prog, atoi(argv[5]), argv[3], 0, &opts);
    if (!link) {
        fprintf(stderr, "attach_loader: cannot attach %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    printf("attached\n");
    fflush(stdout);
    while (read(0, &c, 1) > 0) {
    }
    bpf_link__destroy(link);
    bpf_object__close(obj);
    return 0;
}

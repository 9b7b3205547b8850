// SPDX-License-Identifier: MIT
// A libbpf loader of usdt_args.bpf.o, as a user writes one: bpf_program__attach_usdt for the
// probes of 0, 2 and 6 arguments (a USDT cookie on the last) and the section's own target
// for the gated probe. Then it answers commands on stdin, one line each:
//   dump           "seen V0 V1 ... V17", the seen map's values
//   detach NAME    destroys the link of program NAME ("ok")
//   exit
// Usage: usdt_loader OBJECT TARGET_BINARY
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <stdio.h>
#include <string.h>

static const char *const names[] = {"usdt_zero", "usdt_two", "usdt_six", "usdt_gated"};
#define N_PROGS 4

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s OBJECT TARGET_BINARY\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || libbpf_get_error(obj)) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    if (bpf_object__load(obj) != 0) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    struct bpf_link *links[N_PROGS] = {0};
    for (int i = 0; i < N_PROGS; i++) {
        struct bpf_program *prog = bpf_object__find_program_by_name(obj, names[i]);
        if (!prog) {
            fprintf(stderr, "no program %s\n", names[i]);
            return 1;
        }
        if (i == 3) {
            links[i] = bpf_program__attach(prog); // usdt/usdt_target:bpftime_test:gated
        } else {
            LIBBPF_OPTS(bpf_usdt_opts, opts, .usdt_cookie = i == 2 ? 0xc00c1e : 0);
            links[i] = bpf_program__attach_usdt(prog, -1, argv[2], "bpftime_test",
                                                names[i] + strlen("usdt_"), &opts);
        }
        if (!links[i] || libbpf_get_error(links[i])) {
            fprintf(stderr, "cannot attach %s: %s\n", names[i],
                    strerror((int)-libbpf_get_error(links[i])));
            return 1;
        }
    }
    int seen = bpf_object__find_map_fd_by_name(obj, "seen");
    printf("attached %d\n", N_PROGS);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char name[64];
        if (strncmp(line, "dump", 4) == 0) {
            printf("seen");
            for (unsigned k = 0; k < 18; k++) {
                unsigned long long v = 0;
                if (bpf_map_lookup_elem(seen, &k, &v) != 0) {
                    printf(" ?");
                } else {
                    printf(" %llu", v);
                }
            }
            printf("\n");
        } else if (sscanf(line, "detach %63s", name) == 1) {
            int found = 0;
            for (int i = 0; i < N_PROGS; i++) {
                if (strcmp(names[i], name) == 0 && links[i]) {
                    bpf_link__destroy(links[i]);
                    links[i] = NULL;
                    found = 1;
                }
            }
            printf(found ? "ok\n" : "no link\n");
        } else if (strncmp(line, "exit", 4) == 0) {
            break;
        }
    }
    for (int i = 0; i < N_PROGS; i++) {
        bpf_link__destroy(links[i]);
    }
    bpf_object__close(obj);
    return 0;
}

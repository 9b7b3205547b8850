// SPDX-License-Identifier: MIT
// A libbpf loader of mapinmap.bpf.o that uses maps of maps as tools do: the object's
// BTF-defined outer maps (one given its template with bpf_map__set_inner_map_fd), an outer map
// made with bpf_map_create's inner_map_fd, updates with map fds, lookups that give map ids,
// refused updates, and an inner map that lives on in an outer map after its fd is closed. It
// prints one `name=answer` line per step, with no ids, so the kernel's run and a run under
// `bpftime load PROGRAM` can be compared line by line.
// Usage: mim_loader OBJECT
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static unsigned id_of(int fd) {
    struct bpf_map_info info;
    unsigned len = sizeof info;
    memset(&info, 0, sizeof info);
    return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

// The id an outer map holds at key, 0 with errno when none.
static unsigned inner_at(int outer, unsigned key) {
    unsigned id = 0;
    return bpf_map_lookup_elem(outer, &key, &id) == 0 ? id : 0;
}

static const char *err(int rc) {
    return rc == 0 ? "ok" : strerror(errno);
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args) {
    (void)level;
    (void)fmt;
    (void)args;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OBJECT\n", argv[0]);
        return 2;
    }
    libbpf_set_print(quiet);
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (obj == NULL) {
        fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    // outer_hash takes its template from a map of this process instead of its BTF.
    int tmpl = bpf_map_create(BPF_MAP_TYPE_ARRAY, "tmpl", 4, 8, 4, NULL);
    struct bpf_map *outer_hash = bpf_object__find_map_by_name(obj, "outer_hash");
    printf("set_inner_map_fd=%s\n", err(bpf_map__set_inner_map_fd(outer_hash, tmpl)));
    int rc = bpf_object__load(obj);
    printf("load=%s\n", err(rc));
    if (rc != 0) {
        return 1;
    }
    close(tmpl);
    int oa = bpf_object__find_map_fd_by_name(obj, "outer_array");
    int oh = bpf_map__fd(outer_hash);
    int a = bpf_object__find_map_fd_by_name(obj, "counts_a");
    int b = bpf_object__find_map_fd_by_name(obj, "counts_b");
    int c = bpf_object__find_map_fd_by_name(obj, "counts_c");
    printf("initial_0_is_a=%d\n", inner_at(oa, 0) == id_of(a));
    printf("initial_1_is_b=%d\n", inner_at(oa, 1) == id_of(b));
    printf("initial_hash_2_is_c=%d\n", inner_at(oh, 2) == id_of(c));
    unsigned key = 2;
    unsigned id = 0;
    rc = bpf_map_lookup_elem(oa, &key, &id);
    printf("lookup_empty=%s\n", err(rc));

    // Updates with fds; lookups give ids.
    key = 0;
    printf("update_fd=%s\n", err(bpf_map_update_elem(oa, &key, &c, BPF_ANY)));
    printf("switched_0_is_c=%d\n", inner_at(oa, 0) == id_of(c));
    key = 7;
    printf("hash_update=%s\n", err(bpf_map_update_elem(oh, &key, &a, BPF_NOEXIST)));
    printf("hash_7_is_a=%d\n", inner_at(oh, 7) == id_of(a));
    printf("hash_update_noexist=%s\n", err(bpf_map_update_elem(oh, &key, &b, BPF_NOEXIST)));

    // Refusals.
    int big = bpf_map_create(BPF_MAP_TYPE_ARRAY, "big", 4, 16, 4, NULL);
    int longer = bpf_map_create(BPF_MAP_TYPE_ARRAY, "longer", 4, 8, 8, NULL);
    int hash = bpf_map_create(BPF_MAP_TYPE_HASH, "hash", 4, 8, 4, NULL);
    key = 3;
    printf("update_value_size=%s\n", err(bpf_map_update_elem(oa, &key, &big, BPF_ANY)));
    printf("update_max_entries=%s\n", err(bpf_map_update_elem(oa, &key, &longer, BPF_ANY)));
    printf("update_type=%s\n", err(bpf_map_update_elem(oa, &key, &hash, BPF_ANY)));
    printf("update_outer=%s\n", err(bpf_map_update_elem(oa, &key, &oh, BPF_ANY)));
    int prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "count_array"));
    printf("update_prog=%s\n", err(bpf_map_update_elem(oa, &key, &prog, BPF_ANY)));
    int bad = 999;
    printf("update_bad_fd=%s\n", err(bpf_map_update_elem(oa, &key, &bad, BPF_ANY)));
    key = 9;
    printf("update_out_of_range=%s\n", err(bpf_map_update_elem(oa, &key, &a, BPF_ANY)));
    printf("refusals_left_it_empty=%d\n", inner_at(oa, 3) == 0);

    // An outer map made by hand from a template fd; a template that is itself a map of maps
    // is refused.
    LIBBPF_OPTS(bpf_map_create_opts, opts, .inner_map_fd = (unsigned)a);
    int made = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "made", 4, 4, 2, &opts);
    printf("create_outer=%s\n", made >= 0 ? "ok" : strerror(errno));
    LIBBPF_OPTS(bpf_map_create_opts, nested, .inner_map_fd = (unsigned)oa);
    int n = bpf_map_create(BPF_MAP_TYPE_HASH_OF_MAPS, "nested", 4, 4, 2, &nested);
    printf("create_nested=%s\n", n >= 0 ? "ok" : strerror(errno));
    LIBBPF_OPTS(bpf_map_create_opts, none);
    n = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "none", 4, 4, 2, &none);
    printf("create_without_template=%s\n", n >= 0 ? "ok" : strerror(errno));

    // A map whose only fd is closed lives on in the outer map, and goes with its entry.
    int kept = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kept", 4, 8, 4, NULL);
    unsigned kept_id = id_of(kept);
    key = 1;
    unsigned one = 1;
    unsigned long long v = 42;
    bpf_map_update_elem(kept, &one, &v, BPF_ANY);
    printf("update_made=%s\n", err(bpf_map_update_elem(made, &key, &kept, BPF_ANY)));
    close(kept);
    int again = bpf_map_get_fd_by_id(inner_at(made, 1));
    v = 0;
    printf("kept_alive=%d\n", again >= 0 && bpf_map_lookup_elem(again, &one, &v) == 0 && v == 42);
    printf("kept_same_id=%d\n", inner_at(made, 1) == kept_id);
    if (again >= 0) {
        close(again);
    }
    printf("delete_entry=%s\n", err(bpf_map_delete_elem(made, &key)));
    // The kernel frees the map after an RCU grace period: wait for the id to go.
    int gone = 0;
    for (int i = 0; i < 200 && !gone; i++) {
        int fd = bpf_map_get_fd_by_id(kept_id);
        if (fd < 0) {
            gone = errno == ENOENT;
        } else {
            close(fd);
            usleep(10000);
        }
    }
    printf("released=%d\n", gone);
    bpf_object__close(obj);
    return 0;
}

// SPDX-License-Identifier: MIT
// A libbpf loader for the interposer's tests: it calls libbpf directly (no skeleton) and
// reads one command a line from standard input, printing one result line for each, so a test
// can interleave its commands with the bpftime CLI's while the loader keeps its fds open.
// Integers are decimal; keys and values are little-endian integers of the map's sizes.
//
//   map_create TYPE NAME KEY_SIZE VALUE_SIZE MAX_ENTRIES [FLAGS [MAP_EXTRA]]  -> fd=N | err=NAME
//   update FD KEY VALUE [FLAGS] | lookup FD KEY [FLAGS] | delete FD KEY | next FD [KEY] | freeze FD
//   info FD | close FD | dup FD | dup2 FD NEWFD | fcntl_dup FD | pin FD PATH | get PATH
//   prog_ok | prog_bad | prog_map FD          -> load small programs (log on failure)
//   open OBJ                                  -> bpf_object__open_file + load
//   map_fd NAME | prog_fd NAME
//   push MAP VALUE [FLAGS] | pop MAP | peek MAP [VALUE]  -> libbpf's bpf_map__*_elem of the open
//                                             object's map with a NULL key: value=N | err=NAME
//   lpm_update MAP PREFIXLEN A.B.C.D VALUE | lpm_lookup MAP A.B.C.D  -> an IPv4 LPM trie
//   uprobe PROG BINARY FUNC RET COOKIE        -> bpf_program__attach_uprobe_opts, link=K
//   detach K                                  -> bpf_link__destroy
//   ringbuf MAP COUNT TIMEOUT_MS              -> ring_buffer__poll until COUNT records
//   idle_poll MAP TIMEOUT_MS                  -> one poll on an idle ring: ms=... n=...
//   bss NAME OFFSET                           -> the u64 at OFFSET of the map's values, mmap'ed
//   (an FD argument written $ is the last fd a command printed)
//   bss_set NAME OFFSET VALUE
//   epoll_mixed MAP                           -> a pipe in the ring buffer's epoll set
//   perfbuf_open MAP PAGES                    -> perf_buffer__new on a perf event array
//   perfbuf_poll COUNT TIMEOUT_MS             -> perf_buffer__poll until COUNT new samples:
//                                                their values sorted, count=, lost=
//   perfbuf_free
//   perf_bad MAP                              -> a BPF output event used wrongly, each errno
//   pipe | kernel_perf                        -> fds that are not the interposer's
//   probe_helper ID                           -> libbpf_probe_bpf_helper for a kprobe program:
//                                                supported=0|1 (or err=NAME)
//   locked_pairs FD N [batch|plain]           -> BPF_F_LOCK lookups and updates of a locked pair:
//                                                torn=T lockword=L refused=R
//   exit
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static struct bpf_object *obj;
static struct bpf_link *links[64];
static int nlinks;
static uint32_t key_sizes[4096], value_sizes[4096];
static int last_fd = -1; // "$" in a command: the last fd a command printed

static const char *errname(int e) {
    switch (e) {
    case ENOENT:
        return "ENOENT";
    case EINVAL:
        return "EINVAL";
    case EBADF:
        return "EBADF";
    case EPERM:
        return "EPERM";
    case EEXIST:
        return "EEXIST";
    case E2BIG:
        return "E2BIG";
    case EACCES:
        return "EACCES";
    case EOPNOTSUPP:
        return "EOPNOTSUPP";
    case EBUSY:
        return "EBUSY";
    case ENOTTY:
        return "ENOTTY";
    default:
        return strerror(e);
    }
}

static void result(int rc) {
    if (rc < 0) {
        printf("err=%s\n", errname(errno));
    } else {
        printf("ok\n");
    }
}

static void fd_result(int fd) {
    if (fd < 0) {
        printf("err=%s\n", errname(errno));
    } else {
        last_fd = fd;
        printf("fd=%d\n", fd);
    }
}

static void put_int(void *dst, uint32_t size, uint64_t v) {
    memset(dst, 0, size);
    memcpy(dst, &v, size < 8 ? size : 8);
}

static uint64_t get_int(const void *src, uint32_t size) {
    uint64_t v = 0;
    memcpy(&v, src, size < 8 ? size : 8);
    return v;
}

static int sizes_of(int fd, uint32_t *ks, uint32_t *vs) {
    if (fd < 0 || fd >= 4096) {
        return -1;
    }
    if (key_sizes[fd] == 0 && value_sizes[fd] == 0) {
        struct bpf_map_info info = {0};
        uint32_t len = sizeof info;
        if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
            key_sizes[fd] = info.key_size;
            value_sizes[fd] = info.value_size;
        }
    }
    *ks = key_sizes[fd];
    *vs = value_sizes[fd];
    return 0;
}

static int count_records;
static int handle_record(void *ctx, void *data, size_t size) {
    (void)ctx;
    uint64_t v = 0;
    memcpy(&v, data, size < 8 ? size : 8);
    printf("%s%llu", count_records++ ? " " : "record ", (unsigned long long)v);
    return 0;
}

static struct perf_buffer *pb;
static uint64_t perf_values[4096];
static int perf_count;
static unsigned long long perf_lost;
static void on_sample(void *ctx, int cpu, void *data, uint32_t size) {
    (void)ctx;
    (void)cpu;
    if (perf_count < 4096) {
        perf_values[perf_count++] = get_int(data, size < 8 ? size : 8);
    }
}
static void on_lost(void *ctx, int cpu, unsigned long long n) {
    (void)ctx;
    (void)cpu;
    perf_lost += n;
}
static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int load_prog(const struct bpf_insn *insns, size_t n, char *log, size_t log_size) {
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .log_buf = log, .log_size = (unsigned)log_size,
                .log_level = 1);
    return bpf_prog_load(BPF_PROG_TYPE_KPROBE, "test_prog", "GPL", insns, n, &opts);
}

static void command(char *line) {
    char *argv[16] = {0};
    int argc = 0;
    for (char *tok = strtok(line, " \t\n"); tok && argc < 16; tok = strtok(NULL, " \t\n")) {
        argv[argc++] = tok;
    }
    if (argc == 0) {
        return;
    }
    const char *c = argv[0];
#define ARG(i)                                                                                     \
    (argc > (i) ? (!strcmp(argv[i], "$") ? (uint64_t)last_fd : strtoull(argv[i], NULL, 0)) : 0)
    if (!strcmp(c, "map_create") && argc >= 6) {
        LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = (uint32_t)ARG(6), .map_extra = ARG(7));
        int fd = bpf_map_create((enum bpf_map_type)ARG(1), argv[2], (uint32_t)ARG(3),
                                (uint32_t)ARG(4), (uint32_t)ARG(5), &opts);
        if (fd >= 0 && fd < 4096) {
            key_sizes[fd] = (uint32_t)ARG(3);
            value_sizes[fd] = (uint32_t)ARG(4);
        }
        fd_result(fd);
    } else if (!strcmp(c, "update") || !strcmp(c, "lookup") || !strcmp(c, "delete") ||
               !strcmp(c, "next")) {
        int fd = (int)ARG(1);
        uint32_t ks = 0, vs = 0;
        sizes_of(fd, &ks, &vs);
        uint8_t key[512], next[512], value[65536];
        put_int(key, ks, ARG(2));
        int rc;
        if (!strcmp(c, "update")) {
            put_int(value, vs, ARG(3));
            result(bpf_map_update_elem(fd, key, value, ARG(4)));
        } else if (!strcmp(c, "lookup")) {
            rc = bpf_map_lookup_elem_flags(fd, key, value, argc > 3 ? ARG(3) : 0);
            if (rc < 0) {
                result(rc);
            } else {
                printf("value=%llu\n", (unsigned long long)get_int(value, vs));
            }
        } else if (!strcmp(c, "delete")) {
            result(bpf_map_delete_elem(fd, key));
        } else {
            rc = bpf_map_get_next_key(fd, argc > 2 ? key : NULL, next);
            if (rc < 0) {
                result(rc);
            } else {
                printf("key=%llu\n", (unsigned long long)get_int(next, ks));
            }
        }
    } else if (!strcmp(c, "locked_pairs") && argc >= 3) {
        // locked_pairs FD N [batch|plain]: N lookups with BPF_F_LOCK of key 0 of a map whose
        // value is {struct bpf_spin_lock, u32, u64 count, u64 twice}, every 8th followed by an
        // update with BPF_F_LOCK to {0xdeadbeef, 0, K, 2K}: how many copies were torn (twice !=
        // 2 * count), how many showed a lock word, and the calls refused. batch: the lookups are
        // BPF_MAP_LOOKUP_BATCH of one entry with elem_flags BPF_F_LOCK; plain: lookups and
        // updates without BPF_F_LOCK (copies may then be torn).
        int fd = (int)ARG(1);
        long n = (long)ARG(2), torn = 0, lockword = 0, refused = 0;
        const char *mode = argc > 3 ? argv[3] : "";
        int batch = !strcmp(mode, "batch"), plain = !strcmp(mode, "plain");
        struct {
            uint32_t lock, pad;
            uint64_t count, twice;
        } v;
        uint32_t zero = 0;
        for (long i = 0; i < n; i++) {
            int rc;
            if (batch) {
                LIBBPF_OPTS(bpf_map_batch_opts, o, .elem_flags = BPF_F_LOCK);
                uint32_t key = 0, out = 0, count = 1;
                rc = bpf_map_lookup_batch(fd, NULL, &out, &key, &v, &count, &o);
                rc = (rc == 0 || errno == ENOENT) && count == 1 ? 0 : -1;
            } else {
                rc = bpf_map_lookup_elem_flags(fd, &zero, &v, plain ? 0 : BPF_F_LOCK);
            }
            if (rc != 0) {
                refused++;
                continue;
            }
            torn += v.twice != 2 * v.count;
            lockword += v.lock != 0;
            if (i % 8 == 0) {
                v.lock = 0xdeadbeef;
                v.count += 1000;
                v.twice = 2 * v.count;
                refused += bpf_map_update_elem(fd, &zero, &v, plain ? 0 : BPF_F_LOCK) != 0;
            }
        }
        printf("torn=%ld lockword=%ld refused=%ld\n", torn, lockword, refused);
    } else if ((!strcmp(c, "batch") || !strcmp(c, "batch_delete")) && argc >= 3) {
        // batch[_delete] FD COUNT: every batch of up to COUNT entries until the walk ends, on one
        // line: "batch K=V K=V | K=V | end=ERRNO".
        int fd = (int)ARG(1);
        uint32_t ks = 0, vs = 0, token = 0, max = (uint32_t)ARG(2);
        sizes_of(fd, &ks, &vs);
        static uint8_t keys[65536], values[65536];
        int del = !strcmp(c, "batch_delete");
        printf("batch");
        for (int call = 0; call < 64; call++) {
            uint32_t count = max, out = 0;
            int rc = del ? bpf_map_lookup_and_delete_batch(fd, call ? &token : NULL, &out, keys,
                                                           values, &count, NULL)
                         : bpf_map_lookup_batch(fd, call ? &token : NULL, &out, keys, values,
                                                &count, NULL);
            int e = errno;
            uint32_t got = rc == 0 || e == ENOENT ? count : 0; // ENOENT: the last ones
            for (uint32_t i = 0; i < got; i++) {
                printf(" %llu=%llu", (unsigned long long)get_int(keys + (size_t)i * ks, ks),
                       (unsigned long long)get_int(values + (size_t)i * vs, vs));
            }
            token = out;
            if (rc < 0) {
                printf(" | end=%s\n", errname(e));
                break;
            }
            printf(" |");
        }
    } else if (!strcmp(c, "freeze")) {
        result(bpf_map_freeze((int)ARG(1)));
    } else if (!strcmp(c, "info")) {
        struct bpf_map_info info = {0};
        uint32_t len = sizeof info;
        if (bpf_obj_get_info_by_fd((int)ARG(1), &info, &len) < 0) {
            result(-1);
        } else {
            printf("id=%u type=%u name=%s key=%u value=%u max=%u flags=0x%x\n", info.id, info.type,
                   info.name, info.key_size, info.value_size, info.max_entries, info.map_flags);
        }
    } else if (!strcmp(c, "close")) {
        result(close((int)ARG(1)));
    } else if (!strcmp(c, "dup")) {
        fd_result(dup((int)ARG(1)));
    } else if (!strcmp(c, "dup2")) {
        fd_result(dup2((int)ARG(1), (int)ARG(2)));
    } else if (!strcmp(c, "fcntl_dup")) {
        fd_result(fcntl((int)ARG(1), F_DUPFD_CLOEXEC, 100));
    } else if (!strcmp(c, "pin")) {
        result(bpf_obj_pin((int)ARG(1), argv[2]));
    } else if (!strcmp(c, "get")) {
        fd_result(bpf_obj_get(argv[1]));
    } else if (!strcmp(c, "prog_ok") || !strcmp(c, "prog_bad") || !strcmp(c, "prog_map")) {
        struct bpf_insn ok[] = {
            {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
            {.code = BPF_JMP | BPF_EXIT},
        };
        // A jump past the end: the validator names the instruction.
        struct bpf_insn bad[] = {
            {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
            {.code = BPF_JMP | BPF_JA, .off = 5},
            {.code = BPF_JMP | BPF_EXIT},
        };
        // r1 = map (by fd); r2 = fp - 4; *(u32 *)(fp - 4) = 0; call map_lookup_elem; exit.
        struct bpf_insn with_map[] = {
            {.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = 10, .off = -4, .imm = 0},
            {.code = BPF_LD | BPF_DW | BPF_IMM,
             .dst_reg = 1,
             .src_reg = BPF_PSEUDO_MAP_FD,
             .imm = (int)ARG(1)},
            {0},
            {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = 2, .src_reg = 10},
            {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = 2, .imm = -4},
            {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_map_lookup_elem},
            {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
            {.code = BPF_JMP | BPF_EXIT},
        };
        char log[4096] = "";
        int fd = !strcmp(c, "prog_ok")    ? load_prog(ok, 2, log, sizeof log)
                 : !strcmp(c, "prog_bad") ? load_prog(bad, 3, log, sizeof log)
                                          : load_prog(with_map, 8, log, sizeof log);
        if (fd < 0) {
            printf("err=%s log=%s", errname(errno), log[0] ? log : "(empty)\n");
        } else {
            fd_result(fd);
        }
    } else if (!strcmp(c, "probe_helper")) {
        int rc = libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE, (enum bpf_func_id)ARG(1), NULL);
        if (rc < 0) {
            printf("err=%s\n", errname(-rc));
        } else {
            printf("supported=%d\n", rc);
        }
    } else if (!strcmp(c, "open")) {
        obj = bpf_object__open_file(argv[1], NULL);
        if (!obj) {
            result(-1);
            return;
        }
        result(bpf_object__load(obj));
    } else if ((!strcmp(c, "push") || !strcmp(c, "pop") || !strcmp(c, "peek")) && argc >= 2) {
        struct bpf_map *m = obj ? bpf_object__find_map_by_name(obj, argv[1]) : NULL;
        if (!m) {
            errno = ENOENT;
            result(-1);
            return;
        }
        uint32_t vs = bpf_map__value_size(m);
        uint8_t value[512];
        put_int(value, vs, ARG(2));
        if (!strcmp(c, "push")) {
            result(bpf_map__update_elem(m, NULL, 0, value, vs, ARG(3)));
            return;
        }
        int rc = !strcmp(c, "pop") ? bpf_map__lookup_and_delete_elem(m, NULL, 0, value, vs, 0)
                                   : bpf_map__lookup_elem(m, NULL, 0, value, vs, 0);
        if (rc < 0) {
            result(rc);
        } else {
            printf("value=%llu\n", (unsigned long long)get_int(value, vs));
        }
    } else if ((!strcmp(c, "lpm_update") && argc >= 5) || (!strcmp(c, "lpm_lookup") && argc >= 3)) {
        struct bpf_map *m = obj ? bpf_object__find_map_by_name(obj, argv[1]) : NULL;
        struct {
            uint32_t prefixlen;
            uint8_t addr[4];
        } key = {32, {0}};
        int update = !strcmp(c, "lpm_update");
        if (!m || inet_pton(AF_INET, argv[update ? 3 : 2], key.addr) != 1) {
            errno = ENOENT;
            result(-1);
            return;
        }
        uint64_t value = 0;
        if (update) {
            key.prefixlen = (uint32_t)ARG(2);
            value = ARG(4);
            result(bpf_map__update_elem(m, &key, sizeof key, &value, sizeof value, 0));
        } else if (bpf_map__lookup_elem(m, &key, sizeof key, &value, sizeof value, 0) < 0) {
            result(-1);
        } else {
            printf("value=%llu\n", (unsigned long long)value);
        }
    } else if (!strcmp(c, "map_fd")) {
        fd_result(bpf_object__find_map_fd_by_name(obj, argv[1]));
    } else if (!strcmp(c, "prog_fd")) {
        struct bpf_program *p = bpf_object__find_program_by_name(obj, argv[1]);
        fd_result(p ? bpf_program__fd(p) : -1);
    } else if (!strcmp(c, "uprobe") && argc >= 6) {
        struct bpf_program *p = bpf_object__find_program_by_name(obj, argv[1]);
        LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = argv[3], .retprobe = ARG(4) != 0,
                    .bpf_cookie = ARG(5));
        struct bpf_link *l = p ? bpf_program__attach_uprobe_opts(p, -1, argv[2], 0, &opts) : NULL;
        if (!l) {
            result(-1);
        } else {
            links[nlinks] = l;
            printf("link=%d fd=%d\n", nlinks++, bpf_link__fd(l));
        }
    } else if (!strcmp(c, "detach")) {
        result(bpf_link__destroy(links[ARG(1)]));
    } else if (!strcmp(c, "ringbuf") || !strcmp(c, "idle_poll")) {
        int fd = bpf_object__find_map_fd_by_name(obj, argv[1]);
        struct ring_buffer *rb = ring_buffer__new(fd, handle_record, NULL, NULL);
        if (!rb) {
            result(-1);
            return;
        }
        count_records = 0;
        if (!strcmp(c, "ringbuf")) {
            int want = (int)ARG(2);
            double deadline = now_ms() + (double)ARG(3);
            while (count_records < want && now_ms() < deadline) {
                if (ring_buffer__poll(rb, 100) < 0) {
                    printf("poll error %s", errname(errno));
                    break;
                }
            }
            printf("%scount=%d\n", count_records ? " " : "", count_records);
        } else {
            double start = now_ms();
            int n = ring_buffer__poll(rb, (int)ARG(2));
            printf("%sms=%.0f n=%d\n", count_records ? " " : "", now_ms() - start, n);
        }
        ring_buffer__free(rb);
    } else if (!strcmp(c, "bss") || !strcmp(c, "bss_set")) {
        // The map's values mapped from its fd, as a skeleton maps global data.
        struct bpf_map *m = bpf_object__find_map_by_name(obj, argv[1]);
        size_t size = m ? ((bpf_map__value_size(m) + 7) / 8 * 8 + 4095) / 4096 * 4096 : 0;
        uint8_t *data = m ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(m), 0)
                          : MAP_FAILED;
        if (data == MAP_FAILED || ARG(2) + 8 > size) {
            printf("err=%s\n", errname(errno));
            return;
        }
        if (!strcmp(c, "bss")) {
            printf("value=%llu\n", (unsigned long long)get_int(data + ARG(2), 8));
        } else {
            put_int(data + ARG(2), 8, ARG(3));
            printf("ok\n");
        }
        munmap(data, size);
    } else if (!strcmp(c, "epoll_mixed")) {
        // A ring buffer's epoll set with a pipe in it too: the pipe's event still comes back.
        struct ring_buffer *rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, argv[1]),
                                                  handle_record, NULL, NULL);
        int p[2];
        if (!rb || pipe(p) < 0) {
            result(-1);
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 77}, out[4];
        int added = epoll_ctl(ring_buffer__epoll_fd(rb), EPOLL_CTL_ADD, p[0], &ev);
        ssize_t w = write(p[1], "x", 1);
        int n = epoll_wait(ring_buffer__epoll_fd(rb), out, 4, 1000);
        printf("added=%d wrote=%zd n=%d data=%llu\n", added, w, n,
               n > 0 ? (unsigned long long)out[0].data.u64 : 0ull);
        close(p[0]);
        close(p[1]);
        ring_buffer__free(rb);
    } else if (!strcmp(c, "perfbuf_open")) {
        pb = perf_buffer__new(bpf_object__find_map_fd_by_name(obj, argv[1]), (size_t)ARG(2),
                              on_sample, on_lost, NULL, NULL);
        perf_count = 0;
        perf_lost = 0;
        result(pb ? 0 : -1);
    } else if (!strcmp(c, "perfbuf_poll")) {
        int want = (int)ARG(1);
        double deadline = now_ms() + (double)ARG(2);
        perf_count = 0;
        perf_lost = 0;
        while (pb && perf_count < want && now_ms() < deadline) {
            if (perf_buffer__poll(pb, 100) < 0) {
                printf("poll error %s ", errname(errno));
                break;
            }
        }
        qsort(perf_values, (size_t)perf_count, sizeof perf_values[0], cmp_u64);
        printf("perf");
        for (int i = 0; i < perf_count; i++) {
            printf(" %llu", (unsigned long long)perf_values[i]);
        }
        printf(" count=%d lost=%llu\n", perf_count, perf_lost);
    } else if (!strcmp(c, "perfbuf_free")) {
        perf_buffer__free(pb);
        pb = NULL;
        result(0);
    } else if (!strcmp(c, "perf_bad")) {
        int map = bpf_object__find_map_fd_by_name(obj, argv[1]);
        struct perf_event_attr attr = {.type = PERF_TYPE_SOFTWARE,
                                       .size = sizeof attr,
                                       .config = PERF_COUNT_SW_BPF_OUTPUT,
                                       .sample_type = PERF_SAMPLE_RAW,
                                       .sample_period = 1,
                                       .wakeup_events = 1};
        int pfd = (int)syscall(SYS_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
        uint32_t key = 0, value = 0;
        int before = bpf_map_update_elem(map, &key, &pfd, 0) < 0 ? errno : 0;
        void *three = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
        int bad_size = three == MAP_FAILED ? errno : 0;
        int lookup = bpf_map_lookup_elem(map, &key, &value) < 0 ? errno : 0;
        int other_fd = bpf_map_update_elem(map, &key, &map, 0) < 0 ? errno : 0;
        attr.sample_type |= PERF_SAMPLE_TIME;
        int timed = (int)syscall(SYS_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
        int time_err = timed < 0 ? errno : 0;
        printf("pfd=%s update-before-mmap=%s mmap-3-pages=%s lookup=%d map-fd-as-value=%s "
               "sample-time=%s\n",
               pfd >= 0 ? "ok" : errname(errno), errname(before), errname(bad_size), lookup,
               errname(other_fd), errname(time_err));
        close(pfd);
    } else if (!strcmp(c, "pipe")) {
        int p[2];
        if (pipe(p) < 0) {
            result(-1);
            return;
        }
        int d = dup(p[1]);
        ssize_t w = write(d, "x", 1);
        char ch = 0;
        ssize_t r = read(p[0], &ch, 1);
        int closed = close(p[0]) == 0 && close(p[1]) == 0 && close(d) == 0;
        printf("pipe %s\n", w == 1 && r == 1 && ch == 'x' && closed ? "works" : "broken");
    } else if (!strcmp(c, "kernel_perf")) {
        // A software clock event: the kernel's, passed through untouched.
        struct perf_event_attr attr = {
            .type = PERF_TYPE_SOFTWARE, .size = sizeof attr, .config = PERF_COUNT_SW_TASK_CLOCK};
        int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
        if (fd < 0) {
            result(-1);
            return;
        }
        int en = ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
        for (volatile int i = 0; i < 1000000; i++) {
        }
        uint64_t count = 0;
        ssize_t r = read(fd, &count, sizeof count);
        printf("kernel perf %s\n", en == 0 && r == 8 && count > 0 ? "counts" : "broken");
        if (argc > 1) {
            // One of the interposer's programs on this kernel event.
            int rc = ioctl(fd, PERF_EVENT_IOC_SET_BPF, (int)ARG(1));
            result(rc);
            LIBBPF_OPTS(bpf_link_create_opts, lo);
            fd_result(bpf_link_create((int)ARG(1), fd, BPF_PERF_EVENT, &lo));
        }
        close(fd);
    } else if (!strcmp(c, "exit")) {
        exit((int)ARG(1));
    } else {
        printf("unknown command %s\n", c);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        command(line);
    }
    return 0;
}

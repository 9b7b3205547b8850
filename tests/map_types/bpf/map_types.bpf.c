// SPDX-License-Identifier: MIT
// Queue, stack, bloom filter and LPM trie maps with the helpers that use them, and
// bpf_snprintf: raw tracepoint programs, so the same object runs in bpftime and in the kernel
// (BPF_PROG_TEST_RUN; the kernel's syscall programs are sleepable, and sleepable programs may
// not use these maps) and both can be compared. Each program records what every helper call
// returned in the one value of the array `out`.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_QUEUE);
    __uint(max_entries, 4);
    __type(value, __u64);
} queue SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_STACK);
    __uint(max_entries, 4);
    __type(value, __u64);
} stack SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
    __uint(max_entries, 64);
    __uint(map_extra, 3);
    __type(value, __u64);
} bloom SEC(".maps");

struct lpm_key {
    __u32 prefixlen;
    __u8 addr[4];
};

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lpm_key);
    __type(value, __u64);
} routes SEC(".maps");

/// What every program records: helper return values in rc, values in val.
struct results {
    __s64 rc[16];
    __u64 val[16];
    __u32 addrs[4]; ///< lpm_match: addresses to look up (network order), set by the test
    char text[96];  ///< snprintf's output
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct results);
} out SEC(".maps");

static __always_inline struct results *results(void) {
    __u32 zero = 0;
    return bpf_map_lookup_elem(&out, &zero);
}

static __always_inline void fill(void *map, struct results *r, int at) {
    for (int i = 0; i < 5; i++) {
        __u64 v = i + 1;
        r->rc[at + i] = bpf_map_push_elem(map, &v, 0);
    }
    __u64 six = 6;
    r->rc[at + 5] = bpf_map_push_elem(map, &six, BPF_EXIST);
    r->rc[at + 6] = bpf_map_push_elem(map, &six, BPF_NOEXIST);
}

// Queue and stack: five pushes into four slots, BPF_EXIST dropping the oldest, a bad flag;
// then a peek and pops until empty.
SEC("raw_tp")
int queue_stack(void *ctx) {
    struct results *r = results();
    if (!r) {
        return 0;
    }
    fill(&queue, r, 0);
    __u64 v = 0;
    r->rc[7] = bpf_map_peek_elem(&queue, &v);
    r->val[0] = v;
    for (int i = 1; i <= 4; i++) {
        v = 0;
        bpf_map_pop_elem(&queue, &v);
        r->val[i] = v;
    }
    r->rc[8] = bpf_map_pop_elem(&queue, &v);
    r->rc[9] = bpf_map_peek_elem(&queue, &v);

    __u64 s = 10;
    bpf_map_push_elem(&stack, &s, 0);
    s = 11;
    bpf_map_push_elem(&stack, &s, 0);
    r->rc[10] = bpf_map_peek_elem(&stack, &v);
    r->val[5] = v;
    for (int i = 6; i <= 7; i++) {
        v = 0;
        bpf_map_pop_elem(&stack, &v);
        r->val[i] = v;
    }
    r->rc[11] = bpf_map_pop_elem(&stack, &v);
    return 0;
}

// Bloom filter: values pushed are found, others (almost surely) not; flags must be 0.
SEC("raw_tp")
int bloom_ops(void *ctx) {
    struct results *r = results();
    if (!r) {
        return 0;
    }
    for (__u64 v = 100; v < 110; v++) {
        bpf_map_push_elem(&bloom, &v, 0);
    }
    for (int i = 0; i < 10; i++) {
        __u64 v = 100 + i;
        r->rc[i] = bpf_map_peek_elem(&bloom, &v);
    }
    __u64 absent = 1000003;
    r->rc[10] = bpf_map_peek_elem(&bloom, &absent);
    r->rc[11] = bpf_map_push_elem(&bloom, &absent, BPF_EXIST);
    return 0;
}

// LPM trie: routes set by the program, then the longest match of each address of the context.
SEC("raw_tp")
int lpm_match(void *ctx) {
    struct results *r = results();
    if (!r) {
        return 0;
    }
    struct lpm_key k = {8, {10, 0, 0, 0}};
    __u64 v = 8;
    r->rc[0] = bpf_map_update_elem(&routes, &k, &v, 0);
    k.prefixlen = 16;
    k.addr[1] = 1;
    v = 16;
    r->rc[1] = bpf_map_update_elem(&routes, &k, &v, 0);
    k.prefixlen = 24;
    k.addr[2] = 2;
    v = 24;
    r->rc[2] = bpf_map_update_elem(&routes, &k, &v, 0);
    k.prefixlen = 33;
    r->rc[3] = bpf_map_update_elem(&routes, &k, &v, 0);
    k.prefixlen = 16;
    r->rc[4] = bpf_map_update_elem(&routes, &k, &v, BPF_NOEXIST);
    for (int i = 0; i < 4; i++) {
        struct lpm_key q = {32, {}};
        __builtin_memcpy(q.addr, &r->addrs[i], 4);
        __u64 *found = bpf_map_lookup_elem(&routes, &q);
        r->val[i] = found ? *found : 0;
    }
    k.prefixlen = 24;
    r->rc[5] = bpf_map_delete_elem(&routes, &k);
    r->rc[6] = bpf_map_delete_elem(&routes, &k);
    return 0;
}

static const char fmt_numbers[] = "%d %u %x %X %ld %lu %lx %lli %llu|%llx|%05d|%-5d|";
static const char fmt_text[] = "%s, %c%c %pI4 %pi4 %% %10s|%-4s.";

// bpf_snprintf: numbers, strings, characters and addresses, and what it returns for a short
// buffer. (Formats the kernel refuses are refused when it loads the program: snprintf_bad.bpf.c.)
SEC("raw_tp")
int format(void *ctx) {
    struct results *r = results();
    if (!r) {
        return 0;
    }
    __u64 nums[12] = {(__u64)-5,      (__u64)-5, 0xbeef, 0xbeef, (__u64)-7, 7,
                      0xabcdef012345, (__u64)-9, 9,      0x1234, 42,        (__u64)-3};
    char text[96] __attribute__((aligned(8))) = {};
    r->rc[0] = bpf_snprintf(text, sizeof text, fmt_numbers, nums, sizeof nums);
    __builtin_memcpy(r->text, text, sizeof text);
    char name[8] = "bpftime";
    __u8 ip[4] = {192, 168, 1, 20};
    __u64 args[7] = {(__u64)name, 'o', 'k', (__u64)ip, (__u64)ip, (__u64)name, (__u64) "ab"};
    __builtin_memset(text, 0, sizeof text);
    r->rc[2] = bpf_snprintf(text, sizeof text, fmt_text, args, sizeof args);
    __builtin_memcpy(&r->val[0], text, 64);
    char small[8] __attribute__((aligned(8))) = {};
    r->rc[3] = bpf_snprintf(small, sizeof small, fmt_numbers, nums, sizeof nums);
    __builtin_memcpy(&r->val[8], small, 8);
    return 0;
}

// SPDX-License-Identifier: MIT
// What every program of the execution suite shares. Each bench/suite/*.c file is compiled
// twice from the same source: with `clang -O2 -target bpf` into an eBPF object (bpftime and
// the kernel run it), and with `clang -O2` for the host (the native baseline). A file defines
// each program's body once with SUITE_PROGRAM(name) { ... }; the eBPF build wraps it in a
// socket filter that finds its working memory in the suite_memory map, the native build in
// an exported function suite_native_<name>(struct suite_mem *) the benchmark calls.
#pragma once

#include <linux/types.h>

#define SUITE_HALF (64 * 1024)   // bytes of input, and of memcpy's destination
#define SUITE_LOG2_COUNT 1024    // u64 values whose log2 is taken
#define SUITE_FNV_BYTES 4096     // bytes hashed
#define SUITE_SWITCH_COUNT 512   // input bytes fed through the switch per run (see switch.c)
#define SUITE_SORT_COUNT 128     // u32 values sorted
#define SUITE_STRING_LEN 4096    // bytes of each string, with its NUL
#define SUITE_STRING_MISMATCH 7  // where str_c first differs from str_a
#define SUITE_PRIME_LIMIT 512    // primes are counted below this (see primes.c)
#define SUITE_LOOKUPS 256        // map lookups per run
#define SUITE_TABLE_ENTRIES 1024 // capacity of the hash map the lookups use
#define SUITE_TABLE_FILLED 512   // entries the benchmark puts in it
#define SUITE_MATRICES 16        // 8x8 matrix products (see nested_loops.c)
#define SUITE_RECORDS 1024       // 16-byte records short_loops hashes
#define SUITE_CALL_WORDS 1024    // u64 words calls.c mixes, three calls each

/// The working memory of every program: the value of the one element of suite_memory (eBPF),
/// or a host buffer with the same bytes (native). The benchmark fills it.
struct suite_mem {
    __u8 src[SUITE_HALF];           // pseudo-random bytes: the input of most programs
    __u8 dst[SUITE_HALF];           // memcpy's destination
    __u32 sorted[SUITE_SORT_COUNT]; // bubble sort's scratch area
    __u8 str_a[SUITE_STRING_LEN];   // a NUL-terminated string
    __u8 str_b[SUITE_STRING_LEN];   // the same string
    __u8 str_c[SUITE_STRING_LEN];   // the same string up to SUITE_STRING_MISMATCH
    __u32 keys[SUITE_LOOKUPS];      // the keys map_lookups looks up, most of them present
    // SUITE_PRIME_LIMIT, read at run time so that clang cannot fold count_primes' loops.
    __u32 prime_limit;
    // Which window of the input big_switch reads next: each run takes one and advances it.
    __u32 switch_round;
};

// Every program: X(program name, object file name without .bpf.o).
#define SUITE_PROGRAMS(X)                                                                          \
    X(int_log2, log2)                                                                              \
    X(copy_64k, memcpy)                                                                            \
    X(count_primes, primes)                                                                        \
    X(strcmp_equal, strcmp)                                                                        \
    X(strcmp_mismatch, strcmp)                                                                     \
    X(big_switch, switch)                                                                          \
    X(fnv1a, fnv1a)                                                                                \
    X(bubble_sort, bubble_sort)                                                                    \
    X(map_lookups, map_lookup)                                                                     \
    X(matrix_8x8, nested_loops)                                                                    \
    X(short_loops, short_loops)                                                                    \
    X(calls, calls)

#ifdef __bpf__

#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

#define SUITE_INLINE static __always_inline

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct suite_mem);
} suite_memory SEC(".maps");

// A socket filter: libbpf infers BPF_PROG_TYPE_SOCKET_FILTER from the section, a type whose
// programs BPF_PROG_TEST_RUN runs. The kernel's return value is 32 bits wide, so results are
// compared on their low halves.
#define SUITE_PROGRAM(name)                                                                        \
    SUITE_INLINE __u64 name##_body(struct suite_mem *m);                                           \
    SEC("socket") int name(struct __sk_buff *skb) {                                                \
        __u32 zero = 0;                                                                            \
        struct suite_mem *m = bpf_map_lookup_elem(&suite_memory, &zero);                           \
        (void)skb;                                                                                 \
        return m ? (int)name##_body(m) : 0;                                                        \
    }                                                                                              \
    SUITE_INLINE __u64 name##_body(struct suite_mem *m)

// A hash map from u32 keys to u64 values.
#define SUITE_TABLE(name)                                                                          \
    struct {                                                                                       \
        __uint(type, BPF_MAP_TYPE_HASH);                                                           \
        __uint(max_entries, SUITE_TABLE_ENTRIES);                                                  \
        __type(key, __u32);                                                                        \
        __type(value, __u64);                                                                      \
    } name SEC(".maps")
#define SUITE_TABLE_LOOKUP(name, key) ((__u64 *)bpf_map_lookup_elem(&name, key))

char LICENSE[] SEC("license") = "GPL";

#else // the native build, and the benchmark including this header for the declarations

#define SUITE_INLINE static inline __attribute__((always_inline))

#define SUITE_PROGRAM(name)                                                                        \
    SUITE_INLINE __u64 name##_body(struct suite_mem *m);                                           \
    __u64 suite_native_##name(struct suite_mem *m) {                                               \
        return name##_body(m);                                                                     \
    }                                                                                              \
    SUITE_INLINE __u64 name##_body(struct suite_mem *m)

#define SUITE_DECLARE_NATIVE(program, object) __u64 suite_native_##program(struct suite_mem *m);
SUITE_PROGRAMS(SUITE_DECLARE_NATIVE)
#undef SUITE_DECLARE_NATIVE

/// Natively, the table is the benchmark's bpftime hash map: the benchmark defines this
/// function as a lookup in it (see exec_bench.cpp).
void *suite_host_table_lookup(const __u32 *key);

#define SUITE_TABLE(name) struct suite_unused_##name
#define SUITE_TABLE_LOOKUP(name, key) ((__u64 *)suite_host_table_lookup(key))

#endif

// SPDX-License-Identifier: MIT
// A kfunc call: bpftime has no kernel functions, the loader must refuse it.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

extern int bpf_kfunc_example(int x) __ksym;

SEC("test")
int calls_kfunc(void *ctx __attribute__((unused))) {
    return bpf_kfunc_example(1);
}

char LICENSE[] SEC("license") = "GPL";

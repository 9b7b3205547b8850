// SPDX-License-Identifier: MIT
// A strong CONFIG_* extern no kernel configuration sets: refused by name, as libbpf does.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

extern int CONFIG_BPFTIME_NO_SUCH_OPTION __kconfig;

SEC("test")
int missing_option(void *ctx __attribute__((unused))) {
    return CONFIG_BPFTIME_NO_SUCH_OPTION;
}

char LICENSE[] SEC("license") = "GPL";

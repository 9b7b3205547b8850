// SPDX-License-Identifier: MIT
// A strong __kconfig extern libbpf does not know (neither CONFIG_* nor one of its LINUX_*
// values): the loader must refuse it by name, as libbpf does.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_BPFTIME_NO_SUCH_VALUE __kconfig;

SEC("test")
int unknown_value(void *ctx __attribute__((unused))) {
    return LINUX_BPFTIME_NO_SUCH_VALUE;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// A __kconfig extern: nothing in user space provides it, the loader must refuse it.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;

SEC("test")
int kernel_version(void *ctx __attribute__((unused))) {
    return LINUX_KERNEL_VERSION;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// __kconfig externs as the libbpf tools use them: libbpf's LINUX_* values and the running
// kernel's CONFIG_* options (weak, so a kernel without a readable configuration gives 0), each
// returned by a program of its own.
#include <linux/bpf.h>
#include <stdbool.h>

#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern bool LINUX_HAS_SYSCALL_WRAPPER __kconfig;
extern int LINUX_BPFTIME_NO_SUCH_VALUE __kconfig __weak;
extern bool CONFIG_BPF_SYSCALL __kconfig __weak;
extern enum libbpf_tristate CONFIG_BPF_JIT __kconfig __weak;
extern int CONFIG_HZ __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig __weak;
extern int CONFIG_BPFTIME_NO_SUCH_OPTION __kconfig __weak;

SEC("test")
int kernel_version(void *ctx __attribute__((unused))) {
    return LINUX_KERNEL_VERSION;
}

SEC("test")
int has_bpf_cookie(void *ctx __attribute__((unused))) {
    return LINUX_HAS_BPF_COOKIE;
}

SEC("test")
int has_syscall_wrapper(void *ctx __attribute__((unused))) {
    return LINUX_HAS_SYSCALL_WRAPPER;
}

SEC("test")
int unknown_weak_value(void *ctx __attribute__((unused))) {
    return LINUX_BPFTIME_NO_SUCH_VALUE;
}

SEC("test")
int bpf_syscall(void *ctx __attribute__((unused))) {
    return CONFIG_BPF_SYSCALL;
}

SEC("test")
int bpf_jit(void *ctx __attribute__((unused))) {
    return CONFIG_BPF_JIT;
}

SEC("test")
int hz(void *ctx __attribute__((unused))) {
    return CONFIG_HZ;
}

/// The first byte of the default host name (a string option).
SEC("test")
int hostname_first(void *ctx __attribute__((unused))) {
    return CONFIG_DEFAULT_HOSTNAME[0];
}

SEC("test")
int unknown_weak_option(void *ctx __attribute__((unused))) {
    return CONFIG_BPFTIME_NO_SUCH_OPTION;
}

char LICENSE[] SEC("license") = "GPL";

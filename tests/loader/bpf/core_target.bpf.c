// SPDX-License-Identifier: MIT
// A CO-RE relocation only a kernel's BTF answers: the loader must refuse it.
#include <linux/bpf.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

struct task_struct {
    int pid;
};

SEC("test")
__u64 kernel_type_id(void *ctx __attribute__((unused))) {
    return bpf_core_type_id_kernel(struct task_struct);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// CO-RE field accesses to a type the program defines: the compiled offsets are right.
#include <linux/bpf.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

struct request {
    __u32 flags;
    __u64 length;
} __attribute__((preserve_access_index));

SEC("test")
__u64 request_length(struct request *req) {
    if (!bpf_core_field_exists(req->length))
        return 0;
    return req->length + bpf_core_type_size(struct request);
}

char LICENSE[] SEC("license") = "GPL";

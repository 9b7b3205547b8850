// SPDX-License-Identifier: MIT
// Test programs for the nginx URL filter that cannot decide: the host must apply its fail
// policy (bpftime_fail open|closed), log the problem once and keep serving.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>
#include <bpftime/nginx_filter.h>

// Reads a byte far past the end of the request path: outside every region it may read.
SEC("nginx")
int read_out_of_bounds(struct bpftime_nginx_request *req) {
    const volatile char *p = req->path;
    return p[req->path_len + 65536] == 'x' ? 403 : 0;
}

// Counts for ever: stopped by the host's instruction budget.
SEC("nginx")
int run_forever(struct bpftime_nginx_request *req) {
    volatile __u64 n = req->path_len;
    while (n != 0)
        n++;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

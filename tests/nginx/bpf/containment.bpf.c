// SPDX-License-Identifier: MIT
// Test programs for containment in hosts: one that reads the worker's memory (refused for the
// nginx URL filter), and two fixed answers to switch between with `bpftime link update`.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>
#include <bpftime/nginx_filter.h>

// Copies memory around the request's URI, which would show the worker's other data (headers,
// heap pointers): nginx-url programs may not call probe_read_user.
SEC("nginx")
int read_user(struct bpftime_nginx_request *req) {
    char buf[64];
    if (bpf_probe_read_user(buf, sizeof buf, req->uri) != 0)
        return 0;
    return buf[63] == 'x' ? 403 : 0;
}

SEC("nginx")
int answer_418(struct bpftime_nginx_request *req) {
    return req->path_len == 0 ? 0 : 418;
}

SEC("nginx")
int answer_429(struct bpftime_nginx_request *req) {
    return req->path_len == 0 ? 0 : 429;
}

char LICENSE[] SEC("license") = "GPL";

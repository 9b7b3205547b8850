// SPDX-License-Identifier: MIT
// Test program for the nginx URL filter: answers chosen by the path, to check how the module
// turns a program's return value into a status.
//     /legal   451 (Unavailable For Legal Reasons)
//     /seven   7    -> 403 (not an HTTP error status)
//     /big     600  -> 403 (above 599)
//     /gone    410
//     other    0    (accepted)
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>
#include <bpftime/nginx_filter.h>

// Whether the request path is exactly s (n bytes). The path is not NUL-terminated.
static __always_inline int path_is(const struct bpftime_nginx_request *req, const char *s,
                                   __u32 n) {
    if (req->path_len != n)
        return 0;
    for (__u32 i = 0; i < n; i++)
        if (req->path[i] != s[i])
            return 0;
    return 1;
}

SEC("nginx")
int status_codes(struct bpftime_nginx_request *req) {
    if (path_is(req, "/legal", 6))
        return 451;
    if (path_is(req, "/seven", 6))
        return 7;
    if (path_is(req, "/big", 4))
        return 600;
    if (path_is(req, "/gone", 5))
        return 410;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// Test program for the nginx URL filter: checks every field the module fills for a request on
// /fields and answers which one is wrong (0 when all are right); other paths are accepted.
//     460  host is not "example.test" (the validated Host: lowercase, no port)
//     461  method is not "GET"
//     462  uri is not "/fields?a=1" (as sent, with the arguments)
//     463  client is neither "127.0.0.1" nor "::1"
//     464  client_ipv4 / client_ipv6 do not match the client text
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>
#include <bpftime/nginx_filter.h>

// Whether the n bytes at p (not NUL-terminated) are s.
static __always_inline int eq(const char *p, __u32 len, const char *s, __u32 n) {
    if (len != n)
        return 0;
    for (__u32 i = 0; i < n; i++)
        if (p[i] != s[i])
            return 0;
    return 1;
}

SEC("nginx")
int request_fields(struct bpftime_nginx_request *req) {
    if (!eq(req->path, req->path_len, "/fields", 7))
        return 0;
    if (!eq(req->host, req->host_len, "example.test", 12))
        return 460;
    if (!eq(req->method, req->method_len, "GET", 3))
        return 461;
    if (!eq(req->uri, req->uri_len, "/fields?a=1", 11))
        return 462;
    if (eq(req->client, req->client_len, "127.0.0.1", 9)) {
        if (req->client_ipv4 != __builtin_bswap32(0x7f000001))
            return 464;
        for (int i = 0; i < 16; i++)
            if (req->client_ipv6[i] != 0)
                return 464;
        return 0;
    }
    if (eq(req->client, req->client_len, "::1", 3)) {
        if (req->client_ipv4 != 0)
            return 464;
        for (int i = 0; i < 16; i++)
            if (req->client_ipv6[i] != (i == 15))
                return 464;
        return 0;
    }
    return 463;
}

char LICENSE[] SEC("license") = "GPL";

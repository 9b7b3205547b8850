/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The context of programs attached to the nginx URL filter (attach type "nginx-url").
 *
 * For eBPF programs compiled with clang -target bpf (SEC("nginx")) and for the host side.
 * A program receives a pointer to struct bpftime_nginx_request in r1; the strings it points
 * to are read-only and NOT NUL-terminated: use their lengths. The program returns
 *   0          accept the request,
 *   400..599   refuse it with this HTTP status,
 *   other      refuse it with 403.
 */
#ifndef BPFTIME_NGINX_FILTER_H
#define BPFTIME_NGINX_FILTER_H

#include <linux/types.h>

/** One request as the URL filter sees it. All pointers are 64-bit on both sides. */
struct bpftime_nginx_request {
    const char *path;   /**< the request path, decoded, without arguments ("/api/users") */
    const char *uri;    /**< the URI as the client sent it, with arguments ("/api/users?id=1") */
    const char *method; /**< "GET", "POST", ... */
    const char *host;   /**< the Host header, or empty */
    const char *client; /**< the client address as text ("127.0.0.1", "::1") */
    __u32 path_len;
    __u32 uri_len;
    __u32 method_len;
    __u32 host_len;
    __u32 client_len;
    __u32 client_ipv4;    /**< the client's IPv4 address in network byte order, 0 otherwise */
    __u8 client_ipv6[16]; /**< the client's IPv6 address, zeros otherwise */
};

/** The status a program returns to accept a request. */
#define BPFTIME_NGINX_ACCEPT 0

/**
 * What a program's return value r0 decides: BPFTIME_NGINX_ACCEPT for 0, the HTTP status for
 * 400..599, 403 for anything else. The one place this rule is written.
 */
static inline int bpftime_nginx_status(__u64 r0) {
    if (r0 == BPFTIME_NGINX_ACCEPT) {
        return BPFTIME_NGINX_ACCEPT;
    }
    return r0 >= 400 && r0 <= 599 ? (int)r0 : 403;
}

#endif /* BPFTIME_NGINX_FILTER_H */

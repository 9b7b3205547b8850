/* SPDX-License-Identifier: MIT */
/* What the URL filter examples share: the allowlist map and how a path becomes its key. */
#ifndef BPFTIME_EXAMPLES_URL_PREFIX_H
#define BPFTIME_EXAMPLES_URL_PREFIX_H

#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>
#include <bpftime/nginx_filter.h>

#define PREFIX_LEN 32

/*
 * A key is the path's first segment with both slashes ("/api/" for "/api/users?x=1"), or the
 * whole path when it has no second slash ("/index.html"), at most 31 bytes, zero-padded:
 *     bpftime map update ID str:/api/ 0      allow everything under /api/
 *     bpftime map update ID str:/old/ 410    refuse /old/... with 410 Gone
 *     bpftime map delete ID str:/api/        /api/... is refused again (403)
 */
struct prefix_key {
    char bytes[PREFIX_LEN];
};

/* Prefix -> verdict: 0 accepts, 400..599 refuses with that status. Absent: 403. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct prefix_key);
    __type(value, __u32);
} allow_prefixes SEC(".maps");

static __always_inline void prefix_of(const struct bpftime_nginx_request *req,
                                      struct prefix_key *key) {
    const char *path = req->path;
    __u64 len = req->path_len;
    __u64 seen_slash = 0;
    for (__u64 i = 0; i < PREFIX_LEN - 1 && i < len; i++) {
        char c = path[i];
        key->bytes[i] = c;
        if (c == '/') {
            if (seen_slash)
                break;
            seen_slash = 1;
        }
    }
}

/* The verdict of the allowlist for a request: 0 or an HTTP status. */
static __always_inline int allowlist_verdict(const struct bpftime_nginx_request *req) {
    struct prefix_key key = {};
    prefix_of(req, &key);
    __u32 *verdict = bpf_map_lookup_elem(&allow_prefixes, &key);
    return verdict ? (int)*verdict : 403;
}

#endif

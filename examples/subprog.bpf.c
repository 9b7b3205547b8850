// SPDX-License-Identifier: MIT
// A URL filter with a bpf-to-bpf call into .text and prefixes kept as .rodata strings.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

#define PATH_LEN 16

/// What the host passes to the program: a NUL-padded request path.
struct path_ctx {
    char path[PATH_LEN];
};

// Static arrays are referenced through the .rodata section symbol plus an offset, a string
// literal through .rodata.str1.1: the loader handles both kinds of relocation.
static const char api_prefix[] = "/api/";
static const char static_prefix[] = "/static/";

/// True when s starts with the first n bytes of prefix. Not inlined, and called with two
/// different prefixes, so the program really calls it and really reads .rodata.
static __noinline int has_prefix(const char *s, const char *prefix, int n) {
    for (int i = 0; i < n && i < PATH_LEN; i++) {
        if (s[i] != prefix[i])
            return 0;
    }
    return 1;
}

/// 0 accepts a path under /api/ or /static/ and the path /health, 403 refuses anything else.
SEC("test")
int check_path(struct path_ctx *ctx) {
    if (has_prefix(ctx->path, api_prefix, sizeof(api_prefix) - 1) ||
        has_prefix(ctx->path, static_prefix, sizeof(static_prefix) - 1) ||
        has_prefix(ctx->path, "/health", sizeof("/health")))
        return 0;
    return 403;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: MIT
// A per-client rate limit for the nginx URL filter: at most `limit` requests per second from
// one IPv4 address (all IPv6 clients share one budget), then 429 Too Many Requests.
//     bpftime map update <config id> 0 50      50 requests per second (0: the default, 100)
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>
#include <bpftime/nginx_filter.h>

#define DEFAULT_LIMIT 100
#define WINDOW_NS 1000000000ull

struct window {
    __u64 start_ns;
    __u64 count;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, struct window);
} windows SEC(".maps");

/* config[0]: requests per second per client (0 = DEFAULT_LIMIT). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} config SEC(".maps");

SEC("nginx")
int rate_limit(struct bpftime_nginx_request *req) {
    __u32 zero = 0;
    __u64 limit = DEFAULT_LIMIT;
    __u64 *configured = bpf_map_lookup_elem(&config, &zero);
    if (configured && *configured)
        limit = *configured;

    __u32 client = req->client_ipv4;
    __u64 now = bpf_ktime_get_ns();
    struct window *w = bpf_map_lookup_elem(&windows, &client);
    if (!w) {
        struct window fresh = {.start_ns = now, .count = 0};
        // Another worker may create it first; then use theirs.
        bpf_map_update_elem(&windows, &client, &fresh, BPF_NOEXIST);
        w = bpf_map_lookup_elem(&windows, &client);
        if (!w)
            return 0;
    }
    if (now - w->start_ns >= WINDOW_NS) {
        w->start_ns = now;
        w->count = 0;
    }
    return __sync_fetch_and_add(&w->count, 1) >= limit ? 429 : 0;
}

char LICENSE[] SEC("license") = "GPL";

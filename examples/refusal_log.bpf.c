// SPDX-License-Identifier: MIT
// The allowlist of url_allowlist.bpf.c that also writes each refused request to a ring buffer:
//     bpftime map events ID      prints one record per refused request
#include "url_prefix.h"

/* One refused request, as `bpftime map events` prints it (hex). */
struct refusal {
    __u64 ts_ns;
    __u32 status;
    __u32 client_ipv4; /* network byte order */
    __u32 path_len;    /* of the whole path; path holds its first 44 bytes */
    char path[44];
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 20);
} refusals SEC(".maps");

SEC("nginx")
int refusal_log(struct bpftime_nginx_request *req) {
    int verdict = allowlist_verdict(req);
    if (verdict == 0)
        return 0;
    struct refusal *r = bpf_ringbuf_reserve(&refusals, sizeof(*r), 0);
    if (r) {
        r->ts_ns = bpf_ktime_get_ns();
        r->status = verdict;
        r->client_ipv4 = req->client_ipv4;
        r->path_len = req->path_len;
        const char *path = req->path;
        for (int i = 0; i < (int)sizeof(r->path); i++)
            r->path[i] = i < req->path_len ? path[i] : 0;
        bpf_ringbuf_submit(r, 0);
    }
    return verdict;
}

char LICENSE[] SEC("license") = "GPL";

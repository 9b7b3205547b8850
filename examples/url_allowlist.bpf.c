// SPDX-License-Identifier: MIT
// The nginx URL filter's allowlist: a request is accepted when the first segment of its path
// is in the allow_prefixes map (see url_prefix.h for the key format), refused with 403 (or the
// status stored for the prefix) otherwise. `bpftime map update` changes it under load.
#include "url_prefix.h"

SEC("nginx")
int url_allowlist(struct bpftime_nginx_request *req) {
    return allowlist_verdict(req);
}

char LICENSE[] SEC("license") = "GPL";

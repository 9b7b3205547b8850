#!/usr/bin/env bash
# The status a program returns is the status the client gets: 400..599 as returned, any other
# non-zero value 403, 0 accepts (tests/nginx/bpf/status_codes.bpf.c). With two programs
# attached, the first link that refuses decides.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

load_object "$TEST_BPF/status_codes.bpf.o"
attach_prog "${PROG[status_codes]}"

ngx_start 1 '
    server {
        listen 127.0.0.1:__PORT__;
        location / { bpftime_url_filter on; empty_gif; }
    }'

expect_code 451 /legal
expect_code 403 /seven
expect_code 403 /big
expect_code 410 /gone
expect_code 200 /legal/
expect_code 200 /anything
expect_code 451 "/legal?query=1"

# A second program behind the first: the allowlist refuses everything but /legal with 403,
# but /gone and /legal are decided by the earlier link.
load_object "$EXAMPLES/url_allowlist.bpf.o"
bt map update "${MAP[allow_prefixes]}" str:/legal 0 >/dev/null
attach_prog "${PROG[url_allowlist]}"
expect_code 451 /legal
expect_code 410 /gone
expect_code 403 /anything

check_no_crash
finish

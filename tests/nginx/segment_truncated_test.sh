#!/usr/bin/env bash
# The segment truncated (truncate -s 0) under a running nginx: no worker dies of SIGBUS; the
# workers detach its programs, filtered requests get the fail policy, unfiltered ones are
# served, and the truncation is logged.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        location / { bpftime_url_filter on; empty_gif; }
        location /open/ { bpftime_url_filter on; bpftime_fail open; empty_gif; }
        location /plain/ { empty_gif; }
    }'
workers_before=$(ngx_workers)
many 20 "$WORK/before" /api/a /admin/b
expect_tally "before" "$WORK/before" "10 /admin/b 403
10 /api/a 200"

truncate -s 0 "/dev/shm/$BPFTIME_SHM"
# A map update elsewhere would bump the generation; here the workers find out by the
# generation's load (SIGBUS, answered with zero pages) or their once-a-second check.
sleep 1.2
wait_code 503 /api/a 5
many 40 "$WORK/after" /api/a /admin/b /plain/c /open/d
expect_tally "truncated: the fail policy" "$WORK/after" "10 /admin/b 503
10 /api/a 503
10 /open/d 200
10 /plain/c 200"
check "the truncation is logged" test "$(error_log_count "was truncated under this process")" -ge 1
check "the same workers served everything" test "$(ngx_workers)" == "$workers_before"
check_no_crash
finish

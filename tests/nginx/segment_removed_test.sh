#!/usr/bin/env bash
# The segment removed under a running nginx (bpftime reset): workers keep serving and notice
# it within about a second; filtered requests then get the fail policy (503 closed, 200 open);
# after a new bpftime load + attach the filter decides again, with no reload.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location / { empty_gif; }
        location /open/ { bpftime_fail open; empty_gif; }
    }'
workers_before=$(ngx_workers)

expect_code 200 /api/a
expect_code 403 /admin
expect_code 403 /open/x

bt reset >/dev/null
# Every worker rechecks the segment on its first request a second after its last check; a
# worker that has not yet must not answer the check below (with two workers, waiting for one
# 503 and then asking again could reach the other).
sleep 1.2
wait_code 503 /api/a 5
many 40 "$WORK/gone" /api/b /admin/b /open/b
expect_tally "no segment: the fail policy" "$WORK/gone" "13 /admin/b 503
14 /api/b 503
13 /open/b 200"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
sleep 1.2
wait_code 200 /api/a 5
expect_code 403 /admin
many 40 "$WORK/back" /api/b /admin/b /open/b
expect_tally "a new segment: the filter decides again" "$WORK/back" "13 /admin/b 403
14 /api/b 200
13 /open/b 403"

n=$(error_log_count "bpftime: segment $BPFTIME_SHM does not exist")
check "the missing segment is logged at most once per worker (logged $n times)" \
  test "$n" -ge 1 -a "$n" -le 2
check "the same workers served everything" test "$(ngx_workers)" == "$workers_before"
check_no_crash
finish

#!/usr/bin/env bash
# Accept and refuse by path prefix with examples/url_allowlist.bpf.c: prefixes in its map are
# allowed (or answered with the status stored for them), every other path gets 403; locations
# with bpftime_url_filter off are not filtered.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

load_object "$EXAMPLES/url_allowlist.bpf.o"
map=${MAP[allow_prefixes]}
bt map update "$map" str:/api/ 0 >/dev/null
bt map update "$map" str:/old/ 410 >/dev/null
bt map update "$map" str:/index.html 0 >/dev/null
attach_prog "${PROG[url_allowlist]}"

ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location / { empty_gif; }
        location /free/ { bpftime_url_filter off; empty_gif; }
    }'

expect_code 200 /api/users
expect_code 200 /api/
expect_code 200 "/api/orders?id=7&x=/admin/"
expect_code 200 /index.html
expect_code 410 /old/page
expect_code 403 /admin
expect_code 403 /admin/api/
expect_code 403 /ap
expect_code 403 /
expect_code 403 /index.htm
expect_code 200 /free/admin
# The filter sees the decoded path: /%61pi/ is /api/.
expect_code 200 /%61pi/users
# Other methods go through the filter too (empty_gif itself answers POST with 405).
expect_code 405 /api/x -X POST
expect_code 403 /admin -X POST
expect_code 403 /admin -I

# One request cannot tell how many requests went through; a batch must agree too.
many 60 "$WORK/batch" /api/a /admin/b /old/c
expect_tally "60 requests, 16 at a time" "$WORK/batch" "20 /admin/b 403
20 /api/a 200
20 /old/c 410"

# A reload: the old workers drop their servers, the new ones filter the same way.
old_workers=$(ngx_workers)
kill -HUP "$MASTER_PID"
for _ in $(seq 100); do
  [[ $(ngx_workers) != "$old_workers" && $(ngx_workers | wc -l) -eq 2 ]] && break
  sleep 0.05
done
check "a reload started new workers" test "$(ngx_workers)" != "$old_workers"
expect_code 200 /api/users
expect_code 403 /admin

check_no_crash
finish

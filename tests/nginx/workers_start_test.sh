#!/usr/bin/env bash
# Many workers starting at once all host the segment: each registers while the others hold the
# writer lock for a moment, so none may fall back to the fail policy or log the lock as held.
# Bounded: 5 starts of 8 workers each.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist

for start in 1 2 3 4 5; do
  ngx_start 8 '
    keepalive_timeout 0;
    server {
        listen 127.0.0.1:__PORT__ reuseport;
        bpftime_url_filter on;
        location / { empty_gif; }
    }'
  many 40 "$WORK/start$start" /api/a /admin/b
  expect_tally "start $start: every worker filters" "$WORK/start$start" "20 /admin/b 403
20 /api/a 200"
  check "start $start: no worker found the lock held" \
    test "$(error_log_count 'writer lock is held|cannot register as a host')" -eq 0
  n=0
  for w in $(ngx_workers); do
    "$BPFTIME" list 2>/dev/null | grep -q "running in pid $w\b" && n=$((n + 1))
  done
  check "start $start: all 8 workers host the link ($n)" test "$n" -eq 8
  ((n == 8)) || { echo "  workers: $(ngx_workers | tr '\n' ' ')"; "$BPFTIME" list | sed 's/^/  | /'; }
  check_no_crash
  ngx_stop
done
finish

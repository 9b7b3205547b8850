#!/usr/bin/env bash
# nginx's other turnovers, with "worker_processes auto" and workers as www-data: a binary upgrade
# (USR2 starts a new master from the binary with the listening sockets, QUIT stops the old one)
# and a worker killed with SIGKILL (the master starts another). The filter decides through each,
# and the new processes follow a policy changed afterwards.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
ngx_start auto '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        bpftime_fail closed;
        location / { empty_gif; }
    }'
many 20 "$WORK/start" /api/x /admin/x
expect_tally "auto workers ($NGX_WORKERS) decide" "$WORK/start" "10 /admin/x 403
10 /api/x 200"

# Binary upgrade.
old_master=$MASTER_PID
old_workers=$(ngx_workers | tr '\n' ' ')
kill -USR2 "$old_master"
for i in $(seq 100); do
  [[ -s $WORK/nginx.pid.oldbin && -s $WORK/nginx.pid && $(cat "$WORK/nginx.pid") != "$old_master" ]] && break
  sleep 0.05
done
new_master=$(cat "$WORK/nginx.pid")
check "USR2 started a new master ($new_master, the old one $old_master)" test "$new_master" != "$old_master"
MASTER_PID=$new_master
for i in $(seq 100); do
  [[ $(ngx_workers | wc -l) -eq $NGX_WORKERS ]] && break
  sleep 0.05
done
kill -QUIT "$old_master"
for i in $(seq 200); do
  kill -0 "$old_master" 2>/dev/null || break
  sleep 0.05
done
check "the old master is gone" bash -c "! kill -0 $old_master 2>/dev/null"
for p in $old_workers; do
  check "old worker $p is gone" bash -c "! kill -0 $p 2>/dev/null"
done
for w in $(ngx_workers); do
  check "new worker $w runs as $NGX_USER" test "$(ngx_user_of "$w")" == "${NGX_USER:-$(id -un)}"
done
many 20 "$WORK/upgraded" /api/x /admin/x
expect_tally "after the binary upgrade" "$WORK/upgraded" "10 /admin/x 403
10 /api/x 200"
bt map update "${MAP[allow_prefixes]}" str:/admin/ 0 >/dev/null
wait_code 200 /admin/x
many 20 "$WORK/changed" /api/x /admin/x /other
expect_tally "the new master's workers follow a change" "$WORK/changed" "7 /admin/x 200
7 /api/x 200
6 /other 403"

# A worker killed: the master starts another, which decides too.
victim=$(ngx_workers | head -n 1)
kill -KILL "$victim"
ngx_wait_workers "$victim"
many 40 "$WORK/respawned" /api/x /other
expect_tally "after a worker was killed and replaced" "$WORK/respawned" "20 /api/x 200
20 /other 403"
bt map delete "${MAP[allow_prefixes]}" str:/api/ >/dev/null
wait_code 403 /api/x
many 40 "$WORK/respawned2" /api/x /admin/x
expect_tally "every worker, the new one too, follows a change" "$WORK/respawned2" "20 /admin/x 200
20 /api/x 403"

check "the killed worker is the only one that died on a signal" \
  test "$(error_log_count 'exited on signal')" -eq 1 -a \
  "$(error_log_count "worker process $victim exited on signal 9")" -eq 1
sed -i "/worker process $victim exited on signal 9/d" "$WORK/logs/error.log"
check_no_crash
finish

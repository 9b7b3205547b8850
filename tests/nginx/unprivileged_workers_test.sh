#!/usr/bin/env bash
# nginx as Debian runs it: workers as www-data (not root), the segment created for their group
# with --shm-group (here through $BPFTIME_SHM_GROUP, see lib.sh). A program attached while nginx
# runs refuses with its status, stops when detached, and after "nginx -s reload" (new workers,
# the old ones drained) a program attached then decides again.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if [[ $NGX_USER != www-data ]]; then
  echo "SKIP: needs root and the user www-data (workers run as root or as the caller otherwise)"
  exit 77
fi

load_object "$TEST_BPF/status_codes.bpf.o"
group=$(id -gn www-data)
expect "the segment is the workers' group's, mode 0660" 0 \
  "^segment $BPFTIME_SHM: owner root \(uid 0\), group $group \(gid [0-9]+\), mode 0660" \
  -- "$BPFTIME" segment info
check "the segment file says so too" \
  test "$(stat -c '%U %G %a' "/dev/shm/$BPFTIME_SHM")" == "root $group 660"

ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        bpftime_fail closed;
        location / { empty_gif; }
    }'
for w in $(ngx_workers); do
  check "worker $w runs as www-data" test "$(ngx_user_of "$w")" == www-data
done

# Nothing attached: accepted.
expect_code 200 /legal
# Attached live: its status.
attach_prog "${PROG[status_codes]}"
link=$LINK
wait_code 451 /legal
many 20 "$WORK/attached" /legal /gone /ok
expect_tally "both workers decide with the program" "$WORK/attached" "7 /gone 410
7 /legal 451
6 /ok 200"
# Detached: accepted again.
bt destroy "$link" >/dev/null
wait_code 200 /legal
expect_code 200 /gone

# A reload: new workers (www-data too), the old ones gone; a program attached now decides.
old=$(ngx_workers | tr '\n' ' ')
ngx_reload
for w in $(ngx_workers); do
  check "worker $w after the reload is new and runs as www-data" \
    bash -c "[[ ' $old ' != *' $w '* && \$(ps -o user= -p $w | tr -d ' ') == www-data ]]"
done
expect_code 200 /legal
attach_prog "${PROG[status_codes]}"
wait_code 451 /legal
many 20 "$WORK/reloaded" /legal /gone /ok
expect_tally "after the reload the new workers decide" "$WORK/reloaded" "7 /gone 410
7 /legal 451
6 /ok 200"

check "no permission problem was logged" test "$(error_log_count 'permission denied|not trusted')" -eq 0
check "no missing segment was logged" test "$(error_log_count 'does not exist')" -eq 0
check_no_crash
finish

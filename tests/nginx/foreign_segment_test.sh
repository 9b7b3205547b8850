#!/usr/bin/env bash
# A segment another user created first under the name nginx and root's commands use: the
# commands refuse it naming its owner, mode and the fix; nginx workers refuse it too (filtered
# requests get the fail policy, the refusal is logged) instead of taking another user's policy.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if [[ $(id -u) -ne 0 ]] || ! id nobody >/dev/null 2>&1; then
  echo "SKIP: needs root and the user nobody"
  exit 77
fi

# "nobody" gets there first and fills the name with a real segment that allows everything.
attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
bt map update "${MAP[allow_prefixes]}" str:/ 0 >/dev/null
chown nobody "/dev/shm/$BPFTIME_SHM"
uid=$(id -u nobody)

expect load 1 "segment $BPFTIME_SHM is not trusted: it belongs to neither root nor this user .* \(owner nobody, uid $uid, mode 06[06]0\); remove it with \`rm /dev/shm/$BPFTIME_SHM\` as root" \
  -- "$BPFTIME" load "$EXAMPLES/url_allowlist.bpf.o"
expect list 1 "is not trusted" -- "$BPFTIME" list

ngx_start 1 '
    server {
        listen 127.0.0.1:__PORT__;
        location / { bpftime_url_filter on; empty_gif; }
        location /open/ { bpftime_url_filter on; bpftime_fail open; empty_gif; }
    }'
many 20 "$WORK/foreign" /admin/a /open/b
expect_tally "another user's segment: the fail policy, not its policy" "$WORK/foreign" "10 /admin/a 503
10 /open/b 200"
check "the refusal is logged with the owner" \
  test "$(error_log_count "segment $BPFTIME_SHM is not trusted: .*owner nobody")" -ge 1
check_no_crash
finish

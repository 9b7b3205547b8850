#!/usr/bin/env bash
# The policy changes under a running nginx, with no reload, while four clients send requests
# without pause: first a map update (allow /admin/ and stop allowing /api/), then a link swap
# (attach status_codes, disable the allowlist). Every answer is one of a policy in force at
# that moment, in order for each client; none fails (no 5xx, no connection error); after the
# change new requests follow the new policy.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
allow_link=$LINK
map=${MAP[allow_prefixes]}
load_object "$TEST_BPF/status_codes.bpf.o"

ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location / { empty_gif; }
    }'

expect_code 200 /api/x
expect_code 403 /admin/x
expect_code 403 /legal

# The answers, policy by policy (with the moments between two commands):
#                 /api/x  /admin/x  /legal
#   allow /api/     200     403      403
#   + /admin/       200     200      403
#   - /api/         403     200      403
#   + status_codes  403     200      403     (the allowlist's link comes first and refuses)
#   - allowlist     200     200      451
# so each client, for each path, sees the answers in this order, each one or more times:
declare -A order=([/api/x]="200 403 200" [/admin/x]="403 200" [/legal]="403 451")

for i in $(seq 30); do
  for p in /api/x /admin/x /legal; do
    echo "url = \"http://127.0.0.1:$PORT$p\""
    echo 'output = "/dev/null"'
  done
done >"$WORK/batch"

# client N: batches of 90 requests on one keep-alive connection, until told to stop (at most
# 20 s).
client() {
  local deadline=$((SECONDS + 20))
  while [[ ! -e $WORK/stop && $SECONDS -lt $deadline ]]; do
    curl -s --no-progress-meter --max-time 5 -w '%{url_effective} %{http_code}\n' \
      -K "$WORK/batch" | sed "s|^http://127.0.0.1:$PORT||"
  done >"$WORK/client$1"
}
pids=()
for c in 1 2 3 4; do
  client "$c" &
  pids+=($!)
done

sleep 1
bt map update "$map" str:/admin/ 0 >/dev/null
bt map delete "$map" str:/api/ >/dev/null
sleep 1
bt attach nginx-url "${PROG[status_codes]}" >/dev/null
bt disable "$allow_link" >/dev/null
sleep 1
touch "$WORK/stop"
wait "${pids[@]}"

cat "$WORK"/client? >"$WORK/all"
total=$(wc -l <"$WORK/all")
check "the clients sent requests throughout ($total)" test "$total" -ge 300
bad=$(awk '$2 !~ /^(200|403|451)$/' "$WORK/all" | sort | uniq -c)
check "no request failed${bad:+: $bad}" test -z "$bad"
for p in /api/x /admin/x /legal; do
  for c in 1 2 3 4; do
    # The client's answers for p, each run of equal answers as one.
    seen=$(awk -v p="$p" '$1 == p { print $2 }' "$WORK/client$c" | uniq | tr '\n' ' ')
    seen=${seen% }
    check "client $c, $p: \"$seen\" is in order \"${order[$p]}\"" \
      grep -qF -- " $seen " <<<" ${order[$p]} "
  done
  got=$(awk -v p="$p" '$1 == p { print $2 }' "$WORK/all" | sort -u | xargs)
  want=$(tr ' ' '\n' <<<"${order[$p]}" | sort -u | xargs)
  check "$p: the clients saw every policy's answer ($got)" test "$got" == "$want"
done

# After the change, the new policy only.
many 60 "$WORK/after" /api/x /admin/x /legal
expect_tally "after the change" "$WORK/after" "20 /admin/x 200
20 /api/x 200
20 /legal 451"

check_no_crash
finish

#!/usr/bin/env bash
# Reloads under load, fail closed, workers as www-data: wrk keeps requesting a path the policy
# refuses while nginx reloads 20 times (new workers start, old ones drain). No request of it is
# ever accepted (every answer is a refusal, 403, or the fail policy, 503), no worker dies on a
# signal, and then the master's and a worker's mappings and descriptors stay flat over 30 more
# reloads.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if ! command -v wrk >/dev/null; then
  echo "SKIP: wrk is missing (apt-get install wrk)"
  exit 77
fi

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        bpftime_fail closed;
        location / { empty_gif; }
    }'
expect_code 403 /admin/x
expect_code 200 /api/x

wrk -t2 -c8 -d20s "http://127.0.0.1:$PORT/admin/x" >"$WORK/wrk.out" 2>&1 &
wrk_pid=$!
sleep 0.5
during=0
for i in $(seq 20); do
  ngx_reload
  kill -0 "$wrk_pid" 2>/dev/null && during=$((during + 1))
  sleep 0.2
done
check "the reloads happened under load ($during of 20 while wrk ran)" test "$during" -ge 10
wait "$wrk_pid"
sed 's/^/  wrk | /' "$WORK/wrk.out"
total=$(awk '/requests in/ { print $1 }' "$WORK/wrk.out")
refused=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/wrk.out")
check "wrk sent requests during the reloads (${total:-none})" test "${total:-0}" -ge 1000
check "none of them was accepted (${refused:-0} of ${total:-0} refused)" test "${refused:-0}" -eq "${total:-x}"
expect_code 403 /admin/x
expect_code 200 /api/x

# Flat: the master across reloads, and the workers each reload starts (after the same
# requests, so that each has compiled its program and served).
usage() {
  local w
  many 8 "$WORK/warm" /admin/x /api/x
  echo "master $(proc_usage "$MASTER_PID")"
  for w in $(ngx_workers); do
    echo "worker $(proc_usage "$w")"
  done
}
ngx_reload
before=$(usage)
for i in $(seq 30); do
  ngx_reload
done
after=$(usage)
check "mappings and descriptors are flat over 30 reloads: $(tr '\n' ' ' <<<"$before")-> $(tr '\n' ' ' <<<"$after")" \
  test "$before" == "$after"
check "every filtered request decided after the reloads" \
  test "$(code /admin/x) $(code /api/x)" == "403 200"
check_no_crash
finish

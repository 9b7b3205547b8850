#!/usr/bin/env bash
# A controller stopped while it holds the segment's lock, under a running nginx: workers keep
# their last instantiated filter and answer every request; workers started by a reload while
# it is held answer too (filtered locations with the fail policy, the others normally); a
# command fails within its bound naming the holder's pid and state; once the holder is killed
# everything decides normally again.
# The holder is tests/security/hold_lock.cpp, built beside bpftime's own build folder.
set -uo pipefail
NGX_USER=root # the lock holder (tests/security/hold_lock.cpp) opens segments without a group
source "$(dirname "$0")/lib.sh"
HOLD_LOCK=$(dirname "$BPFTIME")/../tests/security/bpftime_hold_lock
[[ -x $HOLD_LOCK ]] || { echo "FAIL: $HOLD_LOCK is missing"; exit 1; }

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        location / { bpftime_url_filter on; empty_gif; }
        location /open/ { bpftime_url_filter on; bpftime_fail open; empty_gif; }
        location /plain/ { empty_gif; }
    }'
many 20 "$WORK/before" /api/a /admin/b
expect_tally "before" "$WORK/before" "10 /admin/b 403
10 /api/a 200"

# Both workers have instantiated (each reports the link running) before the lock is taken: a
# worker that had not would answer with the fail policy, rightly, but not what is checked here.
for _ in $(seq 100); do
  n=0
  for w in $(ngx_workers); do
    "$BPFTIME" list 2>/dev/null | grep -q "running in pid $w\b" && n=$((n + 1))
  done
  ((n == 2)) && break
  many 4 "$WORK/warm" /api/a
  sleep 0.05
done

"$HOLD_LOCK" "$BPFTIME_SHM" >"$WORK/holder.out" &
holder=$!
for _ in $(seq 100); do
  [[ $(ps -o stat= -p "$holder" 2>/dev/null) == T* ]] && break
  sleep 0.05
done
check "the controller holds the lock and is stopped" grep -q held "$WORK/holder.out"

# Workers that instantiated keep deciding with what they have.
many 40 "$WORK/held" /api/a /admin/b /plain/c /open/d
expect_tally "the lock held: the last instantiated filter decides" "$WORK/held" "10 /admin/b 403
10 /api/a 200
10 /open/d 403
10 /plain/c 200"

# A command waits its bound (5 s) and names the holder.
start=$SECONDS
out=$("$BPFTIME" disable "$LINK" 2>&1)
rc=$?
took=$((SECONDS - start))
check "a command fails (status $rc) within its bound (${took} s)" test "$rc" -ne 0 -a "$took" -le 8
check "it names the holder's pid and state: $out" \
  grep -q "process $holder (thread [0-9]*, stopped)" <<<"$out"

# A reload while the lock is held: new workers answer at once; with nothing instantiated
# their filtered locations get the fail policy, the others are served.
old_workers=$(ngx_workers)
kill -HUP "$MASTER_PID"
for _ in $(seq 100); do
  [[ $(ngx_workers) != "$old_workers" && $(ngx_workers | wc -l) -eq 2 ]] && break
  sleep 0.05
done
check "a reload started new workers" test "$(ngx_workers)" != "$old_workers"
start=$SECONDS
many 40 "$WORK/reloaded" /api/a /admin/b /plain/c /open/d
expect_tally "new workers under a held lock: the fail policy" "$WORK/reloaded" "10 /admin/b 503
10 /api/a 503
10 /open/d 200
10 /plain/c 200"
check "no request waited ($((SECONDS - start)) s for 40)" test $((SECONDS - start)) -le 5

# The holder dies: the lock is recovered and the filter decides again.
kill -KILL "$holder"
wait "$holder" 2>/dev/null
wait_code 200 /api/a 5
many 20 "$WORK/after" /api/a /admin/b
expect_tally "after the holder died" "$WORK/after" "10 /admin/b 403
10 /api/a 200"
bt disable "$LINK"
check_no_crash
finish

#!/usr/bin/env bash
# A link no worker can run (a program bpftime itself would refuse, written into the segment by
# a controller that skips the checks: an lddw whose src is 3): every filtered request gets the
# fail policy while the link exists (503 under "bpftime_fail closed", never 200; accepted
# under open), `bpftime list` shows the link failed in the worker with the reason, the error
# log names it once, and once the link is destroyed the programs decide again.
set -uo pipefail
NGX_USER=root # the store_writer test tool opens segments without a group (0600, root's)
source "$(dirname "$0")/lib.sh"

writer=${BPFTIME_STORE_WRITER:-}
if [[ -z $writer || ! -x $writer ]]; then
  echo "SKIP: BPFTIME_STORE_WRITER does not name the store_writer test tool"
  exit 77
fi

load_object "$TEST_BPF/containment.bpf.o"
attach_prog "${PROG[answer_418]}"

ngx_start 1 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location /open/ { bpftime_fail open; empty_gif; }
        location /closed/ { bpftime_fail closed; empty_gif; }
        location /unfiltered/ { bpftime_url_filter off; empty_gif; }
    }'
worker=$(ngx_workers)
expect_code 418 /closed/a

"$writer" "$BPFTIME_SHM" uncompilable-link >"$WORK/writer.out" || { echo "FAIL store_writer"; exit 1; }
bad=$(awk '{ print $2 }' "$WORK/writer.out")
expect_code 503 /closed/b
expect_code 200 /open/b
expect_code 200 /unfiltered/b
many 100 "$WORK/broken" /open/c /closed/c
expect_tally "100 requests while the link cannot run" "$WORK/broken" "50 /closed/c 503
50 /open/c 200"
expect list-failed 0 "^$bad +link +link .*enabled.*, failed in pid $worker: .*lddw kind 3" -- \
  "$BPFTIME" list
n=$(error_log_count "link $bad: .*lddw kind 3")
check "the failed link is logged once (logged $n times)" test "$n" -eq 1

bt destroy "$bad" >/dev/null
expect_code 418 /closed/d
expect_code 418 /open/d
expect list-running 0 "^$LINK +link +link .*, attached and running in pid $worker" -- "$BPFTIME" list
check "the same worker served everything" test "$(ngx_workers)" == "$worker"
check_no_crash
finish

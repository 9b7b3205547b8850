#!/usr/bin/env bash
# A program that cannot decide (tests/nginx/bpf/faults.bpf.c: a read out of bounds, a loop
# stopped by the instruction budget): "bpftime_fail open" accepts the request, "bpftime_fail
# closed" answers 503; the error log names the problem once, not once per request; the worker
# keeps running (same pids, no crash).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

load_object "$TEST_BPF/faults.bpf.o"
attach_prog "${PROG[read_out_of_bounds]}"
link=$LINK

# One worker: "once" is then once in the whole log.
ngx_start 1 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location /open/ { bpftime_fail open; empty_gif; }
        location /closed/ { bpftime_fail closed; empty_gif; }
        location / { empty_gif; }
    }'
workers_before=$(ngx_workers)

expect_code 200 /open/a
expect_code 503 /closed/a
expect_code 503 /default-is-closed
many 100 "$WORK/oob" /open/b /closed/b
expect_tally "100 requests on a faulting program" "$WORK/oob" "50 /closed/b 503
50 /open/b 200"
n=$(error_log_count "link $link: .*outside")
check "the out-of-bounds read is logged once (logged $n times)" test "$n" -eq 1

# The budget: swap the program for one that never ends.
bt disable "$link" >/dev/null
attach_prog "${PROG[run_forever]}"
link2=$LINK
expect_code 200 /open/c
expect_code 503 /closed/c
many 20 "$WORK/loop" /open/d /closed/d
expect_tally "20 requests on a program past its budget" "$WORK/loop" "10 /closed/d 503
10 /open/d 200"
n=$(error_log_count "link $link2: ")
check "the exhausted budget is logged once (logged $n times)" test "$n" -eq 1

# Without a faulting program the filter decides again.
bt disable "$link2" >/dev/null
expect_code 200 /closed/e

check "the same worker served everything" test "$(ngx_workers)" == "$workers_before"
check_no_crash
finish

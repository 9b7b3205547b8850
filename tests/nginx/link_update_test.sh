#!/usr/bin/env bash
# `bpftime link update LINK PROG` under a running nginx: the link keeps its id and counters and
# every worker answers with the new program from its next request, with no reload. Updating to
# a program that calls probe_read_user is refused.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

load_object "$TEST_BPF/containment.bpf.o"
attach_prog "${PROG[answer_418]}"
link=$LINK

ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        location / { bpftime_url_filter on; empty_gif; }
    }'
workers=$(ngx_workers)
many 20 "$WORK/before" /a /b
expect_tally "20 requests before the update" "$WORK/before" "10 /a 418
10 /b 418"

bt link update "$link" "${PROG[answer_429]}" >/dev/null
many 40 "$WORK/after" /a /b
expect_tally "40 requests after the update" "$WORK/after" "20 /a 429
20 /b 429"
expect list-updated 0 "^$link +link +link +program ${PROG[answer_429]} -> target [0-9]+, enabled, runs 60," -- \
  "$BPFTIME" list

expect update-read-user 1 "calls probe_read_user \(112\), which nginx-url programs may not use" -- \
  "$BPFTIME" link update "$link" "${PROG[read_user]}"
expect_code 429 /c
check "no reload: the same workers" test "$(ngx_workers)" == "$workers"
check_no_crash
finish

#!/usr/bin/env bash
# What a program sees of a request: the validated Host, the method, the URI as sent, the
# client address as text and as bytes, over IPv4 and (where the loopback has it) IPv6
# (tests/nginx/bpf/request_fields.bpf.c answers 460..464 for a wrong field).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

load_object "$TEST_BPF/request_fields.bpf.o"
attach_prog "${PROG[request_fields]}"

ipv6=
if ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1/'; then
  ipv6='listen [::1]:__PORT__;'
fi
ngx_start 1 "
    server {
        listen 127.0.0.1:__PORT__;
        $ipv6
        bpftime_url_filter on;
        location / { empty_gif; }
    }"

expect_code 200 "/fields?a=1" -H "Host: Example.TEST:8080"
expect_code 200 "/fields?a=1" -H "Host: example.test."
expect_code 460 "/fields?a=1" -H "Host: other.test"
expect_code 460 "/fields?a=1" -H "Host:" --http1.0
expect_code 461 "/fields?a=1" -H "Host: example.test" -I
expect_code 462 "/fields?a=2" -H "Host: example.test"
expect_code 462 "/f%69elds?a=1" -H "Host: example.test"
expect_code 200 /other

if [[ -n $ipv6 ]]; then
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -g -H "Host: example.test" \
    "http://[::1]:$PORT/fields?a=1")
  check "IPv6 client ::1 -> $got (want 200)" test "$got" == 200
else
  echo "skip IPv6: the loopback has no ::1"
fi

check_no_crash
finish

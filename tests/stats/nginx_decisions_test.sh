#!/usr/bin/env bash
# The nginx URL filter's decisions as `bpftime list --json` and `bpftime metrics` show them
# after a known set of requests to the real nginx: allowed, refused by status, and the fail
# policy (open and closed) counted on the link whose program faulted.
# Usage: nginx_decisions_test.sh BPFTIME MODULE EXAMPLES_DIR NGINX_TEST_BPF_DIR
set -uo pipefail
source "$(dirname "$0")/../nginx/lib.sh"

load_object "$TEST_BPF/status_codes.bpf.o"
attach_prog "${PROG[status_codes]}"
decider=$LINK
load_object "$TEST_BPF/faults.bpf.o"
attach_prog "${PROG[read_out_of_bounds]}"
faulting=$LINK

ngx_start 1 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location /open/ { bpftime_fail open; empty_gif; }
        location / { bpftime_fail closed; empty_gif; }
    }'

many 5 "$WORK/r1" /legal
many 3 "$WORK/r2" /gone
many 2 "$WORK/r3" /seven
many 4 "$WORK/r4" /open/a
many 6 "$WORK/r5" /closed/b
cat "$WORK"/r[1-5] >"$WORK/all"
expect_tally "what clients got" "$WORK/all" "6 /closed/b 503
3 /gone 410
5 /legal 451
4 /open/a 200
2 /seven 403"

# decisions LINK: the link's decisions and counts in `list --json`, as one line.
decisions() {
  "$BPFTIME" --json list | python3 -c '
import json, sys
link = int(sys.argv[1])
for o in json.load(sys.stdin)["objects"]:
    if o["id"] == link:
        d = o.get("decisions", {})
        print("runs", o["run_cnt"], "faults", o["faults"], "allowed", d.get("allowed"),
              "refused", json.dumps(d.get("refused"), sort_keys=True),
              "open", d.get("fail_open"), "closed", d.get("fail_closed"))' "$1"
}
got=$(decisions "$decider")
want='runs 20 faults 0 allowed 10 refused {"403": 2, "410": 3, "451": 5} open 0 closed 0'
check "deciding link: $got" [ "$got" = "$want" ]
got=$(decisions "$faulting")
want='runs 10 faults 10 allowed 0 refused {} open 4 closed 6'
check "faulting link: $got" [ "$got" = "$want" ]
# The worker's own share, under its pid.
worker=$(ngx_workers | head -1)
hosts=$("$BPFTIME" --json list | python3 -c '
import json, sys
for o in json.load(sys.stdin)["objects"]:
    for h in o.get("hosts", []):
        if h["pid"] == int(sys.argv[1]) and h["decisions"]:
            print(o["id"], h["run_cnt"], h["decisions"]["fail_closed"])' "$worker")
check "per worker: $hosts" [ "$hosts" = "$decider 20 0
$faulting 10 6" ]
expect list-text 0 "^$faulting +link .*runs 10, faults 10, allowed 0, fail open 4, fail closed 6" -- \
  "$BPFTIME" list
expect metrics 0 "bpftime_nginx_decisions_total\{link=\"$decider\",prog=\"status_codes\",target=\"\",type=\"nginx-url\",decision=\"refused\",status=\"451\"\} 5" -- \
  bash -c "'$BPFTIME' metrics --textfile '$WORK/m.prom' && cat '$WORK/m.prom'"

check_no_crash
finish

#!/usr/bin/env bash
# Four workers, each with its own bpftime server: requests served by every worker follow the
# policy, and a change (a map update, then a link swap) reaches every worker with no reload.
# reuseport and no keep-alive spread the connections over the workers; the access log names
# the worker ($pid) of each request.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/url_allowlist.bpf.o" url_allowlist
allow_link=$LINK
map=${MAP[allow_prefixes]}
load_object "$TEST_BPF/status_codes.bpf.o"

ngx_start 4 '
    log_format workers "$pid $uri $status";
    keepalive_timeout 0;
    server {
        listen 127.0.0.1:__PORT__ reuseport;
        access_log logs/access.log workers;
        bpftime_url_filter on;
        location / { empty_gif; }
    }'
workers=$(ngx_workers)

# round NAME WANT PATH...: 200 requests; every worker must have served some, each with the
# answers in WANT ("path status" lines, sorted).
round=0
round() {
  local name=$1 want=$2 log=$WORK/logs/access.log from got
  shift 2
  round=$((round + 1))
  from=$(($(wc -l <"$log") + 1))
  many 200 "$WORK/round$round" "$@"
  got=$(sort -u "$WORK/round$round")
  check "$name: every answer as wanted" test "$got" == "$want"
  got=$(tail -n "+$from" "$log" | awk '{ print $1 }' | sort -un)
  check "$name: all 4 workers answered" test "$got" == "$workers"
  got=$(tail -n "+$from" "$log" | awk '{ print $1, $2, $3 }' | sort -u |
    awk '{ n[$1]++ } END { for (p in n) print n[p] }' | sort -u)
  check "$name: each worker gave every answer" test "$got" == "$#"
}

round "the allowlist" "/admin/a 403
/api/a 200" /api/a /admin/a

bt map update "$map" str:/admin/ 0 >/dev/null
round "the allowlist with /admin/ added" "/admin/a 200
/api/a 200
/legal 403" /api/a /admin/a /legal

# A link swap is a new generation of the store that each worker's server picks up.
bt attach nginx-url "${PROG[status_codes]}" >/dev/null
bt disable "$allow_link" >/dev/null
round "status_codes instead of the allowlist" "/admin/a 200
/legal 451
/other 200" /admin/a /legal /other

check "the same workers served everything" test "$(ngx_workers)" == "$workers"
check_no_crash
finish

#!/usr/bin/env bash
# 10,000 requests through examples/refusal_log.bpf.c: every refused request leaves exactly
# one record in its ring buffer, which `bpftime map events` delivers while nginx runs; the
# records carry the status, the client and the path.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

attach_policy "$EXAMPLES/refusal_log.bpf.o" refusal_log
link=$LINK

ngx_start 2 '
    server {
        listen 127.0.0.1:__PORT__;
        bpftime_url_filter on;
        location / { empty_gif; }
    }'

# 10,000 requests: 3334 on /api/a (accepted), 3333 on /admin/b and 3333 on /secret (refused).
requests=10000 refused=6666
"$BPFTIME" map events "${MAP[refusals]}" --count "$refused" --timeout 5 >"$WORK/events" &
events_pid=$!
many "$requests" "$WORK/answers" /api/a /admin/b /secret
expect_tally "$requests requests" "$WORK/answers" "3333 /admin/b 403
3334 /api/a 200
3333 /secret 403"
wait "$events_pid"
check "map events ended well" test $? -eq 0

n=$(wc -l <"$WORK/events")
check "$n records for $refused refused requests" test "$n" -eq "$refused"
n=$("$BPFTIME" map events "${MAP[refusals]}" --timeout 1 | wc -l)
check "no record more ($n)" test "$n" -eq 0

# struct refusal: ts_ns (8 bytes), status, client_ipv4, path_len (4 each), path[44]; hex bytes.
summary=$(awk 'function hex(s,  v, i) {
      for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
      return v
    }
    {
      status = hex($10 $9); len = hex($18 $17); path = ""
      for (i = 0; i < len && i < 44; i++) path = path sprintf("%c", hex($(21 + i)))
      print status, $13 "." $14 "." $15 "." $16, path
    }' "$WORK/events" | sort | uniq -c |
  awk '{ print $1, $2, $3, $4 }')
check "the records: $(tr '\n' ',' <<<"$summary")" test "$summary" == "3333 403 7f.00.00.01 /admin/b
3333 403 7f.00.00.01 /secret"

runs=$("$BPFTIME" list | awk -v l="$link" '$1 == l { for (i = 1; i < NF; i++) if ($i == "runs") print $(i + 1) }')
check "the link ran once per request (${runs%,})" test "${runs%,}" == "$requests"

check_no_crash
finish

#!/usr/bin/env bash
# Requests per second of Debian's nginx with ngx_http_bpftime_module, measured with wrk on
# 127.0.0.1, in one run:
#   no module           nginx without the module (the baseline)
#   filter off          the module loaded, bpftime_url_filter off in the location
#   nothing attached    bpftime_url_filter on, no program attached
#   allowlist, accept   examples/url_allowlist.bpf.c attached, an allowed path (200)
#   allowlist, refuse   the same, a refused path (403)
# Prints a Markdown table. Usage (after scripts/build.sh, as root):
#   bench/nginx_bench.sh [BUILD_DIR]
# Environment: DURATION (seconds per case, 5), CONNECTIONS (32), THREADS (wrk threads, 1),
# WORKERS (nginx worker processes, 1), PORT (a free port, 8099).
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:-${BPFTIME_BUILD_DIR:-build}}")
duration=${DURATION:-5}
connections=${CONNECTIONS:-32}
threads=${THREADS:-1}
workers=${WORKERS:-1}
port=${PORT:-8099}
bpftime=$build/tools/bpftime
module=$build/nginx/ngx_http_bpftime_module.so
for f in "$bpftime" "$module" "$build/examples/url_allowlist.bpf.o" /usr/sbin/nginx; do
  [[ -e $f ]] || { echo "nginx_bench: $f is missing (scripts/build.sh; apt-get install nginx)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "nginx_bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }

export BPFTIME_SHM=bpftime-bench-$$
work=$(mktemp -d)
master=
stop_nginx() {
  [[ -n $master ]] || return 0
  kill -TERM "$master" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
  master=
}
cleanup() {
  stop_nginx
  "$bpftime" reset >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_nginx WITH_MODULE: nginx on 127.0.0.1:$port; /off/ never filtered, / filtered when the
# module is loaded.
start_nginx() {
  local load= filter=
  if [[ $1 == yes ]]; then
    load="load_module $module;"
    filter="bpftime_shm $BPFTIME_SHM;"
  fi
  mkdir -p "$work/logs" "$work/tmp"
  cat >"$work/nginx.conf" <<EOF
$load
$([[ $(id -u) -eq 0 ]] && echo "user root;")
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    keepalive_requests 1000000;
    $filter
    server {
        listen 127.0.0.1:$port;
        location / { $([[ $1 == yes ]] && echo "bpftime_url_filter on;") empty_gif; }
        location /off/ { empty_gif; }
    }
}
EOF
  /usr/sbin/nginx -p "$work" -c "$work/nginx.conf"
  master=$(cat "$work/nginx.pid")
  for _ in $(seq 100); do
    [[ $(pgrep -c -P "$master") -eq $workers ]] && break
    sleep 0.05
  done
}

# measure CASE PATH WANT: one wrk run; WANT is 2xx (every answer 2xx) or non-2xx (none).
measure() {
  local name=$1 path=$2 want=$3 out rps avg p99 non2xx total errors
  out=$(wrk -t "$threads" -c "$connections" -d "${duration}s" --latency \
    "http://127.0.0.1:$port$path")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  avg=$(awk '$1 == "Latency" { print $2; exit }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  total=$(awk '/requests in/ { print $1 }' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
  errors=$(awk '/Socket errors:/' <<<"$out")
  non2xx=${non2xx:-0}
  if [[ -n $errors ]] || { [[ $want == 2xx ]] && [[ $non2xx -ne 0 ]]; } ||
    { [[ $want == non-2xx ]] && [[ $non2xx -ne $total ]]; }; then
    echo "nginx_bench: $name: unexpected answers:" >&2
    echo "$out" >&2
    exit 1
  fi
  printf '| %s | %s | %.0f | %s | %s |\n' "$name" "$path" "$rps" "$avg" "$p99"
}

echo "nginx $(/usr/sbin/nginx -v 2>&1 | sed 's|.*/||'), $workers worker(s); wrk -t$threads -c$connections -d${duration}s; $(nproc) CPUs"
echo
echo "| case | path | requests/s | mean latency | p99 latency |"
echo "| --- | --- | ---: | ---: | ---: |"

start_nginx no
measure "no module" /api/users/42 2xx
stop_nginx

"$bpftime" reset >/dev/null 2>&1 || true
ids=$("$bpftime" load "$build/examples/url_allowlist.bpf.o")
map=$(awk '$1 == "map" && $3 == "allow_prefixes" { print $2 }' <<<"$ids")
prog=$(awk '$1 == "program" && $3 == "url_allowlist" { print $2 }' <<<"$ids")
"$bpftime" map update "$map" str:/api/ 0 >/dev/null

start_nginx yes
measure "filter off" /off/users/42 2xx
measure "nothing attached" /api/users/42 2xx
"$bpftime" attach nginx-url "$prog" >/dev/null
measure "allowlist, accept" /api/users/42 2xx
measure "allowlist, refuse" /admin/users/42 non-2xx
stop_nginx

if grep -E 'exited on signal|\[alert\]|\[emerg\]|\[crit\]' "$work/logs/error.log" >&2; then
  echo "nginx_bench: nginx reported the problems above" >&2
  exit 1
fi

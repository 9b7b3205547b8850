#!/usr/bin/env bash
# The demo: installs what it needs, builds bpftime and its nginx module, starts Debian's nginx
# on 127.0.0.1 with an eBPF URL filter, shows requests accepted and refused, changes the policy
# under the running server (no reload), and stops nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/install-deps.sh
scripts/build.sh -DBPFTIME_ENABLE_TESTS=OFF -DBPFTIME_ENABLE_BENCHMARKS=OFF
build=${BPFTIME_BUILD_DIR:-build}
bpftime=$root/$build/tools/bpftime
module=$root/$build/nginx/ngx_http_bpftime_module.so
port=${BPFTIME_DEMO_PORT:-8089}
export BPFTIME_SHM=bpftime-demo
# The workers run as www-data, as in Debian's stock nginx.conf: the segment is made for their
# group (every bpftime command below sees this, as --shm-group www-data).
export BPFTIME_SHM_GROUP=www-data

work=$(mktemp -d)
stop_nginx() {
  local pid
  pid=$(cat "$work/nginx.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
cleanup() {
  stop_nginx
  "$bpftime" reset >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
show() { # show PATH...: one request each, with the answer
  for path in "$@"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$path")
    case $code in
      200) verdict="accepted" ;;
      *) verdict="refused" ;;
    esac
    printf '  GET %-16s -> %s %s\n' "$path" "$code" "$verdict"
  done
}

step "the policy: an eBPF program and its map (examples/url_allowlist.bpf.c)"
"$bpftime" reset >/dev/null 2>&1 || true
"$bpftime" load "$build/examples/url_allowlist.bpf.o"
map=$("$bpftime" list | awk '$2 == "map" && $3 == "allow_prefixes" { print $1 }')
prog=$("$bpftime" list | awk '$2 == "program" && $3 == "url_allowlist" { print $1 }')
"$bpftime" map update "$map" str:/api/ 0
"$bpftime" map update "$map" str:/old/ 410
"$bpftime" attach nginx-url "$prog"
"$bpftime" list
"$bpftime" segment info

step "nginx on 127.0.0.1:$port with ngx_http_bpftime_module (2 workers, user www-data)"
mkdir -p "$work/logs"
cat >"$work/nginx.conf" <<EOF
load_module $module;
user www-data;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    bpftime_shm $BPFTIME_SHM;
    bpftime_url_filter on;
    bpftime_fail closed;
    server {
        listen 127.0.0.1:$port;
        location / { empty_gif; }
    }
}
EOF
/usr/sbin/nginx -p "$work" -c "$work/nginx.conf"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

step "requests: /api/... is allowed, /old/... is gone (410), the rest is refused (403)"
show /api/users /api/orders?id=7 /old/page /admin /index.html

step "change the policy live: allow /admin/, stop allowing /api/ (bpftime map update/delete)"
"$bpftime" map update "$map" str:/admin/ 0
"$bpftime" map delete "$map" str:/api/
show /api/users /admin/panel /old/page

step "runs of the program, counted over both workers (bpftime list)"
"$bpftime" list | grep -E '^ID|link'

step "stop nginx"
stop_nginx
echo "  done"

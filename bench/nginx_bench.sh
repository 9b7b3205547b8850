#!/usr/bin/env bash
# Throughput and worker CPU of Debian's nginx filtering URLs, measured with wrk on 127.0.0.1,
# all cases in one run. Every response comes from the content phase (empty_gif): `return`
# would answer in the rewrite phase and skip the access phase where the filters run.
#
#   baseline        nginx without any filter module (the reference)
#   bpftime         ngx_http_bpftime_module with examples/url_allowlist.bpf.o attached,
#                   an allowed path (200)
#   lua             Debian's libnginx-mod-http-lua, an access_by_lua_block with the same
#                   policy (same key, same table contents), an allowed path (200)
#   detached        the module with bpftime_url_filter on, nothing attached (200)
#   bpftime-refuse  the bpftime server, a refused path (403 from the filter)
#   lua-refuse      the Lua server, a refused path (403 from the filter)
#
# Each server is its own nginx (same settings, one worker by default), all started at once on
# their own ports, so the cases are interleaved without restarts: for each of ROUNDS rounds
# every case runs once, in an order rotated by one each round and reversed every other round
# (so that no case always follows the same one). Per run: wrk's requests/s and
# the CPU time (utime+stime from /proc/PID/stat) the nginx worker(s) used during the run,
# divided by the requests wrk counted. Reported per case: medians over the rounds and their
# ratios to the baseline's medians, then every raw run.
#
# Usage (after scripts/build.sh; as root, every server's workers run as www-data, as Debian's
# nginx runs them, and the segments are shared with that group):
#   bench/nginx_bench.sh [BUILD_DIR]
# Environment:
#   ROUNDS (5), DURATION (seconds per run, 4), WARMUP (seconds per case before round 1, 1),
#   CONNECTIONS (32), THREADS (wrk threads, 1), WORKERS (nginx workers per server, 1),
#   PIN (1: with one worker and 2+ CPUs, workers on the last CPU and wrk on the others; 0: no
#   pinning), CASES (space-separated subset of the names above, in that order by default).
set -euo pipefail
cd "$(dirname "$0")/.."

build=$(realpath "${1:-${BPFTIME_BUILD_DIR:-build}}")
rounds=${ROUNDS:-5}
duration=${DURATION:-4}
warmup=${WARMUP:-1}
connections=${CONNECTIONS:-32}
threads=${THREADS:-1}
workers=${WORKERS:-1}
pin=${PIN:-1}
read -ra cases <<<"${CASES:-baseline bpftime lua detached bpftime-refuse lua-refuse}"

nginx=/usr/sbin/nginx
bpftime=$build/tools/bpftime
module=$build/nginx/ngx_http_bpftime_module.so
program=$build/examples/url_allowlist.bpf.o
mods_available=/usr/share/nginx/modules-available

die() {
  echo "nginx_bench: $*" >&2
  exit 1
}

# --- the cases ---------------------------------------------------------------------------
# Which server answers a case, on which path, and what every answer must be.
declare -A case_server=(
  [baseline]=plain [bpftime]=bpftime [lua]=lua [detached]=detached
  [bpftime-refuse]=bpftime [lua-refuse]=lua
)
declare -A case_path=(
  [baseline]=/api/users/42 [bpftime]=/api/users/42 [lua]=/api/users/42
  [detached]=/api/users/42 [bpftime-refuse]=/admin/users/42 [lua-refuse]=/admin/users/42
)
declare -A case_status=(
  [baseline]=200 [bpftime]=200 [lua]=200 [detached]=200 [bpftime-refuse]=403 [lua-refuse]=403
)
declare -A need_server=()
for c in "${cases[@]}"; do
  [[ -n ${case_server[$c]:-} ]] || die "unknown case '$c' (known: ${!case_server[*]})"
  need_server[${case_server[$c]}]=1
done
((rounds >= 1 && duration >= 1)) || die "ROUNDS and DURATION must be at least 1"

# --- prerequisites -----------------------------------------------------------------------
[[ -x $nginx ]] || die "$nginx is missing (apt-get install nginx)"
command -v wrk >/dev/null || die "wrk is missing (apt-get install wrk)"
command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
if [[ -n ${need_server[bpftime]:-}${need_server[detached]:-} ]]; then
  for f in "$bpftime" "$module" "$program"; do
    [[ -e $f ]] || die "$f is missing (scripts/build.sh)"
  done
fi

# load_module lines of Debian's Lua module, as its package enables them (the Nginx
# Development Kit first: the Lua module needs it), with paths made absolute because each
# server here has its own prefix.
lua_load_modules() {
  local prefix conf path
  prefix=$("$nginx" -V 2>&1 | grep -o -- '--prefix=[^ ]*' | cut -d= -f2)
  for conf in mod-http-ndk.conf mod-http-lua.conf; do
    [[ -f $mods_available/$conf ]] ||
      die "$mods_available/$conf is missing (apt-get install libnginx-mod-http-lua)"
    path=$(sed -n 's/^[[:space:]]*load_module[[:space:]]\+\([^;]*\);.*/\1/p' "$mods_available/$conf")
    [[ $path == /* ]] || path=${prefix:-/usr/share/nginx}/$path
    [[ -f $path ]] || die "$path (from $mods_available/$conf) is missing"
    echo "load_module $path;"
  done
}

# --- state and cleanup -------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/nginx-bench.XXXXXX")
chmod 755 "$work" # the workers' temporary folders are below it
# Two segments of our own: the program attached in one, loaded but not attached in the other.
seg_attached=bpftime-bench-$$
seg_detached=bpftime-bench-$$-detached
declare -A master=() port=()

# stop_nginx SERVER: SIGTERM to the master, SIGKILL to what is left after 5 s.
stop_nginx() {
  local m=${master[$1]:-} pids _
  [[ -n $m ]] || return 0
  pids="$m $(pgrep -P "$m" | tr '\n' ' ')"
  kill -TERM "$m" 2>/dev/null || true
  for _ in $(seq 100); do
    # shellcheck disable=SC2086 # a list of pids
    kill -0 $pids 2>/dev/null || break
    sleep 0.05
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  master[$1]=
}

cleanup() {
  local s
  for s in "${!master[@]}"; do stop_nginx "$s"; done
  if [[ -x $bpftime ]]; then
    "$bpftime" --shm "$seg_attached" reset >/dev/null 2>&1 || true
    "$bpftime" --shm "$seg_detached" reset >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # run the EXIT trap on ^C too

# --- pinning -----------------------------------------------------------------------------
# On a small machine wrk and the worker otherwise migrate onto the same CPU now and then,
# which shows up as noise in every case alike.
ncpu=$(nproc)
affinity=
wrk_prefix=()
if [[ $pin == 1 && $workers == 1 && $ncpu -ge 2 ]] && command -v taskset >/dev/null; then
  affinity="worker_cpu_affinity 1$(printf '0%.0s' $(seq $((ncpu - 1))));"
  wrk_prefix=(taskset -c "0-$((ncpu - 2))")
  pin_note="worker pinned to CPU $((ncpu - 1)), wrk to CPUs 0-$((ncpu - 2))"
else
  pin_note="no pinning"
fi

# --- servers -----------------------------------------------------------------------------
# start_nginx SERVER: writes SERVER's nginx.conf (the same settings for every server, only
# the module lines and the location's filter differ) and starts it on a free port.
start_nginx() {
  local s=$1 dir=$work/$1 head='' filter='' http_extra='' user_line='' out m _
  case $s in
    plain) ;;
    bpftime | detached)
      local seg=$seg_attached
      [[ $s == detached ]] && seg=$seg_detached
      head="load_module $module;"
      filter="bpftime_url_filter on;"
      http_extra="bpftime_shm $seg;"
      ;;
    lua)
      head=$(lua_load_modules)
      # The policy of examples/url_allowlist.bpf.c + url_prefix.h: the key is the path up
      # to and including its second slash, or the whole path, at most 31 bytes; 0 accepts,
      # another value refuses with it, an absent key refuses with 403. The table is built
      # once at startup, as the map is filled once before the runs.
      http_extra='init_by_lua_block { allow_prefixes = { ["/api/"] = 0, ["/old/"] = 410 } }'
      filter='access_by_lua_block {
                local uri = ngx.var.uri
                local last = string.find(uri, "/", 2, true) or #uri
                if last > 31 then last = 31 end
                local verdict = allow_prefixes[string.sub(uri, 1, last)]
                if verdict == nil then return ngx.exit(403) end
                if verdict ~= 0 then return ngx.exit(verdict) end
            }'
      ;;
  esac
  # Every server's workers run as the same user, so that the filter is the only difference.
  [[ -n $ngx_user ]] && user_line="user $ngx_user;"
  mkdir -p "$dir/logs" "$dir/tmp"
  for _ in $(seq 8); do # random ports below the ephemeral range until one is free
    port[$s]=$((10000 + RANDOM % 22000))
    # A port taken by someone else leaves [emerg] lines; only the last attempt's log counts.
    : >"$dir/logs/error.log"
    cat >"$dir/nginx.conf" <<EOF
$head
$user_line
worker_processes $workers;
$affinity
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    $http_extra
    server {
        listen 127.0.0.1:${port[$s]};
        location / {
            $filter
            empty_gif;
        }
    }
}
EOF
    if out=$("$nginx" -p "$dir" -c "$dir/nginx.conf" 2>&1); then
      m=$(cat "$dir/nginx.pid")
      master[$s]=$m
      for _ in $(seq 100); do
        [[ $(pgrep -c -P "$m") -eq $workers ]] && return 0
        sleep 0.05
      done
      die "$s: nginx did not start its $workers worker(s)"
    fi
    grep -q "Address already in use" <<<"$out" && continue
    die "$s: nginx did not start: $out"
  done
  die "$s: no free port found"
}

# worker_pids SERVER: the worker pids, sorted, on one line.
worker_pids() { pgrep -P "${master[$1]}" | sort -n | tr '\n' ' '; }

# worker_ticks PIDS...: utime+stime of the processes, in clock ticks. The command name in
# /proc/PID/stat is in parentheses; fields are counted after it (state is field 3).
worker_ticks() {
  local pid stat total=0 f
  for pid in "$@"; do
    stat=$(<"/proc/$pid/stat")
    read -ra f <<<"${stat##*) }"
    total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
  done
  echo "$total"
}

# status SERVER PATH: the status of one GET.
status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:${port[$1]}$2"
}

# --- setup -------------------------------------------------------------------------------
# As root: workers as www-data, segments created for its group (least privilege, as operators
# run nginx); otherwise the workers run as this user and open its 0600 segments.
ngx_user=''
if [[ $(id -u) -eq 0 ]] && id www-data >/dev/null 2>&1; then
  ngx_user=www-data
  export BPFTIME_SHM_GROUP=www-data # every bpftime command of this script
fi
if [[ -n ${need_server[bpftime]:-}${need_server[detached]:-} ]]; then
  for seg in "$seg_attached" "$seg_detached"; do
    "$bpftime" --shm "$seg" reset >/dev/null 2>&1 || true
    ids=$("$bpftime" --shm "$seg" load "$program")
    map=$(awk '$1 == "map" && $3 == "allow_prefixes" { print $2 }' <<<"$ids")
    prog=$(awk '$1 == "program" && $3 == "url_allowlist" { print $2 }' <<<"$ids")
    [[ -n $map && -n $prog ]] || die "unexpected output of bpftime load: $ids"
    # The same contents as the Lua table.
    "$bpftime" --shm "$seg" map update "$map" str:/api/ 0 >/dev/null
    "$bpftime" --shm "$seg" map update "$map" str:/old/ 410 >/dev/null
    if [[ $seg == "$seg_attached" ]]; then
      "$bpftime" --shm "$seg" attach nginx-url "$prog" >/dev/null
    fi
  done
fi
for s in plain bpftime lua detached; do
  [[ -n ${need_server[$s]:-} ]] && start_nginx "$s"
done

# The Lua filter must decide as the eBPF program does, or the comparison is meaningless.
if [[ -n ${need_server[bpftime]:-} && -n ${need_server[lua]:-} ]]; then
  long=/abcdefghijklmnopqrstuvwxyz0123456789/x
  for p in /api/users/42 /api/ /api /apix/ /admin/users/42 /old/page /old / /index.html "$long"; do
    b=$(status bpftime "$p")
    l=$(status lua "$p")
    [[ $b == "$l" ]] || die "the filters disagree on $p: bpftime $b, lua $l"
  done
fi
for c in "${cases[@]}"; do
  got=$(status "${case_server[$c]}" "${case_path[$c]}")
  [[ $got == "${case_status[$c]}" ]] ||
    die "$c: ${case_path[$c]} answered $got, not ${case_status[$c]}"
done

# --- measurement -------------------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
raw=$work/raw.tsv
: >"$raw"

# run_case CASE SECONDS [ROUND]: one bounded wrk run against CASE's server. Every answer must
# be the case's status, with no socket error and no worker replaced during the run. With a
# ROUND, appends "round case rps requests worker_cpu_seconds" to $raw.
run_case() {
  local c=$1 secs=$2 round=${3:-} s=${case_server[$1]} out pids pids_after t0 t1
  local rps total non2xx errors
  pids=$(worker_pids "$s")
  # shellcheck disable=SC2086 # a list of pids
  t0=$(worker_ticks $pids)
  out=$(timeout --signal=INT $((secs + 30)) "${wrk_prefix[@]}" \
    wrk -t "$threads" -c "$connections" -d "${secs}s" "http://127.0.0.1:${port[$s]}${case_path[$c]}") ||
    die "$c: wrk failed: $out"
  # shellcheck disable=SC2086
  t1=$(worker_ticks $pids)
  pids_after=$(worker_pids "$s")
  [[ $pids == "$pids_after" ]] || die "$c: the worker(s) changed during the run ($pids -> $pids_after)"
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  total=$(awk '/ requests in / { print $1 }' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
  errors=$(grep 'Socket errors:' <<<"$out" || true)
  non2xx=${non2xx:-0}
  [[ -n $rps && ${total:-0} -gt 0 ]] || die "$c: cannot read wrk's output: $out"
  if [[ -n $errors ]] ||
    { [[ ${case_status[$c]} == 2* ]] && ((non2xx != 0)); } ||
    { [[ ${case_status[$c]} != 2* ]] && ((non2xx != total)); }; then
    die "$c: unexpected answers (want every one ${case_status[$c]}):
$out
$s's error log (last lines):
$(tail -n 20 "$work/$s/logs/error.log" 2>/dev/null)"
  fi
  if [[ -n $round ]]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$rps" "$total" \
      "$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" 'BEGIN { printf "%.2f", t / hz }')" >>"$raw"
  fi
}

ncases=${#cases[@]}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "nginx_bench: ${ncases} cases x $rounds rounds x ${duration}s (+ ${warmup}s warm-up each)" >&2
if ((warmup > 0)); then
  for c in "${cases[@]}"; do run_case "$c" "$warmup"; done
fi
for ((r = 1; r <= rounds; r++)); do
  order=()
  for ((i = 0; i < ncases; i++)); do
    if ((r % 2)); then
      order+=("${cases[(i + r - 1) % ncases]}")
    else
      order+=("${cases[(ncases - 1 - i + r - 1) % ncases]}")
    fi
  done
  echo "nginx_bench: round $r/$rounds: ${order[*]}" >&2
  for c in "${order[@]}"; do run_case "$c" "$duration" "$r"; done
done

for s in "${!master[@]}"; do
  if grep -E 'exited on signal|exited with code [1-9]|\[alert\]|\[emerg\]|\[crit\]' \
    "$work/$s/logs/error.log" >&2; then
    die "$s: nginx reported the problems above"
  fi
done

# --- report ------------------------------------------------------------------------------
# median CASE COLUMN: the median over the rounds of a column computed by awk from $raw
# (rps: requests/s; us: worker CPU microseconds per request).
median() {
  awk -F'\t' -v c="$1" -v col="$2" '$2 == c {
      print (col == "rps") ? $3 : $5 * 1e6 / $4
    }' "$raw" | sort -g | awk '{ v[NR] = $1 }
      END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() {
  awk -F'\t' -v c="$1" '$2 == c { print $3 }' "$raw" | sort -g |
    awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f", lo, hi }'
}

echo "nginx $("$nginx" -v 2>&1 | sed 's|.*/||'), $workers worker(s) per server" \
  "(running as ${ngx_user:-$(id -un)}), access_log off," \
  "keepalive, empty_gif; wrk -t$threads -c$connections -d${duration}s, $rounds interleaved rounds;" \
  "$pin_note; $ncpu CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))," \
  "Linux $(uname -r), load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| case | path | status | median req/s | req/s range | vs baseline | median worker CPU µs/req | vs baseline |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
base_rps=
base_us=
if [[ -n ${need_server[plain]:-} ]]; then
  base_rps=$(median baseline rps)
  base_us=$(median baseline us)
fi
for c in "${cases[@]}"; do
  rps=$(median "$c" rps)
  us=$(median "$c" us)
  awk -v c="$c" -v p="${case_path[$c]}" -v st="${case_status[$c]}" -v rps="$rps" -v us="$us" \
    -v rg="$(range "$c")" -v brps="$base_rps" -v bus="$base_us" 'BEGIN {
      vr = (brps == "") ? "-" : sprintf("%.3f", rps / brps)
      vu = (bus == "") ? "-" : sprintf("%.2fx (%+.2f µs)", us / bus, us - bus)
      printf "| %s | %s | %s | %.0f | %s | %s | %.2f | %s |\n", c, p, st, rps, rg, vr, us, vu
    }'
done
echo
echo "Raw runs (round, case, requests/s, requests, worker CPU s, worker CPU µs/req, worker CPU busy):"
echo
echo "| round | case | req/s | requests | worker CPU s | µs/req | busy |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
awk -F'\t' -v d="$duration" '{
    printf "| %s | %s | %.0f | %s | %.2f | %.2f | %.0f%% |\n", $1, $2, $3, $4, $5, $5 * 1e6 / $4, 100 * $5 / d
  }' "$raw"

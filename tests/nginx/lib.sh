# Shared by the nginx integration tests (tests/nginx/*_test.sh), in the spirit of nginx-tests:
# each test writes an nginx configuration, starts Debian's real nginx with the module on
# 127.0.0.1, sends requests with curl and checks what a client sees.
#
#   source lib.sh BPFTIME MODULE EXAMPLES_DIR TEST_BPF_DIR
#
# BPFTIME is the bpftime binary, MODULE ngx_http_bpftime_module.so, EXAMPLES_DIR the compiled
# examples (url_allowlist.bpf.o, ...), TEST_BPF_DIR the compiled tests/nginx/bpf programs.
# Every test has its own segment ($BPFTIME_SHM), its own folder and its own port; the EXIT
# trap stops nginx and removes the segment. Exit status 77 means skipped.

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" # expect, check, finish

if [[ $# -ne 4 ]]; then
  echo "usage: $0 BPFTIME MODULE EXAMPLES_DIR TEST_BPF_DIR"
  exit 2
fi
BPFTIME=$(realpath -- "$1")
MODULE=$(realpath -- "$2")
EXAMPLES=$(realpath -- "$3")
TEST_BPF=$(realpath -- "$4")
NGINX=${NGINX:-/usr/sbin/nginx}
TEST_NAME=$(basename "$0" .sh)

if [[ ! -x $NGINX ]]; then
  echo "SKIP: $NGINX is missing (apt-get install nginx)"
  exit 77
fi
for f in "$BPFTIME" "$MODULE"; do
  [[ -f $f ]] || { echo "FAIL: $f is missing"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bpftime-$TEST_NAME.XXXXXX")
export BPFTIME_SHM="bpftime-test-$TEST_NAME-$$"

# The workers' user, as operators run nginx: Debian's stock nginx.conf says "user www-data;".
# The segment is then created for that user's group (bpftime --shm-group, through
# $BPFTIME_SHM_GROUP, which every bpftime command of the test sees). A test may set NGX_USER
# before sourcing this file (NGX_USER=root: the segment stays 0600 and root's). Not root: nginx
# cannot switch users, workers run as the caller.
if [[ $(id -u) -ne 0 ]]; then
  NGX_USER=
elif [[ -z ${NGX_USER:-} ]]; then
  NGX_USER=root
  id www-data >/dev/null 2>&1 && NGX_USER=www-data
fi
if [[ -n $NGX_USER && $NGX_USER != root ]]; then
  export BPFTIME_SHM_GROUP=$(id -gn "$NGX_USER")
else
  unset BPFTIME_SHM_GROUP
fi
PORT=
MASTER_PID=

# The segment is ours alone; a stale one of the same name would be a bug of an earlier run.
"$BPFTIME" reset >/dev/null 2>&1 || true

# The test's own stdout, for the EXIT trap: an exit inside "bt ... >FILE" keeps the redirection.
exec {TEST_STDOUT}>&1
cleanup() {
  local status=$?
  exec >&"$TEST_STDOUT"
  ngx_stop
  "$BPFTIME" reset >/dev/null 2>&1 || true
  if [[ $status -ne 0 || $failures -ne 0 ]]; then
    echo "--- kept $WORK; the end of its error log:"
    tail -n 30 "$WORK/logs/error.log" 2>/dev/null | sed 's/^/  | /'
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# bt ARGS...: the bpftime command line on this test's segment; a failure stops the test (its
# message goes to stderr, so "bt ... >/dev/null" still shows it). Not for $(...): the exit
# would only leave the subshell.
bt() {
  local out
  if ! out=$("$BPFTIME" "$@" 2>&1); then
    {
      echo "FAIL: bpftime $*:"
      sed 's/^/  | /' <<<"$out"
    } >&2
    failures=$((failures + 1))
    exit 1
  fi
  [[ -z $out ]] || printf '%s\n' "$out"
}

# load_object FILE: loads an ELF object; sets MAP[name] and PROG[name] to the new ids.
declare -A MAP PROG
load_object() {
  local kind id name
  bt load "$1" >"$WORK/load.out"
  while read -r kind id name; do
    case $kind in
      map) MAP[$name]=$id ;;
      program) PROG[$name]=$id ;;
    esac
  done <"$WORK/load.out"
}

# attach_prog PROG_ID: attaches to the nginx URL filter; sets LINK to the link id.
LINK=
attach_prog() {
  bt attach nginx-url "$1" >"$WORK/attach.out"
  LINK=$(awk '$1 == "link" { print $2 }' "$WORK/attach.out")
}

# attach_policy OBJECT PROGRAM: loads an object whose program filters by the allow_prefixes
# map, allows /api/ and attaches the program; sets MAP, PROG and LINK.
attach_policy() {
  load_object "$1"
  bt map update "${MAP[allow_prefixes]}" str:/api/ 0 >/dev/null
  attach_prog "${PROG[$2]}"
}

# ngx_run ARGS...: runs nginx. $NGINX_LD_PRELOAD (set by CTest in sanitizer builds) preloads
# the sanitizer runtime the module's server library needs; leak reports of nginx's own exit
# paths are not ours to fix.
ngx_run() {
  if [[ -n ${NGINX_LD_PRELOAD:-} ]]; then
    LD_PRELOAD=$NGINX_LD_PRELOAD ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
      "$NGINX" "$@"
  else
    "$NGINX" "$@"
  fi
}

# ngx_start WORKERS HTTP_BODY: writes nginx.conf and starts nginx (a daemon with its pid file
# in $WORK). HTTP_BODY goes inside http { }; every "__PORT__" in it becomes the port. Tries a
# few random free ports, since tests run in parallel. The ports lie below the kernel's
# ephemeral range (32768-60999), where the clients' own connections take their local ports.
ngx_start() {
  local workers=$1 body=$2 attempt out user_line= main_extra=
  [[ -n $NGX_USER ]] && user_line="user $NGX_USER;"
  # A binary upgrade starts nginx again with only the variables "env" keeps.
  [[ -n ${NGINX_LD_PRELOAD:-} ]] && main_extra="env LD_PRELOAD; env ASAN_OPTIONS;"
  NGX_WORKERS=$workers
  [[ $workers == auto ]] && NGX_WORKERS=$(nproc)
  mkdir -p "$WORK/logs" "$WORK/tmp"
  for attempt in 1 2 3 4 5 6 7 8; do
    PORT=$((10000 + RANDOM % 22000))
    # A port taken by someone else leaves [emerg] lines; only the last attempt's log counts.
    : >"$WORK/logs/error.log"
    cat >"$WORK/nginx.conf" <<EOF
load_module $MODULE;
$user_line
$main_extra
worker_processes $workers;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    bpftime_shm $BPFTIME_SHM;
${body//__PORT__/$PORT}
}
EOF
    if out=$(ngx_run -p "$WORK" -c "$WORK/nginx.conf" 2>&1); then
      MASTER_PID=$(cat "$WORK/nginx.pid")
      # The master listens before it daemonizes; ready when every worker is up. (No probe
      # request: it would run the filter and count in the tests' figures.)
      local i
      for i in $(seq 100); do
        [[ $(ngx_workers | wc -l) -eq $NGX_WORKERS ]] && return 0
        sleep 0.05
      done
      echo "FAIL: nginx did not come up on port $PORT"
      failures=$((failures + 1))
      exit 1
    fi
    grep -q "Address already in use" <<<"$out" && continue
    echo "FAIL: nginx did not start:"
    sed 's/^/  | /' <<<"$out"
    failures=$((failures + 1))
    exit 1
  done
  echo "FAIL: no free port found"
  failures=$((failures + 1))
  exit 1
}

# ngx_workers: the pids of the worker processes, sorted.
ngx_workers() { [[ -n $MASTER_PID ]] && pgrep -P "$MASTER_PID" | sort -n; }

# ngx_wait_workers OLD_PIDS: waits (at most 10 s) until the master has $NGX_WORKERS workers
# and none of OLD_PIDS (a space-separated list) is alive any more.
ngx_wait_workers() {
  local old=$1 i now p alive
  for i in $(seq 200); do
    now=$(ngx_workers | tr '\n' ' ')
    alive=
    for p in $old; do
      kill -0 "$p" 2>/dev/null && alive+=" $p"
    done
    if [[ -z $alive && $(wc -w <<<"$now") -eq $NGX_WORKERS ]]; then
      return 0
    fi
    sleep 0.05
  done
  echo "FAIL: workers did not turn over (old:$old; now: $now; still alive:$alive)"
  failures=$((failures + 1))
  exit 1
}

# ngx_reload: "nginx -s reload" and waits until new workers serve and the old ones are gone.
ngx_reload() {
  local old out
  old=$(ngx_workers | tr '\n' ' ')
  if ! out=$(ngx_run -p "$WORK" -c "$WORK/nginx.conf" -s reload 2>&1); then
    echo "FAIL: nginx -s reload: $out"
    failures=$((failures + 1))
    exit 1
  fi
  ngx_wait_workers "$old"
}

# proc_usage PID: "MAPPINGS FDS" of a process (lines of /proc/PID/maps, entries of fd/).
proc_usage() {
  echo "$(wc -l <"/proc/$1/maps") $(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l)"
}

# ngx_user_of PID: the user a process runs as.
ngx_user_of() { ps -o user= -p "$1" | tr -d ' '; }

# ngx_stop: stops nginx (SIGTERM, then SIGKILL after 5 s) and waits for it.
ngx_stop() {
  [[ -n $MASTER_PID ]] || return 0
  local pids i
  pids="$MASTER_PID $(ngx_workers | tr '\n' ' ')"
  kill -TERM "$MASTER_PID" 2>/dev/null
  for i in $(seq 100); do
    kill -0 $pids 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL $pids 2>/dev/null || true
  MASTER_PID=
}

# code PATH [CURL ARGS...]: the status of one GET (000 when the connection failed).
code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${@:2}" "http://127.0.0.1:$PORT$1"
}

# expect_code WANT PATH [CURL ARGS...]
expect_code() {
  local got
  got=$(code "${@:2}")
  local what="$2${3:+ (curl ${*:3})}"
  if [[ $got == "$1" ]]; then
    echo "ok   $what -> $got"
  else
    echo "FAIL $what -> $got (want $1)"
    failures=$((failures + 1))
  fi
}

# wait_code WANT PATH [SECONDS]: polls (bounded) until PATH answers WANT; then expect_code.
wait_code() {
  local deadline=$((SECONDS + ${3:-5}))
  while [[ $(code "$2") != "$1" && $SECONDS -lt $deadline ]]; do
    sleep 0.1
  done
  expect_code "$1" "$2"
}

# many N FILE PATH...: N GETs cycling over the PATHs, 16 at a time; FILE gets "path code"
# lines (code 000: the connection failed).
many() {
  local n=$1 out=$2 i
  shift 2
  local paths=("$@")
  for ((i = 0; i < n; i++)); do
    echo "url = \"http://127.0.0.1:$PORT${paths[i % ${#paths[@]}]}\""
    echo 'output = "/dev/null"'
  done >"$WORK/urls.$$"
  curl -s --no-progress-meter --parallel --parallel-max 16 --max-time 10 -w '%{url_effective} %{http_code}\n' \
    -K "$WORK/urls.$$" | sed "s|^http://127.0.0.1:$PORT||" >"$out"
  rm -f "$WORK/urls.$$"
}

# tally FILE: "count path code" lines of a many() result.
tally() { sort "$1" | uniq -c | sort -k2; }

# expect_tally NAME FILE WANT: the tally of FILE is WANT (lines "count path code").
expect_tally() {
  local got
  got=$(tally "$2" | awk '{ print $1, $2, $3 }')
  if [[ $got == "$3" ]]; then
    echo "ok   $1"
  else
    echo "FAIL $1: got"
    sed 's/^/  | /' <<<"$got"
    echo "  want"
    sed 's/^/  | /' <<<"$3"
    failures=$((failures + 1))
  fi
}

# error_log_count REGEX: lines of the error log that match.
error_log_count() { grep -Ec -- "$1" "$WORK/logs/error.log" 2>/dev/null || true; }

# check_no_crash: no worker died (on a signal or with an error status), nothing was logged at
# alert or worse, and no sanitizer report (nginx sends stderr to the error log).
check_no_crash() {
  local bad
  bad=$(grep -E 'exited on signal|exited with code [1-9]|\[alert\]|\[emerg\]|\[crit\]|Sanitizer|runtime error:' \
    "$WORK/logs/error.log")
  if [[ -z $bad ]]; then
    echo "ok   no worker crashed, nothing logged at alert or worse"
  else
    echo "FAIL the error log says:"
    sed 's/^/  | /' <<<"$bad"
    failures=$((failures + 1))
  fi
}

#!/usr/bin/env bash
# Debian's libbpf-tools funclatency, unmodified, on libc's usleep: under `bpftime load` with
# targets under `bpftime start`, and on the kernel. probe_target sleeps 1000 us after each call
# (usleep), so every call takes 1 ms or more. Checked: the number of calls the histogram holds,
# that none is under 512 us, and funclatency's cgroup filter (-c, a cgroup array set from the
# cgroup's fd through the bpf() interposer) counting only the target inside the cgroup. The
# kernel's answers are the same numbers (the kernel half filters by cgroup, so other processes'
# usleep calls stay out).
# Usage: funclatency_test.sh BPFTIME PROBE_TARGET
set -uo pipefail
bpftime=$1 target=$2
tool=/usr/sbin/funclatency
export BPFTIME_SHM=bpftime-funclatency-test-$$
export BPFTIME_AGENT_QUIET=1
. "$(dirname "$0")/../lib.sh"
if [[ ! -x $tool ]]; then
  echo "SKIP: $tool is missing (apt-get install libbpf-tools)"
  exit 0
fi
libc=$(ldd "$target" | awk '/libc\.so/ { print $3 }')
fn="$libc:usleep"
work=$(mktemp -d)
mount=$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
cg=""
if [[ -n $mount ]] && mkdir "$mount/bpftime-funclatency-$$" 2>/dev/null; then
  cg="$mount/bpftime-funclatency-$$"
fi
cleanup() {
  [[ -n ${tool_pid:-} ]] && kill "$tool_pid" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  [[ -n $cg ]] && rmdir "$cg" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

run_in() {
  local dir=$1
  shift
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}
# calls FILE: the calls funclatency's histogram holds; short FILE: those under 512 us.
calls() { awk '$2 == "->" { n += $5 } END { print n + 0 }' "$1"; }
short() { awk '$2 == "->" && $3 < 512 { n += $5 } END { print n + 0 }' "$1"; }

# bpftime_tool OUT ARGS...: funclatency under `bpftime load`, waiting until its two links are
# attached.
bpftime_tool() {
  local out=$1
  shift
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" load "$tool" -d 6 -u "$@" "$fn" >"$out" 2>&1 &
  tool_pid=$!
  for _ in $(seq 100); do
    [[ $("$bpftime" list 2>/dev/null | grep -c ' link ') -ge 2 ]] && return 0
    sleep 0.1
  done
  echo "FAIL funclatency did not attach under bpftime load:"
  sed 's/^/  | /' "$out"
  failures=$((failures + 1))
}
finish_tool() {
  wait "$tool_pid"
  tool_pid=""
}
# verify NAME FILE CALLS: the histogram holds CALLS calls, none under 512 us.
verify() {
  local got
  got="$(calls "$2") calls, $(short "$2") under 512 us"
  if [[ $got == "$3 calls, 0 under 512 us" ]]; then
    echo "ok   $1: $got"
  else
    echo "FAIL $1: $got, want $3 calls, 0 under 512 us; output:"
    sed 's/^/  | /' "$2"
    failures=$((failures + 1))
  fi
}

# --- every call of targets under bpftime start ---
bpftime_tool "$work/all"
expect target-a 0 '^calls 150 ' -- "$bpftime" start "$target" 150 1 1000
expect target-b 0 '^calls 60 ' -- "$bpftime" start "$target" 30 2 1000
finish_tool
verify bpftime-all "$work/all" 210

if [[ -z $cg ]]; then
  echo "SKIP cgroup and kernel halves: cannot create a cgroup2 cgroup here"
  finish
  exit
fi

# --- -c CGROUP: only the target inside the cgroup counts ---
bpftime_tool "$work/cgroup" -c "$cg"
expect cgroup-inside 0 '^calls 150 ' -- run_in "$cg" "$bpftime" start "$target" 150 1 1000
expect cgroup-outside 0 '^calls 70 ' -- "$bpftime" start "$target" 70 1 1000
finish_tool
verify bpftime-cgroup "$work/cgroup" 150

# --- the kernel, filtered by the same cgroup ---
"$tool" -d 6 -u -c "$cg" "$fn" >"$work/kernel" 2>&1 &
tool_pid=$!
sleep 2 # funclatency prints nothing until it exits; give it time to attach
if ! kill -0 "$tool_pid" 2>/dev/null; then
  wait "$tool_pid"
  tool_pid=""
  echo "SKIP kernel half: the kernel refuses funclatency here: $(head -3 "$work/kernel")"
  finish
  exit
fi
expect kernel-inside 0 '^calls 150 ' -- run_in "$cg" "$target" 150 1 1000
expect kernel-outside 0 '^calls 70 ' -- "$target" 70 1 1000
finish_tool
verify kernel-cgroup "$work/kernel" 150
check "same number of calls through bpftime and the kernel" \
  test "$(calls "$work/kernel")" = "$(calls "$work/cgroup")"
finish

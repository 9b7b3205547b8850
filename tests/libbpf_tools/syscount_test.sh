#!/usr/bin/env bash
# Debian's libbpf-tools syscount, unmodified (raw_syscalls:sys_enter/sys_exit tracepoints, maps
# read in batches): under `bpftime load` with the target under `bpftime start`, and on the kernel,
# both filtered to the target's pid (-p). Once told to, the target makes 2 x GETPIDS getpid calls
# through libc and RAWS getppid calls through a raw `syscall` instruction; each side must count
# exactly those, and the two must agree.
# Usage: syscount_test.sh BPFTIME SYSTP_TARGET
set -uo pipefail
bpftime=$1 target=$2
tool=/usr/sbin/syscount
getpids=3000 raws=200
export BPFTIME_SHM=bpftime-syscount-test-$$
export BPFTIME_AGENT_QUIET=1
. "$(dirname "$0")/../lib.sh"
if [[ ! -x $tool ]]; then
  echo "SKIP: $tool is missing (apt-get install libbpf-tools)"
  exit 0
fi
work=$(mktemp -d)
cleanup() {
  [[ -n ${tool_pid:-} ]] && kill "$tool_pid" 2>/dev/null
  [[ -n ${target_pid:-} ]] && kill "$target_pid" 2>/dev/null
  "$bpftime" reset >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
# wait_line FILE REGEX: until FILE has a line matching REGEX (30 s at most).
wait_line() {
  for _ in $(seq 300); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# run SIDE: the target and syscount -p on one side (kernel or bpftime); syscount's final table
# in $work/SIDE.tool.
run() {
  local side=$1 dir=$work/$1
  mkdir -p "$dir"
  local -a start=() load=()
  if [[ $side == bpftime ]]; then
    start=("$bpftime" start)
    load=("$bpftime" load)
  fi
  "${start[@]}" "$target" "$dir" $getpids $raws >"$dir/target.out" 2>&1 &
  target_pid=$!
  wait_line "$dir/target.out" '^pid [0-9]+ ready$' || { fail "$side: the target did not start"; return 1; }
  local tpid
  tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$dir/target.out")
  # Line-buffered, so its "Tracing" line shows when it has attached (stdout is a file).
  "${load[@]}" stdbuf -oL "$tool" -p "$tpid" -T 50 >"$work/$side.tool" 2>&1 &
  tool_pid=$!
  if ! wait_line "$work/$side.tool" '^Tracing syscalls'; then
    fail "$side: syscount did not start:"
    sed 's/^/  | /' "$work/$side.tool"
    return 1
  fi
  if [[ $side == bpftime ]]; then
    # Both tracepoints running in the target before it starts.
    for _ in $(seq 300); do
      (($("$bpftime" list 2>/dev/null | grep -c "running in pid $tpid\b") >= 2)) && break
      sleep 0.1
    done
  fi
  touch "$dir/go"
  wait_line "$dir/target.out" '^round 1 done' || { fail "$side: round 1 did not end"; return 1; }
  touch "$dir/go2"
  wait "$target_pid"
  target_pid=""
  kill -INT "$tool_pid"
  wait "$tool_pid"
  tool_pid=""
}

# count SIDE SYSCALL: syscount's count of the system call.
count() { awk -v s="$2" '$1 == s { print $2; exit }' "$work/$1.tool"; }

run bpftime || { finish; exit; }
echo "--- syscount under bpftime load:"
sed 's/^/  | /' "$work/bpftime.tool"
check "bpftime: getpid $(count bpftime getpid), want $((2 * getpids))" \
  test "$(count bpftime getpid)" = $((2 * getpids))
check "bpftime: getppid $(count bpftime getppid), want $raws" test "$(count bpftime getppid)" = $raws

if [[ $(id -u) != 0 ]]; then
  echo "SKIP kernel half: syscount needs root with CAP_BPF on the kernel"
  finish
  exit
fi
run kernel || { finish; exit; }
echo "--- syscount on the kernel:"
sed 's/^/  | /' "$work/kernel.tool"
check "kernel: getpid $(count kernel getpid), want $((2 * getpids))" \
  test "$(count kernel getpid)" = $((2 * getpids))
check "kernel: getppid $(count kernel getppid), want $raws" test "$(count kernel getppid)" = $raws
check "the same openat count both ways" test "$(count kernel openat)" = "$(count bpftime openat)"
finish

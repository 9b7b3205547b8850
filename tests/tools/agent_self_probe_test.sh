#!/usr/bin/env bash
# The agent never probes itself: a malloc counter attached with the command line to libc's
# malloc counts, in a program run with `bpftime start`, exactly the program's own calls --
# none of the agent's (its start-up in the program's main thread, its follower thread, the
# JIT's compiler thread), even while it attaches another link between two rounds of calls.
# Where the kernel allows eBPF, the kernel's counts for the same program are the same.
# Usage: agent_self_probe_test.sh BPFTIME OBJECTS_DIR TOOLS_TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-agent-self-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib.sh"
mallocs=50 # per round, of the marker size (12345 bytes, malloc_total.bpf.c's MARKER_SIZE)

# count PROVIDER MAP PID: the map's value for PID (0 when it has none).
count() {
  local out
  out=$("$bpftime" --provider "$1" map lookup "$2" "$3" 2>/dev/null) || { echo 0; return; }
  le_value <<<"$out"
}

# run_rounds PROVIDER PREFIX: runs tools_target for two rounds of $mallocs marker mallocs
# (and nothing else), attaching a second link between them, and records the counts of both
# maps at each step as PREFIX_{all,marker}_{ready,round1,round2,exit}.
run_rounds() {
  local provider=$1 prefix=$2 out="$work/$2.out" trig="$work/$2.trigger" pid
  # On the kernel the program runs by itself: `bpftime start` would exec it in its own
  # process, whose mallocs before the exec the kernel counts too.
  local -a run=("$target")
  [[ $provider == user ]] && run=("$bpftime" start "$target")
  "${run[@]}" "$trig" "$mallocs" 12345 0 2 >"$out" 2>&1 &
  local running=$!
  wait_for_line "$out" '^pid [0-9]+ ready$' || return 1
  pid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$out")
  if [[ $provider == user ]]; then
    wait_for_hosts "$pid" 1 || return 1
    expect "$prefix-list-json-attached" 0 "\"pid\":$pid,\"state\":\"running\",\"attached\":true" -- \
      "$bpftime" list --json
  fi
  record() {
    printf -v "${prefix}_all_$1" %s "$(count "$provider" 1 "$pid")"
    printf -v "${prefix}_marker_$1" %s "$(count "$provider" 2 "$pid")"
  }
  record ready
  touch "$trig.1"
  wait_for_line "$out" '^round 1 done$' || return 1
  record round1
  # Work for the agent while the program waits: a new link to attach, a program to compile.
  expect "$prefix-attach-second" 0 '^link' -- \
    "$bpftime" --provider "$provider" attach uprobe 6 "$target:tools_target_work"
  [[ $provider == user ]] && { wait_for_hosts "$pid" 2 || return 1; }
  touch "$trig.2"
  wait_for_line "$out" '^round 2 done$' || return 1
  record round2
  wait_for_exit "$running"
  check "$prefix-exit-status" test "$exit_status" -eq 0
  record exit
}

objects_load() {
  expect "$1-load" 0 'program 3 count_malloc' -- \
    "$bpftime" --provider "$1" load "$objects/malloc_total.bpf.o"
  # The second link's program (6, with maps 4 and 5): one more program for the agent to compile.
  expect "$1-load-second" 0 'program 6 count_malloc' -- \
    "$bpftime" --provider "$1" load "$objects/malloc_total.bpf.o"
  expect "$1-attach" 0 '^link 8 \(target 7\)$' -- \
    "$bpftime" --provider "$1" attach uprobe 3 libc.so.6:malloc
}

# --- user space, through the agent ---
objects_load user
run_rounds user user
check user-round1-marker test $((user_marker_round1 - user_marker_ready)) -eq $mallocs
check user-round2-marker test $((user_marker_round2 - user_marker_round1)) -eq $mallocs
# The program itself makes no other malloc in a round: every other call would be the agent's.
check user-round1-all test $((user_all_round1 - user_all_ready)) -eq $mallocs
check user-round2-all test $((user_all_round2 - user_all_round1)) -eq $mallocs
check user-nothing-at-exit test "$user_all_exit" -eq "$user_all_round2"
echo "user space: all calls ready $user_all_ready, round 1 $user_all_round1," \
  "round 2 $user_all_round2, exit $user_all_exit"

# --- the kernel, the same program without the agent ---
if out=$("$bpftime" --provider kernel load "$objects/malloc_total.bpf.o" 2>&1); then
  "$bpftime" --provider kernel reset >/dev/null
  objects_load kernel
  run_rounds kernel kernel
  echo "kernel: all calls ready $kernel_all_ready, round 1 $kernel_all_round1," \
    "round 2 $kernel_all_round2, exit $kernel_all_exit"
  # The kernel counts from the exec (the dynamic loader's calls too), the agent from when it
  # attached: the steps after start-up are the same, and at start-up the agent adds nothing
  # of its own (its start-up alone makes thousands of calls).
  check same-as-kernel-round1 test $((user_all_round1 - user_all_ready)) -eq \
    $((kernel_all_round1 - kernel_all_ready))
  check same-as-kernel-round2 test $((user_all_round2 - user_all_round1)) -eq \
    $((kernel_all_round2 - kernel_all_round1))
  check same-as-kernel-exit test $((user_all_exit - user_all_round2)) -eq \
    $((kernel_all_exit - kernel_all_round2))
  check no-more-than-kernel-at-start test "$user_all_ready" -le "$kernel_all_ready"
elif grep -q 'needs root with CAP_BPF\|Operation not permitted' <<<"$out"; then
  echo "note: the kernel refuses eBPF here, so the counts are not compared with it: $out"
else
  echo "FAIL kernel load: $out"
  failures=$((failures + 1))
fi
finish

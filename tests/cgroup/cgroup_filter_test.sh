#!/usr/bin/env bash
# A cgroup array as the libbpf tools use it: slot 0 is set from a cgroup directory (`bpftime map
# update MAP 0 DIR`), and a uprobe program counts only the calls bpf_current_task_under_cgroup
# says come from that cgroup or one below it. Targets run under `bpftime start` inside the
# cgroup, in a child of it and outside it; the counts are exact, and the same object and
# commands through the kernel's uprobes give the same counts.
# Usage: cgroup_filter_test.sh BPFTIME BPF_OBJECTS_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-cgroup-test-$$
export BPFTIME_AGENT_QUIET=1
. "$(dirname "$0")/../lib.sh"

mount=$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
if [[ -z $mount ]]; then
  echo "SKIP: no cgroup2 file system is mounted"
  exit 0
fi
cg="$mount/bpftime-test-$$"
if ! mkdir "$cg" 2>/dev/null || ! mkdir "$cg/child" 2>/dev/null; then
  echo "SKIP: cannot create a cgroup under $mount (needs root and a writable cgroup2 mount)"
  rmdir "$cg" 2>/dev/null
  exit 0
fi
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rmdir "$cg/child" "$cg" 2>/dev/null
}
trap cleanup EXIT
fn="$target:bpftime_target_add"

# run_in CGROUP_DIR CMD...: runs CMD as a process of that cgroup.
run_in() {
  local dir=$1
  shift
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}
id_of() { "$@" list 2>/dev/null | sed -nE "s/^ *([0-9]+) +$KIND +$NAME( .*)?$/\1/p" | head -1; }

# scenario PROVIDER_ARGS...: loads, runs the targets, prints the counts dump.
scenario() {
  local p=("$@") filter counts prog
  local label=${*:-user}
  expect "$label-load" 0 'count_in_cgroup' -- "$bpftime" "${p[@]}" load "$objects/cgroup_count.bpf.o"
  filter=$(KIND=map NAME=filter id_of "$bpftime" "${p[@]}")
  counts=$(KIND=map NAME=counts id_of "$bpftime" "${p[@]}")
  prog=$(KIND=program NAME=count_in_cgroup id_of "$bpftime" "${p[@]}")
  expect "$label-attach" 0 '^link [0-9]+' -- "$bpftime" "${p[@]}" attach uprobe "$prog" "$fn"
  # The slot is empty: the helper says -EAGAIN.
  expect "$label-empty-slot" 0 '^calls 100 ' -- "$bpftime" "${p[@]}" start "$target" 100
  expect "$label-set-filter" 0 '' -- "$bpftime" "${p[@]}" map update "$filter" 0 "$cg"
  expect "$label-inside" 0 '^calls 1000 ' -- run_in "$cg" "$bpftime" "${p[@]}" start "$target" 250 4
  expect "$label-below" 0 '^calls 200 ' -- run_in "$cg/child" "$bpftime" "${p[@]}" start "$target" 200
  expect "$label-outside" 0 '^calls 500 ' -- "$bpftime" "${p[@]}" start "$target" 500
  dump=$("$bpftime" "${p[@]}" map dump "$counts" 2>&1)
  # [0] 1200 calls from the cgroup and its child, [1] 1800 in all, [2] 100 with no filter set.
  want="key: 00 00 00 00  value: b0 04 00 00 00 00 00 00
key: 01 00 00 00  value: 08 07 00 00 00 00 00 00
key: 02 00 00 00  value: 64 00 00 00 00 00 00 00
3 entries"
  if [[ $dump == "$want" ]]; then
    echo "ok   ${p[*]}-counts"
  else
    echo "FAIL ${p[*]}-counts: got:"
    sed 's/^/  | /' <<<"$dump"
    failures=$((failures + 1))
  fi
  FILTER=$filter
}

scenario
user_dump=$dump

# Bad input through the command line, each with its own error.
expect not-a-cgroup 1 'is not a cgroup v2 directory' -- "$bpftime" map update "$FILTER" 0 /tmp
expect no-such-dir 1 "$cg/nope.*No such file or directory" -- \
  "$bpftime" map update "$FILTER" 0 "$cg/nope"
expect index-out-of-range 1 'index 1 out of range \(max_entries 1\)' -- \
  "$bpftime" map update "$FILTER" 1 "$cg"
expect noexist-refused 1 'only BPF_ANY' -- \
  "$bpftime" map update "$FILTER" 0 "$cg" --flags noexist
expect lookup-refused 1 'cannot be read' -- "$bpftime" map lookup "$FILTER" 0
expect delete 0 '' -- "$bpftime" map delete "$FILTER" 0
expect delete-empty 1 'holds no cgroup' -- "$bpftime" map delete "$FILTER" 0

# --- the same object and commands through the kernel ---
if ! "$bpftime" --provider kernel load "$objects/cgroup_count.bpf.o" >/dev/null 2>&1; then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF)"
  finish
  exit
fi
"$bpftime" reset --provider kernel >/dev/null 2>&1
scenario --provider kernel
check "same counts through both providers" test "$dump" = "$user_dump"
finish

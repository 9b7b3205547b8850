#!/usr/bin/env bash
# A function too short for a 5-byte jump (`lea; ret`, 4 bytes) is probed by trap in user space:
# the same object and commands count its calls, returns and results exactly, through the agent
# and through the kernel's uprobes, and `list` shows the link attached in the running host.
# Usage: cli_trap_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-cli-trap-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
fn="$target:bpftime_target_add4"
size_hex=$(nm -S "$target" | awk '$4 == "bpftime_target_add4" { print $2 }')
size=$((16#${size_hex:-0}))
check "bpftime_target_add4 is 4 bytes, too short for a jump" test "$size" = 4

# 4 threads x 1000 calls: key i % 8, value i; the sum of the results is 4 * 503000.
expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect attach-uprobe 0 '^link 6 \(target 5\)$' -- "$bpftime" attach uprobe 3 "$fn" --cookie 7
expect attach-uretprobe 0 '^link 8 \(target 7\)$' -- "$bpftime" attach uretprobe 4 "$fn"
expect start 0 '^calls 4000 sum 2012000$' -- "$bpftime" start "$target" 1000 4 0 short
expect entries 0 'key: 00 00 00 00  value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map dump 2
expect returns 0 'key: 01 00 00 00  value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map dump 2
expect sum 0 'key: 02 00 00 00  value: 60 b3 1e 00 00 00 00 00' -- "$bpftime" map dump 2
expect cookie 0 'key: 03 00 00 00  value: 07 00 00 00 00 00 00 00' -- "$bpftime" map dump 2
user_calls=$("$bpftime" map dump 1 | sort)
user_totals=$("$bpftime" map dump 2)
check "500 calls per key" test "$(grep -c 'value: f4 01 00 00' <<<"$user_calls")" = 8

# While the host runs, list shows the trap-probed link attached there.
"$bpftime" start "$target" 200 1 20000 short >"$work/out" 2>&1 &
running=$!
attached=0
for _ in $(seq 1 100); do
  if "$bpftime" list | grep -Eq '^6 .*attached and running in pid'; then
    attached=1
    break
  fi
  sleep 0.05
done
check "list: the trap-probed link is attached in the running host" test "$attached" = 1
kill "$running" 2>/dev/null
wait "$running" 2>/dev/null

# --- the same object and commands through the kernel's uprobes ---
"$bpftime" reset --provider user >/dev/null 2>&1
if ! "$bpftime" --provider kernel load "$examples/uprobe_count.bpf.o" >/dev/null 2>&1; then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF)"
  finish
  exit
fi
k() { "$bpftime" --provider kernel "$@"; }
expect kernel-attach-uprobe 0 '^link 6 \(target 5\)$' -- k attach uprobe 3 "$fn" --cookie 7
expect kernel-attach-uretprobe 0 '^link 8 \(target 7\)$' -- k attach uretprobe 4 "$fn"
expect kernel-start 0 '^calls 4000 sum 2012000$' -- k start "$target" 1000 4 0 short
check "same counts per argument through both providers" test "$(k map dump 1 | sort)" = "$user_calls"
check "same totals through both providers" test "$(k map dump 2)" = "$user_totals"
finish

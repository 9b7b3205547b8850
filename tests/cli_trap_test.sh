#!/usr/bin/env bash
# Functions too short for a 5-byte jump (`lea; ret`, 4 bytes) in user space: one followed by
# fill that nothing uses is hooked by a jump that runs into the fill, one with another function
# right behind it by trap. The same object and commands count their calls, returns and results
# exactly, through the agent and through the kernel's uprobes; `list` shows the link attached
# in the running host, whose code shows which it is (a jmp or an int3 at the function).
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
for f in bpftime_target_add4 bpftime_target_add4_tight; do
  size_hex=$(nm -S "$target" | awk -v f=$f '$4 == f { print $2 }')
  check "$f is 4 bytes, too short for a jump inside it" test "$((16#${size_hex:-0}))" = 4
done

# first_byte PID SYMBOL: the byte at the function in that process, as hex.
first_byte() {
  local vaddr base
  vaddr=$((16#$(nm "$target" | awk -v f="$2" '$3 == f { print $1 }')))
  base=$(awk -v f="$(readlink -f "$target")" '$6 == f && $3 == "00000000" { print $1; exit }' \
    "/proc/$1/maps" | cut -d- -f1)
  dd if="/proc/$1/mem" bs=1 count=1 skip=$((16#$base + vaddr)) iflag=skip_bytes 2>/dev/null |
    od -An -tx1 | tr -d ' \n'
}

# run_probes MODE FUNCTION KIND_BYTE: the probes on FUNCTION, called in probe_target's MODE.
run_probes() {
  local mode=$1 fn_name=$2 kind=$3 fn="$target:$2"
  "$bpftime" reset --provider user >/dev/null 2>&1
  # 4 threads x 1000 calls: key i % 8, value i; the sum of the results is 4 * 503000.
  expect "$mode-load" 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
  expect "$mode-attach-uprobe" 0 '^link 6 \(target 5\)$' -- "$bpftime" attach uprobe 3 "$fn" --cookie 7
  expect "$mode-attach-uretprobe" 0 '^link 8 \(target 7\)$' -- "$bpftime" attach uretprobe 4 "$fn"
  expect "$mode-start" 0 '^calls 4000 sum 2012000$' -- "$bpftime" start "$target" 1000 4 0 "$mode"
  expect "$mode-entries" 0 'key: 00 00 00 00  value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map dump 2
  expect "$mode-returns" 0 'key: 01 00 00 00  value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map dump 2
  expect "$mode-sum" 0 'key: 02 00 00 00  value: 60 b3 1e 00 00 00 00 00' -- "$bpftime" map dump 2
  expect "$mode-cookie" 0 'key: 03 00 00 00  value: 07 00 00 00 00 00 00 00' -- "$bpftime" map dump 2
  user_calls[$mode]=$("$bpftime" map dump 1 | sort)
  user_totals[$mode]=$("$bpftime" map dump 2)
  check "$mode: 500 calls per key" test "$(grep -c 'value: f4 01 00 00' <<<"${user_calls[$mode]}")" = 8

  # While the host runs, list shows the link attached there. The host runs for 40 s at most
  # (killed once seen) and is looked for for 20 s: a loaded machine may start it slowly.
  "$bpftime" start "$target" 2000 1 20000 "$mode" >"$work/out" 2>&1 &
  running=$!
  attached=0
  for _ in $(seq 1 400); do
    if "$bpftime" list | grep -Eq '^6 .*attached and running in pid'; then
      attached=1
      break
    fi
    sleep 0.05
  done
  check "list: the $mode link is attached in the running host" test "$attached" = 1
  pid=$("$bpftime" list | sed -nE 's/^6 .*attached and running in pid ([0-9]+).*/\1/p' | head -1)
  check "$fn_name is hooked by $kind in the host" test "$(first_byte "$pid" "$fn_name")" = "$kind"
  kill "$running" 2>/dev/null
  wait "$running" 2>/dev/null
}

declare -A user_calls user_totals
# The fill after bpftime_target_add4 takes the jump (e9); bpftime_target_add4_tight by trap (cc).
run_probes short bpftime_target_add4 e9
run_probes tight bpftime_target_add4_tight cc

# --- the same object and commands through the kernel's uprobes ---
"$bpftime" reset --provider user >/dev/null 2>&1
if ! "$bpftime" --provider kernel load "$examples/uprobe_count.bpf.o" >/dev/null 2>&1; then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF)"
  finish
  exit
fi
k() { "$bpftime" --provider kernel "$@"; }
for mode in short tight; do
  fn="$target:bpftime_target_add4"
  [[ $mode == tight ]] && fn="$target:bpftime_target_add4_tight"
  k reset >/dev/null 2>&1
  k load "$examples/uprobe_count.bpf.o" >/dev/null 2>&1
  expect "kernel-$mode-attach-uprobe" 0 '^link 6 \(target 5\)$' -- k attach uprobe 3 "$fn" --cookie 7
  expect "kernel-$mode-attach-uretprobe" 0 '^link 8 \(target 7\)$' -- k attach uretprobe 4 "$fn"
  expect "kernel-$mode-start" 0 '^calls 4000 sum 2012000$' -- k start "$target" 1000 4 0 "$mode"
  check "$mode: same counts per argument through both providers" test "$(k map dump 1 | sort)" = "${user_calls[$mode]}"
  check "$mode: same totals through both providers" test "$(k map dump 2)" = "${user_totals[$mode]}"
done
finish

#!/usr/bin/env bash
# A USDT probe whose site is right before a function's `ret` (usdt_near_ret, -O2): bpftime
# probes it by trap; the calls and both arguments come out exactly as the program passed them,
# the same as through the kernel's uprobes.
# Usage: usdt_near_ret_test.sh BPFTIME OBJECTS_DIR TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-usdt-near-ret-test-$$
export BPFTIME_AGENT_QUIET=1
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"

# The site is a nop less than 5 bytes before the function's ret (what this test is about).
site=$(readelf -n "$target" | sed -nE 's/.*Location: (0x[0-9a-f]+).*/\1/p' | head -1)
after=$(objdump -d --start-address=$((site)) --stop-address=$((site + 5)) "$target" |
  grep -cE '^ +[0-9a-f]+:.*\sret')
check "the probe's site is less than 5 bytes before a ret" test "$after" -ge 1

rounds=3000
# What the target passes: 3 * a with a = i % 7 - 3, and b = i * 1000003, for i < rounds.
sum_a=0 sum_b=0
for ((i = 0; i < rounds; i++)); do
  sum_a=$((sum_a + i % 7 - 3))
  sum_b=$((sum_b + i * 1000003))
done
le64() {
  local v=$1 out="" i
  for ((i = 0; i < 8; i++)); do
    out+=$(printf '%02x ' $(((v >> (8 * i)) & 255)))
  done
  echo "${out% }"
}
printed="last $rounds: sum_a $sum_a sum_b $sum_b returned $((3 * sum_a))"

run_provider() { # LABEL PROVIDER_ARGS...
  local label=$1
  shift
  expect "$label-load" 0 'usdt_last' -- "$bpftime" "$@" load "$objects/usdt_last.bpf.o"
  local prog map
  prog=$("$bpftime" "$@" list | awk '$2 == "program" && $3 == "usdt_last" { print $1; exit }')
  map=$("$bpftime" "$@" list | awk '$2 == "map" && $3 == "last_seen" { print $1; exit }')
  expect "$label-attach" 0 '^link [0-9]+ \(target [0-9]+\) at 0x[0-9a-f]+, spec [0-9]+$' -- \
    "$bpftime" "$@" attach usdt "$prog" "$target:bpftime_test:last"
  if [[ $label == user ]]; then
    expect "$label-target" 0 "^$printed\$" -- "$bpftime" start "$target" "$rounds"
  else
    expect "$label-target" 0 "^$printed\$" -- "$target" "$rounds"
  fi
  expect "$label-calls" 0 "key: 00 00 00 00  value: $(le64 "$rounds")" -- "$bpftime" "$@" map dump "$map"
  expect "$label-sum-a" 0 "key: 01 00 00 00  value: $(le64 $((3 * sum_a)))" -- "$bpftime" "$@" map dump "$map"
  expect "$label-sum-b" 0 "key: 02 00 00 00  value: $(le64 "$sum_b")" -- "$bpftime" "$@" map dump "$map"
  expect "$label-arg-count" 0 "key: 03 00 00 00  value: $(le64 2)" -- "$bpftime" "$@" map dump "$map"
  "$bpftime" "$@" map dump "$map" >"${TMPDIR:-/tmp}/usdt-near-ret-$label-$$"
}

run_provider user
user_dump=$(cat "${TMPDIR:-/tmp}/usdt-near-ret-user-$$")
rm -f "${TMPDIR:-/tmp}/usdt-near-ret-user-$$"
if ! out=$("$bpftime" --provider kernel load "$objects/usdt_last.bpf.o" 2>&1); then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF): $out"
  finish
  exit
fi
"$bpftime" reset --provider kernel >/dev/null 2>&1
run_provider kernel --provider kernel
kernel_dump=$(cat "${TMPDIR:-/tmp}/usdt-near-ret-kernel-$$")
rm -f "${TMPDIR:-/tmp}/usdt-near-ret-kernel-$$"
check "the same values through both providers" test "$user_dump" = "$kernel_dump"
finish

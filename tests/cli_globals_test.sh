#!/usr/bin/env bash
# `bpftime load FILE --set NAME=VALUE`: a tool's options given before load, as its own loader
# would through the skeleton, then run by a host; refused settings create nothing; read-only
# data (.rodata) refuses updates after load with EPERM, as the kernel's frozen map does.
# Usage: cli_globals_test.sh BPFTIME LOADER_TEST_OBJECTS_DIR
set -uo pipefail
bpftime=$1 objects=$2
export BPFTIME_SHM=bpftime-cli-globals-test-$$
trap '"$bpftime" reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/lib.sh"
obj=$objects/options.bpf.o

expect set-unknown 1 'has no global variable of that name \(it has: .*targ_pid' -- \
  "$bpftime" load "$obj" --set nope=1
expect set-too-big 1 'set targ_pid \(int in options.rodata\): 99999999999 does not fit in a signed 4-byte integer' -- \
  "$bpftime" load "$obj" --set targ_pid=99999999999
expect set-other-argument 1 'takes only --set NAME=VALUE and --attach \(got .--verbose.\)' -- \
  "$bpftime" load "$obj" --verbose
check "nothing created by refused loads" test "$("$bpftime" list | wc -l)" -le 1

expect load-set 0 'program [0-9]+ get_pid' -- \
  "$bpftime" load "$obj" --set targ_pid=4242 --set=comm=bash --set 'levels[2]=77' --set counter=3
id_of() { "$bpftime" list | awk -v n="$1" '$2 == "program" && $3 == n { print $1; exit }'; }
for p in get_pid get_comm get_levels get_data; do
  "$bpftime" attach test "$(id_of $p)" "hook_$p" >/dev/null
done
expect run-pid 0 '^r0 = 0x1092$' -- "$bpftime" trigger hook_get_pid
expect run-comm 0 "^r0 = 0x$(printf '%x' $((4 * 1000 + 98)))$" -- "$bpftime" trigger hook_get_comm
expect run-levels 0 "^r0 = 0x$(printf '%x' 1077)$" -- "$bpftime" trigger hook_get_levels
expect run-data 0 "^r0 = 0x$(printf '%x' 5003)$" -- "$bpftime" trigger hook_get_data

read -r rodata size < <("$bpftime" list |
  awk '$2 == "map" && $3 == "options.rodata" { for (i = 4; i < NF; i++) if ($i == "value") print $1, $(i + 1); exit }')
expect rodata-frozen 1 "map $rodata \(options.rodata\) is read-only data, frozen when it was loaded" -- \
  "$bpftime" map update "$rodata" 0 "hex:$(printf '00%.0s' $(seq 1 "$size"))"
expect rodata-unchanged 0 '^r0 = 0x1092$' -- "$bpftime" trigger hook_get_pid
finish

#!/usr/bin/env bash
# Maps of maps from the command line: `map create array_of_maps|hash_of_maps --inner ID`,
# updates with inner map ids, lookup and dump, every refusal; an object whose program counts
# into the inner map an entry names, run by `bpftime run ID` while the entry is switched; the
# same object through the kernel provider answers the map commands alike.
# Usage: cli_mapinmap_test.sh BPFTIME OBJECTS_DIR
set -uo pipefail
bpftime=$1 objects=$2
export BPFTIME_SHM=bpftime-cli-mim-$$
kfolder=bpftime-cli-kmim-$$
u() { "$bpftime" "$@"; }
k() { "$bpftime" --provider kernel --shm "$kfolder" "$@"; }
trap '"$bpftime" reset >/dev/null 2>&1; k reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/lib.sh"
# created ARGS...: the id `map create` printed.
created() { u map create "$@" | awk '$1 == "map" { print $2 }'; }
id_of() { u list | awk -v k="$1" -v n="$2" '$2 == k && $3 == n { print $1; exit }'; }

a=$(created array --name a --key-size 4 --value-size 8 --max-entries 4)
b=$(created array --name b --key-size 4 --value-size 8 --max-entries 4)
big=$(created array --name big --key-size 4 --value-size 16 --max-entries 4)

expect create-needs-inner 1 'map create array_of_maps needs --inner ID' -- \
  u map create array_of_maps --max-entries 4
expect create-inner-on-array 1 '--inner is for array_of_maps and hash_of_maps, not array' -- \
  u map create array --key-size 4 --value-size 8 --max-entries 4 --inner "$a"
expect create-inner-missing 1 '--inner 999: no object with id 999' -- \
  u map create array_of_maps --max-entries 4 --inner 999
expect create-outer 0 '^map [0-9]+ outer$' -- \
  u map create array_of_maps --name outer --max-entries 4 --inner "$a"
outer=$(id_of map outer)
expect create-outer-of-outer 1 'array_of_maps maps cannot be inner maps' -- \
  u map create hash_of_maps --key-size 4 --max-entries 4 --inner "$outer"
expect create-bad-value-size 1 'value_size 8: array_of_maps maps have 4-byte values' -- \
  u map create array_of_maps --value-size 8 --max-entries 4 --inner "$a"
expect list-outer 0 "^$outer +map +outer +array_of_maps key 4 value 4 max_entries 4 entries 4 inner array key 4 value 8 max_entries 4$" -- \
  u list
expect list-outer-json 0 '"inner":\{"type":"array","key_size":4,"value_size":8,"max_entries":4,"flags":0\}' -- \
  u --json list

expect update 0 '' -- u map update "$outer" 1 "$b"
expect lookup 0 "^key: 01 00 00 00  inner map: $b$" -- u map lookup "$outer" 1
expect lookup-json 0 "\"inner_map\":$b" -- u --json map lookup "$outer" 1
expect lookup-empty 1 'no such key' -- u map lookup "$outer" 0
expect dump 0 "^key: 01 00 00 00  inner map: $b" -- u map dump "$outer"
expect update-mismatch 1 "map $big cannot be put into map $outer \(outer\): its value_size is 16, the outer map's inner template has 8" -- \
  u map update "$outer" 2 "$big"
expect update-self 1 'a map cannot hold itself' -- u map update "$outer" 2 "$outer"
expect update-missing 1 'no object with id 999' -- u map update "$outer" 2 999
expect update-out-of-range 1 'index out of range' -- u map update "$outer" 9 "$a"
expect update-noexist 1 'the key exists' -- u map update "$outer" 1 "$a" --flags noexist
expect destroy-held 1 "map $b is an inner map of map $outer \(key 1\); delete those entries or destroy map $outer first" -- \
  u destroy "$b"
expect lookup-still 0 "inner map: $b" -- u map lookup "$outer" 1
expect delete 0 '' -- u map delete "$outer" 1
expect lookup-deleted 1 'no such key' -- u map lookup "$outer" 1
expect destroy-released 0 '' -- u destroy "$b"

hash=$(created hash_of_maps --name houter --key-size 8 --max-entries 4 --inner "$a")
expect hash-update 0 '' -- u map update "$hash" 0x1122 "$a" --flags noexist
expect hash-lookup 0 "^key: 22 11 00 00 00 00 00 00  inner map: $a$" -- u map lookup "$hash" 0x1122
expect hash-dump 0 '^1 entries$' -- u map dump "$hash"
expect hash-update-nested 1 'array_of_maps maps cannot be inner maps' -- \
  u map update "$hash" 1 "$outer"
expect destroy-held-by-hash 1 "map $a is an inner map of map" -- u destroy "$a"

# The object: its program counts into the inner map outer_array's entry 0 names (choice is 0).
expect load 0 'program [0-9]+ count_array' -- u load "$objects/mapinmap.bpf.o"
prog=$(id_of program count_array)
oa=$(id_of map outer_array)
ca=$(id_of map counts_a)
cb=$(id_of map counts_b)
expect initial-entry 0 "inner map: $ca" -- u map lookup "$oa" 0
# `run --repeat N` runs the program N times.
expect run-a 0 'r0 = 0x0' -- u run --repeat 3 "$prog"
expect counted-a 0 'value: 03 00 00 00 00 00 00 00' -- u map lookup "$ca" 0
expect switch 0 '' -- u map update "$oa" 0 "$cb"
expect run-b 0 'r0 = 0x0' -- u run --repeat 2 "$prog"
expect counted-b 0 'value: 02 00 00 00 00 00 00 00' -- u map lookup "$cb" 0
expect a-unchanged 0 'value: 03 00 00 00 00 00 00 00' -- u map lookup "$ca" 0

# The same object on the kernel: the map commands answer alike (ids are the same in both).
if ! out=$(k load "$objects/mapinmap.bpf.o" 2>&1); then
  if grep -q 'needs root with CAP_BPF\|Operation not permitted' <<<"$out"; then
    echo "SKIP kernel part: the kernel refuses eBPF here: $out"
    finish
    exit $?
  fi
  echo "FAIL kernel load: $out"
  failures=$((failures + 1))
  finish
  exit 1
fi
u reset >/dev/null && u load "$objects/mapinmap.bpf.o" >/dev/null
oa=$(id_of map outer_array)
cb=$(id_of map counts_b)
check "kernel and store agree: same ids" test "$(k list | awk '{ print $1, $2, $3 }')" = \
  "$(u list | awk '{ print $1, $2, $3 }')"
for cmd in "map dump $oa" "map lookup $oa 1" "map lookup $oa 2" "map dump $(id_of map outer_hash)"; do
  check "kernel and store agree: $cmd" test "$(k $cmd 2>&1)" = "$(u $cmd 2>&1)"
done
big_u=$(created array --name big --key-size 4 --value-size 16 --max-entries 4)
big_k=$(k map create array --name big --key-size 4 --value-size 16 --max-entries 4 | awk '{print $2}')
check "kernel and store agree: same new id" test "$big_u" = "$big_k"
for cmd in "map update $oa 0 $cb" "map lookup $oa 0" "map update $oa 2 $big_u" "map update $oa 2 $oa" \
  "destroy $cb" "map delete $oa 1" "map lookup $oa 1" "map dump $oa"; do
  check "kernel and store agree: $cmd" test "$(k $cmd 2>&1)" = "$(u $cmd 2>&1)"
done
finish

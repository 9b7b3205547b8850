#!/usr/bin/env bash
# Tail calls, callbacks, spin locks and refusals as a user sees them through the CLI: objects
# compiled with clang -target bpf, loaded into a real segment, run by `bpftime trigger` hosts
# (two at once for the lock).
# Usage: vmcalls_cli_test.sh BPFTIME OBJECTS_DIR
set -uo pipefail
bpftime=$1 objects=$2
export BPFTIME_SHM=bpftime-vmcalls-test-$$
trap '"$bpftime" reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"
id_of() { "$bpftime" list | awk -v k="$1" -v n="$2" '$2 == k && $3 == n { print $1; exit }'; }
# le32 N: N as four little-endian bytes in hex.
le32() { printf '%02x %02x %02x %02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
# run HOOK HANDLER ARG: triggers the hook with a request {handler, arg}.
run() { "$bpftime" trigger "$1" --mem "$(le32 "$2") $(le32 "$3")"; }

# --- tail calls: a dispatcher over a program array of three programs ---
expect load-dispatch 0 'program [0-9]+ dispatch' -- "$bpftime" load "$objects/dispatch.bpf.o"
handlers=$(id_of map handlers)
choice=$(id_of map choice)
dispatch=$(id_of program dispatch)
h1=$(id_of program handler1)
h2=$(id_of program handler2)
h3=$(id_of program handler3)
expect list-prog-array 0 "^$handlers +map +handlers +prog_array key 4 value 4 max_entries 4" -- \
  "$bpftime" list
expect update-slot1 0 '' -- "$bpftime" map update "$handlers" 1 "$h1"
expect update-slot2 0 '' -- "$bpftime" map update "$handlers" 2 "$h2"
expect update-slot3 0 '' -- "$bpftime" map update "$handlers" 3 "$h3"
expect update-not-a-program 1 "is a prog_array: its values are program ids, and $handlers is not one" -- \
  "$bpftime" map update "$handlers" 0 "$handlers"
# A program of another type than the array's caller (Linux's bpf_prog_map_compatible).
other=$(id_of program other_type)
expect update-other-type 1 "program $other \\(other_type\\) is a kprobe \\(type 2\\) program and cannot go into prog_array $handlers \\(handlers\\): program $dispatch \\(dispatch\\), which tail-calls through it, is a syscall \\(type 31\\) program" -- \
  "$bpftime" map update "$handlers" 0 "$other"
expect other-type-not-stored 0 '^key: 00 00 00 00  value: 00 00 00 00$' -- "$bpftime" map lookup "$handlers" 0
expect lookup-slot 0 "^key: 02 00 00 00  value: $(le32 "$h2")\$" -- "$bpftime" map lookup "$handlers" 2
expect attach-dispatch 0 '^link [0-9]+' -- "$bpftime" attach test "$dispatch" dispatch
# By the context: handler 1, handler 2, handler 3 (which doubles and goes on to handler 1).
expect tail-1 0 '^r0 = 0x69$' -- run dispatch 1 5       # 105
expect tail-2 0 '^r0 = 0xcd$' -- run dispatch 2 5       # 205
expect tail-3-then-1 0 '^r0 = 0x6e$' -- run dispatch 3 5 # 100 + 2 * 5
# Failures leave the dispatcher going on with a negative errno: an empty slot (-ENOENT) and an
# index past the array (-E2BIG).
expect tail-empty 0 '^r0 = 0x386$' -- run dispatch 0 5   # 900 + 2
expect tail-outside 0 '^r0 = 0x38b$' -- run dispatch 7 5 # 900 + 7
# By a map value.
expect choose-2 0 '' -- "$bpftime" map update "$choice" 0 2
expect tail-by-map 0 '^r0 = 0xcd$' -- run dispatch 255 5
expect delete-slot 0 '' -- "$bpftime" map delete "$handlers" 2
expect tail-deleted 0 '^r0 = 0x386$' -- run dispatch 255 5
# One run per event in the link's counters, however many programs it went through.
"$bpftime" trigger dispatch --mem "$(le32 3) $(le32 1)" --repeat 10 >/dev/null
expect runs-per-event 0 "program $dispatch -> target [0-9]+, enabled, runs 17, faults 0" -- \
  "$bpftime" list

# --- bpf_loop and bpf_for_each_map_elem ---
expect load-callbacks 0 'program [0-9]+ squares' -- "$bpftime" load "$objects/callbacks.bpf.o"
numbers=$(id_of map numbers)
table=$(id_of map table)
for p in squares walk_array walk_hash too_many; do
  expect "attach-$p" 0 '^link [0-9]+' -- "$bpftime" attach test "$(id_of program $p)" "$p"
done
# sum of i * i for i < 10 = 285, 10 iterations.
expect loop-10 0 "^r0 = 0x$(printf %x $((285 * 1000 + 10)))\$" -- \
  "$bpftime" trigger squares --mem "$(le32 10)"
# Stops once the sum passes 1,000,000: at i = 144 (sum 1,005,720), 145 iterations.
expect loop-stops 0 "^r0 = 0x$(printf %x $((1005720 * 1000 + 145)))\$" -- \
  "$bpftime" trigger squares --mem "$(le32 100000)"
expect loop-too-many 0 '^r0 = 0xfffffffffffffff9$' -- "$bpftime" trigger too_many
for i in 0 1 2 3 4 5 6 7; do
  "$bpftime" map update "$numbers" "$i" $((i * 10)) >/dev/null
done
# All 8 elements: keys 0..7 sum 28, values 0..70 sum 280; then each value is doubled.
expect walk-array 0 "^r0 = 0x$(printf %x $((8 << 48 | 28 << 32 | 280)))\$" -- \
  "$bpftime" trigger walk_array --mem "$(le32 99)"
expect walk-array-doubled 0 'value: 8c 00 00 00 00 00 00 00' -- "$bpftime" map lookup "$numbers" 7
# Stops after key 2: 3 elements, keys 3, values 0 + 20 + 40.
expect walk-array-stops 0 "^r0 = 0x$(printf %x $((3 << 48 | 3 << 32 | 60)))\$" -- \
  "$bpftime" trigger walk_array --mem "$(le32 2)"
for k in 5 6 9; do
  "$bpftime" map update "$table" "$k" $((k * 100)) >/dev/null
done
expect walk-hash 0 "^r0 = 0x$(printf %x $((3 << 48 | 20 << 32 | 2000)))\$" -- \
  "$bpftime" trigger walk_hash --mem "$(le32 99)"
expect walk-hash-doubled 0 'value: 08 07 00 00 00 00 00 00' -- "$bpftime" map lookup "$table" 9

# --- spin locks: two host processes incrementing under the lock, exactly ---
expect load-spin 0 'program [0-9]+ locked_add' -- "$bpftime" load "$objects/spin.bpf.o"
counter=$(id_of map counter)
expect attach-locked 0 '^link [0-9]+' -- "$bpftime" attach test "$(id_of program locked_add)" locked
"$bpftime" trigger locked --repeat 20000 >/dev/null &
a=$!
"$bpftime" trigger locked --repeat 20000 >/dev/null &
b=$!
wait $a $b
# count 40000 (0x9c40) and twice 80000 (0x13880) after the lock word and padding.
expect lock-exact 0 'value: 00 00 00 00 00 00 00 00 40 9c 00 00 00 00 00 00 80 38 01 00 00 00 00 00$' -- \
  "$bpftime" map lookup "$counter" 0
expect attach-forgets 0 '^link [0-9]+' -- "$bpftime" attach test "$(id_of program forgets_unlock)" forgets
expect ends-holding 0 'error: the program ended holding the spin lock at 0x[0-9a-f]+ \(released; Linux.s verifier refuses such a program\)' -- \
  "$bpftime" trigger forgets
# It was released: the next run takes it again (and a locked_add after it too).
expect released 0 'error: the program ended holding' -- "$bpftime" trigger forgets
expect lock-after 0 '^r0 = 0x9c43$' -- "$bpftime" trigger locked

# --- refusals at load ---
expect missing-helper 1 'helper 42 \(get_numa_node_id\) is not available in bpftime' -- \
  "$bpftime" load "$objects/missing_helper.bpf.o"
expect disasm-names-helper 0 'call 42  # get_numa_node_id \(not available in bpftime\)' -- "$bpftime" disasm "$objects/missing_helper.bpf.o"

finish

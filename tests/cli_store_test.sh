#!/usr/bin/env bash
# The controller commands as a user runs them, against a real segment and real processes.
# Usage: cli_store_test.sh BPFTIME EXAMPLES_DIR
set -uo pipefail
bpftime=$1 examples=$2
export BPFTIME_SHM=bpftime-cli-test-$$
trap '"$bpftime" reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/lib.sh"
# id_of KIND NAME: the id `bpftime list` shows for an object.
id_of() { "$bpftime" list | awk -v k="$1" -v n="$2" '$2 == k && $3 == n { print $1; exit }'; }

expect list-before-load 1 'no segment named .* \(bpftime load creates one; --shm or BPFTIME_SHM picks another name\)' -- "$bpftime" list
expect load 0 'program [0-9]+ count_calls' -- "$bpftime" load "$examples/counter.bpf.o"
expect load-json 0 '^\{"maps":\[\{"id":[0-9]+,"name":"events"\}' -- \
  "$bpftime" --json load "$examples/ringbuf_log.bpf.o"
expect load-missing 1 'nope.bpf.o' -- "$bpftime" load "$examples/nope.bpf.o"
counts=$(id_of map counts)
prog=$(id_of program count_calls)
log_prog=$(id_of program log_reserve)
events=$(id_of map events)
expect list 0 "^$counts +map +counts +hash key 4 value 8 max_entries 1024 entries 0" -- "$bpftime" list
expect list-json 0 '"kind":"program","name":"count_calls"' -- "$bpftime" --json list

expect attach 0 '^link [0-9]+ \(target [0-9]+\)$' -- "$bpftime" attach test "$prog" hook1
link=$("$bpftime" list | awk '$2 == "link" { print $1; exit }')
expect attach-bad-type 1 "unknown attach type 'nope'" -- "$bpftime" attach nope "$prog"
expect attach-bad-prog 1 'no object with id 999' -- "$bpftime" attach test 999 hook1
expect attach-map 1 'is a map, not a program' -- "$bpftime" attach test "$counts" hook1

expect trigger 0 '^r0 = 0xa$' -- "$bpftime" trigger hook1 --mem "05 00 00 00" --repeat 10
expect list-runs 0 "program $prog -> target [0-9]+, enabled, runs 10, faults 0" -- "$bpftime" list
expect lookup 0 '^key: 05 00 00 00  value: 0a 00 00 00 00 00 00 00$' -- \
  "$bpftime" map lookup "$counts" 5
expect update 0 '' -- "$bpftime" map update "$counts" 7 42
expect lookup-updated 0 'value: 2a 00 00 00 00 00 00 00' -- "$bpftime" map lookup "$counts" hex:07000000
expect update-noexist 1 '' -- "$bpftime" map update "$counts" 7 1 --flags noexist
expect dump 0 '^2 entries$' -- "$bpftime" map dump "$counts"
expect delete 0 '' -- "$bpftime" map delete "$counts" "07 00 00 00"
expect lookup-deleted 1 'key 07 00 00 00' -- "$bpftime" map lookup "$counts" 7
expect bad-key 1 'does not fit in 4 bytes' -- "$bpftime" map lookup "$counts" 0x100000000
expect bad-key-bytes 1 '2 bytes; 4 are needed' -- "$bpftime" map lookup "$counts" "01 02"
expect events-on-hash 1 'use `bpftime map events`|for ring buffers' -- "$bpftime" map events "$counts"

# Programs run by `bpftime run ID` use the store's maps; two processes at once add up exactly.
expect run-id 0 '^r0 = 0xb$' -- "$bpftime" run --mem "05 00 00 00" "$prog"
"$bpftime" run --mem "06 00 00 00" --repeat 1999 "$prog" >/dev/null &
"$bpftime" run --mem "06 00 00 00" --repeat 1999 "$prog" >/dev/null &
wait
expect concurrent-runs 0 'value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map lookup "$counts" 6
expect disasm-id 0 'call 1' -- "$bpftime" disasm "$prog"
expect disasm-elf 0 'count_array \(section test\)' -- "$bpftime" disasm "$examples/counter.bpf.o"
expect run-elf-needs-prog 1 'pick one with --prog \(count_calls, count_array\)' -- \
  "$bpftime" run --mem "01 00 00 00" "$examples/counter.bpf.o"
expect run-elf 0 '^r0 = 0x1$' -- \
  "$bpftime" run --prog count_array --mem "01 00 00 00" "$examples/counter.bpf.o"

# Two host processes feed one ring buffer; `map events` sees every record once.
expect attach-log 0 '^link' -- "$bpftime" attach test "$log_prog" hook2
"$bpftime" trigger hook2 --repeat 500 >/dev/null &
"$bpftime" trigger hook2 --repeat 500 >/dev/null &
wait
count=$("$bpftime" map events "$events" --count 1000 --timeout 5 | wc -l)
check "events: $count of 1000 records" test "$count" -eq 1000
count=$("$bpftime" map events "$events" --timeout 1 | wc -l)
check "events: $count left after consuming" test "$count" -eq 0
# Each record is written as it is read, to a file too: a reader killed with SIGKILL (no chance to
# flush) has left every record it took in its output.
out=$(mktemp)
"$bpftime" map events "$events" >"$out" &
reader=$!
"$bpftime" trigger hook2 --repeat 7 >/dev/null
for _ in $(seq 100); do
  (($(wc -l <"$out") >= 7)) && break
  sleep 0.05
done
kill -KILL "$reader"
wait "$reader" 2>/dev/null
check "events written as read: $(wc -l <"$out") of 7 lines after SIGKILL" test "$(wc -l <"$out")" -eq 7
count=$("$bpftime" map events "$events" --timeout 1 | wc -l)
check "events: $count left after the killed reader" test "$count" -eq 0
rm -f "$out"

expect disable 0 '' -- "$bpftime" disable "$link"
expect trigger-disabled 1 "no enabled link attaches a program at test hook 'hook1'" -- \
  "$bpftime" trigger hook1 --mem "05 00 00 00"
expect enable 0 '' -- "$bpftime" enable "$link"
expect enable-not-link 1 'not a link' -- "$bpftime" enable "$prog"
expect destroy-used 1 "program $prog is used by object $link" -- "$bpftime" destroy "$prog"
expect destroy-map-used 1 'is used by object' -- "$bpftime" destroy "$counts"
expect destroy-link 0 '' -- "$bpftime" destroy "$link"
expect destroy-unknown 1 'no object with id 4242' -- "$bpftime" destroy 4242
expect reset 0 '' -- "$bpftime" reset
expect list-after-reset 1 'no segment named' -- "$bpftime" list

finish

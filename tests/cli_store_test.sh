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

# Programs run by `bpftime run ID` use the store's maps; two processes at once add up exactly,
# each running its program --repeat times.
expect run-id 0 '^r0 = 0xb$' -- "$bpftime" run --mem "05 00 00 00" "$prog"
"$bpftime" run --mem "06 00 00 00" --repeat 2000 "$prog" >/dev/null &
"$bpftime" run --mem "06 00 00 00" --repeat 2000 "$prog" >/dev/null &
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

# Queue, stack, bloom filter and LPM trie maps made with `map create`, used with push, pop,
# peek, update, lookup and dump, and every bad input refused with its reason.
mk() { "$bpftime" map create "$@" | awk '{ print $2 }'; }
q=$(mk queue --name q --value-size 8 --max-entries 2)
st=$(mk stack --name st --value-size 8 --max-entries 2)
bl=$(mk bloom_filter --name bl --value-size 8 --max-entries 16 --map-extra 2)
lpm=$(mk lpm_trie --name routes --key-size 8 --value-size 8 --max-entries 8 --flags 1)
expect create-json 0 '^\{"id":[0-9]+,"name":"q2"\}$' -- \
  "$bpftime" --json map create queue --name q2 --value-size 4 --max-entries 1
expect list-queue 0 "^$q +map +q +queue key 0 value 8 max_entries 2" -- "$bpftime" list
expect push 0 '' -- "$bpftime" map push "$q" 1
expect push-2 0 '' -- "$bpftime" map push "$q" 2
expect push-full 1 'the queue is full \(2 values; BPF_EXIST drops the oldest to make room\)' -- \
  "$bpftime" map push "$q" 3
expect push-exist 0 '' -- "$bpftime" map push "$q" 3 --flags exist
expect push-noexist 1 'push flags 0x1: queue maps take BPF_ANY \(0\) or BPF_EXIST \(2\)' -- \
  "$bpftime" map push "$q" 4 --flags noexist
expect queue-dump 0 'value: 02 00 00 00 00 00 00 00' -- "$bpftime" map dump "$q"
expect queue-dump-count 0 '^2 values$' -- "$bpftime" map dump "$q"
expect peek 0 '^value: 02 00 00 00 00 00 00 00$' -- "$bpftime" map peek "$q"
expect pop 0 '^value: 02 00 00 00 00 00 00 00$' -- "$bpftime" map pop "$q"
expect pop-2 0 '^value: 03 00 00 00 00 00 00 00$' -- "$bpftime" map pop "$q"
expect pop-empty 1 "map $q: the queue is empty" -- "$bpftime" map pop "$q"
expect pop-json 1 'the queue is empty' -- "$bpftime" --json map pop "$q"
expect queue-lookup 1 "map $q is a queue: it has no keys; use .bpftime map push\|pop\|peek." -- \
  "$bpftime" map lookup "$q" 1
expect queue-bad-value 1 'value .*8' -- "$bpftime" map push "$q" "01 02"
expect pop-takes-no-value 1 'takes no VALUE' -- "$bpftime" map peek "$q" 5
"$bpftime" map push "$st" 1 && "$bpftime" map push "$st" 2
expect stack-pop 0 '^value: 02 00 00 00 00 00 00 00$' -- "$bpftime" map pop "$st"
expect bloom-push 0 '' -- "$bpftime" map push "$bl" 7
expect bloom-peek 0 '^value: 07 00 00 00 00 00 00 00  maybe present$' -- "$bpftime" map peek "$bl" 7
expect bloom-absent 1 'the value is not in the bloom filter' -- "$bpftime" map peek "$bl" 8
expect bloom-peek-needs-value 1 'map peek on a bloom_filter needs a VALUE' -- \
  "$bpftime" map peek "$bl"
expect bloom-pop 1 'a bloom_filter map has no values to push, pop or peek \(queue, stack maps do\)' -- \
  "$bpftime" map pop "$bl"
expect bloom-dump 1 'cannot list its values' -- "$bpftime" map dump "$bl"
expect lpm-update 0 '' -- "$bpftime" map update "$lpm" hex:080000000a000000 8
expect lpm-update-24 0 '' -- "$bpftime" map update "$lpm" hex:180000000a010200 24
expect lpm-longest 0 'value: 18 00 00 00 00 00 00 00' -- \
  "$bpftime" map lookup "$lpm" hex:200000000a010203
expect lpm-shorter 0 'value: 08 00 00 00 00 00 00 00' -- \
  "$bpftime" map lookup "$lpm" hex:200000000a090909
expect lpm-none 1 'no such key' -- "$bpftime" map lookup "$lpm" hex:200000000b000001
expect lpm-too-long 1 'prefixlen longer than the map.s 32 bits' -- \
  "$bpftime" map update "$lpm" hex:210000000a000000 1
expect lpm-dump 0 '^2 entries$' -- "$bpftime" map dump "$lpm"
expect lpm-delete-exact 1 'no such key' -- "$bpftime" map delete "$lpm" hex:100000000a010000
expect lpm-delete 0 '' -- "$bpftime" map delete "$lpm" hex:180000000a0102ff
expect push-on-hash 1 'is a hash: push, pop and peek are for queue, stack and bloom_filter' -- \
  "$bpftime" map push "$counts" 1
expect create-lpm-prealloc 1 'flags 0x0: lpm_trie maps need BPF_F_NO_PREALLOC \(0x1\), as in Linux' -- \
  "$bpftime" map create lpm_trie --key-size 8 --value-size 8 --max-entries 8
expect create-lpm-key 1 'key_size 4: lpm_trie maps take keys of 5 to 260 bytes' -- \
  "$bpftime" map create lpm_trie --key-size 4 --value-size 8 --max-entries 8 --flags 1
expect create-bloom-extra 1 'map_extra 0x10: bloom_filter maps take the number of hash functions' -- \
  "$bpftime" map create bloom_filter --value-size 8 --max-entries 8 --map-extra 16
expect create-queue-key 1 'key_size 4: queue maps have no keys \(use 0\)' -- \
  "$bpftime" map create queue --key-size 4 --value-size 8 --max-entries 8
expect create-extra-on-hash 1 'map_extra 0x3: hash maps take no map_extra' -- \
  "$bpftime" map create hash --key-size 4 --value-size 8 --max-entries 8 --map-extra 3
expect create-unknown 1 "map type 'deque' is unknown" -- \
  "$bpftime" map create deque --value-size 8 --max-entries 8
expect destroy-unknown 1 'no object with id 4242' -- "$bpftime" destroy 4242
expect reset 0 '' -- "$bpftime" reset
expect list-after-reset 1 'no segment named' -- "$bpftime" list

finish

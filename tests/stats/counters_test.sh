#!/usr/bin/env bash
# Run counters as `bpftime list --json` and `bpftime stats` show them: exact runs, faults and
# budget stops of programs run a known number of times by host processes (`bpftime trigger`),
# run time 0 while timing is off and more than 0 once `stats --enable-timing` switched it on.
# Usage: counters_test.sh BPFTIME TEST_BPF_DIR EXAMPLES_DIR
set -uo pipefail
bpftime=$1 bpf=$2
export BPFTIME_SHM=bpftime-stats-test-$$
trap '"$bpftime" reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"

# field LINK KEY: a link's field in `list --json`.
field() {
  "$bpftime" --json list | python3 -c '
import json, sys
link, key = int(sys.argv[1]), sys.argv[2]
for o in json.load(sys.stdin)["objects"]:
    if o["id"] == link:
        print(o[key])' "$1" "$2"
}
# want NAME LINK KEY VALUE
want() {
  local got
  got=$(field "$2" "$3")
  check "$1 ($3 $got, want $4)" [ "$got" = "$4" ]
}

expect load 0 'program [0-9]+ loops_for_ever' -- "$bpftime" load "$bpf/stats.bpf.o"
id_of() { "$bpftime" list | awk -v n="$1" '$2 == "program" && $3 == n { print $1; exit }'; }
ok=$(id_of returns) bad=$(id_of reads_out_of_bounds) loop=$(id_of loops_for_ever)
link_of() { "$bpftime" attach test "$1" "$2" | awk '{ print $2 }'; }
l_ok=$(link_of "$ok" hook_ok) l_bad=$(link_of "$bad" hook_bad) l_loop=$(link_of "$loop" hook_loop)

want timing-off-at-start "$l_ok" run_cnt 0
check timing-flag-off [ "$("$bpftime" --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_timing"])')" = False ]
expect trigger-ok 0 '^r0 = 0x7$' -- "$bpftime" trigger hook_ok --repeat 25
"$bpftime" trigger hook_ok --repeat 15 >/dev/null & # a second host process at once
"$bpftime" trigger hook_ok --repeat 10 >/dev/null &
wait
want runs "$l_ok" run_cnt 50
want no-faults "$l_ok" faults 0
want no-budget-stops "$l_ok" budget_stops 0
want no-time-while-off "$l_ok" run_time_ns 0

expect trigger-fault 0 '4 faulted runs' -- "$bpftime" trigger hook_bad --repeat 4
want fault-runs "$l_bad" run_cnt 4
want faults "$l_bad" faults 4
want fault-is-no-budget-stop "$l_bad" budget_stops 0

expect trigger-loop 0 'instruction budget .* exhausted' -- "$bpftime" trigger hook_loop --repeat 3
want loop-runs "$l_loop" run_cnt 3
want loop-faults "$l_loop" faults 3
want budget-stops "$l_loop" budget_stops 3
expect list-text 0 "program $loop -> target [0-9]+, enabled, runs 3, faults 3, budget stops 3$" -- \
  "$bpftime" list

expect enable-timing 0 '^run timing on$' -- "$bpftime" stats --enable-timing
check timing-flag-on [ "$("$bpftime" --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_timing"])')" = True ]
"$bpftime" trigger hook_ok --repeat 20 >/dev/null
want timed-runs "$l_ok" run_cnt 70
t1=$(field "$l_ok" run_time_ns)
check "time while on ($t1 ns > 0)" [ "$t1" -gt 0 ]
"$bpftime" trigger hook_loop >/dev/null
t_loop=$(field "$l_loop" run_time_ns)
# A run the budget stops executes many instructions: it takes longer than 20 that return at once.
check "loop time ($t_loop ns) > ok time ($t1 ns)" [ "$t_loop" -gt "$t1" ]
expect disable-timing 0 '^run timing off$' -- "$bpftime" stats --disable-timing
"$bpftime" trigger hook_ok --repeat 5 >/dev/null
want untimed-runs "$l_ok" run_cnt 75
want time-kept-when-off "$l_ok" run_time_ns "$t1"
expect timing-both 108 'excludes' -- "$bpftime" stats --enable-timing --disable-timing

# stats: rates over an interval while a host runs the program.
"$bpftime" trigger hook_ok --repeat 1000000000 >/dev/null &
host=$!
expect stats-once 0 "^$l_ok +returns +test +[0-9]+ +[1-9][0-9.]* " -- "$bpftime" stats --interval 0.5
expect stats-json 0 '"runs_per_s":[1-9]' -- "$bpftime" --json stats --interval 0.5
kill $host
wait $host 2>/dev/null
rounds=$("$bpftime" --json stats --watch 0.2 --count 3 | wc -l)
check "watch --count 3 prints 3 rounds ($rounds)" [ "$rounds" = 3 ]
"$bpftime" --json stats --watch 0.2 >/dev/null 2>&1 &
watcher=$!
sleep 1
kill -INT $watcher
wait $watcher
check "watch ends on SIGINT with status 0 ($?)" [ $? -eq 0 ]
expect watch-negative 105 '--watch: Value -1 not in range 0.01' -- "$bpftime" stats --watch -1
expect interval-zero 105 '--interval: Value 0 not in range' -- "$bpftime" stats --interval 0
expect count-needs-watch 1 '--count goes with --watch' -- "$bpftime" stats --count 2
expect stats-no-segment 1 'no segment named' -- "$bpftime" --shm bpftime-stats-none-$$ stats

finish

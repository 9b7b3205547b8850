#!/usr/bin/env bash
# How the agent follows the segment, as a user sees it: a link disabled while a program calls
# the probed function stops counting at once; an agent with nothing to do sleeps (it does not
# wake every few milliseconds to look); a segment removed under it is let go, and one made
# again under the same name is followed.
# Usage: follow_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-follow-test-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$bpftime" reset >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
fn="$target:bpftime_target_add"

# The number of calls counted (map 2, key 0 of uprobe_count.bpf.o), as a decimal number.
calls() {
  local bytes
  bytes=$("$bpftime" map lookup 2 0 2>/dev/null | sed -n 's/.*value: //p')
  [[ -n $bytes ]] || { echo -1; return; }
  local v=0 shift=0 b
  for b in $bytes; do
    v=$((v + (16#$b << shift)))
    shift=$((shift + 8))
  done
  echo "$v"
}

expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect attach 0 '^link 6 ' -- "$bpftime" attach uprobe 3 "$fn"

# --- a detach takes effect at once ---
# One call every 200 us for up to a minute.
"$bpftime" start "$target" 300000 1 200 >"$work/run.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ $(calls) -gt 100 ]] && break; sleep 0.1; done
check "the probe counts the running program's calls ($(calls))" test "$(calls)" -gt 100
late=()
for round in 1 2 3 4 5; do
  "$bpftime" disable 6 >/dev/null
  after=$(calls)
  sleep 0.3
  later=$(calls)
  late+=($((later - after)))
  "$bpftime" enable 6 >/dev/null
  for _ in $(seq 100); do [[ $(calls) -gt $later ]] && break; sleep 0.05; done
done
# Reading the count takes a process start (milliseconds): a detach that took effect within
# that time counts nothing after it.
worst=$(printf '%s\n' "${late[@]}" | sort -n | tail -1)
check "no call counted after disable returned (calls counted late per round: ${late[*]})" \
  test "$worst" -eq 0

# --- an idle agent sleeps ---
"$bpftime" disable 6 >/dev/null
"$bpftime" start "$target" 1 1 30000000 >"$work/idle.out" 2>&1 &
idle=$! # `bpftime start` becomes the program
pids+=($idle)
sleep 1 # start-up: the agent compiles and instantiates
switches() {
  cat /proc/"$idle"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}
ticks() { awk '{ print $14 + $15 }' /proc/"$idle"/stat; }
s0=$(switches) t0=$(ticks)
sleep 2
s1=$(switches) t1=$(ticks)
# A follower polling every 5 ms wakes about 400 times in 2 s; one sleeping on the generation
# wakes to look at the segment's name twice a second.
check "an idle agent wakes at most 20 times in 2 s (it woke $((s1 - s0)) times)" \
  test $((s1 - s0)) -le 20
check "an idle agent uses no CPU time in 2 s ($((t1 - t0)) ticks)" test $((t1 - t0)) -le 1
# A change wakes it at once.
"$bpftime" enable 6 >/dev/null
sleep 0.3
check "the idle agent attached the enabled link" grep -q 'following segment' "$work/idle.out"
kill "$idle" 2>/dev/null

# --- a removed segment is let go, a new one of that name followed ---
"$bpftime" start "$target" 300000 1 200 >"$work/removed.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q 'following segment' "$work/removed.out" && break; sleep 0.1; done
rm -f "/dev/shm/$BPFTIME_SHM"
for _ in $(seq 30); do grep -q 'was removed' "$work/removed.out" && break; sleep 0.1; done
check "the agent lets a removed segment go" grep -q "segment $BPFTIME_SHM was removed; detaching its programs" "$work/removed.out"
expect reload 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect reattach 0 '^link 6 ' -- "$bpftime" attach uprobe 3 "$fn"
for _ in $(seq 50); do [[ $(calls) -gt 10 ]] && break; sleep 0.1; done
check "the agent follows the new segment of that name ($(calls) calls counted)" test "$(calls)" -gt 10
finish

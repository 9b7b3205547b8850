#!/usr/bin/env bash
# A ring buffer producer killed between reserve and submit, seen by the consumers users have:
# `bpftime map events` and a libbpf loader (ring_buffer__new + ring_buffer__poll) under the
# interposer. Another producer then submits K records: each consumer gets all K, in order,
# reports the lost record where it can, and does not hang.
# Usage: ringbuf_dead_producer_test.sh BPFTIME PRODUCER INTERPOSER LOADER INTERPOSER_OBJECTS_DIR
set -uo pipefail
bpftime=$1 producer=$2 lib=$3 loader=$4 objects=$5
export BPFTIME_SHM=bpftime-rb-dead-test-$$
export BPFTIME_AGENT_QUIET=1
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [[ -n ${LOADER_PID:-} ]] && kill "$LOADER_PID" 2>/dev/null
  wait 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -f "/dev/shm/$BPFTIME_SHM" "/dev/shm/$BPFTIME_SHM.pins"
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
K=20
records=$(seq -s ' ' 1 $K)
# The records as `map events` prints them: 8 little-endian bytes each.
hex_records=$(for i in $(seq 1 $K); do printf '%02x 00 00 00 00 00 00 00\n' "$i"; done)

# hold MAP: a producer that reserved a record of MAP and waits; its pid in $held.
# Each producer writes a file of its own: one left by an earlier producer says nothing.
holds=0
hold() {
  holds=$((holds + 1))
  local out="$work/hold-$holds.out"
  "$producer" "$BPFTIME_SHM" "$1" hold >"$out" 2>&1 &
  held=$!
  pids+=("$held")
  local i
  for ((i = 0; i < 200; i++)); do
    grep -q reserved "$out" && return 0
    sleep 0.05
  done
  echo "FAIL the producer did not reserve: $(cat "$out")"
  exit 1
}
# kill_held: SIGKILL, and reaped (a zombie's pid still answers kill -0).
kill_held() {
  kill -9 "$held"
  wait "$held" 2>/dev/null
}

# --- (a) `bpftime map events`, started before the producer dies ---
rb=$("$bpftime" map create ringbuf --name rb --max-entries 4096 | awk '{ print $2 }')
check cli-ring-created test -n "$rb"
hold "$rb"
timeout 20 "$bpftime" map events "$rb" --count $K --timeout 10 >"$work/events.out" \
  2>"$work/events.err" &
events=$!
sleep 0.3
kill_held
expect submit-after-death 0 "^submitted $K\$" -- "$producer" "$BPFTIME_SHM" "$rb" submit $K
wait "$events"
status=$?
check cli-events-exit-0 test "$status" -eq 0
out=$(cat "$work/events.out")
check cli-events-all-records test "$(grep -v '^lost' <<<"$out")" == "$hex_records"
check cli-events-reports-lost test "$(grep '^lost' <<<"$out")" == \
  "lost 1 records (their producer died before submitting)"
check cli-events-no-stderr test ! -s "$work/events.err"
# Nothing left waiting in the ring: another reader finds it empty at once.
expect cli-events-ring-empty 0 '^$' -- timeout 10 "$bpftime" map events "$rb" --timeout 1

# The same with the reader started after the death and the K records.
hold "$rb"
kill_held
"$producer" "$BPFTIME_SHM" "$rb" submit $K >/dev/null
out=$(timeout 20 "$bpftime" map events "$rb" --count $K --timeout 10 2>&1)
check cli-events-late-exit-0 test $? -eq 0
check cli-events-late-all-records test "$(grep -v '^lost' <<<"$out")" == "$hex_records"
check cli-events-late-reports-lost test "$(grep -c '^lost 1 records' <<<"$out")" -eq 1
out=$(timeout 20 "$bpftime" --json map events "$rb" --timeout 1 2>&1)
check cli-events-json-empty test $? -eq 0 -a -z "$out"
"$bpftime" destroy "$rb" >/dev/null

# --- (b) a libbpf loader polling the ring under the interposer ---
coproc LOADER { LD_PRELOAD=$lib exec "$loader" 2>"$work/loader.err"; }
send() {
  local reply=""
  echo "$*" >&"${LOADER[1]}"
  IFS= read -r -t 30 reply <&"${LOADER[0]}" || reply="(no answer)"
  echo "$reply"
}
expect_reply() { # NAME REGEX REPLY
  if grep -Eq -- "$2" <<<"$3"; then echo "ok   $1"; else
    echo "FAIL $1: got '$3', wanted /$2/"
    failures=$((failures + 1))
  fi
}
expect_reply loader-open '^ok$' "$(send open "$objects/interposer_probe.bpf.o")"
events_id=$("$bpftime" list 2>&1 | sed -nE 's/^ *([0-9]+) +map +events .*/\1/p')
check loader-ring-listed test -n "$events_id"
hold "$events_id"
# The loader is in ring_buffer__poll (epoll_wait on the ring's fd) when the producer dies.
echo "ringbuf events $K 10000" >&"${LOADER[1]}"
sleep 0.3
kill_held
"$producer" "$BPFTIME_SHM" "$events_id" submit $K >/dev/null
reply=""
IFS= read -r -t 30 reply <&"${LOADER[0]}" || reply="(no answer)"
expect_reply loader-gets-all "^record $records count=$K\$" "$reply"
# Dead before the loader polls: the next poll skips the record at once.
hold "$events_id"
kill_held
"$producer" "$BPFTIME_SHM" "$events_id" submit $K >/dev/null
start=$(date +%s%N)
expect_reply loader-late-gets-all "^record $records count=$K\$" "$(send ringbuf events $K 10000)"
check loader-late-in-time test $(($(date +%s%N) - start)) -lt 5000000000
expect_reply loader-idle-after '^ms=[0-9]+ n=0$' "$(send idle_poll events 100)"
echo exit >&"${LOADER[1]}"
wait "$LOADER_PID" 2>/dev/null
check loader-no-errors test -z "$(grep -v RLIMIT_MEMLOCK "$work/loader.err")"
finish

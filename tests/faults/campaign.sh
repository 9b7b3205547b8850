#!/usr/bin/env bash
# The fault campaign: for ROUNDS rounds, writers run together on one segment (two command-line
# update loops, a command-line attach/destroy loop, two hosts counting a uprobe under the agent,
# a ring-buffer producer under the agent, and a long-lived host through every round), and one
# writer chosen at random is killed with SIGKILL at a random point. After each round:
# `bpftime check` finds the segment consistent, the long-lived host still counts, and every
# writer that survived the round is counted exactly (a host's probed calls under its process
# id, an update loop's last value in its slot).
# Usage: campaign.sh BPFTIME CAMPAIGN_OBJECT PROBE_TARGET
# BPFTIME_FAULTS_SEED (default 20261206) and BPFTIME_FAULTS_ROUNDS (default 30) replay or
# lengthen a run.
set -uo pipefail
bpftime=$1 object=$2 target=$3
seed=${BPFTIME_FAULTS_SEED:-20261206}
rounds=${BPFTIME_FAULTS_ROUNDS:-30}
export BPFTIME_SHM=bpftime-faults-campaign-$$ BPFTIME_AGENT_QUIET=1
work=$(mktemp -d)
long_pid=
consumer=
cleanup() {
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done
  [[ -n $long_pid ]] && kill -9 "$long_pid" 2>/dev/null
  wait 2>/dev/null
  "$bpftime" reset >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
echo "seed $seed, $rounds rounds (replay: BPFTIME_FAULTS_SEED=$seed BPFTIME_FAULTS_ROUNDS=$rounds $0 $*)"
RANDOM=$seed

out=$("$bpftime" load "$object") || { echo "FAIL load: $out"; exit 1; }
id_of() { awk -v n="$1" '$3 == n { print $2 }' <<<"$out"; }
per_pid=$(id_of per_pid) events=$(id_of events) updates=$(id_of updates)
count_prog=$(id_of count_pid) produce_prog=$(id_of produce)
"$bpftime" attach uprobe "$count_prog" "$target:bpftime_target_add" >/dev/null || exit 1
# The producer's calls go to the 4-byte function (probe_target's "short"), probed by trap.
"$bpftime" attach uprobe "$produce_prog" "$target:bpftime_target_add4" >/dev/null || exit 1

# Probed calls counted for a process (0 when it has none).
counted() {
  local bytes v=0 shift=0 b
  bytes=$("$bpftime" map lookup "$per_pid" "$1" 2>/dev/null | sed -n 's/.*value: //p')
  for b in $bytes; do
    v=$((v + (16#$b << shift)))
    shift=$((shift + 8))
  done
  echo "$v"
}
slot_value() {
  local bytes v=0 shift=0 b
  bytes=$("$bpftime" map lookup "$updates" "$1" 2>/dev/null | sed -n 's/.*value: //p')
  for b in $bytes; do
    v=$((v + (16#$b << shift)))
    shift=$((shift + 8))
  done
  echo "$v"
}
# A consumer drains the ring buffer through the whole campaign.
"$bpftime" map events "$events" >"$work/events" 2>&1 &
consumer=$!
# A host that lives through every round (one call every 2 ms for ten minutes at most).
"$bpftime" start "$target" 300000 1 2000 >"$work/long.out" 2>&1 &
long_pid=$! # `bpftime start` becomes the program

# update_loop SLOT FILE: writes 1, 2, ... into SLOT of updates, recording in FILE each value
# the command reported written; the pid of the command running now is in FILE.pid.
update_loop() {
  local slot=$1 file=$2 v
  for v in $(seq 1 10); do
    "$bpftime" map update "$updates" "$slot" "$v" >/dev/null 2>&1 &
    echo $! >"$file.pid"
    wait $! 2>/dev/null || return 1
    echo "$v" >"$file"
  done
}
# attach_loop FILE: attaches and destroys links at an address of a binary no host maps, so
# every host resyncs and the heap is allocated and freed.
attach_loop() {
  local file=$1 i link target
  for i in $(seq 1 4); do
    "$bpftime" attach --no-wait uprobe "$count_prog" /usr/bin/true:0x2000 >"$file.out" 2>"$file.err" &
    echo $! >"$file.pid"
    wait $! 2>/dev/null || return 1
    read -r _ link _ target <"$file.out"
    target=${target%)}
    "$bpftime" destroy "$link" >/dev/null 2>&1 &
    echo $! >"$file.pid"
    wait $! 2>/dev/null || return 1
    "$bpftime" destroy "$target" >/dev/null 2>&1 &
    echo $! >"$file.pid"
    wait $! 2>/dev/null || return 1
  done
}

objects_checked=0
long_before=$(counted "$long_pid")
kills=()
for round in $(seq 1 "$rounds"); do
  rm -f "$work"/u0* "$work"/u1* "$work"/att*
  update_loop 0 "$work/u0" &
  u0=$!
  update_loop 1 "$work/u1" &
  u1=$!
  attach_loop "$work/att" &
  att=$!
  "$bpftime" start "$target" 300 1 1000 >"$work/h0.out" 2>&1 &
  h0s=$!
  "$bpftime" start "$target" 300 1 1000 >"$work/h1.out" 2>&1 &
  h1s=$!
  "$bpftime" start "$target" 300 1 1000 short >"$work/rb.out" 2>&1 &
  rbs=$!
  h0=$h0s h1=$h1s rb=$rbs

  # One writer, at a random point of its work.
  sleep "0.$((RANDOM % 5 + 1))$((RANDOM % 10))"
  victims=(update0 update1 attach host0 host1 producer)
  victim=${victims[$((RANDOM % ${#victims[@]}))]}
  case $victim in
  update0) kill -9 "$(cat "$work/u0.pid" 2>/dev/null)" 2>/dev/null ;;
  update1) kill -9 "$(cat "$work/u1.pid" 2>/dev/null)" 2>/dev/null ;;
  attach) kill -9 "$(cat "$work/att.pid" 2>/dev/null)" 2>/dev/null ;;
  host0) kill -9 "$h0" 2>/dev/null ;;
  host1) kill -9 "$h1" 2>/dev/null ;;
  producer) kill -9 "$rb" 2>/dev/null ;;
  esac
  kills+=("$victim")

  # (bash's "Killed" notices go to /dev/null with wait's errors)
  wait $u0 2>/dev/null; u0_rc=$?
  wait $u1 2>/dev/null; u1_rc=$?
  wait $att 2>/dev/null; att_rc=$?
  wait $h0s 2>/dev/null; h0_rc=$?
  wait $h1s 2>/dev/null; h1_rc=$?
  wait $rbs 2>/dev/null; rb_rc=$?
  # What the victim was doing may have finished before the kill came: it survived then.
  bad=0
  say() { echo "FAIL round $round (killed $victim): $*"; bad=1; }
  if ! report=$("$bpftime" check 2>&1); then
    say "bpftime check: $report"
  fi
  objects_checked=$((objects_checked + $(sed -n 's/.*: \([0-9]*\) objects.*/\1/p' <<<"$report" | tail -1)))
  for w in 0 1; do
    rc=u${w}_rc
    if [[ ${!rc} -eq 0 ]]; then
      want=$(cat "$work/u$w")
      got=$(slot_value "$w")
      [[ $got == "$want" ]] || say "update loop $w wrote $want last, its slot holds $got"
    fi
  done
  [[ $att_rc -eq 0 || $victim == attach ]] || say "the attach loop failed (status $att_rc): $(cat "$work/att.out")"
  for h in h0 h1 rb; do
    rc=${h}_rc pid=${!h}
    if [[ ${!rc} -eq 0 ]]; then
      got=$(counted "$pid")
      grep -q '^calls 300 ' "$work/$h.out" || say "host $h ($pid): $(cat "$work/$h.out")"
      [[ $got -eq 300 ]] || say "host $h ($pid) made 300 calls, $got were counted"
    elif [[ ${!rc} -ne 137 ]]; then
      say "host $h ($pid) ended with status ${!rc}: $(cat "$work/$h.out")"
    fi
  done
  long_now=$(counted "$long_pid")
  if ! kill -0 "$long_pid" 2>/dev/null; then
    say "the long-lived host is gone: $(cat "$work/long.out")"
  elif [[ $long_now -le $long_before ]]; then
    sleep 1
    long_now=$(counted "$long_pid")
    [[ $long_now -gt $long_before ]] || say "the long-lived host stopped counting at $long_now"
  fi
  long_before=$long_now
  if [[ $bad -ne 0 ]]; then
    failures=$((failures + 1))
    echo "$report"
    break
  fi
  echo "ok   round $round: killed $victim; check: $(tail -1 <<<"$report")"
done
kill -0 "$consumer" 2>/dev/null || { echo "FAIL: the ring-buffer consumer ended"; failures=$((failures + 1)); }
echo "rounds survived: $((round - failures)) of $rounds; objects checked: $objects_checked;" \
  "ring-buffer records consumed: $(grep -c . "$work/events")"
finish

#!/usr/bin/env bash
# System calls the kernel restarts at sites rewritten while a thread was blocked in them:
# systp_restart_target under `bpftime start`, a thread blocked in libc's read on a pipe, a
# sys_enter_read link (read_count.bpf.o) attached, detached and attached again through the
# command line while it waits; a SIGUSR1 handler with SA_RESTART interrupts the read in each
# round. Then a thread blocked in nanosleep when a link attaches, the process stopped and
# continued (restart_syscall) and the sleep interrupted by the handler. The read returns the
# data written last, the handler ran each time, the sleep lasted its whole time, the program
# counted exactly the reads made while attached, the target exits 0.
# Usage: restart_test.sh BPFTIME OBJECTS_DIR TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-systp-restart-$$
work=$(mktemp -d)
tpid_bg=
cleanup() {
  [[ -n $tpid_bg ]] && kill -9 "$tpid_bg" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../tools/lib.sh"
u() { "$bpftime" --provider user "$@"; }
marks=3

# line REGEX: waits until the target prints a line matching REGEX; fails at once, with how
# the target ended, when it ends first (a crash at a restarted call).
line() {
  local i
  for ((i = 0; i < 600; i++)); do
    grep -Eq -- "$1" "$work/target.out" && return 0
    if ! kill -0 "$tpid_bg" 2>/dev/null; then
      wait "$tpid_bg"
      local status=$?
      echo "FAIL the target ended (status $status$( ((status > 128)) && echo ", signal $((status - 128))")) before /$1/:"
      sed 's/^/  target | /' "$work/target.out"
      sed 's/^/  target stderr | /' "$work/target.err"
      tpid_bg=
      failures=$((failures + 1))
      finish
      exit 1
    fi
    sleep 0.05
  done
  echo "FAIL waited 30s for /$1/ in the target's output:"
  sed 's/^/  target | /' "$work/target.out"
  failures=$((failures + 1))
  finish
  exit 1
}

# attach: a sys_enter_read link of the counter; its id.
attach() { u attach tracepoint "$prog" syscalls:sys_enter_read | awk '{ print $2 }'; }

marked_reads() { u map lookup "$map" hex:00000000 2>/dev/null | le_value; }

out=$(u load "$objects/read_count.bpf.o") || { echo "FAIL load read_count: $out"; exit 1; }
prog=$(awk '$1 == "program" && $3 == "count_read" { print $2 }' <<<"$out")
map=$(awk '$1 == "map" && $3 == "marked_reads" { print $2 }' <<<"$out")

"$bpftime" start "$target" "$work" $marks >"$work/target.out" 2>"$work/target.err" &
tpid_bg=$!
line '^pid [0-9]+ ready$'
tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$work/target.out")

for round in 1 2; do
  link=$(attach)
  check "round-$round-attached" test -n "$link"
  wait_for_links "$tpid" 1 || break
  touch "$work/attached$round"
  line "^round $round done\$"
  check "round-$round-read-site-rewritten" grep -qx "round $round read site rewritten" "$work/target.out"
  check "round-$round-handler-ran-and-read-restarted" \
    grep -qx "round $round handled $round reader blocked" "$work/target.out"
  check "round-$round-counts-$((round * marks))" test "$(marked_reads)" -eq $((round * marks))
  expect "round-$round-detach" 0 '' -- u destroy "$link"
  wait_for_links "$tpid" 0
done
line '^read '
check "read-returns-the-data" grep -qx 'read 5 hello' "$work/target.out"

touch "$work/detached"
line '^sleeper blocked$'
link=$(attach)
wait_for_links "$tpid" 1
touch "$work/attached3"
line '^sleep ready$'
check "sleep-site-rewritten" grep -qx 'sleep site rewritten' "$work/target.out"
kill -STOP "$tpid"
sleep 0.2
kill -CONT "$tpid"
touch "$work/continued"
wait_for_exit "$tpid_bg" 30
tpid_bg=
check "target-exit-0" test "$exit_status" -eq 0
# One EINTR from the handler (the kernel restarts no sleep for a handler), none from the stop.
check "sleep-lasts-5s-through-a-stop-and-a-signal" \
  awk '$1 == "slept" && $2 == 0 && $3 == 1 && $4 >= 5000 { ok = 1 } END { exit !ok }' "$work/target.out"
check "counts-unchanged-after-detach" test "$(marked_reads)" -eq $((2 * marks))
# The agent may meet the writer lock taken by this script's own `list` and `map lookup` (a
# host only tries it, and says so once); anything else it says is a failure.
check "no-agent-complaint" test -z "$(grep -v ': following segment \|: the writer lock is held (by thread' "$work/target.err")"
sed 's/^/  target | /' "$work/target.out"
sed 's/^/  target stderr | /' "$work/target.err"
finish

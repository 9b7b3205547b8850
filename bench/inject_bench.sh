#!/usr/bin/env bash
# Time to inject the agent into a running process and to eject it again: `bpftime inject PID`
# and `bpftime eject PID` as an operator runs them (the whole command: start-up, reading the
# process's maps and libc's symbols, the ptrace calls, the agent's start or teardown), against
# tests/inject's target waiting in read() on a pipe. The segment holds one uprobe link on the
# target's function, so every inject compiles and attaches one program and every eject detaches
# it. The first inject loads the library into the process; later ones find it mapped (an
# ejected agent stays mapped), so round 1 is shown apart and the medians cover the rest.
# `bpftime --version`, timed the same way each round, is the command's own start-up.
#
# Usage (as root, after scripts/build.sh or a build with tests):
#   bench/inject_bench.sh [BUILD_DIR]
# Environment: ROUNDS (20).
set -euo pipefail
build=${1:-build}
rounds=${ROUNDS:-20}
bpftime=$build/tools/bpftime
target=$build/tests/inject/inject_target
examples=$build/examples
export BPFTIME_SHM=bpftime-inject-bench-$$
work=$(mktemp -d)
cleanup() {
  exec 3>&- 2>/dev/null || true
  [[ -n ${tpid:-} ]] && kill "$tpid" 2>/dev/null
  "$bpftime" reset >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bpftime" load "$examples/uprobe_count.bpf.o" >/dev/null
"$bpftime" attach uprobe 3 "$target:inject_target_work" >/dev/null
mkfifo "$work/in"
exec 3<>"$work/in"
BPFTIME_AGENT_QUIET=1 "$target" pipe <"$work/in" >"$work/out" &
tpid=$!
for _ in $(seq 100); do grep -q '^ready' "$work/out" && break; sleep 0.05; done

now_ns() { date +%s%N; }
inject_ns=() eject_ns=() startup_ns=()
for round in $(seq "$rounds"); do
  t0=$(now_ns)
  "$bpftime" --version >/dev/null
  startup_ns+=($(($(now_ns) - t0)))
  t0=$(now_ns)
  "$bpftime" inject "$tpid" >/dev/null
  t1=$(now_ns)
  "$bpftime" eject "$tpid" >/dev/null
  t2=$(now_ns)
  inject_ns+=($((t1 - t0)))
  eject_ns+=($((t2 - t1)))
done
# The target still answers: its read was restarted every time.
echo "call 1" >&3
for _ in $(seq 100); do grep -q '^done 1$' "$work/out" && break; sleep 0.05; done
grep -q '^done 1$' "$work/out" || { echo "the target stopped answering" >&2; exit 1; }

median_ms() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m / 1e6 }'
}
range_ms() {
  printf '%s\n' "$@" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END {
    printf "%.2f-%.2f", lo / 1e6, hi / 1e6 }'
}
echo "rounds: $rounds (round 1 loads the library; medians over rounds 2..$rounds)"
printf '| step | round 1 ms | median ms | range ms |\n| --- | ---: | ---: | ---: |\n'
printf '| bpftime --version (the command'"'"'s start-up alone) | %.2f | %s | %s |\n' \
  "$(awk -v v="${startup_ns[0]}" 'BEGIN { print v / 1e6 }')" \
  "$(median_ms "${startup_ns[@]:1}")" "$(range_ms "${startup_ns[@]:1}")"
printf '| inject | %.2f | %s | %s |\n' "$(awk -v v="${inject_ns[0]}" 'BEGIN { print v / 1e6 }')" \
  "$(median_ms "${inject_ns[@]:1}")" "$(range_ms "${inject_ns[@]:1}")"
printf '| eject | %.2f | %s | %s |\n' "$(awk -v v="${eject_ns[0]}" 'BEGIN { print v / 1e6 }')" \
  "$(median_ms "${eject_ns[@]:1}")" "$(range_ms "${eject_ns[@]:1}")"

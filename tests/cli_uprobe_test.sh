#!/usr/bin/env bash
# Uprobes as a user runs them: `bpftime start` brings the agent into a real program, the agent
# follows attach and detach while it runs, and one ELF object with the same commands gives the
# same counts through the user-space provider and through the kernel's uprobes.
# Usage: cli_uprobe_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-cli-uprobe-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
fn="$target:bpftime_target_add"

# --- user space, through the agent ---
expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect attach-uprobe 0 '^link 6 \(target 5\)$' -- "$bpftime" attach uprobe 3 "$fn" --cookie 4242
expect attach-uretprobe 0 '^link 8 \(target 7\)$' -- "$bpftime" attach uretprobe 4 "$fn"
expect attach-unresolvable 1 "no function 'nope'" -- "$bpftime" attach uprobe 3 "$target:nope"
expect attach-ifunc 1 'is an indirect function \(ifunc\)' -- "$bpftime" attach uprobe 3 libc.so.6:strlen
expect start 0 '^calls 4000 sum 2012000$' -- "$bpftime" start "$target" 1000 4
expect agent-says 0 'bpftime-agent\[[0-9]+\]: following segment' -- "$bpftime" start "$target" 0
expect entries 0 'key: 00 00 00 00  value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map dump 2
expect returns 0 'key: 01 00 00 00  value: a0 0f 00 00 00 00 00 00' -- "$bpftime" map dump 2
expect sum 0 'key: 02 00 00 00  value: 60 b3 1e 00 00 00 00 00' -- "$bpftime" map dump 2
expect cookie 0 'key: 03 00 00 00  value: 92 10 00 00 00 00 00 00' -- "$bpftime" map dump 2
expect link-runs 0 '^6 +link +link +program 3 -> target 5, enabled, cookie 4242, runs 4000, faults 0$' -- \
  "$bpftime" list
user_calls=$("$bpftime" map dump 1 | sort) # hash order differs between providers
user_totals=$("$bpftime" map dump 2)

# A program that exits at once, while the agent's compiler may still be busy, exits cleanly.
for i in 1 2 3 4 5; do
  expect "quick-exit-$i" 0 '^calls 0 sum 0$' -- "$bpftime" start "$target" 0 1
done
# Options after the program are the program's.
expect program-options 2 'THREADS 1..64' -- "$bpftime" start "$target" 1 --threads
expect start-missing 127 'nope-no-such-program: No such file or directory' -- \
  "$bpftime" start nope-no-such-program
# Programs the dynamic loader runs without preloading anything are refused, not run unprobed
# (or, under `load`, with their bpf() calls going to the kernel).
if printf 'int main(void) { return 0; }\n' | cc -static -x c - -o "$work/static" 2>/dev/null; then
  expect start-static 1 'static is statically linked: the dynamic loader cannot preload the agent' -- \
    "$bpftime" start "$work/static"
  expect load-static 1 'is statically linked: .*bpf\(\) calls would go to the kernel' -- \
    "$bpftime" load "$work/static"
else
  echo "skip start-static: cc -static failed (no static C library, libc6-dev's libc.a)"
fi
cp /bin/true "$work/setuid" && chown nobody "$work/setuid" && chmod 4755 "$work/setuid"
if findmnt -no OPTIONS --target "$work" | grep -qw nosuid; then
  echo "skip start-setuid: $work is on a nosuid mount, where set-user-ID bits do not apply"
else
  expect start-setuid 1 'setuid is set-user-ID: the dynamic loader ignores LD_PRELOAD' -- \
    "$bpftime" start "$work/setuid"
fi

# A link whose binary is not in the process is reported by the agent; the others still count.
expect attach-elsewhere 0 '^link 10 \(target 9\)$' -- "$bpftime" attach uprobe 3 /usr/bin/true:0x2000
expect not-mapped 0 'true is not mapped executable in this process' -- "$bpftime" start "$target" 10
expect others-count 0 'key: 00 00 00 00  value: aa 0f 00 00' -- "$bpftime" map dump 2
expect destroy-elsewhere 0 '' -- "$bpftime" destroy 10

# Attach and detach while the program runs: the agent follows; the program never sees a wrong
# result (probe_target exits 3 if it does) and counts fall between nothing and everything.
"$bpftime" map update 2 0 0 >/dev/null
"$bpftime" disable 6 && "$bpftime" disable 8
out=$(mktemp)
"$bpftime" start "$target" 1500 2 1000 >"$out" 2>&1 &
running=$!
sleep 0.5
# Five rounds from the first that saw a call (a loaded machine may start the host late), while
# the host runs.
calls_seen() {
  local v
  v=$("$bpftime" --json map lookup 2 0 | sed -E 's/.*"value":"([0-9a-f]{2}) ([0-9a-f]{2}).*/\2\1/')
  echo $((16#${v:-0}))
}
rounds=0
while [ "$rounds" -lt 5 ] && kill -0 "$running" 2>/dev/null; do
  "$bpftime" enable 6 && sleep 0.1 && "$bpftime" disable 6 && sleep 0.05
  [ "$(calls_seen)" -gt 0 ] && rounds=$((rounds + 1))
done
wait "$running"
status=$?
check "running target: exit 0 and right results" grep -q '^calls 3000 sum' "$out"
# What it printed instead, and how it ended, for the failure's reader.
grep -q '^calls 3000 sum' "$out" || { echo "  target: exit $status"; sed 's/^/  target: /' "$out"; }
seen=$(calls_seen)
check "running target: $seen of 3000 calls seen while attached" test "$seen" -gt 0 -a "$seen" -lt 3000
rm -f "$out"

# --- the same object and commands through the kernel's uprobes ---
if ! "$bpftime" --provider kernel load "$examples/uprobe_count.bpf.o" >/dev/null 2>&1; then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF)"
  finish
  exit
fi
k() { "$bpftime" --provider kernel "$@"; }
expect kernel-attach-uprobe 0 '^link 6 \(target 5\)$' -- k attach uprobe 3 "$fn" --cookie 4242
expect kernel-attach-uretprobe 0 '^link 8 \(target 7\)$' -- k attach uretprobe 4 "$fn"
expect kernel-start 0 '^calls 4000 sum 2012000$' -- k start "$target" 1000 4
check "same counts per argument through both providers" test "$(k map dump 1 | sort)" = "$user_calls"
check "same totals through both providers" test "$(k map dump 2)" = "$user_totals"
finish

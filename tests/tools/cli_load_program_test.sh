#!/usr/bin/env bash
# `bpftime load` given a program instead of an eBPF object: the program runs with the bpf()
# interposer preloaded (LD_PRELOAD kept after it, the segment in BPFTIME_SHM), its arguments
# unchanged, signals sent to bpftime forwarded, its exit status returned; and every bad input
# refused with what to do. A harmless library stands in for the interposer
# ($BPFTIME_SYSCALL_SERVER), so this runs whether or not the build has one.
# Usage: cli_load_program_test.sh BPFTIME EXAMPLES_DIR
set -uo pipefail
bpftime=$1 examples=$2
export BPFTIME_SHM=bpftime-load-program-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib.sh"

libm=$(ldconfig -p | sed -n 's/.*libm.so.6 (libc6,x86-64) => //p' | head -1)
export BPFTIME_SYSCALL_SERVER=${libm:-/lib/x86_64-linux-gnu/libm.so.6}

# The environment the loader sees.
expect preload-first 0 "^$BPFTIME_SYSCALL_SERVER:/keep/me.so seg-x$" -- \
  env LD_PRELOAD=/keep/me.so "$bpftime" --shm seg-x load sh -c 'echo "$LD_PRELOAD $BPFTIME_SHM"'
expect preload-alone 0 "^$BPFTIME_SYSCALL_SERVER\$" -- \
  env -u LD_PRELOAD "$bpftime" load sh -c 'echo "$LD_PRELOAD"'
expect kernel-provider-runs-as-is 0 '^<>$' -- \
  env -u LD_PRELOAD "$bpftime" --provider kernel load sh -c 'echo "<$LD_PRELOAD>"'
# Arguments after PROGRAM are the program's, options and "--" included.
expect arguments-unchanged 0 '^\[-d\]\[1\]\[--shm\]\[x\]\[--\]\[-p\]$' -- \
  "$bpftime" load printf '[%s]' -d 1 --shm x -- -p
# A path, and a program found in $PATH.
cp /bin/true "$work/loader"
expect path-to-program 0 '' -- "$bpftime" load "$work/loader"
# The program's exit status, and 128 + the signal that ended it.
expect status-passed-on 7 '' -- "$bpftime" load sh -c 'exit 7'
expect killed-by-signal 143 '' -- "$bpftime" load sh -c 'kill -TERM $$'

# Background jobs of a script ignore SIGINT unless they run under job control, and a shell
# started with a signal ignored cannot trap it: each job here gets its own process group, as
# in an interactive shell, so that only bpftime gets the signals the test sends.
set -m

# SIGINT and SIGTERM sent to bpftime reach the loader, which prints its summary and exits.
for sig in INT TERM; do
  "$bpftime" load sh -c "trap 'echo summary after $sig; exit 0' $sig; echo started; \
    while :; do sleep 0.05; done" >"$work/$sig.out" 2>&1 &
  pid=$!
  wait_for_line "$work/$sig.out" '^started$'
  kill -$sig $pid
  wait_for_exit $pid 10
  check "forwards-SIG$sig-status" test "$exit_status" -eq 0
  check "forwards-SIG$sig-summary" grep -q "^summary after $sig$" "$work/$sig.out"
done
# A loader that does not catch the signal dies of it; bpftime says so in its status.
"$bpftime" load sleep 30 >/dev/null 2>&1 &
pid=$!
sleep 0.3
kill -INT $pid
wait_for_exit $pid 10
check sigint-kills-sleep test "$exit_status" -eq 130

# Bad input.
expect missing-file 1 'nope-no-such-loader: No such file or directory \(bpftime load takes an eBPF object built with clang -target bpf, or a loader program to run\)' -- \
  "$bpftime" load ./nope-no-such-loader
expect missing-object 1 'nope.bpf.o: No such file or directory' -- \
  "$bpftime" load "$examples/nope.bpf.o"
printf 'not a program\n' >"$work/plain"
chmod -x "$work/plain"
expect not-executable 1 "plain is neither an eBPF object \(an ELF relocatable file from clang -target bpf\) nor an executable program \(chmod \+x $work/plain to run it as a loader\)" -- \
  "$bpftime" load "$work/plain"
expect folder 1 'is not a regular file' -- "$bpftime" load "$work"
expect object-with-arguments 1 "counter.bpf.o is an eBPF object, which takes only --set NAME=VALUE and --attach \(got '-d'\); only a loader PROGRAM takes ARGS" -- \
  "$bpftime" load "$examples/counter.bpf.o" -d 1
expect nothing-given 1 'bpftime load needs a FILE' -- "$bpftime" load
expect interposer-missing 1 'BPFTIME_SYSCALL_SERVER is /nope/libx.so: No such file or directory' -- \
  env BPFTIME_SYSCALL_SERVER=/nope/libx.so "$bpftime" load sh -c 'exit 0'
# An object still loads as before.
expect object-loads 0 'program [0-9]+ count_calls' -- "$bpftime" load "$examples/counter.bpf.o"
finish

#!/usr/bin/env bash
# `bpftime load FILE --attach` and `bpftime attach auto PROG_ID`: programs attached where their
# sections say, as libbpf's auto-attach does (uprobe/BINARY:FUNC, tracepoint/CAT/NAME,
# raw_tracepoint/NAME, raw_tp/NAME); sections that name no target reported and left alone;
# an attached raw tracepoint then counting a real process's calls; the same on the kernel.
# Usage: cli_auto_attach_test.sh BPFTIME BUILD_DIR
set -uo pipefail
bpftime=$1 build=$2
export BPFTIME_SHM=bpftime-cli-auto-attach-test-$$
cleanup() {
  "$bpftime" reset >/dev/null 2>&1
  "$bpftime" --provider kernel reset >/dev/null 2>&1
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
examples=$build/examples
k() { "$bpftime" --provider kernel "$@"; }

expect load-attach-tracepoints 0 'link [0-9]+ \(target [0-9]+\) tracepoint syscalls:sys_exit_openat <- program [0-9]+ ' -- \
  "$bpftime" load "$examples/tools/gen/sysopens.bpf.o" --attach
check "two tracepoint links listed" test "$("$bpftime" list | grep -c 'tracepoint  *syscalls:sys_e')" -eq 2
expect load-attach-uprobe 0 'uprobe /lib/x86_64-linux-gnu/libc.so.6:malloc <- program [0-9]+ ' -- \
  "$bpftime" load "$examples/tools/gen/malloccount.bpf.o" --attach
# Sections that name no target: a line each on stderr, status 0, nothing attached.
links_before=$("$bpftime" list | grep -c ' link ')
expect load-attach-nothing 0 'program [0-9]+ count_calls not attached: section .test. names no target bpftime attaches by itself' -- \
  "$bpftime" load "$examples/counter.bpf.o" --attach
check "no link for test sections" test "$("$bpftime" list | grep -c ' link ')" -eq "$links_before"
expect load-bad-option 1 "takes only --set NAME=VALUE and --attach \(got '--attach-all'\)" -- \
  "$bpftime" load "$examples/counter.bpf.o" --attach-all

# attach auto for a program loaded without --attach.
"$bpftime" reset >/dev/null
expect load-raw 0 'program [0-9]+ count_enter' -- "$bpftime" load "$build/tests/systp/bpf/raw_count.bpf.o"
id_of() { "$bpftime" list | awk -v n="$1" '$2 == "program" && $3 == n { print $1; exit }'; }
expect attach-auto-enter 0 '^link [0-9]+ \(target [0-9]+\) raw_tracepoint sys_enter$' -- \
  "$bpftime" attach auto "$(id_of count_enter)"
expect attach-auto-exit 0 '^link [0-9]+ \(target [0-9]+\) raw_tracepoint sys_exit$' -- \
  "$bpftime" attach auto "$(id_of count_exit)"
expect attach-auto-args 1 'attach auto takes a program id only' -- \
  "$bpftime" attach auto "$(id_of count_enter)" sys_enter
expect attach-auto-unknown 1 'no program with id 4242' -- "$bpftime" attach auto 4242
# The links work: a process's exit_group (231) is counted under its pid.
"$bpftime" start /bin/true
expect raw-counted 0 'key: .. .. .. .. e7 00 00 00  value: 01 00 00 00 00 00 00 00' -- \
  "$bpftime" map dump 1

# The kernel provider attaches the same way.
kernel_load_or_skip "$examples/tracepoint_count.bpf.o"
"$bpftime" --provider kernel reset >/dev/null
expect kernel-load-attach 0 'link [0-9]+ \(target [0-9]+\) tracepoint syscalls:sys_enter_getpid <- program [0-9]+ count_getpid' -- \
  "$bpftime" --provider kernel load "$examples/tracepoint_count.bpf.o" --attach
finish

#!/usr/bin/env bash
# bpf_override_return in a user-space uprobe: override_target's open_config returns -ENOENT for
# one argument value without running, and every other call reads the file as before. Where
# it cannot work (a uretprobe, inside a function, the kernel's uprobes) it is refused, saying
# why.
# Usage: override_test.sh BPFTIME OBJECTS_DIR TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-override-test-$$
export BPFTIME_AGENT_QUIET=1
obj=$objects/override.bpf.o
tmp=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
echo "first line" >"$tmp/config"

expect unprobed 0 "^0: first line
1: first line
2: first line
3: first line
4: first line
body ran 5 times$" -- "$target" "$tmp/config" 5

expect load 0 'inject_enoent' -- "$bpftime" load "$obj"
prog=$("$bpftime" list | sed -nE 's/^ *([0-9]+) +program +inject_enoent( .*)?$/\1/p')
expect attach 0 '^link [0-9]+' -- "$bpftime" attach uprobe "$prog" "$target:open_config"
expect injected 0 "^0: first line
1: first line
2: first line
3: error -2 \(No such file or directory\)
4: first line
5: first line
body ran 5 times$" -- "$bpftime" start "$target" "$tmp/config" 6

# Where a function cannot be made to return early, the link is refused with the reason.
expect uretprobe-refused 1 "program $prog calls override_return \(58\), which works only in a uprobe at a function's entry; $target:open_config is a uretprobe" -- \
  "$bpftime" attach uretprobe "$prog" "$target:open_config"
expect inside-function-refused 1 "open_config\+4 is a uprobe inside a function, not at its first instruction" -- \
  "$bpftime" attach uprobe "$prog" "$target:open_config+4"
expect test-hook-refused 1 "override_return \(58\), which works only in a uprobe at a function's entry; somehook is a test target" -- \
  "$bpftime" attach test "$prog" somehook
addr=0x$(nm "$target" | sed -nE 's/^0*([0-9a-f]+) T open_config$/\1/p')
expect entry-by-address 0 '^link [0-9]+' -- "$bpftime" attach uprobe "$prog" "$target:$addr"

# The kernel allows bpf_override_return in kprobes of ALLOW_ERROR_INJECTION functions only.
out=$("$bpftime" --provider kernel load "$obj" 2>&1)
if grep -q 'needs root with CAP_BPF\|Operation not permitted' <<<"$out"; then
  echo "SKIP kernel half: the kernel refuses eBPF here: $out"
else
  expect kernel-user-space-only 1 "inject_enoent calls override_return, which the kernel allows only in kprobes of functions marked ALLOW_ERROR_INJECTION, never in uprobes; making a user-space function return early is user-space only \(--provider user\)" -- \
    "$bpftime" --provider kernel load "$obj"
fi
finish

#!/usr/bin/env bash
# `bpftime load FILE.bpf.o` shows how far it is (maps and programs made; programs are compiled as
# they are made) on a terminal, erases that line before printing what it made, and shows nothing
# when stderr is not a terminal.
# Usage: load_progress_test.sh BPFTIME TEST_BPF_DIR EXAMPLES_DIR
set -uo pipefail
bpftime=$1 examples=$3
export BPFTIME_SHM=bpftime-load-progress-test-$$
work=$(mktemp -d)
trap '"$bpftime" reset >/dev/null 2>&1; rm -rf "$work"' EXIT
. "$(dirname "$0")/../lib.sh"

obj=$examples/subprog.bpf.o
if command -v script >/dev/null; then
  # stderr a terminal (script(1) gives one), stdout a file.
  script -qec "'$bpftime' load '$obj' >'$work/tty-out'" "$work/typescript" >/dev/null 2>&1
  check "progress on a terminal" grep -q "loading $obj: 1/[0-9]" "$work/typescript"
  check "the line is erased" grep -q $'\r\033\\[K' "$work/typescript"
  check "what it made still printed" grep -Eq '^program [0-9]+ ' "$work/tty-out"
  "$bpftime" reset >/dev/null
else
  echo "skip progress: no script(1)"
fi
"$bpftime" load "$obj" 2>"$work/err" >"$work/out"
check "no progress into a pipe" [ ! -s "$work/err" ]
check "listing into the pipe" grep -Eq '^program [0-9]+ ' "$work/out"

finish

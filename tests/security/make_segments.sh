#!/usr/bin/env bash
# Makes real segments: each example object loaded by `bpftime load` into a small segment, its
# programs attached at test hooks and triggered (so maps and ring buffers hold data), the image
# copied to OUT/NAME.
# Usage: make_segments.sh BPFTIME EXAMPLES_DIR OUT
set -euo pipefail
bpftime=$1 examples=$2 out=$3
mkdir -p "$out"
export BPFTIME_SHM="bpftime-corpus-$$" BPFTIME_SHM_SIZE=1048576
trap 'rm -f "/dev/shm/$BPFTIME_SHM"' EXIT
for obj in counter ringbuf_log subprog url_allowlist; do
  rm -f "/dev/shm/$BPFTIME_SHM"
  "$bpftime" load "$examples/$obj.bpf.o" >/tmp/load.$$ || { echo "load $obj failed" >&2; exit 1; }
  n=0
  while read -r kind id _; do
    if [[ $kind == program ]]; then
      n=$((n + 1))
      "$bpftime" attach test "$id" "hook$n" >/dev/null
      "$bpftime" trigger "hook$n" --mem "05 00 00 00 00 00 00 00" --repeat 3 >/dev/null 2>&1 || true
    fi
  done </tmp/load.$$
  rm -f /tmp/load.$$
  cp "/dev/shm/$BPFTIME_SHM" "$out/$obj"
done

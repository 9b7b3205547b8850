#!/usr/bin/env bash
# `bpftime map dump` of a map of 100,000 entries streams: every entry once (text and --json),
# and the dump's peak memory stays within 6 MiB of a dump of 10 entries, so nothing is
# gathered before printing. With stderr a terminal (and stdout not) it shows progress; into
# a pipe it shows none.
# Usage: map_dump_test.sh BPFTIME TEST_BPF_DIR EXAMPLES_DIR
set -uo pipefail
bpftime=$1 bpf=$2
export BPFTIME_SHM=bpftime-dump-test-$$
work=$(mktemp -d)
trap '"$bpftime" reset >/dev/null 2>&1; rm -rf "$work"' EXIT
. "$(dirname "$0")/../lib.sh"

expect load 0 'program [0-9]+ fill' -- "$bpftime" load "$bpf/fill.bpf.o"
big=$("$bpftime" list | awk '$2 == "map" && $3 == "big" { print $1 }')
prog=$("$bpftime" list | awk '$2 == "program" && $3 == "fill" { print $1 }')
"$bpftime" attach test "$prog" fill >/dev/null
expect fill 0 '^r0 = 0x0$' -- "$bpftime" trigger fill --repeat 4
expect count 0 "^$big +map +big +hash .* entries 100000" -- "$bpftime" list

# peak_kib CMD...: the command's peak resident memory in KiB (stdout to a file), the least of
# three runs: most of a run's resident memory is the pages of the LLVM library it touches, whose
# count varies by several MiB from one run to the next, while gathering 100,000 entries before
# printing would take 10 MiB (text) to 30 MiB (JSON) more every time.
peak_kib() {
  local least=
  for _ in 1 2 3; do
    /usr/bin/time -f %M -o "$work/peak" "$@" >"$work/out" 2>/dev/null
    local p
    p=$(cat "$work/peak")
    if [[ -z $least ]] || ((p < least)); then least=$p; fi
  done
  echo "$least"
}
big_peak=$(peak_kib "$bpftime" map dump "$big")
lines=$(grep -c '^key: ' "$work/out")
check "text dump has every entry ($lines)" [ "$lines" = 100000 ]
check "text dump ends with the count" grep -q '^100000 entries$' "$work/out"
check "key 99999 -> 299997" grep -q '^key: 9f 86 01 00  value: dd 93 04 00 00 00 00 00$' "$work/out"
json_peak=$(peak_kib "$bpftime" --json map dump "$big")
check "json dump: one object per line ($(wc -l <"$work/out"))" [ "$(python3 -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
    o = json.loads(line)
    assert set(o) == {"key", "value"}
    n += 1
print(n)' "$work/out")" = 100000 ]

# The baseline: the same binary dumping a map of 10 entries.
"$bpftime" destroy "$("$bpftime" list | awk '$2 == "link" { print $1 }')" >/dev/null
expect load-small 0 'map' -- "$bpftime" load "$3/counter.bpf.o"
counts=$("$bpftime" list | awk '$2 == "map" && $3 == "counts" { print $1 }')
for k in 0 1 2 3 4 5 6 7 8 9; do "$bpftime" map update "$counts" $k 1 >/dev/null; done
small_peak=$(peak_kib "$bpftime" map dump "$counts")
check "text dump peak ${big_peak} KiB within 6 MiB of ${small_peak} KiB" \
  [ $((big_peak - small_peak)) -lt 6144 ]
check "json dump peak ${json_peak} KiB within 6 MiB of ${small_peak} KiB" \
  [ $((json_peak - small_peak)) -lt 6144 ]

# Progress: stderr a terminal (script(1) gives one), stdout a file.
if command -v script >/dev/null; then
  script -qec "'$bpftime' map dump $big >'$work/tty-out'" "$work/typescript" >/dev/null 2>&1
  check "progress on a terminal" grep -q "map $big entries: [0-9]*/100000" "$work/typescript"
  check "dump under progress complete" grep -q '^100000 entries$' "$work/tty-out"
else
  echo "skip progress: no script(1)"
fi
"$bpftime" map dump "$big" 2>"$work/err" >/dev/null
check "no progress into a pipe" [ ! -s "$work/err" ]

finish

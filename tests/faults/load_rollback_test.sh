#!/usr/bin/env bash
# A `bpftime load` that fails part way leaves nothing behind: an object whose last map does not
# fit a small segment, one whose second program is refused after its maps were made, and one
# whose second program does not attach with --attach after the first did. Each time the load
# says why (naming the object, and for space the BPFTIME_SHM_SIZE that would hold it), exits 1,
# and the listing, `bpftime check` and the segment's heap are what they were before it.
# Usage: load_rollback_test.sh BPFTIME FAULTS_OBJECTS_DIR EXAMPLES_DIR
set -uo pipefail
bpftime=$1 objects=$2 examples=$3
export BPFTIME_SHM=bpftime-load-rollback-$$
export BPFTIME_SHM_SIZE=2M
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  BPFTIME_SHM=$BPFTIME_SHM-big "$bpftime" reset --provider user >/dev/null 2>&1
  rm -f "/dev/shm/$BPFTIME_SHM" "/dev/shm/$BPFTIME_SHM-big"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"

# What must not change: the listing, and the object and heap figures of `check --json` (not
# next_id: ids are never reused, so the next object gets a higher one).
state() {
  "$bpftime" list 2>&1
  "$bpftime" check --json 2>&1 |
    grep -E '"(objects|programs|maps|targets|links|extents|heap_used|heap_free|clean)"'
}
# unchanged NAME: the state is the one saved in $before, and `bpftime check` passes.
unchanged() {
  local now
  now=$(state)
  if [[ $now == "$before" ]]; then
    echo "ok   $1: nothing of the load remains"
  else
    echo "FAIL $1: the segment changed:"
    diff <(echo "$before") <(echo "$now") | sed 's/^/  | /'
    failures=$((failures + 1))
  fi
  expect "$1-check" 0 'consistent$' -- "$bpftime" check
}

# A segment with something in it already.
expect first-load 0 'program [0-9]+ count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
before=$(state)
check state-has-heap grep -q heap_free <<<"$before"

# --- a map that does not fit ---
out=$("$bpftime" load "$objects/load_too_big.bpf.o" 2>&1)
status=$?
check too-big-exit-1 test $status -eq 1
want="^bpftime: $objects/load_too_big.bpf.o: map big: no space left in segment $BPFTIME_SHM \(2097152 bytes\): need [0-9]+ bytes.*BPFTIME_SHM_SIZE=[0-9]+ \(bytes\) or more"
if grep -Eq "$want" <<<"$out"; then echo "ok   too-big-message"; else
  echo "FAIL too-big-message: got:"; sed 's/^/  | /' <<<"$out"; echo "  wanted /$want/"
  failures=$((failures + 1))
fi
unchanged too-big
# The size it names holds the object, in a new segment.
size=$(sed -nE 's/.*BPFTIME_SHM_SIZE=([0-9]+).*/\1/p' <<<"$out")
check too-big-size-named test -n "$size"
expect too-big-fits-named-size 0 'map [0-9]+ big' -- \
  env BPFTIME_SHM="$BPFTIME_SHM-big" BPFTIME_SHM_SIZE="$size" "$bpftime" load "$objects/load_too_big.bpf.o"

# --- a program refused after the maps (an outer map holding an inner one) were made ---
expect refused-program 1 "load_refused.bpf.o: .*redirects.*(bpf_redirect|helper)" -- \
  "$bpftime" load "$objects/load_refused.bpf.o"
unchanged refused-program

# --- --attach: the second program's function does not exist ---
expect attach-fails 1 'program [0-9]+ counts_nothing not attached: .*bpftime_no_such_function' -- \
  "$bpftime" load "$objects/load_attach_fails.bpf.o" --attach
expect attach-fails-rolled-back 1 'load_attach_fails.bpf.o: not loaded: a program did not attach, so the 5 objects the load made were destroyed' -- \
  "$bpftime" load "$objects/load_attach_fails.bpf.o" --attach
unchanged attach-fails
expect attach-fails-json 1 'not loaded' -- \
  "$bpftime" --json load "$objects/load_attach_fails.bpf.o" --attach
check attach-fails-json-no-stdout test -z "$("$bpftime" --json load "$objects/load_attach_fails.bpf.o" --attach 2>/dev/null)"
unchanged attach-fails-json

# After all that, a load that fits still works.
expect load-after 0 'program [0-9]+ count_calls' -- "$bpftime" load "$examples/counter.bpf.o"
expect check-after 0 'consistent$' -- "$bpftime" check
finish

#!/usr/bin/env bash
# `bpftime check` as a user runs it, and segments that must be refused: random bytes, a
# truncated segment, a segment of another layout version, a mode other than 0600 and a
# segment of another user, each refused with a clear message by the command line (check and
# list) and by a host (the agent under `bpftime start`), which runs its program unprobed.
# Usage: cli_check_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-cli-check-test-$$
shm=/dev/shm/$BPFTIME_SHM
trap 'rm -f "$shm"' EXIT
. "$(dirname "$0")/../lib.sh"

expect missing 2 "no segment named $BPFTIME_SHM" -- "$bpftime" check
expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect attach 0 '^link 6 ' -- "$bpftime" attach uprobe 3 "$target:bpftime_target_add"
expect start 0 '^calls 100 ' -- "$bpftime" start "$target" 100 1
expect clean 0 "^segment $BPFTIME_SHM: 6 objects \(2 programs, 2 maps, 1 targets, 1 links\) of 1024 slots; heap [0-9]+ bytes used in [0-9]+ extents \+ [0-9]+ free = [0-9]+; 0 running hosts, 1 exited; consistent$" -- \
  "$bpftime" check
expect dead-host-noted 0 '^note: link 6 has a host record of pid [0-9]+, which has exited' -- "$bpftime" check
json=$("$bpftime" check --json)
check "--json: clean, 6 objects, used + free = heap" python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["clean"] is True and r["findings"] == [] and r["objects"] == 6, r
assert r["heap_used"] + r["heap_free"] == r["heap_size"], r
assert len(r["dead_hosts"]) == 1 and r["dead_hosts"][0]["link"] == 6, r
' "$json"

# Damage: the first slot's kind (after the 4288-byte header: 192 bytes, then the host table of
# 128 entries of 32 bytes; kind at 8) becomes 9.
cp "$shm" "$shm.saved"
printf '\x09' | dd of="$shm" bs=1 seek=4296 conv=notrunc status=none
expect damaged 1 '^record: object 1 \(slot 0\) is damaged: its kind 9 is unknown$' -- "$bpftime" check
# Object 1 was the program's map: the program now names a map that is not there.
expect damaged-consequence 1 '^program: program 3 names map 1, which does not exist$' -- "$bpftime" check
expect damaged-summary 1 '; 2 problems$' -- "$bpftime" check
json=$("$bpftime" check --json)
check "--json: the finding by name" python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["clean"] is False and r["findings"][0]["check"] == "record" and r["findings"][0]["id"] == 1, r
' "$json"
cp "$shm.saved" "$shm"
rm -f "$shm.saved"
expect repaired 0 'consistent$' -- "$bpftime" check
"$bpftime" reset >/dev/null

# refused NAME REGEX: check, list and a host refuse the segment as it is now, with REGEX.
refused() {
  local name=$1 want=$2
  expect "$name-check" 1 "^open: .*$want" -- "$bpftime" check
  expect "$name-list" 1 "$want" -- "$bpftime" list
  # The host says why, runs its program unprobed, and exits normally.
  expect "$name-host" 0 "bpftime-agent\[[0-9]+\]: .*$want.*; waiting for it" -- "$bpftime" start "$target" 10 1
  expect "$name-host-runs" 0 '^calls 10 ' -- "$bpftime" start "$target" 10 1
}
fresh() {
  rm -f "$shm"
  "$bpftime" load "$examples/uprobe_count.bpf.o" >/dev/null && "$bpftime" attach uprobe 3 "$target:bpftime_target_add" >/dev/null
}

head -c 1048576 /dev/urandom >"$shm"
chmod 0600 "$shm"
refused random-bytes 'is not a bpftime segment \(bad magic\)'

fresh
size=$(stat -c %s "$shm")
truncate -s 65536 "$shm"
refused truncated "is corrupt: its header says $size bytes, it has 65536"
truncate -s 0 "$shm"
refused truncated-empty "$BPFTIME_SHM"

fresh
printf '\x05' | dd of="$shm" bs=1 seek=8 conv=notrunc status=none
refused other-version 'layout version 5; this bpftime uses'

fresh
chmod 0666 "$shm"
refused mode-0666 'mode 0666'
# Group-writable, of a group this process is not in (hosts accept their own group's).
chgrp nogroup "$shm" && chmod 0660 "$shm"
refused mode-0660 'mode 0660'
chgrp "$(id -g)" "$shm" && chmod 0600 "$shm"
expect mode-0600 0 'consistent$' -- "$bpftime" check

if [[ $(id -u) -eq 0 ]]; then
  chown nobody "$shm"
  refused other-user 'owner nobody'
else
  echo "skip other-user: needs root to give the segment to another user"
fi
rm -f "$shm"
finish

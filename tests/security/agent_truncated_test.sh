#!/usr/bin/env bash
# The segment truncated (truncate -s 0) while a probed program runs under the agent
# (`bpftime start`): the program is not killed by SIGBUS (status 135), gets no wrong result,
# finishes its calls, and the agent says it detached the segment's programs.
# Usage: agent_truncated_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-agent-truncated-test-$$
trap '"$bpftime" reset >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"

expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect attach-uprobe 0 '^link' -- "$bpftime" attach uprobe 3 "$target:bpftime_target_add"
expect attach-uretprobe 0 '^link' -- "$bpftime" attach uretprobe 4 "$target:bpftime_target_add"

out=$(mktemp)
# 2 threads, 3000 calls each, 500 us apart: about 1.5 s of probed calls.
"$bpftime" start "$target" 3000 2 500 >"$out" 2>&1 &
running=$!
# Truncated once the agent follows the segment (on a loaded machine that can take a while).
for _ in $(seq 200); do
  grep -q 'following segment' "$out" && break
  sleep 0.05
done
truncate -s 0 "/dev/shm/$BPFTIME_SHM"
wait "$running"
rc=$?
check "the probed program exits normally (status $rc)" test "$rc" -eq 0
check "it finished its calls: $(grep calls "$out")" grep -q '^calls 6000 ' "$out"
check "the agent detached the truncated segment" grep -q 'was truncated under this process' "$out"
rm -f "$out"
finish

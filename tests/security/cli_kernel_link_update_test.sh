#!/usr/bin/env bash
# `bpftime link update` on the kernel provider: a uprobe link (a perf-event link, which the
# kernel cannot update in place) runs the other program from then on, keeps its id, and the old
# program may be destroyed. Needs root with CAP_BPF; skips otherwise.
# Usage: cli_kernel_link_update_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-cli-kernel-update-test-$$
trap '"$bpftime" reset --provider kernel >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"
k() { "$bpftime" --provider kernel "$@"; }

kernel_load_or_skip "$examples/uprobe_count.bpf.o"
# Maps 1 (calls by argument) and 2 (totals: 0 entries, 1 returns); programs 3 count_entry,
# 4 count_return (both kprobe programs to the kernel).
expect attach-uprobe 0 '^link 6 \(target 5\)$' -- k attach uprobe 3 "$target:bpftime_target_add"
"$target" 100 >/dev/null
expect entries-counted 0 'value: 64 00 00 00 00 00 00 00' -- k map lookup 2 0
expect update 0 '' -- k link update 6 4
expect list-updated 0 '^6 +link +link +program 4 -> target 5, enabled, kernel link [0-9]+$' -- k list
"$target" 100 >/dev/null
expect entries-stopped 0 'value: 64 00 00 00 00 00 00 00' -- k map lookup 2 0
expect returns-counted 0 'value: 64 00 00 00 00 00 00 00' -- k map lookup 2 1
expect destroy-old 0 '' -- k destroy 3
expect update-missing 1 'no object with id 99' -- k link update 6 99
expect update-map 1 'object 1 is a map, not a program' -- k link update 6 1
finish

#!/usr/bin/env bash
# The same commands on the kernel provider: one ELF object loaded both ways, maps read back
# alike, real kernel uprobes and a tracepoint counting real calls, links that detach, the
# verifier's refusal, and nothing left after reset. Needs root with CAP_BPF; skips otherwise.
# Usage: cli_kernel_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET KERNEL_TEST_OBJECTS_DIR
set -uo pipefail
bpftime=$1 examples=$2 target=$3 objects=$4
export BPFTIME_SHM=bpftime-cli-kernel-test-$$
folder=/sys/fs/bpf/$BPFTIME_SHM
cleanup() {
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  "$bpftime" reset --provider user >/dev/null 2>&1
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
k() { "$bpftime" --provider kernel "$@"; }
u() { "$bpftime" --provider user "$@"; }

kernel_load_or_skip "$examples/uprobe_count.bpf.o"
echo "ok   kernel-load"
expect user-load 0 'program 4 count_return' -- u load "$examples/uprobe_count.bpf.o"
# The same object gets the same ids either way, so the same commands follow.
check "same ids both ways" test "$(k list | awk 'NR > 1 { print $1, $2, $3 }')" = \
  "$(u list | awk 'NR > 1 { print $1, $2, $3 }')"
expect kernel-list 0 '^3 +program +count_entry +section uprobe, [0-9]+ insns, maps 2,1, kernel program [0-9]+$' -- k list
expect kernel-list-json 0 "\"folder\":\"$folder\"" -- k --json list
check "pinned in $folder" test -e "$folder/prog_3" -a -e "$folder/map_1" -a -e "$folder/meta"

# Map contents read back through the same commands agree.
for p in k u; do
  $p map update 1 7 42 && $p map update 1 0x100 1 && $p map update 2 1 5 && $p map delete 1 7
done
check "dumps agree" test "$(k map dump 1)" = "$(u map dump 1)"
check "array dumps agree" test "$(k map dump 2)" = "$(u map dump 2)"
check "errors agree" test "$(k map update 1 0x100 3 --flags noexist 2>&1)" = \
  "$(u map update 1 0x100 3 --flags noexist 2>&1)"
expect kernel-lookup 0 '^key: 00 01 00 00 00 00 00 00  value: 01 00 00 00 00 00 00 00$' -- \
  k map lookup 1 0x100
expect kernel-lookup-missing 1 'no such key' -- k map lookup 1 7
expect kernel-map-wrong-kind 1 'object 3 is a program, not a map' -- k map dump 3
k map update 2 1 0 >/dev/null && k map delete 1 0x100 >/dev/null

# Real uprobes: every call counted, return values summed.
expect attach-uprobe 0 '^link 6 \(target 5\)$' -- k attach uprobe 3 "$target:bpftime_target_add"
expect attach-uretprobe 0 '^link 8 \(target 7\)$' -- k attach uretprobe 4 "$target:bpftime_target_add"
expect list-links 0 '^6 +link +link +program 3 -> target 5, enabled, kernel link [0-9]+$' -- k list
read -r _ calls _ sum < <("$target" 1000 3)
check "target made 3000 calls" test "$calls" -eq 3000
expect entries-counted 0 'value: b8 0b 00 00 00 00 00 00' -- k map lookup 2 0
expect returns-counted 0 'value: b8 0b 00 00 00 00 00 00' -- k map lookup 2 1
sum_hex=$(printf '%016x' "$sum" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\8 \7 \6 \5 \4 \3 \2 \1/')
expect returns-summed 0 "value: $sum_hex" -- k map lookup 2 2
expect per-argument 0 '^8 entries$' -- k map dump 1

# Disabled and destroyed links stop counting; enabled ones count again.
expect disable 0 '' -- k disable 6
"$target" 100 >/dev/null
expect disabled-stops 0 'value: b8 0b 00 00' -- k map lookup 2 0
expect list-disabled 0 '^6 +link +link +program 3 -> target 5, disabled$' -- k list
expect enable 0 '' -- k enable 6
"$target" 100 >/dev/null
expect enabled-counts 0 'value: 1c 0c 00 00' -- k map lookup 2 0
expect destroy-used 1 'program 3 is used by object 6; destroy those first' -- k destroy 3
expect destroy-link 0 '' -- k destroy 6
"$target" 100 >/dev/null
expect destroyed-stops 0 'value: 1c 0c 00 00' -- k map lookup 2 0

# A tracepoint, counting this shell's own getpid calls through a second object.
expect load-tracepoint 0 'program 11 count_getpid' -- k load "$examples/tracepoint_count.bpf.o"
expect attach-tracepoint 0 '^link 13 \(target 12\)$' -- \
  k attach tracepoint 11 syscalls:sys_enter_getpid
expect tracepoint-events 0 '^[0-9a-f]{2} [0-9a-f]{2} [0-9a-f]{2} [0-9a-f]{2}$' -- \
  k map events 10 --count 1 --timeout 5

# What the kernel cannot do, and what user space cannot.
expect verifier-refuses 1 'program unchecked_lookup: the kernel verifier refused it' -- \
  k load "$objects/unchecked_lookup.bpf.o"
expect verifier-says-why 1 "^  R0 invalid mem access 'map_value_or_null'$" -- \
  k load "$objects/unchecked_lookup.bpf.o"
expect no-kernel-nginx 1 'attach type nginx-url has no counterpart in the kernel.* \(--provider user\)$' -- \
  k attach nginx-url 3
expect tracepoint-type 1 'is a kprobe program; tracepoint targets take tracepoint programs' -- \
  k attach tracepoint 3 syscalls:sys_enter_getpid
expect no-user-tracepoint 1 "only the kernel hosts tracepoints of category 'sched'.*\\(--provider kernel\\)$" -- \
  u attach tracepoint 3 sched:sched_switch
expect user-tracepoint-type 1 'is a kprobe program; tracepoint targets take tracepoint programs' -- \
  u attach tracepoint 3 syscalls:sys_enter_getpid
expect bad-symbol 1 "no function 'nope'" -- k attach uprobe 3 "$target:nope"
expect run-kernel-id 1 'takes programs of the user-space provider' -- k run 3
expect bad-provider 105 'nope not in \{user,kernel\}' -- "$bpftime" --provider nope list
expect provider-after-command 0 'count_entry' -- "$bpftime" list --provider kernel

# Two loads at once take the folder's lock in turn: every id distinct.
k load "$examples/uprobe_count.bpf.o" >/dev/null &
k load "$examples/uprobe_count.bpf.o" >/dev/null &
wait
check "concurrent loads: distinct ids" test "$(k list | awk 'NR > 1 { print $1 }' | sort | uniq -d | wc -l)" -eq 0
check "concurrent loads: 8 more objects" test "$(k list | awk 'NR > 1' | grep -c count_)" -eq 7

# reset releases everything; the folder is gone.
expect reset 0 '' -- k reset
check "folder removed" test ! -e "$folder"
expect list-after-reset 1 'no kernel objects for segment' -- k list
expect user-untouched 0 'count_entry' -- u list
finish

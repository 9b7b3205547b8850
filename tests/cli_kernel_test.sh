#!/usr/bin/env bash
# The same commands on the kernel provider: one ELF object loaded both ways, maps read back
# alike, real kernel uprobes and a tracepoint counting real calls, links that detach, the
# verifier's refusal, and nothing left after reset. Needs root with CAP_BPF; skips otherwise.
# Usage: cli_kernel_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET KERNEL_TEST_OBJECTS_DIR
set -uo pipefail
bpftime=$1 examples=$2 target=$3 objects=$4
export BPFTIME_SHM=bpftime-cli-kernel-test-$$
folder=/sys/fs/bpf/$BPFTIME_SHM
# kernel.bpf_stats_enabled is the machine's: what it was is put back.
stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled 2>/dev/null)
cleanup() {
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  "$bpftime" reset --provider user >/dev/null 2>&1
  [[ -z $stats_was ]] || echo "$stats_was" >/proc/sys/kernel/bpf_stats_enabled
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
# The kernel counts runs (run_cnt, run_time_ns) only while kernel.bpf_stats_enabled is 1, which
# `stats --enable-timing` sets on this provider; list shows the program's counts on its links.
expect stats-enable 0 '' -- k stats --enable-timing
check "kernel.bpf_stats_enabled set" test "$(cat /proc/sys/kernel/bpf_stats_enabled)" = 1
read -r _ calls _ sum < <("$target" 1000 3)
check "target made 3000 calls" test "$calls" -eq 3000
# kfield LINK KEY: a link's field in `list --json` on the kernel provider.
kfield() {
  k --json list | python3 -c '
import json, sys
for o in json.load(sys.stdin)["objects"]:
    if o["id"] == int(sys.argv[1]):
        print(o[sys.argv[2]])' "$1" "$2"
}
check "kernel run_cnt of link 6 is 3000 (got $(kfield 6 run_cnt))" test "$(kfield 6 run_cnt)" = 3000
check "kernel run_time_ns of link 6 above 0" test "$(kfield 6 run_time_ns)" -gt 0
expect list-kernel-runs 0 '^6 +link +link +program 3 -> target 5, enabled, runs 3000 \(program.s\), run time [1-9][0-9]* ns, kernel link [0-9]+$' -- k list
expect entries-counted 0 'value: b8 0b 00 00 00 00 00 00' -- k map lookup 2 0
expect returns-counted 0 'value: b8 0b 00 00 00 00 00 00' -- k map lookup 2 1
sum_hex=$(printf '%016x' "$sum" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\8 \7 \6 \5 \4 \3 \2 \1/')
expect returns-summed 0 "value: $sum_hex" -- k map lookup 2 2
expect per-argument 0 '^8 entries$' -- k map dump 1
expect stats-disable 0 '' -- k stats --disable-timing
"$target" 10 >/dev/null # 3010 calls from here
check "list --json says runs are not counted" grep -q 'kernel.bpf_stats_enabled is 0' <<<"$(kfield 6 stats)"
expect list-not-counted 0 'runs are not counted: .*kernel.bpf_stats_enabled is 0' -- k list

# Disabled and destroyed links stop counting; enabled ones count again.
expect disable 0 '' -- k disable 6
"$target" 100 >/dev/null
expect disabled-stops 0 'value: c2 0b 00 00' -- k map lookup 2 0
expect list-disabled 0 '^6 +link +link +program 3 -> target 5, disabled$' -- k list
expect enable 0 '' -- k enable 6
"$target" 100 >/dev/null
expect enabled-counts 0 'value: 26 0c 00 00' -- k map lookup 2 0
expect destroy-used 1 'program 3 is used by object 6; destroy those first' -- k destroy 3
expect destroy-link 0 '' -- k destroy 6
"$target" 100 >/dev/null
expect destroyed-stops 0 'value: 26 0c 00 00' -- k map lookup 2 0

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

# Queue, stack, bloom filter and LPM trie maps from `map create`: the same answers both ways
# (map ids differ between the two, so they are left out of the comparison).
keyless_session() {
  local p=$1 q s b l
  q=$($p map create queue --name q --value-size 8 --max-entries 2 | awk '{ print $2 }')
  s=$($p map create stack --name s --value-size 8 --max-entries 2 | awk '{ print $2 }')
  b=$($p map create bloom_filter --name b --value-size 8 --max-entries 16 --map-extra 2 |
    awk '{ print $2 }')
  l=$($p map create lpm_trie --name l --key-size 8 --value-size 8 --max-entries 8 --flags 1 |
    awk '{ print $2 }')
  {
    $p map push "$q" 1; $p map push "$q" 2; $p map push "$q" 3; $p map push "$q" 3 --flags exist
    $p map peek "$q"; $p map pop "$q"; $p map pop "$q"; $p map pop "$q"
    $p map push "$s" 1; $p map push "$s" 2; $p map pop "$s"; $p map peek "$s"
    $p map push "$b" 7; $p map peek "$b" 7; $p map peek "$b" 8; $p map push "$b" 7 --flags exist
    $p map update "$l" hex:080000000a000000 8; $p map update "$l" hex:180000000a010200 24
    $p map lookup "$l" hex:200000000a010203; $p map lookup "$l" hex:200000000a090909
    $p map lookup "$l" hex:200000000b000001; $p map update "$l" hex:210000000a010200 1
    $p map delete "$l" hex:180000000a0102ff; $p map dump "$l"
  } 2>&1 | sed -E 's/map [0-9]+/map N/g'
}
kernel_keyless=$(keyless_session k)
user_keyless=$(keyless_session u)
check "keyless maps: the same answers" test "$kernel_keyless" = "$user_keyless"
if [[ $kernel_keyless != "$user_keyless" ]]; then
  diff <(echo "$kernel_keyless") <(echo "$user_keyless") | sed 's/^/  | /'
fi
expect kernel-keyless-sample 0 'value: 02 00 00 00 00 00 00 00' -- echo "$kernel_keyless"
expect kernel-lpm-needs-no-prealloc 1 'the kernel refused it' -- \
  k map create lpm_trie --key-size 8 --value-size 8 --max-entries 8
expect kernel-bloom-bad-extra 1 'the kernel refused it' -- \
  k map create bloom_filter --value-size 8 --max-entries 8 --map-extra 16

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

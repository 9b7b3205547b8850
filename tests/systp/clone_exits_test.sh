#!/usr/bin/env bash
# The exits of clone, clone3, fork and vfork, in the parent and in the child, as the kernel
# reports them: clone_exits.bpf.o (raw_syscalls:sys_exit, syscalls:sys_exit_{clone,clone3,fork,
# vfork}, raw sys_exit) counts the returns of systp_clone_target's fork()s, raw clone()s,
# pthread_create()s and vfork()s under `bpftime start`, then on the kernel against the plain
# target; both must count exactly what the target did (syscount's clone column; the kernel at
# its tracepoints, as the kernel provider attaches no raw tracepoint).
# Usage: clone_exits_test.sh BPFTIME OBJECTS_DIR TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-systp-clone-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../tools/lib.sh"
u() { "$bpftime" --provider user "$@"; }
k() { "$bpftime" --provider kernel "$@"; }
obj=$objects/clone_exits.bpf.o
forks=5 threads=4 vforks=3

# slots PROVIDER MAP: the 24 counters, one per line as "SLOT VALUE".
slots() {
  local s
  for ((s = 0; s < 24; s++)); do
    echo "$s $("$bpftime" --provider "$1" map lookup "$2" "hex:$(printf '%02x' $s)000000" 2>/dev/null | le_value)"
  done
}

# What the target does, per slot (source * 8 + child * 4 + kind; kind clone, clone3, fork,
# vfork): glibc's fork() and the raw clone()s are clone, pthread_create() is clone3; each
# returns once in the parent and once in the child.
expected() {
  local source child
  for source in 0 1 2; do
    for child in 0 1; do
      echo "$((source * 8 + child * 4 + 0)) $((2 * forks))"
      echo "$((source * 8 + child * 4 + 1)) $threads"
      echo "$((source * 8 + child * 4 + 2)) 0"
      echo "$((source * 8 + child * 4 + 3)) $vforks"
    done
  done | sort -n
}

expected >"$work/want"

# User space: every exit program attached by its section, the target under `bpftime start`.
out=$(u load "$obj" --attach 2>&1)
check user-load-attach test "$(grep -c '^link ' <<<"$out")" -eq 6
sed 's/^/  | /' <<<"$out"
map=$(awk '$1 == "map" && $3 == "returns" { print $2 }' <<<"$out")
"$bpftime" start "$target" "$work" $forks $threads $vforks >"$work/user.out" 2>"$work/user.err" &
bg=$!
if wait_for_line "$work/user.out" '^pid [0-9]+ ready$'; then
  tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$work/user.out")
  wait_for_links "$tpid" 6
  touch "$work/go"
  wait_for_line "$work/user.out" '^done ' 60
fi
wait_for_exit "$bg" 60
check user-target-exit-0 test "$exit_status" -eq 0
check user-target-no-failure grep -qx 'done 0' "$work/user.out"
sed 's/^/  target stderr | /' "$work/user.err"
slots user "$map" >"$work/user"
echo "--- user space (slot count), against what the target did:"
paste "$work/user" "$work/want" | sed 's/^/  | /'
check user-counts-every-return-in-parent-and-child diff "$work/want" "$work/user"
rm -f "$work/go"

# The kernel: the same object, the plain target. The kernel provider attaches no raw
# tracepoints, so the kernel's figures are those of the tracepoints (sources 0 and 1).
kernel_load_or_skip "$obj"
k reset >/dev/null
out=$(k load "$obj" --attach 2>&1)
check kernel-load-attach-the-tracepoints test "$(grep -c '^link ' <<<"$out")" -eq 5
kmap=$(awk '$1 == "map" && $3 == "returns" { print $2 }' <<<"$out")
"$target" "$work" $forks $threads $vforks >"$work/kernel.out" 2>&1 &
bg=$!
wait_for_line "$work/kernel.out" '^pid [0-9]+ ready$' && touch "$work/go" &&
  wait_for_line "$work/kernel.out" '^done ' 60
wait_for_exit "$bg" 60
check kernel-target-exit-0 test "$exit_status" -eq 0
slots kernel "$kmap" >"$work/kernel"
echo "--- the kernel (slot count):"
paste "$work/kernel" "$work/user" | sed 's/^/  | /'
check kernel-counts-what-the-target-did diff <(head -16 "$work/want") <(head -16 "$work/kernel")
check user-space-counts-as-the-kernel diff <(head -16 "$work/kernel") <(head -16 "$work/user")
finish

#!/usr/bin/env bash
# User stacks as stackcount and profile collect them: an object counting the stacks of
# stack_leaf with bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK), in a program that calls it
# from two known call paths, under `bpftime start`; the map dump's frames, symbolised with the
# program's own symbols, must be exactly those two paths with every call counted. The same
# object on the kernel's uprobes must give the same set of stacks.
# Usage: stacks_test.sh BPFTIME OBJECTS_DIR STACK_TARGET
set -uo pipefail
bpftime=$1 objects=$2 target=$3
export BPFTIME_SHM=bpftime-stacks-test-$$
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
calls=300

# The target's functions: start, size, name (offsets in the file's address space).
syms=$(nm -S --defined-only "$target" | awk 'NF == 4 && ($3 == "T" || $3 == "t") {print $1, $2, $4}')
main_offset=$(awk '$3 == "main" {print $1}' <<<"$syms")

# A little-endian hex byte string ("2c 01 00 00") as a signed 64-bit number.
le() {
  local out="" b
  for b in $1; do out="$b$out"; done
  echo $((16#$out))
}

# symbolise BASE ADDRESS: the target's function holding ADDRESS, or "?".
symbolise() {
  local off=$(($2 - $1)) start size name
  while read -r start size name; do
    if ((off >= 16#$start && off < 16#$start + 16#$size)); then
      echo "$name"
      return
    fi
  done <<<"$syms"
  echo "?"
}

# stacks_seen RUN_OUTPUT PROVIDER: "COUNT NAMES..." per stack id counted, the names of the frames
# inside the target from the innermost, sorted.
stacks_seen() {
  local main_at base line id names f name count
  main_at=$(sed -n 's/^main \(0x[0-9a-f]*\)$/\1/p' <<<"$1")
  base=$((main_at - 16#$main_offset))
  declare -A count_of
  while read -r line; do
    id=$(le "$(sed -E 's/.*"key":"([0-9a-f ]+)".*/\1/' <<<"$line")")
    count_of[$id]=$(le "$(sed -E 's/.*"value":"([0-9a-f ]+)".*/\1/' <<<"$line")")
  done < <("$bpftime" --provider "$2" --json map dump "$counts")
  while read -r line; do
    id=$(sed -E 's/.*"stack_id":([0-9]+).*/\1/' <<<"$line")
    names=""
    for f in $(grep -o '0x[0-9a-f]*' <<<"$line"); do
      name=$(symbolise "$base" "$f")
      [[ $name == "?" ]] && break
      names="$names $name"
    done
    count=${count_of[$id]:-0}
    echo "$count$names"
  done < <("$bpftime" --provider "$2" --json map dump "$stacks") | sort
}

want="$calls stack_leaf stack_path_a main
$calls stack_leaf stack_path_b main"

# --- user space, through the agent ---
expect load 0 'program 5 count_stacks' -- "$bpftime" load "$objects/stacks.bpf.o"
# Map ids by name (libbpf's order of the .maps section is the compiler's).
id_of() { "$bpftime" --provider "$1" list | awk -v n="$2" '$2 == "map" && $3 == n {print $1}'; }
stacks=$(id_of user stacks) counts=$(id_of user counts) errors=$(id_of user errors) last=$(id_of user last)
expect attach 0 '^link 7 \(target 6\)$' -- "$bpftime" attach uprobe 5 "$target:stack_leaf"
run=$("$bpftime" start "$target" "$calls" 2>&1)
check "target ran" grep -q "^calls $calls sum" <<<"$run"
user_stacks=$(stacks_seen "$run" user)
check "two stacks, one per call path, each call counted: $(echo $user_stacks)" \
  test "$user_stacks" = "$want"
expect dump-frames 0 '^stack [0-9]+: 0x[0-9a-f]+ 0x[0-9a-f]+ 0x[0-9a-f]+' -- "$bpftime" map dump "$stacks"
expect no-failed-stackid 0 'key: 00 00 00 00  value: 00 00 00 00 00 00 00 00' -- "$bpftime" map dump "$errors"
# Without BPF_F_USER_STACK (a kernel stack): -EFAULT, as the kernel gives for a uprobe.
expect kernel-stack-efault 0 'key: 01 00 00 00  value: f2 ff ff ff ff ff ff ff' -- \
  "$bpftime" map dump "$errors"
# bpf_get_stack of the last call (from stack_path_b): 32 bytes, the caller second.
last_value=$("$bpftime" --json map lookup "$last" 0 | sed -E 's/.*"value":"([0-9a-f ]+)".*/\1/')
read -ra b <<<"$last_value"
check "get_stack returned 32 bytes" test "$(le "${b[*]:0:8}")" = 32
base=$(($(sed -n 's/^main \(0x[0-9a-f]*\)$/\1/p' <<<"$run") - 16#$main_offset))
check "get_stack: the leaf first" test "$(symbolise "$base" "$(le "${b[*]:8:8}")")" = stack_leaf
check "get_stack: then its caller" test "$(symbolise "$base" "$(le "${b[*]:16:8}")")" = stack_path_b
# A stack id is its hash's bucket, so the two stacks may hold any id: ask for one they do not.
used=$("$bpftime" map dump "$stacks" | sed -n 's/^stack \([0-9]*\):.*/\1/p')
missing=1023
while grep -qx "$missing" <<<"$used"; do missing=$((missing - 1)); done
expect lookup-missing 1 'no such key' -- "$bpftime" map lookup "$stacks" "$missing"
expect update-refused 1 'filled by bpf_get_stackid only' -- \
  "$bpftime" map update "$stacks" 0 "hex:$(printf '00%.0s' $(seq 256))"

# --- the same object on the kernel's uprobes ---
k() { "$bpftime" --provider kernel "$@"; }
kernel_load_or_skip "$objects/stacks.bpf.o"
expect kernel-attach 0 '^link 7 \(target 6\)$' -- k attach uprobe 5 "$target:stack_leaf"
krun=$(k start "$target" "$calls" 2>&1)
check "kernel: target ran" grep -q "^calls $calls sum" <<<"$krun"
kernel_stacks=$(stacks_seen "$krun" kernel)
check "the kernel sees the same stacks: $(echo $kernel_stacks)" test "$kernel_stacks" = "$user_stacks"
finish

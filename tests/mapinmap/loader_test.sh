#!/usr/bin/env bash
# A libbpf loader using maps of maps (mim_loader.c) under `bpftime load PROGRAM` gives the
# answers it gives on the kernel, line by line.
# Usage: loader_test.sh BPFTIME LOADER OBJECT
set -uo pipefail
bpftime=$1 loader=$2 object=$3
export BPFTIME_SHM=bpftime-mim-loader-$$
trap '"$bpftime" reset --provider user >/dev/null 2>&1' EXIT
. "$(dirname "$0")/../lib.sh"

user=$("$bpftime" load "$loader" "$object" 2>/dev/null)
expect loads-under-bpftime 0 '^load=ok$' -- echo "$user"
# What bpftime answers, whatever the kernel does.
for line in set_inner_map_fd=ok initial_0_is_a=1 initial_1_is_b=1 initial_hash_2_is_c=1 \
  'lookup_empty=No such file or directory' update_fd=ok switched_0_is_c=1 hash_update=ok \
  hash_7_is_a=1 'hash_update_noexist=File exists' 'update_value_size=Invalid argument' \
  'update_max_entries=Invalid argument' 'update_type=Invalid argument' \
  'update_outer=Invalid argument' 'update_prog=Invalid argument' \
  'update_bad_fd=Bad file descriptor' 'update_out_of_range=Argument list too long' \
  refusals_left_it_empty=1 create_outer=ok 'create_nested=Invalid argument' \
  update_made=ok kept_alive=1 kept_same_id=1 delete_entry=ok \
  released=1; do
  check "bpftime: $line" grep -qxF -- "$line" <<<"$user"
done
check "nothing left in the store" test -z "$("$bpftime" list 2>/dev/null | awk '$2 == "map"')"

kernel=$("$loader" "$object" 2>&1)
if grep -q '^load=Operation not permitted' <<<"$kernel"; then
  echo "SKIP: the kernel refuses eBPF here"
  finish
  exit $?
fi
check "the kernel's answers are bpftime's" diff <(echo "$kernel") <(echo "$user")
finish

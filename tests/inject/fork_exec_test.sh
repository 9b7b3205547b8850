#!/usr/bin/env bash
# Hosting follows forks and execs: the child of a hosted process has its own follower and
# counts its own calls for links attached after the fork (and stops when they detach), whether
# the parent was started with `bpftime start` or injected; a program a hosted process execs is
# hosted again (LD_PRELOAD and BPFTIME_SHM survive the exec).
# Usage: fork_exec_test.sh BPFTIME EXAMPLES_DIR INJECT_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-fork-exec-test-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib.sh"

# hosted_by PID LINK: waits until process PID reports link LINK attached (bpftime list shows
# each host process of a link, and whether it attached it yet).
hosted_by() {
  for _ in $(seq 200); do
    "$bpftime" list | grep -Eq "^$2 .*attached and running in pid $1\b" && return 0
    sleep 0.1
  done
  echo "process $1 never reported link $2:"
  "$bpftime" list | sed 's/^/  | /'
  return 1
}

fn="$target:inject_target_work"
expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"

# A child forked by a program under bpftime start.
mkfifo "$work/fork.in"
exec 3<>"$work/fork.in"
"$bpftime" start "$target" fork <"$work/fork.in" >"$work/fork.out" 2>"$work/fork.err" &
pids+=($!)
tout=$work/fork.out
wait_for "$tout" '^ready [0-9]+$'
child=$(sed -nE 's/^ready ([0-9]+)$/\1/p' "$tout")
wait_for "$work/fork.err" "bpftime-agent\\[$child\\]: following segment"
# The link comes after the fork: only a follower in the child can attach it there.
expect attach 0 '^link 6 \(target 5\)$' -- "$bpftime" attach uprobe 3 "$fn"
check "the child attaches the new link" hosted_by "$child" 6
send 30
check "the child counts its own 30 calls" test "$(count)" -eq 30
expect disable 0 '' -- "$bpftime" disable 6
# Detached in the child once it no longer reports the link.
for _ in $(seq 100); do
  "$bpftime" --json list | grep -Eq "\"pid\": *$child[,}]" || break
  sleep 0.1
done
send 20
check "after detach the child stops counting" test "$(count)" -eq 30
expect enable 0 '' -- "$bpftime" enable 6
check "and attaches it again" hosted_by "$child" 6
send 4
check "counting again" test "$(count)" -eq 34
echo quit >&3
wait "${pids[-1]}"
check "parent and child exit 0" test $? -eq 0
exec 3>&-

# A child forked by an injected process (its agent came by dlopen, its fork handlers too).
expect disable-2 0 '' -- "$bpftime" disable 6
"$bpftime" map update 2 0 0 >/dev/null
mkfifo "$work/inj.in"
exec 3<>"$work/inj.in"
"$target" pipe <"$work/inj.in" >"$work/inj.out" 2>"$work/inj.err" &
pids+=($!)
tout=$work/inj.out
wait_for "$tout" '^ready [0-9]+$'
parent=$(sed -nE 's/^ready ([0-9]+)$/\1/p' "$tout")
expect inject 0 "^injected .* into process $parent " -- "$bpftime" inject "$parent"
echo fork >&3
for _ in $(seq 200); do [[ $(grep -c '^ready' "$tout") -ge 2 ]] && break; sleep 0.1; done
child=$(sed -nE 's/^ready ([0-9]+)$/\1/p' "$tout" | tail -1)
check "the child is another process" test "$child" != "$parent"
expect enable-2 0 '' -- "$bpftime" enable 6
check "the injected process's child attaches the new link" hosted_by "$child" 6
send 12
check "the child counts its own 12 calls" test "$(count)" -eq 12
expect disable-3 0 '' -- "$bpftime" disable 6
for _ in $(seq 100); do
  "$bpftime" --json list | grep -Eq "\"pid\": *$child[,}]" || break
  sleep 0.1
done
send 5
check "after detach the child stops counting" test "$(count)" -eq 12
echo quit >&3
wait "${pids[-1]}"
check "the injected parent and its child exit 0" test $? -eq 0
exec 3>&-
expect enable-3 0 '' -- "$bpftime" enable 6

# exec: a program exec'ed by a shell under bpftime start is hosted again.
"$bpftime" map update 2 0 0 >/dev/null
expect exec 0 "^calls 25 shm $BPFTIME_SHM preload yes\$" -- \
  "$bpftime" start /bin/sh -c "exec '$target' calls 25"
check "the exec'ed program's 25 calls are counted" test "$(count)" -eq 25
# And a program a hosted program starts with fork and exec.
"$bpftime" map update 2 0 0 >/dev/null
expect fork-exec 0 "^calls 9 shm $BPFTIME_SHM preload yes\$" -- \
  "$bpftime" start /bin/sh -c "'$target' calls 9; true"
check "its 9 calls are counted" test "$(count)" -eq 9
finish

#!/usr/bin/env bash
# `bpftime inject PID` and `bpftime eject PID` against programs that are already running, as an
# operator uses them: a counter uprobe counts exactly the calls made while the agent is in, a
# blocked read and a sleep of the stopped thread finish as if nothing happened, and each refusal
# says why. The same counts come from the kernel's uprobes for the same target.
# Usage: inject_test.sh BPFTIME EXAMPLES_DIR INJECT_TARGET STATIC_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3 static_target=$4
export BPFTIME_SHM=bpftime-inject-test-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib.sh"

# start_pipe_target NAME [PREFIX...]: runs the target in pipe mode, its standard input a FIFO
# that fd 3 of this shell keeps open; sets tpid (the process to inject) and tout (its output).
start_pipe_target() {
  local name=$1
  shift
  mkfifo "$work/$name.in"
  exec 3<>"$work/$name.in"
  "$@" "$target" pipe <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  tout=$work/$name.out
  wait_for "$tout" '^ready [0-9]+$' || return 1
  tpid=$(sed -nE 's/^ready ([0-9]+)$/\1/p' "$tout")
}

fn="$target:inject_target_work"
expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
expect attach 0 '^link 6 \(target 5\)$' -- "$bpftime" attach uprobe 3 "$fn"

# --- a target blocked in read() on a pipe, started without bpftime ---
start_pipe_target reader
send 7
check "no counts before inject" test "$(count)" -eq 0
expect inject 0 "^injected .*libbpftime_agent.so into process $tpid \\(inject_target\\), following segment $BPFTIME_SHM\$" -- \
  "$bpftime" inject "$tpid"
check "the agent says it follows the segment" wait_for "$work/reader.err" "bpftime-agent\\[$tpid\\]: following segment"
send 100
check "exactly the 100 calls made after inject are counted" test "$(count)" -eq 100
send 23
check "and the next 23" test "$(count)" -eq 123
expect inject-again 1 "process $tpid \\(inject_target\\) already hosts the bpftime agent \\(segment $BPFTIME_SHM\\); bpftime eject $tpid first" -- \
  "$bpftime" inject "$tpid"
expect eject 0 "^ejected the agent from process $tpid \\(inject_target\\): its links are detached \\(libbpftime_agent.so stays mapped\\)\$" -- \
  "$bpftime" eject "$tpid"
send 50
check "eject stops counting" test "$(count)" -eq 123
expect eject-again 1 "the bpftime agent in process $tpid \\(inject_target\\) is not running \\(already ejected\\)" -- \
  "$bpftime" eject "$tpid"
# A second inject after eject hosts again.
expect reinject 0 "^injected .* into process $tpid " -- "$bpftime" inject "$tpid"
send 10
check "a second inject counts again" test "$(count)" -eq 133
expect eject-2 0 '^ejected' -- "$bpftime" eject "$tpid"
send 10
check "and stops again" test "$(count)" -eq 133
echo quit >&3
wait "${pids[-1]}"
check "the target exits 0" test $? -eq 0
check "its blocked reads never failed (no EINTR)" bash -c "! grep -q '^read:' '$tout'"
check "it read every command" grep -q '^bye$' "$tout"
exec 3>&-

# --- a 3 s nanosleep in the stopped thread sleeps the full 3 s ---
"$target" sleep 3 >"$work/sleep.out" 2>&1 &
sleeper=$!
pids+=($sleeper)
wait_for "$work/sleep.out" '^ready' && sleep 0.3
expect inject-sleeper 0 '^injected' -- "$bpftime" inject "$sleeper"
expect eject-sleeper 0 '^ejected' -- "$bpftime" eject "$sleeper"
wait "$sleeper"
check "the sleeper exits 0" test $? -eq 0
slept=$(sed -nE 's/^slept ([0-9.]+)$/\1/p' "$work/sleep.out")
echo "     target says: $(tr '\n' ' ' <"$work/sleep.out")"
check "the sleep lasted its 3 s (${slept:-none})" awk -v s="${slept:-0}" 'BEGIN { exit !(s >= 2.9) }'

# --- a process under bpftime start already hosts the agent ---
start_pipe_target started "$bpftime" start
# `bpftime start` execs the program: the pid is the started program's.
wait_for "$work/started.err" 'following segment'
expect inject-started 1 "process $tpid \\(inject_target\\) already hosts the bpftime agent \\(segment $BPFTIME_SHM\\)" -- \
  "$bpftime" inject "$tpid"
before=$(count)
send 5
check "the started process counts" test "$(count)" -eq $((before + 5))
expect eject-started 0 '^ejected' -- "$bpftime" eject "$tpid"
send 5
check "eject works on a started process too" test "$(count)" -eq $((before + 5))
echo quit >&3
wait "${pids[-1]}"
exec 3>&-

# --- refusals ---
true &
gone=$!
wait "$gone"
expect no-process 1 "no process $gone\$" -- "$bpftime" inject "$gone"
expect no-process-eject 1 "no process $gone\$" -- "$bpftime" eject "$gone"
expect bad-pid 1 'PID must be a positive process id' -- "$bpftime" inject 0
sleep 60 &
idle=$!
pids+=($idle)
expect eject-not-hosting 1 "process $idle \\(sleep\\) does not host the bpftime agent \\(nothing to eject\\)" -- \
  "$bpftime" eject "$idle"
"$static_target" 60 >"$work/static.out" &
pids+=($!)
wait_for "$work/static.out" '^ready'
expect static 1 "process $! \\(inject_static_t\\) is statically linked: bpftime inject loads the agent with the process's own dlopen" -- \
  "$bpftime" inject "$!"
expect static-left-running 0 '' -- kill -0 "$!"
# Another user's process: run bpftime as nobody against root's sleep.
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
  expect other-user 1 "process $idle \\(sleep\\) belongs to user 0 and bpftime runs as user 65534: only its own user or root may inject into it" -- \
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$bpftime" inject "$idle"
  expect other-user-eject 1 "process $idle \\(sleep\\) belongs to user 0 and bpftime runs as user 65534" -- \
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$bpftime" eject "$idle"
else
  echo "SKIP other-user: needs root and setpriv to run bpftime as another user"
fi
# Yama's ptrace_scope: a process of one's own user that is not a descendant, with scope 1.
scope_file=/proc/sys/kernel/yama/ptrace_scope
if [[ -w $scope_file ]] && command -v setpriv >/dev/null; then
  old_scope=$(cat "$scope_file")
  nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
  nobody sleep 60 &
  theirs=$!
  pids+=($theirs)
  sleep 0.2
  if echo 1 >"$scope_file"; then
    expect ptrace-scope 1 "ptrace of process $theirs \\(sleep\\) refused: $scope_file is 1 \\(only a parent may trace its descendants\\)" -- \
      nobody "$bpftime" inject "$theirs"
    echo "$old_scope" >"$scope_file"
  fi
  check "ptrace_scope restored to $old_scope" test "$(cat "$scope_file")" = "$old_scope"
else
  echo "SKIP ptrace-scope: $scope_file is absent or read-only here (no Yama)"
fi

# --- the same counts from the kernel's uprobes for the same target ---
k() { "$bpftime" --provider kernel "$@"; }
if ! k load "$examples/uprobe_count.bpf.o" >/dev/null 2>&1; then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF)"
  finish
  exit
fi
expect kernel-attach 0 '^link 6 \(target 5\)$' -- k attach uprobe 3 "$fn"
start_pipe_target kernel
send 100
check "the kernel counts the same 100 calls" test "$(count --provider kernel)" -eq 100
send 23
check "and the next 23" test "$(count --provider kernel)" -eq 123
expect kernel-inject 1 'bpftime inject takes programs of the user-space provider' -- k inject "$tpid"
echo quit >&3
wait "${pids[-1]}"
exec 3>&-
finish

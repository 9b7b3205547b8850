#!/usr/bin/env bash
# `bpftime attach` waits (at most 1 s) for the running hosts to say whether they attached the
# new link and prints (on stderr) what each said: attached, not mapping the binary, or the
# refusal; its status is 1 when every host that reported refused (the link stays, as list
# shows); with no host running it says so;
# --no-wait does not wait.
# Usage: cli_attach_hosts_test.sh BPFTIME EXAMPLES_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 examples=$2 target=$3
export BPFTIME_SHM=bpftime-cli-attach-hosts-test-$$
work=$(mktemp -d)
cleanup() {
  [[ -n ${host:-} ]] && kill "$host" 2>/dev/null && wait "$host" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

expect load 0 'program 4 count_return' -- "$bpftime" load "$examples/uprobe_count.bpf.o"
# No host runs: it says so, and the link waits for one.
expect no-host 0 '^no running host reported within [0-9]+ ms' -- \
  "$bpftime" attach uprobe 3 "$target:bpftime_target_add" --cookie 1

# A host (the target under the agent) takes the link made before it started.
"$bpftime" start "$target" 100000 1 2000 >"$work/host.out" 2>&1 &
host=$!
running=0
for _ in $(seq 1 200); do
  if "$bpftime" list | grep -Eq '^6 .*attached and running in pid'; then
    running=1
    break
  fi
  sleep 0.05
done
check "the host runs the first link" test "$running" = 1
pid=$("$bpftime" list | sed -nE 's/^6 .*attached and running in pid ([0-9]+).*/\1/p' | head -1)

# A link the host attaches: its pid and "attached".
expect host-attached 0 "^pid $pid: attached\$" -- "$bpftime" attach uretprobe 4 "$target:bpftime_target_add"
# A binary no host maps is no refusal (a process may load it later, as with the kernel's
# uprobes): each host says it does not map it, status 0; list keeps the host's state.
cp "$target" "$work/other_target"
expect host-unmapped 0 "^pid $pid: does not map the binary \\(.*other_target is not mapped executable in this process" -- \
  "$bpftime" attach uprobe 3 "$work/other_target:bpftime_target_add"
out=$("$bpftime" attach uprobe 3 "$work/other_target:bpftime_target_add" 2>&1)
check "not mapped is not called a refusal" bash -c "! grep -q 'refused' <<<'$out'"
expect link-stays 0 "^10 +link .*failed in pid $pid" -- "$bpftime" list
# JSON: one object with the hosts.
expect json 0 "^\\{\"link\":14,\"target\":13,\"hosts\":\\[\\{\"pid\":$pid,\"state\":\"attached\",\"why\":\"\"\\}\\]\\}\$" -- \
  "$bpftime" --json attach uprobe 3 "$target:bpftime_target_add"
# --no-wait: the link only.
expect no-wait 0 '^link 16 \(target 15\)$' -- "$bpftime" attach --no-wait uprobe 3 "$work/other_target:bpftime_target_add"
out=$("$bpftime" attach --no-wait uprobe 3 "$work/other_target:bpftime_target_add" 2>&1)
check "--no-wait prints no host line" test "$(wc -l <<<"$out")" = 1
# What hosts said goes to stderr: the link line stays the only one scripts read.
out=$("$bpftime" attach uprobe 3 "$target:bpftime_target_add" 2>/dev/null)
check "stdout holds the link line only" test "$out" = "link 20 (target 19)"
finish

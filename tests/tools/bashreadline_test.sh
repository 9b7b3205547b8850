#!/usr/bin/env bash
# Debian's /usr/sbin/bashreadline (libbpf-tools: a uretprobe on bash's readline that outputs
# each line through a perf event array read with libbpf's perf_buffer) prints the lines an
# interactive bash reads: under `bpftime load` with the bash under `bpftime start`, and on the
# kernel (skipped without CAP_BPF). The lines it prints for our bash are the commands fed to it.
# bashreadline runs under stdbuf -oL so each line reaches its output file when printed.
# Usage: bashreadline_test.sh BPFTIME
set -uo pipefail
bpftime=$1
tool=/usr/sbin/bashreadline
export BPFTIME_SHM=bpftime-bashreadline-test-$$
work=$(mktemp -d)
cleanup() {
  [[ -n ${tool_pid:-} ]] && kill -9 "$tool_pid" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -f "/dev/shm/$BPFTIME_SHM" "/dev/shm/$BPFTIME_SHM.pins"
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib.sh"
failures=0

if [[ ! -x $tool ]]; then
  echo "SKIP: $tool is missing (Debian package libbpf-tools, scripts/install-deps.sh)"
  exit 0
fi

commands=("echo perfbuf-$$-first" "true second line $$" ": 'quoted  spaces' $$" "exit")
expected=$(printf '%s\n' "${commands[@]}")

# feed_bash [PREFIX...]: an interactive bash (no rc files, no history file) reading the
# commands from a pipe; prints its pid.
feed_bash() {
  printf '%s\n' "${commands[@]}" |
    HISTFILE=/dev/null "$@" /bin/bash --norc --noprofile -i >"$work/bash.out" 2>&1 &
  local pid=$!
  wait_for_exit "$pid" 30
  echo "$pid"
}

# lines_of PID FILE: the COMMAND column of bashreadline's lines for PID.
lines_of() {
  sed -nE "s/^[0-9:]+ +$1 +//p" "$2"
}

# --- bpftime: the tool under `bpftime load`, bash under `bpftime start` ---
"$bpftime" load stdbuf -oL "$tool" >"$work/user.out" 2>"$work/user.err" &
tool_pid=$!
for ((i = 0; i < 200; i++)); do
  grep -Eq 'link +link +program' <<<"$("$bpftime" list 2>/dev/null)" && break
  sleep 0.05
done
want_list=$("$bpftime" list 2>&1)
check user-perf-event-array grep -Eq 'map +events +perf_event_array' <<<"$want_list"
check user-perf-rings grep -Eq 'map +perf_cpu0 +perf_ring' <<<"$want_list"
check user-uretprobe-on-readline grep -Eq 'uretprobe /bin/bash:0x' <<<"$want_list"
bash_pid=$(feed_bash "$bpftime" start)
# Line-buffered (stdbuf): each line is in the file once the tool has read its record.
for ((i = 0; i < 200; i++)); do
  [[ $(lines_of "$bash_pid" "$work/user.out" | wc -l) -ge ${#commands[@]} ]] && break
  sleep 0.05
done
got=$(lines_of "$bash_pid" "$work/user.out")
kill -INT "$tool_pid"
wait_for_exit "$tool_pid" 20
tool_pid=
if [[ $got == "$expected" ]]; then
  echo "ok   user-lines-are-the-commands"
else
  echo "FAIL user-lines-are-the-commands: got"
  sed 's/^/  | /' "$work/user.out" "$work/user.err"
  echo "  wanted, for pid $bash_pid:"
  sed 's/^/  | /' <<<"$expected"
  failures=$((failures + 1))
fi
check user-no-errors test ! -s "$work/user.err"
check user-exit-destroys bash -c "! '$bpftime' list 2>&1 | grep -Eq 'events|perf_cpu|printret'"

# --- the kernel: the same tool and the same commands ---
stdbuf -oL "$tool" >"$work/kernel.out" 2>"$work/kernel.err" &
tool_pid=$!
for ((i = 0; i < 200; i++)); do
  grep -q '^TIME' "$work/kernel.out" && break
  kill -0 "$tool_pid" 2>/dev/null || break
  sleep 0.05
done
if ! grep -q '^TIME' "$work/kernel.out"; then
  if grep -qi 'not permitted\|permission\|failed to load\|CAP_BPF' "$work/kernel.err"; then
    echo "SKIP: the kernel refuses eBPF here: $(head -3 "$work/kernel.err")"
    finish
    exit $?
  fi
  echo "FAIL kernel-tool-started:"
  sed 's/^/  | /' "$work/kernel.err"
  failures=$((failures + 1))
else
  bash_pid=$(feed_bash)
  for ((i = 0; i < 100; i++)); do
    [[ $(lines_of "$bash_pid" "$work/kernel.out" | wc -l) -ge ${#commands[@]} ]] && break
    sleep 0.05
  done
  got=$(lines_of "$bash_pid" "$work/kernel.out")
  if [[ $got == "$expected" ]]; then
    echo "ok   kernel-lines-are-the-commands"
  else
    echo "FAIL kernel-lines-are-the-commands: got"
    sed 's/^/  | /' "$work/kernel.out" "$work/kernel.err"
    failures=$((failures + 1))
  fi
fi
kill -INT "$tool_pid" 2>/dev/null
wait_for_exit "$tool_pid" 20
tool_pid=
finish

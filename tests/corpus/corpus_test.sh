#!/usr/bin/env bash
# One tool of the corpus (bpf/TOOL.bpf.c) through `bpftime load FILE --set ... --attach` on both
# providers: in user space with corpus_target under `bpftime start`, on the kernel with the
# target run plainly. Both must report exactly the calls the target makes, and so the same.
# kernel_funcs attaches kernel functions, which only the kernel provider does; the user provider
# must refuse it clearly. The kernel half is skipped, with the reason, where the kernel refuses
# eBPF.
# Usage: corpus_test.sh TOOL BPFTIME OBJECTS_DIR CORPUS_TARGET
set -uo pipefail
tool=$1 bpftime=$2 objects=$3 target=$4
export BPFTIME_SHM=bpftime-corpus-$tool-$$
export BPFTIME_AGENT_QUIET=1
# The objects' sections name the target by its file name, found in $PATH.
PATH="$(dirname "$target"):$PATH"
export PATH
obj=$objects/$tool.bpf.o
cg=""
cleanup() {
  "$bpftime" --provider user reset >/dev/null 2>&1
  "$bpftime" --provider kernel reset >/dev/null 2>&1
  [[ -n $cg ]] && rmdir "$cg" 2>/dev/null
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"

# le "2c 01 00 00": a little-endian hex byte string as an unsigned number.
le() {
  local out="" b
  for b in $1; do out="$b$out"; done
  echo $((16#$out))
}
# map_id PROVIDER NAME: the id of the map called NAME.
map_id() { "$bpftime" --provider "$1" list | awk -v n="$2" '$2 == "map" && $3 == n {print $1; exit}'; }
# values PROVIDER NAME: the map's values in key order, as numbers, on one line.
values() {
  local line out=""
  while read -r line; do
    out="$out $(le "$(sed -E 's/.*"value":"([0-9a-f ]+)".*/\1/' <<<"$line")")"
  done < <("$bpftime" --provider "$1" --json map dump "$(map_id "$1" "$2")")
  echo "${out# }"
}
# run PROVIDER [ARGS...]: runs the target, under the agent in user space, plainly on the kernel.
run() {
  local p=$1
  shift
  if [[ $p == user ]]; then "$bpftime" start "$target" "$@"; else "$target" "$@"; fi
}
# load PROVIDER [SETS...]: loads the tool with --attach; every program must attach.
load() {
  local p=$1
  shift
  expect "$p-load" 0 '^link [0-9]+ \(target [0-9]+\) [a-z_]+ .* <- program ' -- \
    "$bpftime" --provider "$p" load "$obj" "$@" --attach
}
# answer PROVIDER: what the tool reports after one run of the target (set by each tool below).
# want: what both must report.
kernel_usable() {
  local out
  out=$("$bpftime" --provider kernel list 2>&1) && return 0
  if grep -q 'needs root with CAP_BPF\|Operation not permitted' <<<"$out"; then
    echo "kernel half skipped: the kernel refuses eBPF here: $out"
    return 1
  fi
  return 0
}

case $tool in
malloc_count)
  want="64"
  sets=(--set targ_comm=corpus_target --set min_size=4500)
  answer() {
    local out pid dump
    out=$(run "$1")
    pid=$(sed -n 's/^pid \([0-9]*\) done.*/\1/p' <<<"$out")
    # One entry, under the target's pid.
    dump=$("$bpftime" --provider "$1" --json map dump "$(map_id "$1" calls)")
    if [[ $(wc -l <<<"$dump") -ne 1 ]] || [[ $(le "$(sed -E 's/.*"key":"([0-9a-f ]+)".*/\1/' <<<"$dump")") != "$pid" ]]; then
      echo "not one entry under pid $pid: $dump"
      return
    fi
    le "$(sed -E 's/.*"value":"([0-9a-f ]+)".*/\1/' <<<"$dump")"
  }
  ;;
readline)
  want="corpus line 0|corpus line 1|corpus line 2|corpus line 3|corpus line 4|"
  sets=()
  answer() {
    local rec text b
    run "$1" >/dev/null
    while read -r rec; do
      text=""
      for b in $rec; do
        [[ $b == 00 ]] && break
        text="$text$(printf "\\x$b")"
      done
      printf '%s|' "$text"
    done < <("$bpftime" --provider "$1" map events "$(map_id "$1" lines)" --count 5 --timeout 2)
  }
  ;;
usdt_tick)
  want="10 55 550"
  sets=()
  answer() { run "$1" >/dev/null && values "$1" ticks; }
  ;;
core_user)
  # tv_sec 1..8 and tv_nsec 1000..8000: CO-RE found tv_nsec after tv_sec.
  want="8 36 36000"
  sets=()
  answer() { run "$1" >/dev/null && values "$1" visits; }
  ;;
cgroup_ticks)
  mount=$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
  if [[ -z $mount ]] || ! mkdir "$mount/bpftime-corpus-$$" 2>/dev/null; then
    echo "SKIP: cannot create a cgroup (needs root and a mounted, writable cgroup2)"
    exit 0
  fi
  cg="$mount/bpftime-corpus-$$"
  # 30 ticks from a process in the cgroup, 30 from one outside.
  want="30 60"
  sets=()
  answer() {
    "$bpftime" --provider "$1" map update "$(map_id "$1" filter)" 0 "$cg" || return
    local cmd=("$target" cgroup)
    [[ $1 == user ]] && cmd=("$bpftime" start "$target" cgroup)
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "${cmd[@]}" >/dev/null
    run "$1" cgroup >/dev/null
    values "$1" ticks
  }
  ;;
options)
  # --set targ_kind=2 --set odd_only=true --set scale=10: values 1, 3 and 5 of kind 2.
  want="3 90"
  sets=(--set targ_kind=2 --set odd_only=true --set scale=10)
  answer() { run "$1" >/dev/null && values "$1" work; }
  ;;
kernel_funcs)
  sets=(--set targ_comm=corpus_target)
  # User space has no kernel functions: refused by name, nothing attached.
  expect user-refused 1 'program [0-9]+ sys_enter not attached: attach type tp_btf is attached by the kernel, not in user space; the kernel provider attaches it' -- \
    "$bpftime" --provider user load "$obj" "${sets[@]}" --attach
  check "user: no link made" test "$("$bpftime" --provider user list 2>/dev/null | grep -c ' link ')" -eq 0
  if ! kernel_usable; then
    echo "SKIP: the kernel refuses eBPF here"
    exit 0
  fi
  expect kernel-load 0 'link [0-9]+ \(target [0-9]+\) tp_btf sys_exit <- program [0-9]+ sys_exit' -- \
    "$bpftime" --provider kernel load "$obj" "${sets[@]}" --attach
  out=$("$bpftime" --provider kernel list)
  for t in 'tp_btf *sys_enter' 'tp_btf *sys_exit'; do
    check "kernel: $t listed" grep -Eq "$t" <<<"$out"
  done
  "$target" >/dev/null
  # [0] sys_enter [1] its CO-RE read of the tgid right [2] sys_exit: 7 uname calls each.
  got=$(values kernel seen)
  check "kernel: each program saw the 7 uname calls ($got)" test "$got" = "7 7 7"
  # The sys_enter link disabled detaches (its kernel link goes); enabled, it attaches again.
  tp_target=$(awk '$2 == "target" && $4 == "tp_btf" && $5 == "sys_enter" {print $1}' <<<"$out")
  tp_link=$(awk -v t="$tp_target" '$2 == "link" && index($0, "-> target " t ",") {print $1}' <<<"$out")
  expect disable 0 '' -- "$bpftime" --provider kernel disable "$tp_link"
  "$target" >/dev/null
  got=$(values kernel seen)
  check "kernel: the disabled sys_enter link saw nothing ($got)" test "$got" = "7 7 14"
  expect enable 0 '' -- "$bpftime" --provider kernel enable "$tp_link"
  "$target" >/dev/null
  got=$(values kernel seen)
  check "kernel: enabled again, it counts ($got)" test "$got" = "14 14 21"
  # A BTF-typed program attaches only where it was loaded for.
  prog=$(awk '$2 == "program" && $3 == "sys_enter" {print $1}' <<<"$out")
  expect tp-btf-elsewhere 1 'was loaded for tp_btf sys_enter; the kernel attaches it only there, not at tp_btf sys_exit' -- \
    "$bpftime" --provider kernel attach tp_btf "$prog" sys_exit
  expect kernel-reset 0 '' -- "$bpftime" --provider kernel reset
  check "reset: nothing left in bpffs" test ! -e "/sys/fs/bpf/$BPFTIME_SHM"
  # kprobes and kretprobes, where the kernel has kprobe events (CONFIG_KPROBES).
  kobj=$objects/kernel_kprobe.bpf.o
  if [[ ! -e /sys/bus/event_source/devices/kprobe/type ]]; then
    expect kprobe-none 1 'the kernel has no kprobe events' -- \
      "$bpftime" --provider kernel load "$kobj" "${sets[@]}" --attach
    echo "kprobe half skipped: this kernel has no kprobe events (CONFIG_KPROBES)"
  else
    expect kprobe-load 0 'link [0-9]+ \(target [0-9]+\) kretprobe __x64_sys_newuname <- program [0-9]+ uname_return' -- \
      "$bpftime" --provider kernel load "$kobj" "${sets[@]}" --attach
    "$target" >/dev/null
    got=$(values kernel seen)
    check "kernel: kprobe and kretprobe saw the 7 uname calls ($got)" test "$got" = "7 7"
    kprog=$("$bpftime" --provider kernel list | awk '$2 == "program" && $3 == "uname_kprobe" {print $1}')
    expect kprobe-unknown 1 'no probe point at bpftime_no_such_function' -- \
      "$bpftime" --provider kernel attach kprobe "$kprog" bpftime_no_such_function
  fi
  "$bpftime" --provider kernel reset >/dev/null 2>&1
  # fentry and fexit: BPF trampolines, which some kernels refuse (EPERM) even to root.
  fobj=$objects/kernel_fentry.bpf.o
  if fout=$("$bpftime" --provider kernel load "$fobj" "${sets[@]}" --attach 2>&1); then
    echo "ok   fentry-load"
    "$target" >/dev/null
    got=$(values kernel seen)
    check "kernel: fentry and fexit saw the 7 uname calls ($got)" test "$got" = "7 7"
  elif grep -q 'program uname_entry: the kernel verifier refused it (Operation not permitted' <<<"$fout"; then
    echo "fentry half skipped: this kernel refuses fentry programs: $fout"
  else
    echo "FAIL fentry-load: $fout"
    failures=$((failures + 1))
  fi
  finish
  exit
  ;;
*)
  echo "unknown tool $tool"
  exit 2
  ;;
esac

load user "${sets[@]}"
user_answer=$(answer user)
check "user: $tool reports the target's calls ($user_answer)" test "$user_answer" = "$want"
if kernel_usable; then
  if [[ $tool == options ]]; then
    # libbpf's objects take --set as bpftime's loader does: the same refusals, nothing loaded.
    expect kernel-set-unknown 1 "--set nope: .*options.bpf.o has no global variable of that name \(it has: targ_kind, odd_only, scale\)" -- \
      "$bpftime" --provider kernel load "$obj" --set nope=1
    expect kernel-set-bool 1 "--set odd_only \(_Bool in options.rodata\): a bool is true, false, 0 or 1" -- \
      "$bpftime" --provider kernel load "$obj" --set odd_only=2
    expect kernel-set-range 1 "--set targ_kind \(int in options.rodata\): 4294967296 does not fit in a signed 4-byte integer" -- \
      "$bpftime" --provider kernel load "$obj" --set targ_kind=4294967296
    listed=$("$bpftime" --provider kernel list 2>&1)
    check "kernel: refused loads left nothing: $listed" test "$(wc -l <<<"$listed")" -eq 1
  fi
  load kernel "${sets[@]}"
  kernel_answer=$(answer kernel)
  check "kernel: $tool reports the target's calls ($kernel_answer)" test "$kernel_answer" = "$want"
  check "both providers report the same" test "$kernel_answer" = "$user_answer"
fi
finish

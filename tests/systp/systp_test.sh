#!/usr/bin/env bash
# System call tracepoints hosted in user space by the agent, against systp_target (known
# getpid calls, raw `syscall` getppid calls, opens that succeed and fail, a fork and exec).
#   cli:    `bpftime load`/`attach` of sysopens.bpf.o (sys_enter_openat + sys_exit_openat, a
#           ring buffer read with `map events`) and raw_count.bpf.o (raw sys_enter/sys_exit
#           counters), the target under `bpftime start`; every refusal; links detached while
#           the target runs; then the same sysopens object on the kernel provider (skipped
#           with the reason where the kernel refuses eBPF), its records compared.
#   libbpf: the sysopens libbpf tool unchanged under `bpftime load` against the target under
#           `bpftime start`, and on the kernel against a plain target; lines compared.
# Usage: systp_test.sh BPFTIME TOOLS_DIR OBJECTS_DIR TARGET cli|libbpf
set -uo pipefail
bpftime=$1 tools=$2 objects=$3 target=$4 mode=$5
export BPFTIME_SHM=bpftime-systp-test-$$
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
getpids=1000 raws=77
sysopens_obj=$tools/gen/sysopens.bpf.o

if [[ ! -f $sysopens_obj ]]; then
  echo "SKIP: $sysopens_obj was not built (${BPFTIME_TOOLS_MISSING:-see the configure output})"
  exit 0
fi

# id_of KIND NAME < `load` output: the object's id.
id_of() { awk -v k="$1" -v n="$2" '$1 == k && $3 == n { print $2 }'; }

# decode_opens < `map events` lines: the sysopens records as the tool prints them.
decode_opens() {
  awk 'function b(i) { return (index("0123456789abcdef", substr($i, 1, 1)) - 1) * 16 + \
                              index("0123456789abcdef", substr($i, 2, 1)) - 1 }
       function u32(i) { return b(i) + b(i + 1) * 256 + b(i + 2) * 65536 + b(i + 3) * 16777216 }
       {
         pid = u32(1); flags = u32(5); if (flags >= 2147483648) flags -= 4294967296
         lo = u32(9); hi = u32(13)
         ret = hi == 4294967295 ? lo - 4294967296 : lo + hi * 4294967296
         path = ""
         for (i = 17; i <= NF && $i != "00"; i++) path = path sprintf("%c", b(i))
         printf "pid %d flags %d ret %d path %s\n", pid, flags, ret, path
       }'
}

# normalise < opens: without the pid, descriptors as "fd".
normalise() { awk '{ $2 = "PID"; if ($6 >= 0) $6 = "fd"; print }'; }

# expected_opens PID TARGET_OUTPUT: the lines sysopens prints for the target's opens.
expected_opens() {
  awk -v p="$1" -v d="$work" '$1 == "open" { printf "pid %d flags %d ret %d path %s/%s\n", p, $3, $4, d, $2 }' "$2"
}

# count PID NR: the raw_count counter of (PID, NR) in map $calls.
count() {
  local key
  key=$(printf 'hex:%02x%02x%02x%02x%02x%02x%02x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) \
    $((($1 >> 16) & 255)) $((($1 >> 24) & 255)) $(($2 & 255)) $((($2 >> 8) & 255)) \
    $((($2 >> 16) & 255)) $((($2 >> 24) & 255)))
  u map lookup "$calls" "$key" 2>/dev/null | le_value
}

run_cli() {
  : >"$work/exists"
  local out
  out=$(u load "$objects/raw_count.bpf.o") || { echo "FAIL load raw_count: $out"; exit 1; }
  count_enter=$(id_of program count_enter <<<"$out")
  count_exit=$(id_of program count_exit <<<"$out")
  count_all_enter=$(id_of program count_all_enter <<<"$out")
  count_all_exit=$(id_of program count_all_exit <<<"$out")
  calls=$(id_of map calls <<<"$out")
  out=$(u load "$sysopens_obj") || { echo "FAIL load sysopens: $out"; exit 1; }
  enter_openat=$(id_of program enter_openat <<<"$out")
  exit_openat=$(id_of program exit_openat <<<"$out")
  events=$(id_of map events <<<"$out")

  # What user space does not host, and programs of the wrong type.
  expect other-category 1 "sched:sched_switch: only the kernel hosts tracepoints of category 'sched'.*--provider kernel" -- \
    u attach tracepoint "$enter_openat" sched:sched_switch
  expect unknown-syscall 1 "no x86-64 system call named 'nosuchcall'" -- \
    u attach tracepoint "$enter_openat" syscalls:sys_enter_nosuchcall
  expect not-enter-or-exit 1 "expected sys_enter_NAME or sys_exit_NAME" -- \
    u attach tracepoint "$enter_openat" syscalls:openat
  expect no-colon 1 "expected syscalls:sys_enter_NAME" -- \
    u attach tracepoint "$enter_openat" sys_enter_openat
  expect other-raw 1 "user space hosts the raw tracepoints sys_enter and sys_exit only" -- \
    u attach raw_tracepoint "$count_enter" sched_switch
  expect raw-prog-on-tracepoint 1 "is a raw_tracepoint program; tracepoint targets take tracepoint programs" -- \
    u attach tracepoint "$count_enter" syscalls:sys_enter_getpid
  expect tp-prog-on-raw 1 "is a tracepoint program; raw_tracepoint targets take raw_tracepoint programs" -- \
    u attach raw_tracepoint "$enter_openat" sys_enter

  local l_enter l_exit l_open l_close
  l_enter=$(u attach raw_tracepoint "$count_enter" sys_enter | awk '{ print $2 }')
  l_exit=$(u attach raw_tracepoint "$count_exit" sys_exit | awk '{ print $2 }')
  l_open=$(u attach tracepoint "$enter_openat" syscalls:sys_enter_openat | awk '{ print $2 }')
  l_close=$(u attach tracepoint "$exit_openat" syscalls:sys_exit_openat | awk '{ print $2 }')
  # raw_syscalls:sys_enter/sys_exit, every system call with the tracefs layout (syscount's).
  local l_all_enter l_all_exit
  l_all_enter=$(u attach tracepoint "$count_all_enter" raw_syscalls:sys_enter | awk '{ print $2 }')
  l_all_exit=$(u attach tracepoint "$count_all_exit" raw_syscalls:sys_exit | awk '{ print $2 }')
  check attached test -n "$l_enter" -a -n "$l_exit" -a -n "$l_open" -a -n "$l_close" \
    -a -n "$l_all_enter" -a -n "$l_all_exit"

  "$bpftime" start "$target" "$work" $getpids $raws >"$work/target.out" 2>"$work/target.err" &
  local tpid_bg=$!
  wait_for_line "$work/target.out" '^pid [0-9]+ ready$' || return 1
  local tpid
  tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$work/target.out")
  wait_for_links "$tpid" 6 || return 1
  touch "$work/go"
  wait_for_line "$work/target.out" '^round 1 done' 60 || return 1

  # strace -c's expectations: the ready line's getpid and $getpids more; the raw `syscall`s.
  check "getpid-enters-$((getpids + 1))" test "$(count "$tpid" 39)" -eq $((getpids + 1))
  check "getpid-exits-$((getpids + 1))" test "$(count "$tpid" $((39 | 0x80000000)))" -eq $((getpids + 1))
  check "raw-syscall-getppid-$raws" test "$(count "$tpid" 110)" -eq $raws
  check "raw_syscalls-getpid-enters-$((getpids + 1))" \
    test "$(count "$tpid" $((39 | 0x40000000)))" -eq $((getpids + 1))
  check "raw_syscalls-getpid-exits-$((getpids + 1))" \
    test "$(count "$tpid" $((39 | 0x40000000 | 0x80000000)))" -eq $((getpids + 1))
  check "raw_syscalls-getppid-$raws" test "$(count "$tpid" $((110 | 0x40000000)))" -eq $raws
  check "openat-enters-6" test "$(count "$tpid" 257)" -eq 6
  check "pt_regs-match-the-context" test "$(count "$tpid" $((0xffffffff)))" -eq 0
  check "fork-seen-as-clone" test "$(count "$tpid" 56)" -ge 1
  check "fork-and-exec-work" grep -qx 'child exit 0' "$work/target.out"

  u map events "$events" --timeout 2 | decode_opens | awk -v p="$tpid" '$2 == p' >"$work/user.opens"
  expected_opens "$tpid" "$work/target.out" >"$work/want.opens"
  echo "--- opens seen in user space:"
  sed 's/^/  | /' "$work/user.opens"
  check "every-open-with-path-flags-and-return" diff "$work/want.opens" "$work/user.opens"
  check "missing-file-is-ENOENT" grep -q "ret -2 path $work/missing\$" "$work/user.opens"
  check "open-below-a-file-is-ENOTDIR" grep -q "ret -20 path $work/exists/below\$" "$work/user.opens"

  # Detaching the enter counter stops it; the exit counter goes on; the target keeps running.
  expect detach-enter 0 '' -- u destroy "$l_enter"
  wait_for_links "$tpid" 5
  touch "$work/go2"
  wait_for_line "$work/target.out" '^round 2 done$' 60
  wait_for_exit "$tpid_bg"
  check "target-exit-0" test "$exit_status" -eq 0
  check "detached-enter-stopped" test "$(count "$tpid" 39)" -eq $((getpids + 1))
  check "exit-still-counts" test "$(count "$tpid" $((39 | 0x80000000)))" -eq $((2 * getpids + 1))
  # The agent says which segment it follows (in the target and in the exec'd child), nothing else.
  check "no-agent-complaint" test -z "$(grep -v ': following segment ' "$work/target.err")"
  sed 's/^/  target stderr | /' "$work/target.err"

  # The same object on the kernel provider sees the same opens of a plain target.
  if ! out=$(k load "$sysopens_obj" 2>&1); then
    if grep -q 'needs root with CAP_BPF\|Operation not permitted' <<<"$out"; then
      echo "SKIP kernel comparison: the kernel refuses eBPF here: $out"
      return 0
    fi
    echo "FAIL kernel load: $out"
    failures=$((failures + 1))
    return 1
  fi
  local k_enter k_exit k_events
  k_enter=$(id_of program enter_openat <<<"$out")
  k_exit=$(id_of program exit_openat <<<"$out")
  k_events=$(id_of map events <<<"$out")
  expect kernel-attach-enter 0 '^link' -- k attach tracepoint "$k_enter" syscalls:sys_enter_openat
  expect kernel-attach-exit 0 '^link' -- k attach tracepoint "$k_exit" syscalls:sys_exit_openat
  rm -f "$work/go" "$work/go2" "$work/created"
  "$target" "$work" 10 1 >"$work/ktarget.out" 2>&1 &
  local kpid=$!
  wait_for_line "$work/ktarget.out" '^pid [0-9]+ ready$' || return 1
  # Every process's opens reach the kernel's program: the reader stops once the target is done.
  "$bpftime" --provider kernel map events "$k_events" >"$work/kernel.raw" 2>&1 &
  local reader=$!
  sleep 0.5
  touch "$work/go" "$work/go2"
  wait_for_exit "$kpid"
  sleep 1
  kill -TERM "$reader"
  wait_for_exit "$reader"
  # The kernel also sees the process start (the loader, the shell's redirections): the opens
  # of the target's own files are compared.
  decode_opens <"$work/kernel.raw" |
    awk -v p="$kpid" -v d="$work/" '$2 == p && index($8, d) == 1 && $8 !~ /\.out$/' >"$work/kernel.opens"
  expected_opens "$kpid" "$work/ktarget.out" >"$work/kwant.opens"
  echo "--- opens seen by the kernel:"
  sed 's/^/  | /' "$work/kernel.opens"
  check "kernel-sees-the-same-opens" diff "$work/kwant.opens" "$work/kernel.opens"
  # Descriptor numbers differ by the agent's own (the segment): compared as "fd".
  check "user-and-kernel-agree" diff <(normalise <"$work/user.opens") <(normalise <"$work/kernel.opens")
}

# run_tool WHERE: sysopens against a new target, on the kernel or through bpftime; leaves the
# target's pid in $tpid and the tool's lines in $work/WHERE.tool.
run_tool() {
  local where=$1 tout="$work/$1.tool" gout="$work/$1.target"
  local -a run_target=("$target") run_loader=()
  rm -f "$work/go" "$work/go2" "$work/created"
  : >"$work/exists"
  if [[ $where == bpftime ]]; then
    run_target=("$bpftime" start "$target")
    run_loader=("$bpftime" load)
  fi
  "${run_target[@]}" "$work" 10 1 >"$gout" 2>&1 &
  local target_pid=$!
  wait_for_line "$gout" '^pid [0-9]+ ready$' || return 1
  tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$gout")
  "${run_loader[@]}" "$tools/sysopens" -p "$tpid" >"$tout" 2>&1 &
  local tool_pid=$!
  for ((i = 0; i < 600; i++)); do
    grep -q 'Hit Ctrl-C to end' "$tout" && break
    kill -0 "$tool_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q 'Hit Ctrl-C to end' "$tout"; then
    kill -9 "$target_pid" "$tool_pid" 2>/dev/null
    if [[ $where == kernel ]] && grep -q 'Operation not permitted\|failed to load' "$tout"; then
      echo "SKIP kernel run: the kernel refuses eBPF here"
      return 2
    fi
    echo "FAIL $where: sysopens did not start:"
    sed 's/^/  | /' "$tout"
    failures=$((failures + 1))
    return 1
  fi
  [[ $where == bpftime ]] && { wait_for_links "$tpid" 2 || return 1; }
  touch "$work/go" "$work/go2"
  wait_for_exit "$target_pid"
  check "$where-target-exit-0" test "$exit_status" -eq 0
  expected_opens "$tpid" "$gout" >"$work/$where.want"
  for ((i = 0; i < 100; i++)); do
    [[ $(grep -c '^pid ' "$tout") -ge $(wc -l <"$work/$where.want") ]] && break
    sleep 0.05
  done
  kill -INT "$tool_pid"
  wait_for_exit "$tool_pid"
  check "$where-sysopens-exit-0-after-sigint" test "$exit_status" -eq 0
  echo "--- sysopens on $where:"
  sed 's/^/  | /' "$tout"
  grep '^pid ' "$tout" >"$work/$where.got"
  check "$where-every-open-of-the-target" diff "$work/$where.want" "$work/$where.got"
}

case $mode in
cli)
  run_cli
  ;;
libbpf)
  run_tool bpftime
  if run_tool kernel; then
    check "bpftime-and-kernel-agree" diff <(normalise <"$work/bpftime.got") \
      <(normalise <"$work/kernel.got")
  fi
  ;;
*)
  echo "usage: $0 BPFTIME TOOLS_DIR OBJECTS_DIR TARGET cli|libbpf"
  exit 2
  ;;
esac
finish

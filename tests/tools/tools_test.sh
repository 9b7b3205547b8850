#!/usr/bin/env bash
# The libbpf tools of examples/tools, unmodified, against tools_target, which makes a known
# number of calls once triggered: 100 mallocs of 12345 bytes, then tools_target_work(i, 10i,
# SLEEP) for i = 1..6 (SLEEP 1500 us for odd i, 6000 us for even i).
#   kernel:  each tool on the kernel (root with CAP_BPF; skipped otherwise), its output checked
#            against those calls;
#   bpftime: each tool under `bpftime load ./TOOL` with the target under `bpftime start`, its
#            output checked the same way and compared with the kernel's where the kernel runs
#            eBPF (skipped while the build has no bpf() interposer to preload).
# Usage: tools_test.sh BPFTIME TOOLS_DIR kernel|bpftime malloccount|funclat|rbevents
set -uo pipefail
bpftime=$1 tools=$2 mode=$3 tool=$4
target=$tools/tools_target
export BPFTIME_SHM=bpftime-tools-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib.sh"
mallocs=100 size=12345 calls=6

if [[ ! -x $tools/$tool ]]; then
  echo "SKIP: $tools/$tool was not built (${BPFTIME_TOOLS_MISSING:-see the configure output})"
  exit 0
fi

# Whether the kernel runs eBPF here: the tool itself says so when it cannot load.
kernel_refuses() {
  grep -q 'Operation not permitted\|failed to load the BPF skeleton: -1$' "$1"
}

# run_tool WHERE: runs the tool against a new target, on the kernel (WHERE=kernel) or through
# bpftime (WHERE=bpftime), stops it with SIGINT once the target is done and leaves its output
# in $work/WHERE.tool and the target's pid in $tpid. Returns 2 when the kernel refuses eBPF.
run_tool() {
  local where=$1 tout="$work/$1.tool" gout="$work/$1.target" trig="$work/$1.trigger"
  local -a run_target=("$target") run_loader=()
  if [[ $where == bpftime ]]; then
    run_target=("$bpftime" start "$target")
    run_loader=("$bpftime" load)
  fi
  "${run_target[@]}" "$trig" $mallocs $size $calls 1 >"$gout" 2>&1 &
  local target_pid=$!
  wait_for_line "$gout" '^pid [0-9]+ ready$' || return 1
  tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$gout")
  local -a args=(-p "$tpid")
  case $tool in
  funclat) args+=(-u "$target:tools_target_work") ;;
  rbevents) args+=("$target:tools_target_work") ;;
  esac
  "${run_loader[@]}" "$tools/$tool" "${args[@]}" >"$tout" 2>&1 &
  local tool_pid=$!
  for ((i = 0; i < 600; i++)); do
    grep -q 'Hit Ctrl-C to end' "$tout" && break
    kill -0 "$tool_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q 'Hit Ctrl-C to end' "$tout"; then
    kill -9 "$target_pid" "$tool_pid" 2>/dev/null
    wait "$tool_pid" 2>/dev/null
    if [[ $where == kernel ]] && kernel_refuses "$tout"; then
      return 2
    fi
    echo "FAIL $where: $tool did not start:"
    sed 's/^/  | /' "$tout"
    failures=$((failures + 1))
    return 1
  fi
  if [[ $where == bpftime ]]; then
    local links=1
    [[ $tool == funclat ]] && links=2
    wait_for_hosts "$tpid" $links || return 1
  fi
  touch "$trig.1"
  wait_for_line "$gout" '^round 1 done$' 60 || return 1
  wait_for_exit "$target_pid"
  check "$where-target-exit" test "$exit_status" -eq 0
  if [[ $tool == rbevents ]]; then
    # Stop once every record has been printed (or give up after 10 s).
    for ((i = 0; i < 200; i++)); do
      [[ $(grep -c '^pid ' "$tout") -ge $calls ]] && break
      sleep 0.05
    done
  fi
  kill -INT "$tool_pid"
  wait_for_exit "$tool_pid"
  check "$where-$tool-exit-status-after-sigint" test "$exit_status" -eq 0
  return 0
}

# check_output WHERE: what the tool printed matches the target's calls.
check_output() {
  local where=$1 out="$work/$1.tool"
  echo "--- $tool on $where:"
  sed 's/^/  | /' "$out"
  case $tool in
  malloccount)
    local n
    n=$(awk -v p="$tpid" -v s=$size '$1 == p && $2 == s { print $3 }' "$out")
    check "$where-marker-count-is-$mallocs" test "${n:-0}" -eq $mallocs
    # With -p only the target's rows are shown.
    check "$where-only-the-target" test -z "$(awk -v p="$tpid" \
      '$1 ~ /^[0-9]+$/ && $1 != p' "$out")"
    printf '%s\n' "${n:-0}" >"$work/$where.summary"
    ;;
  funclat)
    # Rows "LOW -> HIGH : COUNT |stars|", in microseconds.
    local total below fast slow
    total=$(awk '$2 == "->" { t += $5 } END { print t + 0 }' "$out")
    below=$(awk '$2 == "->" && $3 < 1500 { t += $5 } END { print t + 0 }' "$out")
    slow=$(awk '$2 == "->" && $1 >= 4096 { t += $5 } END { print t + 0 }' "$out")
    fast=$(awk '$2 == "->" && $1 >= 1024 && $3 < 4096 { t += $5 } END { print t + 0 }' "$out")
    check "$where-total-is-$calls" test "$total" -eq $calls
    check "$where-head-says-usecs" grep -q 'usecs *: count *distribution' "$out"
    # No call returns before its sleep: nothing under 1024 us, the three 6000 us calls at or
    # above 4096 us, the three 1500 us calls at or above 1024 us.
    check "$where-none-below-sleep" test "$below" -eq 0
    check "$where-slow-calls-slow" test "$slow" -ge 3
    check "$where-fast-calls-plausible" test $((fast + slow)) -eq $calls
    printf 'total %s\n' "$total" >"$work/$where.summary"
    ;;
  rbevents)
    local want="" i
    for ((i = 1; i <= calls; i++)); do
      want+="pid $tpid tid $tpid comm tools_target args $i $((10 * i)) $((i % 2 ? 1500 : 6000))"$'\n'
    done
    local got
    got=$(grep '^pid ' "$out")$'\n'
    check "$where-events-in-order" test "$got" == "$want"
    # Compared between runs with the pid left out.
    grep '^pid ' "$out" | sed "s/\b$tpid\b/PID/g" >"$work/$where.summary"
    ;;
  esac
}

case $mode in
kernel)
  run_tool kernel
  case $? in
  2)
    echo "SKIP: the kernel refuses eBPF here (root with CAP_BPF is needed):"
    sed 's/^/  | /' "$work/kernel.tool"
    exit 0
    ;;
  0) check_output kernel ;;
  esac
  ;;
bpftime)
  # Without the interposer library `bpftime load PROGRAM` has nothing to preload.
  if ! probe=$("$bpftime" load /bin/true 2>&1) && grep -q 'cannot find libbpftime_syscall_server' <<<"$probe"; then
    echo "SKIP: expected until the build has the bpf() interposer: $probe"
    exit 0
  fi
  if run_tool bpftime; then
    check_output bpftime
    run_tool kernel
    case $? in
    0)
      check_output kernel
      check "same-as-kernel" diff "$work/kernel.summary" "$work/bpftime.summary"
      ;;
    2) echo "note: the kernel refuses eBPF here; the output is not compared with it" ;;
    esac
  fi
  ;;
*)
  echo "usage: $0 BPFTIME TOOLS_DIR kernel|bpftime TOOL" >&2
  exit 2
  ;;
esac
finish

#!/usr/bin/env bash
# tp_btf programs through libbpf, which attaches them with BPF_LINK_CREATE and BPF_TRACE_RAW_TP:
# tpbtf_loader (libbpf called directly) under `bpftime load` counts the getpid() calls of
# systp_target under `bpftime start` at sys_enter and sys_exit; the same command on a plain
# raw_tp program is refused, and so is BPF_RAW_TRACEPOINT_OPEN naming a tp_btf program's
# tracepoint. Then the same loader on the kernel against
# the plain target (skipped where the kernel refuses eBPF): the same lines.
# Usage: tpbtf_test.sh BPFTIME OBJECTS_DIR TARGET LOADER
set -uo pipefail
bpftime=$1 objects=$2 target=$3 loader=$4
export BPFTIME_SHM=bpftime-systp-tpbtf-test-$$
work=$(mktemp -d)
cleanup() {
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../tools/lib.sh"
obj=$objects/tpbtf_count.bpf.o
getpids=25

# run WHERE: the target and the loader, in user space (bpftime) or on the kernel; the loader's
# output in $work/WHERE.loader. Returns 2 when the kernel refuses eBPF.
run() {
  local where=$1 gout=$work/$1.target lout=$work/$1.loader
  local run_target=("$target") run_loader=()
  rm -f "$work/go" "$work/go2"
  if [[ $where == bpftime ]]; then
    run_target=("$bpftime" start "$target")
    run_loader=("$bpftime" load)
  fi
  "${run_target[@]}" "$work" $getpids 1 >"$gout" 2>&1 &
  local target_pid=$!
  wait_for_line "$gout" '^pid [0-9]+ ready$' || return 1
  local tpid
  tpid=$(sed -n 's/^pid \([0-9]*\) ready$/\1/p' "$gout")
  "${run_loader[@]}" "$loader" "$obj" "$tpid" >"$lout" 2>&1 &
  local loader_pid=$!
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q '^attached$' "$lout" && break
    kill -0 "$loader_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q '^attached$' "$lout"; then
    kill -9 "$target_pid" "$loader_pid" 2>/dev/null
    if [[ $where == kernel ]] && grep -q 'Operation not permitted' "$lout"; then
      echo "SKIP kernel run: the kernel refuses eBPF here"
      return 2
    fi
    echo "FAIL $where: the loader did not attach:"
    sed 's/^/  | /' "$lout"
    failures=$((failures + 1))
    return 1
  fi
  if [[ $where == bpftime ]]; then
    for ((i = 0; i < 600; i++)); do
      [[ $("$bpftime" list 2>/dev/null | grep -c "running in pid $tpid\b") -eq 2 ]] && break
      sleep 0.05
    done
  fi
  touch "$work/go" "$work/go2"
  wait_for_exit "$target_pid"
  check "$where-target-exit-0" test "$exit_status" -eq 0
  kill -INT "$loader_pid"
  wait_for_exit "$loader_pid"
  check "$where-loader-exit-0" test "$exit_status" -eq 0
  echo "--- the loader on $where:"
  sed 's/^/  | /' "$lout"
  check "$where-every-getpid-at-enter-and-exit" \
    grep -qx "enters $((2 * getpids)) exits $((2 * getpids))" "$lout"
  check "$where-link-create-refuses-a-plain-raw-tp-program" \
    grep -q '^plain raw_tp link_create: [A-Z]' "$lout"
}

run bpftime
# libbpf falls back to BPF_RAW_TRACEPOINT_OPEN without a name, which the kernel answers EFAULT.
check bpftime-plain-raw-tp-is-EFAULT grep -qx 'plain raw_tp link_create: Bad address' \
  "$work/bpftime.loader"
check bpftime-names-what-to-use grep -q 'BPF_TRACE_RAW_TP takes a tp_btf program' \
  "$work/bpftime.loader"
check bpftime-named-open-of-tp-btf-is-EINVAL \
  grep -qx 'named raw_tracepoint_open of a tp_btf program: Invalid argument' "$work/bpftime.loader"
if run kernel; then
  check bpftime-and-kernel-agree diff <(grep '^enters\|^plain\|^named' "$work/bpftime.loader") \
    <(grep '^enters\|^plain\|^named' "$work/kernel.loader")
fi
finish

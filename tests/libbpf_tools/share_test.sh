#!/usr/bin/env bash
# How many of Debian's libbpf-tools load and run unchanged: each tool of the package started for a
# few seconds under `bpftime load TOOL` (its programs, maps and links in user space) and on the
# kernel as it is. A tool runs when it is still running at the end (or ended with status 0);
# otherwise the first line that says why (bpftime's or libbpf's) is its reason. Prints the share on
# each side and every refusal; fails when a tool known to run here no longer does, or a tool fails
# without saying why.
# Usage: share_test.sh BPFTIME
set -uo pipefail
bpftime=$1
seconds=${BPFTIME_SHARE_SECONDS:-3}
. "$(dirname "$0")/../lib.sh"
if ! dpkg -L libbpf-tools >/dev/null 2>&1; then
  echo "SKIP: Debian's libbpf-tools is missing (apt-get install libbpf-tools)"
  exit 0
fi
mapfile -t tools < <(dpkg -L libbpf-tools | grep '^/usr/sbin/' | sort)
# Tools that need an argument to do anything, and the one they get.
libc=$(ldd /bin/sh | awk '/libc\.so/ { print $3 }')
declare -A args=([funclatency]="$libc:malloc" [javagc]="-p $$" [ksnoop]="vfs_read" [fsdist]="-t ext4"
  [fsslower]="-t ext4")
# Tools that run under bpftime today: losing one is a regression.
must_run=(bashreadline funclatency gethostlatency opensnoop statsnoop syscount)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run_one SIDE TOOL: "run" or "fail<TAB>reason".
run_one() {
  local side=$1 tool=$2 name out rc
  name=$(basename "$tool")
  out=$work/$side.$name
  # shellcheck disable=SC2086
  if [[ $side == user ]]; then
    BPFTIME_SHM=bpftime-share-$$-$name timeout -s INT -k 5 "$seconds" \
      "$bpftime" load "$tool" ${args[$name]:-} >"$out" 2>&1
    rc=$?
    BPFTIME_SHM=bpftime-share-$$-$name "$bpftime" reset >/dev/null 2>&1
  else
    timeout -s INT -k 5 "$seconds" "$tool" ${args[$name]:-} >"$out" 2>&1
    rc=$?
  fi
  if ((rc == 124 || rc == 0)); then
    echo "run"
    return
  fi
  # Why: bpftime's first refusal that mattered (libbpf goes on without BPF_PROG_BIND_MAP, which
  # only ties .rodata to a program), else the first failure libbpf or the tool reports, else the
  # tool's last line.
  local why
  why=$(grep -v 'BPF_PROG_BIND_MAP' "$out" | grep -m1 -E '^bpftime: ')
  [[ -n $why ]] || why=$(grep -m1 -E '[Ff]ailed|[Ee]rror|must be|[Uu]sage' "$out")
  [[ -n $why ]] || why=$(grep -v '^$' "$out" | tail -1)
  printf 'fail\t%s\n' "${why:-status $rc, no reason given}"
}

declare -A result
for side in kernel user; do
  ran=0
  for tool in "${tools[@]}"; do
    name=$(basename "$tool")
    r=$(run_one "$side" "$tool")
    result[$side.$name]=$r
    [[ $r == run ]] && ran=$((ran + 1))
  done
  echo "$side: $ran of ${#tools[@]} tools run"
done
echo
echo "tools that run on the kernel and not under bpftime load, and why:"
for tool in "${tools[@]}"; do
  name=$(basename "$tool")
  if [[ ${result[kernel.$name]} == run && ${result[user.$name]} != run ]]; then
    printf '  %-15s %s\n' "$name" "${result[user.$name]#fail	}"
  fi
done
for name in "${must_run[@]}"; do
  check "$name runs under bpftime load (${result[user.$name]:-missing})" test "${result[user.$name]:-}" = run
done
for tool in "${tools[@]}"; do
  name=$(basename "$tool")
  if [[ ${result[user.$name]} == *"no reason given"* ]]; then
    check "$name says why it fails under bpftime load" false
  fi
done
finish

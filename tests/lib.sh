# Shared by the command-line test scripts: `expect` runs a command and checks its exit status
# and output, `check` checks a condition; both count failures in $failures.
failures=0

# expect NAME WANT_STATUS WANT_REGEX -- CMD...
expect() {
  local name=$1 want_status=$2 want=$3
  shift 4
  local out status
  out=$("$@" 2>&1)
  status=$?
  if [[ $status -ne $want_status ]] || ! grep -Eq -- "$want" <<<"$out"; then
    echo "FAIL $name: status $status (want $want_status), output:"
    sed 's/^/  | /' <<<"$out"
    echo "  wanted /$want/"
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

# check NAME CMD...: passes when CMD succeeds.
check() {
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}

# kernel_load_or_skip FILE: loads an ELF object through the kernel provider (k); exits 0 with
# SKIP where the kernel refuses eBPF (no root or no CAP_BPF), 1 on any other failure.
kernel_load_or_skip() {
  local out
  if ! out=$(k load "$1" 2>&1); then
    if grep -q 'needs root with CAP_BPF\|Operation not permitted' <<<"$out"; then
      echo "SKIP: the kernel refuses eBPF here: $out"
      exit 0
    fi
    echo "FAIL kernel load: $out"
    exit 1
  fi
}

# finish: prints the count and exits non-zero when something failed.
finish() {
  echo "$failures failed"
  [[ $failures -eq 0 ]]
}

# wait_for_links PID COUNT: until exactly COUNT links run in PID, as `$bpftime list` (the
# caller's bpftime command) says; at most 30 s.
wait_for_links() {
  local i n
  for ((i = 0; i < 600; i++)); do
    n=$("$bpftime" list 2>/dev/null | grep -c "running in pid $1\b")
    [[ $n -eq $2 ]] && return 0
    sleep 0.05
  done
  echo "FAIL pid $1 did not come to $2 running links"
  failures=$((failures + 1))
  return 1
}

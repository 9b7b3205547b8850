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

# finish: prints the count and exits non-zero when something failed.
finish() {
  echo "$failures failed"
  [[ $failures -eq 0 ]]
}

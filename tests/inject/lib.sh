# Shell functions the inject tests share; sourced after tests/lib.sh, with $bpftime set and
# $tout naming the target's output file when send is used.

# count: calls seen on entry (totals[0]) as a decimal number.
count() {
  local hex
  hex=$("$bpftime" "$@" --json map lookup 2 0 | sed -E 's/.*"value":"([0-9a-f ]+)".*/\1/')
  local -a b=($hex)
  echo $((16#${b[7]}${b[6]}${b[5]}${b[4]}${b[3]}${b[2]}${b[1]}${b[0]}))
}

# wait_for FILE REGEX: waits up to 20 s for a line of FILE to match.
wait_for() {
  for _ in $(seq 200); do
    grep -Eq -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for /$2/ in $1:"
  sed 's/^/  | /' "$1"
  return 1
}

# send N: the target makes N calls; waits until it says so (a new "done" line).
send() {
  local before
  before=$(grep -c '^done ' "$tout")
  echo "call $1" >&3
  for _ in $(seq 200); do
    [[ $(grep -c '^done ' "$tout") -gt $before ]] && return 0
    sleep 0.1
  done
  echo "timed out waiting for 'done $1' in $tout:"
  sed 's/^/  | /' "$tout"
  return 1
}

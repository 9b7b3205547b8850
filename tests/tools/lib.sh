# Shared by the tools' test scripts (after tests/lib.sh): programs started in the background
# with their output in files, waits that give up, and counters read from maps.

# wait_for_line FILE REGEX [SECONDS]: waits until FILE has a line matching REGEX.
wait_for_line() {
  local file=$1 regex=$2 limit=${3:-30}
  local i
  for ((i = 0; i < limit * 20; i++)); do
    grep -Eq -- "$regex" "$file" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "FAIL waited ${limit}s for /$regex/ in $file:"
  sed 's/^/  | /' "$file"
  failures=$((failures + 1))
  return 1
}

# wait_for_exit PID [SECONDS]: waits for a background child; kills it (-9) when it takes too
# long. Sets $exit_status.
wait_for_exit() {
  local pid=$1 limit=${2:-30}
  local i
  for ((i = 0; i < limit * 20; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      exit_status=$?
      return 0
    fi
    sleep 0.05
  done
  echo "FAIL process $pid still running after ${limit}s; killing it"
  kill -9 "$pid" 2>/dev/null
  wait "$pid"
  exit_status=$?
  failures=$((failures + 1))
  return 1
}

# wait_for_hosts PID COUNT [SECONDS]: waits until `bpftime list` shows COUNT links attached and
# running in PID (the agent there attached them).
wait_for_hosts() {
  local pid=$1 count=$2 limit=${3:-30}
  local i n
  for ((i = 0; i < limit * 20; i++)); do
    n=$("$bpftime" list 2>/dev/null | grep -c "attached and running in pid $pid\b")
    [[ $n -ge $count ]] && return 0
    sleep 0.05
  done
  echo "FAIL the agent in pid $pid did not attach $count links in ${limit}s:"
  "$bpftime" list 2>&1 | sed 's/^/  | /'
  failures=$((failures + 1))
  return 1
}

# le_value: the value of a `map lookup` line ("key: ..  value: 01 02 ..") as a decimal number.
le_value() {
  local bytes hex="" b
  bytes=$(sed -n 's/.*value: //p' | head -1)
  for b in $bytes; do hex="$b$hex"; done
  echo $((16#${hex:-0}))
}

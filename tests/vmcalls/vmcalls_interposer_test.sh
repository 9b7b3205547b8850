#!/usr/bin/env bash
# A tail-call dispatcher loaded by an unmodified libbpf loader under the interposer: the loader
# fills the program array with program fds, the store keeps program ids (a lookup gives them
# back, as the kernel's does), a `bpftime trigger` host runs the dispatcher; and libbpf's helper
# probe answers "no" for a helper bpftime lacks and "yes" for the ones it has.
# Usage: vmcalls_interposer_test.sh BPFTIME LIBRARY LOADER OBJECTS_DIR
set -uo pipefail
bpftime=$1 lib=$2 loader=$3 objects=$4
export BPFTIME_SHM=bpftime-vmcalls-interposer-test-$$
tmp=$(mktemp -d)
cleanup() {
  [[ -n ${LOADER_PID:-} ]] && kill "$LOADER_PID" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -f "/dev/shm/$BPFTIME_SHM" "/dev/shm/$BPFTIME_SHM.pins"
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"

want() {
  if grep -Eq -- "$2" <<<"$3"; then
    echo "ok   $1"
  else
    echo "FAIL $1: got:"
    sed 's/^/  | /' <<<"$3"
    echo "  wanted /$2/"
    failures=$((failures + 1))
  fi
}
coproc LOADER { LD_PRELOAD=$lib exec "$loader" 2>"$tmp/loader.err"; }
send() {
  local reply=""
  echo "$*" >&"${LOADER[1]}"
  IFS= read -r -t 60 reply <&"${LOADER[0]}" || reply="(no answer)"
  echo "$reply"
}
fd_of() { sed -nE 's/^fd=([0-9]+).*/\1/p' <<<"$1"; }
id_of() { "$bpftime" list | awk -v k="$1" -v n="$2" '$2 == k && $3 == n { print $1; exit }'; }
le32() { printf '%02x %02x %02x %02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }

want open-dispatch '^ok$' "$(send open "$objects/dispatch.bpf.o")"
handlers=$(fd_of "$(send map_fd handlers)")
choice=$(fd_of "$(send map_fd choice)")
for i in 1 2 3; do
  fd=$(fd_of "$(send prog_fd handler$i)")
  want "update-slot$i" '^ok$' "$(send update "$handlers" "$i" "$fd")"
done
want lookup-gives-id "^value=$(id_of program handler2)\$" "$(send lookup "$handlers" 2)"
want update-with-a-map-fd '^err=EINVAL$' "$(send update "$handlers" 0 "$choice")"
other=$(fd_of "$(send prog_fd other_type)")
want update-other-type '^err=EINVAL$' "$(send update "$handlers" 0 "$other")"
want other-type-named "program [0-9]+ \\(other_type\\) is a kprobe \\(type 2\\) program and cannot go into prog_array [0-9]+ \\(handlers\\)" "$(cat "$tmp/loader.err")"
want other-type-not-stored '^err=ENOENT$' "$(send lookup "$handlers" 0)"
want update-bad-fd '^err=EBADF$' "$(send update "$handlers" 0 9999)"
want update-outside '^err=E2BIG$' "$(send update "$handlers" 9 "$fd")"
want cli-lists-prog-array "prog_array key 4 value 4 max_entries 4" "$("$bpftime" list)"

dispatch=$(id_of program dispatch)
want attach "^link [0-9]+" "$("$bpftime" attach test "$dispatch" d 2>&1)"
run() { "$bpftime" trigger d --mem "$(le32 "$1") $(le32 "$2")" 2>&1; }
want tail-1 '^r0 = 0x69$' "$(run 1 5)"
want tail-2 '^r0 = 0xcd$' "$(run 2 5)"
want tail-3-then-1 '^r0 = 0x6e$' "$(run 3 5)"
want tail-empty '^r0 = 0x386$' "$(run 0 5)"
want update-choice '^ok$' "$(send update "$choice" 0 3)"
want tail-by-map '^r0 = 0x6e$' "$(run 255 5)"
want delete-slot '^ok$' "$(send delete "$handlers" 3)"
want tail-deleted '^r0 = 0x386$' "$(run 255 5)"

# BPF_F_LOCK: the loader reads and writes a pair guarded by the value's struct bpf_spin_lock
# while a `bpftime trigger` host increments it under the same lock; no copy is ever torn and
# the lock word is never copied either way.
want open-spin '^ok$' "$(send open "$objects/spin.bpf.o")"
counter=$(fd_of "$(send map_fd counter)")
counter_id=$(id_of map counter)
want attach-locked "^link [0-9]+" "$("$bpftime" attach test "$(id_of program locked_add)" locked 2>&1)"
"$bpftime" trigger locked --repeat 5000000 >/dev/null 2>&1 &
trig=$!
start=$("$bpftime" map lookup "$counter_id" 0)
for _ in $(seq 100); do
  [[ $("$bpftime" map lookup "$counter_id" 0) != "$start" ]] && break
  sleep 0.1
done
want locked-pairs '^torn=0 lockword=0 refused=0$' "$(send locked_pairs "$counter" 300000)"
want locked-batch '^torn=0 lockword=0 refused=0$' "$(send locked_pairs "$counter" 100000 batch)"
# Without BPF_F_LOCK a copy may be torn, as in Linux, but the lock word is never written or
# shown: the 0xdeadbeef each update carries would otherwise stop the program's lock.
want plain-pairs 'lockword=0 refused=0$' "$(send locked_pairs "$counter" 100000 plain)"
kill "$trig" 2>/dev/null
wait "$trig" 2>/dev/null
want locked-pairs-after '^torn=0 lockword=0 refused=0$' "$(send locked_pairs "$counter" 9)"
want lookup-lock-without-lock '^err=EINVAL$' "$(send lookup "$choice" 0 4)"
want update-lock-without-lock '^err=EINVAL$' "$(send update "$choice" 0 1 4)"
want batch-lock-without-lock '^torn=0 lockword=0 refused=1$' "$(send locked_pairs "$choice" 1 batch)"

# libbpf's helper probe: get_numa_node_id (42) is refused with the kernel's line, so "no".
want probe-missing '^supported=0$' "$(send probe_helper 42)"
want probe-present '^supported=1$' "$(send probe_helper 5)"
want probe-loop '^supported=1$' "$(send probe_helper 181)"

# A map type bpftime lacks is refused at creation, naming it.
want map-type-missing '^err=EINVAL$' "$(send map_create 31 user_rb 4 8 16)"
want map-type-named "map type 31 \\(user_ringbuf\\)" "$(cat "$tmp/loader.err")"

echo exit >&"${LOADER[1]}"
[[ -z ${LOADER_PID:-} ]] || wait "$LOADER_PID" 2>/dev/null
finish

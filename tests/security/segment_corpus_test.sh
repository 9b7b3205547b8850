#!/usr/bin/env bash
# Damaged segments through every reader: real segments (the example objects loaded, attached
# and run) with one field flipped at a time (header sizes and offsets, each slot's state, id,
# kind, extent and map spec, extent sizes, program counts, map storage headers, hash bucket
# links, ring-buffer positions and record lengths), each read by `bpftime list`, `bpftime map
# dump` of the first maps, a host (`bpftime trigger`) and the segment fuzzer's replay driver. Each
# must answer (a refusal is an answer) within its time: no crash, no hang.
# Usage: segment_corpus_test.sh BPFTIME EXAMPLES_DIR SEGMENT_REPLAY
set -uo pipefail
bpftime=$1 examples=$2 replay=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
export BPFTIME_SHM="bpftime-damaged-$$"
trap 'rm -rf "$work" "/dev/shm/$BPFTIME_SHM"' EXIT
"$here/make_segments.sh" "$bpftime" "$examples" "$work/real" || exit 1

u64() { od -An -tu8 -j "$2" -N8 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
# flip FILE OFFSET MASK OUT: a copy of FILE with byte OFFSET xor MASK.
flip() {
  cp "$1" "$4"
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\x%02x' $((b ^ $3)))" | dd of="$4" bs=1 seek="$2" conv=notrunc status=none
}

mkdir -p "$work/damaged"
n=0
damage() { # SEED OFFSET MASK
  n=$((n + 1))
  flip "$1" "$2" "$3" "$work/damaged/$(basename "$1")-$2-$3"
}
for seed in "$work"/real/*; do
  # Header: size, max_objects, table and heap offsets, heap size, slot size.
  for off in 16 18 28 30 32 40 42 48 50 68; do damage "$seed" $off 64; done
  table=$(u64 "$seed" 32)
  for i in $(seq 0 9); do
    slot=$((table + i * 768))
    [[ $(u32 "$seed" "$slot") == 2 ]] || continue
    # state, id, kind, extent (low and high bytes), map type, key, value, entries, ncpus.
    for f in 0 4 8 81 85 176 180 184 189 196 212 216; do damage "$seed" $((slot + f)) 64; done
    damage "$seed" $((slot + 80)) 64
    extent=$(u64 "$seed" $((slot + 80)))
    [[ $extent != 0 ]] || continue
    # The extent's size; a program's instruction and map counts or a map's storage header
    # (key size, entries, CPUs, hash count and free stack), its first bucket links and
    # ring-buffer record lengths, and a ring buffer's consumer and producer positions (each at
    # the start of its page) and its first record's length.
    for f in 1 5 65 66 68 70; do damage "$seed" $((extent + f)) 64; done
    for f in 80 88 96 168 172 192 199 256 384 385 387 388 392 4096 4103 8192 8199 12288; do
      damage "$seed" $((extent + 64 + f)) 128
    done
  done
done
echo "$n damaged segments"

status=0
run() { # what, then the command; exit 0 or 1 expected
  local rc
  timeout 20 "$@" >/dev/null 2>"$work/err"
  rc=$?
  if ((rc > 1)); then
    echo "FAIL ($rc): $current: $*" >&2
    tail -3 "$work/err" >&2
    status=1
  fi
}
# Every command on every third image (a process each); the replay below reads them all.
i=0
for image in "$work"/damaged/*; do
  i=$((i + 1))
  ((i % 3 == 0)) || continue
  current=$(basename "$image")
  cp "$image" "/dev/shm/$BPFTIME_SHM"
  chmod 600 "/dev/shm/$BPFTIME_SHM"
  run "$bpftime" list
  for id in 1 2; do run "$bpftime" map dump "$id"; done
  run "$bpftime" trigger hook1 --mem "05 00 00 00 00 00 00 00"
done
# The host library and every reader of the store at once, in one process.
if ! timeout 300 "$replay" "$work/damaged" >"$work/replay" 2>&1; then
  echo "FAIL: the segment fuzzer's replay" >&2
  tail -5 "$work/replay" >&2
  status=1
fi
# A hash entry whose chain link names itself: the walk of `map dump` would go round for ever; it
# stops past twice the map's capacity and says so. The counter's hash map (slot 0) holds key 5,
# the only entry in use: found as its record {next none, state in use and unlocked, key}, its
# index being the one bucket head that names an entry.
seed="$work/real/counter"
extent=$(u64 "$seed" $(($(u64 "$seed" 32) + 80)))
python3 - "$seed" "/dev/shm/$BPFTIME_SHM" $((extent + 64)) <<'PY' || status=1
import struct, sys
src, dst, storage = sys.argv[1], sys.argv[2], int(sys.argv[3])
img = bytearray(open(src, "rb").read())
max_entries = struct.unpack_from("<I", img, storage + 24)[0]
record = bytes.fromhex("ffffffff00000080" "05000000")
at = img.find(record, storage)
heads = [struct.unpack_from("<I", img, storage + 256 + 4 * i)[0] for i in range(max_entries)]
index = next(h for h in heads if h < max_entries)
if at < 0:
    sys.exit("FAIL: no hash entry for key 5 in the counter segment")
struct.pack_into("<I", img, at, index)
open(dst, "wb").write(img)
PY
chmod 600 "/dev/shm/$BPFTIME_SHM"
timeout 20 "$bpftime" map dump 1 >"$work/out" 2>"$work/err"
rc=$?
if ((rc != 1)) || ! grep -q 'map 1: the walk of its keys did not end after' "$work/err"; then
  echo "FAIL: map dump of a self-linked hash entry: status $rc" >&2
  cat "$work/err" >&2
  status=1
fi
# A damaged record is named by `list`, the others listed.
seed="$work/real/counter"
table=$(u64 "$seed" 32)
flip "$seed" $((table + 768 * 2 + 85)) 64 "/dev/shm/$BPFTIME_SHM"
out=$("$bpftime" list 2>"$work/err")
rc=$?
if ((rc != 1)) || ! grep -q 'object 3 (slot 2) is damaged: its extent offset' "$work/err" ||
  ! grep -q 'count_array' <<<"$out"; then
  echo "FAIL: list of a damaged program: status $rc" >&2
  cat "$work/err" >&2
  echo "$out" >&2
  status=1
fi
exit $status

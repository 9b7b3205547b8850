#!/usr/bin/env bash
# The bpf() interposer as a user runs it: libbpftime_syscall_server.so preloaded into a libbpf
# loader (test_loader.c, libbpf called directly), whose objects are the store's: the CLI sees
# and changes them, a target under `bpftime start` runs its uprobes, and the loader reads the
# counts, the ring buffer and the mmap'ed global data.
# Usage: interposer_test.sh BPFTIME LIBRARY LOADER BPF_OBJECTS_DIR PROBE_TARGET
set -uo pipefail
bpftime=$1 lib=$2 loader=$3 objects=$4 target=$5
export BPFTIME_SHM=bpftime-interposer-test-$$
export BPFTIME_AGENT_QUIET=1
pins="/dev/shm/$BPFTIME_SHM.pins"
tmp=$(mktemp -d)
cleanup() {
  [[ -n ${LOADER_PID:-} ]] && kill "$LOADER_PID" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  rm -f "/dev/shm/$BPFTIME_SHM" "$pins"
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"

# want NAME REGEX TEXT: TEXT matches REGEX.
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
# The loader, driven line by line: `send CMD` prints its one-line answer.
start_loader() {
  coproc LOADER { LD_PRELOAD=$lib exec "$loader" 2>"$tmp/loader.err"; }
}
send() {
  local reply=""
  echo "$*" >&"${LOADER[1]}"
  IFS= read -r -t 30 reply <&"${LOADER[0]}" || reply="(no answer)"
  echo "$reply"
}
stop_loader() {
  echo exit >&"${LOADER[1]}"
  [[ -z ${LOADER_PID:-} ]] || wait "$LOADER_PID" 2>/dev/null
}
fd_of() { sed -nE 's/^fd=([0-9]+).*/\1/p' <<<"$1"; }
list() { "$bpftime" list 2>&1; }

# --- maps: created by the loader, seen and changed by the CLI, and back ---
start_loader
r=$(send map_create 1 ip_counts 4 8 16)
want map-create '^fd=[0-9]+$' "$r"
hash=$(fd_of "$r")
want update "^ok$" "$(send update "$hash" 1 100)"
want lookup '^value=100$' "$(send lookup "$hash" 1)"
r=$(send info "$hash")
want info '^id=[0-9]+ type=1 name=ip_counts key=4 value=8 max=16 flags=0x0$' "$r"
hash_id=$(sed -nE 's/^id=([0-9]+).*/\1/p' <<<"$r")
want cli-lists-map "^ *$hash_id +map +ip_counts" "$(list)"
want cli-dumps-map 'key: 01 00 00 00  value: 64 00 00 00 00 00 00 00' "$("$bpftime" map dump "$hash_id")"
"$bpftime" map update "$hash_id" 2 200 >/dev/null
want cli-update-seen '^value=200$' "$(send lookup "$hash" 2)"
want next-first '^key=[12]$' "$(send next "$hash")"
want update-noexist '^err=EEXIST$' "$(send update "$hash" 1 5 1)"
want update-exist-missing '^err=ENOENT$' "$(send update "$hash" 9 5 2)"
want delete '^ok$' "$(send delete "$hash" 1)"
want lookup-deleted '^err=ENOENT$' "$(send lookup "$hash" 1)"
want next-after-delete '^key=2$' "$(send next "$hash")"
want next-end '^err=ENOENT$' "$(send next "$hash" 2)"

# Batches, as syscount and other tools read their maps: in key order across calls, ENOENT at
# the end; the deleting kind empties the map.
for k in 11 12 13 14 15; do send update "$hash" "$k" $((k * 10)) >/dev/null; done
pairs() { grep -oE '[0-9]+=[0-9]+' <<<"$1" | sort | tr '\n' ' ' | sed 's/ $//'; }
r=$(send batch "$hash" 2)
want batch-ends-enoent '\| end=ENOENT$' "$r"
want batch-two-per-call '^batch [0-9]+=[0-9]+ [0-9]+=[0-9]+ \|' "$r"
want batch-all-once '^11=110 12=120 13=130 14=140 15=150 2=200$' "$(pairs "$r")"
want batch-leaves-them '^value=110$' "$(send lookup "$hash" 11)"
r=$(send batch_delete "$hash" 4)
want batch-delete-all-once '^11=110 12=120 13=130 14=140 15=150 2=200$' "$(pairs "$r")"
want batch-delete-empties '^err=ENOENT$' "$(send next "$hash")"
want batch-count-zero '^batch \| end=EINVAL$' "$(send batch "$hash" 0)"

r=$(send map_create 2 settings 4 8 4)
arr=$(fd_of "$r")
want array-update '^ok$' "$(send update "$arr" 3 33)"
want array-lookup '^value=33$' "$(send lookup "$arr" 3)"
want array-out-of-range '^err=(E2BIG|ENOENT)$' "$(send update "$arr" 4 1)"
want array-delete-einval '^err=EINVAL$' "$(send delete "$arr" 3)"
want freeze '^ok$' "$(send freeze "$arr")"
want frozen-update-eperm '^err=EPERM$' "$(send update "$arr" 3 34)"
want frozen-still-reads '^value=33$' "$(send lookup "$arr" 3)"

r=$(send map_create 6 per_cpu 4 4 2)
pc=$(fd_of "$r")
want percpu-update '^ok$' "$(send update "$pc" 0 7)"

r=$(send map_create 10 lru_per_cpu 4 4 2)
lpc=$(fd_of "$r")
want lru-percpu-update '^ok$' "$(send update "$lpc" 0 7)"
send update "$lpc" 1 8 >/dev/null
want lru-percpu-full-evicts '^ok$' "$(send update "$lpc" 2 9)"
want lru-percpu-lookup '^value=9$' "$(send lookup "$lpc" 2)"
want lru-percpu-oldest-gone '^err=ENOENT$' "$(send lookup "$lpc" 0)"

# A stack trace map: bpf_get_stackid fills it; the loader reads and deletes, as in Linux.
r=$(send map_create 7 st 4 8 4)
st=$(fd_of "$r")
want stack-trace-empty '^err=ENOENT$' "$(send lookup "$st" 0)"
want stack-trace-update-einval '^err=EINVAL$' "$(send update "$st" 0 1)"

# Unsupported map types and bad specs: EINVAL, one line on stderr for the type.
want sockmap-einval '^err=EINVAL$' "$(send map_create 15 sm 4 4 4)"
want sockmap-again '^err=EINVAL$' "$(send map_create 15 sm 4 4 4)"
want bad-ringbuf-size '^err=EINVAL$' "$(send map_create 27 rb 0 0 1000)"
want bad-fd '^err=EBADF$' "$(send lookup 999 1)"

# --- queue, bloom filter and LPM trie from BTF definitions, through libbpf's map API ---
want keyless-open '^ok$' "$(send open "$objects/keyless_maps.bpf.o")"
map_id() { list | sed -nE "s/^ *([0-9]+) +map +$1 .*/\1/p"; }
queue_id=$(map_id queue) bloom_id=$(map_id bloom) routes_id=$(map_id routes)
want queue-push '^ok$' "$(send push queue 7)"
want queue-push-2 '^ok$' "$(send push queue 8)"
want queue-peek '^value=7$' "$(send peek queue)"
want cli-queue-pop '^value: 07 00 00 00 00 00 00 00$' "$("$bpftime" map pop "$queue_id" 2>&1)"
want queue-pop-after-cli '^value=8$' "$(send pop queue)"
want queue-pop-empty '^err=ENOENT$' "$(send pop queue)"
"$bpftime" map push "$queue_id" 9 >/dev/null
want cli-push-seen '^value=9$' "$(send pop queue)"
for v in 1 2 3 4; do send push queue "$v" >/dev/null; done
want queue-full '^err=E2BIG$' "$(send push queue 5)"
want queue-full-exist '^ok$' "$(send push queue 5 2)"
want cli-queue-dump '^value: 02 .*value: 03 .*value: 04 .*value: 05 .*4 values $' \
  "$("$bpftime" map dump "$queue_id" | tr '\n' ' ')"
want queue-oldest-dropped '^value=2$' "$(send pop queue)"
want bloom-push '^ok$' "$(send push bloom 42)"
want bloom-push-flags '^err=EINVAL$' "$(send push bloom 42 2)"
want bloom-maybe '^value=42$' "$(send peek bloom 42)"
want bloom-absent '^err=ENOENT$' "$(send peek bloom 43)"
want cli-bloom-maybe 'maybe present' "$("$bpftime" map peek "$bloom_id" 42 2>&1)"
want cli-bloom-absent 'the value is not in the bloom filter' \
  "$("$bpftime" map peek "$bloom_id" 43 2>&1)"
"$bpftime" map push "$bloom_id" 44 >/dev/null
want cli-bloom-push-seen '^value=44$' "$(send peek bloom 44)"
want lpm-update-8 '^ok$' "$(send lpm_update routes 8 10.0.0.0 8)"
want lpm-update-24 '^ok$' "$(send lpm_update routes 24 10.1.2.0 24)"
want lpm-update-33 '^err=EINVAL$' "$(send lpm_update routes 33 10.1.2.0 33)"
want lpm-longest '^value=24$' "$(send lpm_lookup routes 10.1.2.3)"
want lpm-shorter '^value=8$' "$(send lpm_lookup routes 10.9.9.9)"
want lpm-none '^err=ENOENT$' "$(send lpm_lookup routes 11.0.0.1)"
want cli-lpm-lookup 'value: 18 00 00 00 00 00 00 00' \
  "$("$bpftime" map lookup "$routes_id" hex:200000000a0102ff 2>&1)"
"$bpftime" map update "$routes_id" hex:100000000a010000 16 >/dev/null
want cli-lpm-update-seen '^value=16$' "$(send lpm_lookup routes 10.1.9.9)"
want cli-lpm-dump '3 entries' "$("$bpftime" map dump "$routes_id")"
want lpm-needs-no-prealloc '^err=EINVAL$' "$(send map_create 11 lpm 8 8 16)"
want lpm-create '^fd=[0-9]+$' "$(send map_create 11 lpm 8 8 16 1)"
want bloom-create-extra '^fd=[0-9]+$' "$(send map_create 30 bl 0 8 16 0 4)"
want bloom-bad-extra '^err=EINVAL$' "$(send map_create 30 bl 0 8 16 0 16)"
want stack-create '^fd=[0-9]+$' "$(send map_create 23 st2 0 8 4)"
want stack-with-key '^err=EINVAL$' "$(send map_create 23 st3 4 8 4)"

# --- programs ---
r=$(send prog_bad)
want prog-bad-einval '^err=EINVAL log=.*(jump|insn|instruction)' "$r"
r=$(send prog_ok)
want prog-ok '^fd=[0-9]+$' "$r"
prog=$(fd_of "$r")
want cli-lists-program '^ *[0-9]+ +program +test_prog' "$(list)"
want close-prog '^ok$' "$(send close "$prog")"
want closed-prog-destroyed '^$' "$(list | grep -E 'program +test_prog')"

# A program keeps the map it uses after the map's fd is closed; both go with the program.
r=$(send map_create 2 held_map 4 8 1)
held=$(fd_of "$r")
r=$(send prog_map "$held")
want prog-with-map '^fd=[0-9]+$' "$r"
held_prog=$(fd_of "$r")
send close "$held" >/dev/null
want map-held-by-program 'map +held_map' "$(list)"
send close "$held_prog" >/dev/null
want map-goes-with-program '^$' "$(list | grep -E 'held_map|test_prog')"

# --- fd lifetime: close of the last fd destroys; dup'ed fds keep the object ---
r=$(send map_create 1 dup_me 4 4 4)
d=$(fd_of "$r")
d2=$(fd_of "$(send dup "$d")")
d3=$(fd_of "$(send fcntl_dup "$d")")
want dup-fds "^[0-9]+ [0-9]+$" "$d2 $d3"
send close "$d" >/dev/null
send close "$d2" >/dev/null
want dup-keeps-alive 'map +dup_me' "$(list)"
want dup-fd-works '^ok$' "$(send update "$d3" 1 1)"
send close "$d3" >/dev/null
want last-close-destroys '^$' "$(list | grep dup_me)"

# --- pins: a pinned map survives the loader's exit, another loader gets it ---
r=$(send map_create 1 pinned_map 4 8 4)
pm=$(fd_of "$r")
send update "$pm" 5 55 >/dev/null
want pin '^ok$' "$(send pin "$pm" /sys/fs/bpf/bpftime-test-$$)"
want pin-taken '^err=EEXIST$' "$(send pin "$pm" /sys/fs/bpf/bpftime-test-$$)"

# --- fds that are not ours pass through ---
want pipe-passes '^pipe works$' "$(send pipe)"
if [[ $(id -u) -eq 0 ]]; then
  want kernel-perf-passes '^kernel perf counts$' "$(send kernel_perf)"
fi
stop_loader
errors=$(cat "$tmp/loader.err")
want unsupported-line-once '^bpftime: bpf\(BPF_MAP_CREATE\) of map type 15 \(sockmap\) is not supported in user space$' "$errors"
want unsupported-line-once-only '^1$' "$(grep -c 'sockmap' <<<"$errors")"
out=$(list)
want exit-destroys-unpinned '^$' "$(grep -E 'ip_counts|settings|per_cpu' <<<"$out")"
want pinned-survives 'map +pinned_map' "$out"
want pin-table "/sys/fs/bpf/bpftime-test-$$" "$(cat "$pins")"

r=$(printf 'get /sys/fs/bpf/bpftime-test-%s\nlookup $ 5\nget /sys/fs/bpf/nothing-%s\n' $$ $$ |
  LD_PRELOAD=$lib "$loader" 2>&1)
want second-loader-gets-pin '^fd=[0-9]+$' "$r"
want second-loader-reads '^value=55$' "$r"
want get-missing-enoent '^err=ENOENT$' "$r"
want pinned-survives-second-loader 'map +pinned_map' "$(list)"
"$bpftime" destroy "$(list | sed -nE 's/^ *([0-9]+) +map +pinned_map.*/\1/p')" >/dev/null

# --- uprobes on a target under `bpftime start`, a ring buffer, mmap'ed global data ---
start_loader
want open-object '^ok$' "$(send open "$objects/interposer_probe.bpf.o")"
want attach-uprobe '^link=0 fd=[0-9]+$' "$(send uprobe on_entry "$target" bpftime_target_add 0 7)"
want attach-uretprobe '^link=1 fd=[0-9]+$' "$(send uprobe on_return "$target" bpftime_target_add 1 3)"
out=$(list)
want cli-lists-links 'link +link +program [0-9]+ -> target [0-9]+, enabled, cookie 7' "$out"
want cli-lists-uretprobe-link 'cookie 3' "$out"
want idle-poll-in-time '^ms=(1[5-9][0-9]|[23][0-9]{2}) n=0$' "$(send idle_poll events 200)"
want epoll-mixed-set '^added=0 wrote=1 n=1 data=77$' "$(send epoll_mixed events)"
want target-runs '^calls 50 sum 1394$' "$("$bpftime" start "$target" 50 2>&1)"
counts=$(fd_of "$(send map_fd counts)")
want uprobe-count '^value=50$' "$(send lookup "$counts" 7)"
want uretprobe-count '^value=50$' "$(send lookup "$counts" 1003)"
want bss-through-mmap '^value=50$' "$(send bss .bss 0)"
want data-initial-value '^value=1$' "$(send bss .data 0)"
want bss-write-through-mmap '^ok$' "$(send bss_set .bss 0 4242)"
bss_id=$(list | sed -nE 's/^ *([0-9]+) +map +[^ ]*\.bss.*/\1/p')
want bss-write-reaches-map 'value: 92 10 00 00 00 00 00 00' "$("$bpftime" map dump "$bss_id")"
records=$(seq -s ' ' 1 50)
want ringbuf-in-order "^record $records count=50$" "$(send ringbuf events 50 5000)"
want detach '^ok$' "$(send detach 0)"
want target-runs-detached '^calls 10 sum' "$("$bpftime" start "$target" 10 2>&1)"
want detached-count-stays '^value=50$' "$(send lookup "$counts" 7)"
want uretprobe-still-counts '^value=60$' "$(send lookup "$counts" 1003)"
prog=$(fd_of "$(send prog_fd on_entry)")
if [[ $(id -u) -eq 0 ]]; then
  r=$(send kernel_perf "$prog")
  want kernel-perf-set-bpf '^kernel perf counts$' "$r"
  want kernel-perf-set-bpf-eopnotsupp '^err=EOPNOTSUPP$' "$(IFS= read -r -t 10 x <&"${LOADER[0]}"; echo "$x")"
  want kernel-perf-link-eopnotsupp '^err=EOPNOTSUPP$' "$(IFS= read -r -t 10 x <&"${LOADER[0]}"; echo "$x")"
fi
stop_loader
want exit-destroys-object '^$' "$(list | grep -E 'counts|on_entry|link')"
# libbpf bumps RLIMIT_MEMLOCK when its memcg probe (a program calling ktime_get_coarse_ns)
# fails; without CAP_SYS_RESOURCE that bump fails with a warning that changes nothing here.
want no-unexpected-errors '^$' \
  "$(grep -v 'not supported in user space\|kernel perf event\|RLIMIT_MEMLOCK' "$tmp/loader.err")"

# --- perf_buffer: bpf_perf_event_output in the target, perf_buffer__poll in the loader ---
start_loader
want perf-open-object '^ok$' "$(send open "$objects/perf_probe.bpf.o")"
r=$(send info "$(fd_of "$(send map_fd samples)")")
want perf-array-one-slot-a-cpu "^id=[0-9]+ type=4 name=samples key=4 value=4 max=$(nproc --all) " "$r"
want perf-attach '^link=0 fd=[0-9]+$' "$(send uprobe on_call "$target" bpftime_target_add 0 0)"
want perfbuf-open '^ok$' "$(send perfbuf_open samples 8)"
want cli-lists-perf-rings 'map +perf_cpu0' "$(list)"
samples_id=$(list | sed -nE 's/^ *([0-9]+) +map +samples .*/\1/p')
want cli-events-busy-while-loader-reads 'slot 0 is read already \(perf ring [0-9]+' \
  "$("$bpftime" map events "$samples_id" --timeout 1 2>&1)"
want cli-events-busy-leaves-loader-rings 'map +perf_cpu0' "$(list)"
want target-runs-perf '^calls 50 sum 1394$' "$("$bpftime" start "$target" 50 2>&1)"
want perfbuf-samples "^perf $records count=50 lost=0$" "$(send perfbuf_poll 50 5000)"
want perf-sample-rc '^value=0$' "$(send bss .data 16)"
want perf-out-of-range-e2big '^value=18446744073709551609$' "$(send bss .data 0)"
want perf-empty-slot-enoent '^value=18446744073709551614$' "$(send bss .data 8)"
want perfbuf-idle '^perf count=0 lost=0$' "$(send perfbuf_poll 1 300)"
want perfbuf-free '^ok$' "$(send perfbuf_free)"
want perf-rings-go-with-events '^$' "$(list | grep perf_cpu)"
want target-runs-without-reader '^calls 5 sum' "$("$bpftime" start "$target" 5 2>&1)"
want perf-no-reader-enoent '^value=18446744073709551614$' "$(send bss .data 16)"
# `bpftime map events` as the perf event array's reader instead of the loader.
"$bpftime" map events "$samples_id" --count 5 --timeout 20 >"$tmp/events.out" 2>&1 &
events_pid=$!
for ((i = 0; i < 100; i++)); do
  list | grep -q 'perf_cpu0' && break
  sleep 0.05
done
want target-runs-cli-reader '^calls 5 sum' "$("$bpftime" start "$target" 5 2>&1)"
wait "$events_pid"
want cli-events-exit '^0$' "$?"
# Raw data padded as the kernel pads it: 8 bytes of value, 4 of padding.
want cli-events-samples "^$(for v in 01 02 03 04 05; do printf '%s 00 00 00 00 00 00 00 00 00 00 00 ' $v; done)\$" \
  "$(sort "$tmp/events.out" | tr '\n' ' ')"
want cli-events-releases-slots '^$' "$(list | grep perf_cpu)"
data_id=$(list | sed -nE 's/^ *([0-9]+) +map +[^ ]*\.data .*/\1/p')
want cli-events-other-map 'is a array; `map events` is for ring buffers and perf event arrays' \
  "$("$bpftime" map events "$data_id" 2>&1)"
want perf-bad-uses '^pfd=ok update-before-mmap=EINVAL mmap-3-pages=EINVAL lookup=524 map-fd-as-value=EINVAL sample-time=EINVAL$' \
  "$(send perf_bad unused)"
stop_loader
want perf-exit-destroys '^$' "$(list | grep -E 'samples|on_call|perf_cpu')"
errors=$(cat "$tmp/loader.err")
want perf-says-mmap-first 'added to a perf event array before it is mmap.ed' "$errors"
want perf-says-raw-only 'only PERF_SAMPLE_RAW' "$errors"
want perf-no-unexpected-errors '^$' \
  "$(grep -v 'mmap.ed\|PERF_SAMPLE_RAW\|RLIMIT_MEMLOCK' <<<"$errors")"
finish

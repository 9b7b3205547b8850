#!/usr/bin/env bash
# USDT probes as users attach them: usdt_target's probes of 0, 2 and 6 arguments (registers,
# memory, a constant; signed and unsigned of 1 to 8 bytes) and a probe behind a semaphore, read
# by usdt_args.bpf.o through libbpf's usdt.bpf.h. The same values must come out through the
# command line (`bpftime attach usdt` + `bpftime start`), through a libbpf loader under
# `bpftime load` and through the kernel's uprobes; the semaphore is counted up while a probe is
# attached and down again when it goes; bad targets are refused with their reason.
# Usage: usdt_test.sh cli|loader BPFTIME OBJECTS_DIR TARGET BAD_TARGET LOADER
# (cli: the command line in user space and through the kernel provider; loader: the libbpf
# loader under `bpftime load`, and the same loader on the kernel)
set -uo pipefail
mode=$1 bpftime=$2 objects=$3 target=$4 bad=$5 loader=$6
export BPFTIME_SHM=bpftime-usdt-test-$mode-$$
export BPFTIME_AGENT_QUIET=1
# The gated program's section names the target by name, found in $PATH.
export PATH="$(dirname "$target"):$PATH"
obj=$objects/usdt_args.bpf.o
tmp=$(mktemp -d)
cleanup() {
  [[ -n ${LOADER_PID:-} ]] && kill "$LOADER_PID" 2>/dev/null
  [[ -n ${BG:-} ]] && kill "$BG" 2>/dev/null
  "$bpftime" reset --provider user >/dev/null 2>&1
  "$bpftime" reset --provider kernel >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/../lib.sh"

rounds=100
cookie=12586014 # 0xc00c1e, as the loader passes it
u() { printf '%u' "$1"; }
# What usdt_args.bpf.o's seen map holds after ROUNDS calls of every probe (see the program).
want_seen="seen $rounds 0 $rounds 2 $(u -42) 18364758544493064720 $rounds 6 $(u -7) 250 $(u -1234) \
65000 $(u -100000) $(u -5000000000) $cookie $(u -2) $rounds $((3 * (rounds - 1)))"

same() { # NAME WANT GOT
  if [[ $2 == "$3" ]]; then
    echo "ok   $1"
  else
    printf 'FAIL %s:\n  got  %s\n  want %s\n' "$1" "$3" "$2"
    failures=$((failures + 1))
  fi
}
id_of() { "$@" list 2>/dev/null | sed -nE "s/^ *([0-9]+) +$KIND +$NAME( .*)?$/\1/p" | head -1; }
# seen_of PROVIDER_ARGS...: the seen map's values as one line, like the loader's dump.
seen_of() {
  local id line v i
  id=$(KIND=map NAME=seen id_of "$bpftime" "$@")
  line=seen
  while read -r -a b; do
    v=0
    for ((i = 7; i >= 0; i--)); do v=$(((v << 8) | 0x${b[i]})); done
    line+=" $(u $v)"
  done < <("$bpftime" "$@" map dump "$id" | sed -nE 's/^key: .*value: (.*)$/\1/p')
  echo "$line"
}
# semaphore_check LABEL STOP_CMD... : a target waits for its gated probe's semaphore to be
# counted up, then STOP_CMD detaches the probe and the target sees it back at 0.
semaphore_check() {
  local label=$1 run=() i
  shift
  [[ $label == kernel* ]] && run=("$target") || run=("$bpftime" start "$target")
  "${run[@]}" --semaphore >"$tmp/sem" 2>&1 &
  BG=$!
  for ((i = 0; i < 200; i++)); do
    grep -q 'semaphore on' "$tmp/sem" && break
    sleep 0.05
  done
  "$@" >/dev/null
  wait "$BG"
  local status=$?
  BG=
  same "$label-semaphore-on-then-off" "semaphore on
semaphore off 0" "$(cat "$tmp/sem") $status"
}

# scenario PROVIDER_ARGS...: loads the object and attaches every probe with `attach usdt`.
attach_all() {
  local p=("$@") label=${*:-user} prog
  expect "$label-load" 0 'usdt_six' -- "$bpftime" "${p[@]}" load "$obj"
  for probe in zero two six; do
    prog=$(KIND=program NAME=usdt_$probe id_of "$bpftime" "${p[@]}")
    local extra=()
    [[ $probe == six ]] && extra=(--cookie "$cookie")
    expect "$label-attach-$probe" 0 '^link [0-9]+ \(target [0-9]+\) at 0x[0-9a-f]+, spec [0-9]+$' -- \
      "$bpftime" "${p[@]}" attach usdt "$prog" "$target:bpftime_test:$probe" "${extra[@]}"
  done
  # No ARGS: the program's section usdt/usdt_target:bpftime_test:gated names the probe.
  prog=$(KIND=program NAME=usdt_gated id_of "$bpftime" "${p[@]}")
  out=$("$bpftime" "${p[@]}" attach usdt "$prog" 2>&1)
  same "$label-attach-by-section" 1 "$(grep -cE '^link [0-9]+ ' <<<"$out")"
  GATED_LINK=$(sed -nE 's/^link ([0-9]+) .*/\1/p' <<<"$out")
}

# run_loader LABEL [WRAPPER...]: the libbpf loader (under WRAPPER), the target fired, the values
# the loader reads back, and the gated probe's semaphore when the loader destroys its link.
run_loader() {
  local label=$1
  shift
  coproc LOADER { exec "$@" "$loader" "$obj" "$target" 2>"$tmp/loader.err"; }
  IFS= read -r -t 60 ready <&"${LOADER[0]}" || ready="(no answer: $(cat "$tmp/loader.err"))"
  same "$label-attached" "attached 4" "$ready"
  local run=("$target")
  [[ $label == loader ]] && run=("$bpftime" start "$target")
  expect "$label-target" 0 "^gated $rounds$" -- "${run[@]}" "$rounds"
  echo dump >&"${LOADER[1]}"
  IFS= read -r -t 30 loader_seen <&"${LOADER[0]}"
  same "$label-values" "$want_seen" "$loader_seen"
  semaphore_check "$label" eval 'echo "detach usdt_gated" >&"${LOADER[1]}"; read -r -t 30 _ <&"${LOADER[0]}"'
  echo exit >&"${LOADER[1]}"
  [[ -z ${LOADER_PID:-} ]] || wait "$LOADER_PID" 2>/dev/null
  LOADER_PID=
}

if [[ $mode == loader ]]; then
  run_loader loader "$bpftime" load
  if ! out=$("$bpftime" --provider kernel load "$obj" 2>&1); then
    echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF): $out"
  else
    "$bpftime" reset --provider kernel >/dev/null 2>&1
    run_loader kernel-loader
  fi
  finish
  exit
fi

# --- the command line, in user space ---
attach_all
expect user-target 0 "^fired $rounds: two -42 18364758544493064720 six -7 250 -1234 65000 -100000 -5000000000
gated $rounds$" -- "$bpftime" start "$target" "$rounds"
user_seen=$(seen_of)
same user-values "$want_seen" "$user_seen"
expect user-list-shows-semaphore 0 "uprobe $target:0x[0-9a-f]+\(0x[0-9a-f]+\)" -- "$bpftime" list
semaphore_check user "$bpftime" disable "$GATED_LINK"
expect user-no-tracer-no-probe 0 '^gated 0$' -- "$bpftime" start "$target" 3

# Bad targets, each with its reason.
six=$(KIND=program NAME=usdt_six id_of "$bpftime")
expect no-such-probe 1 "has no USDT probe bpftime_test:nope \(its probes: bpftime_test:zero, bpftime_test:two, bpftime_test:six, bpftime_test:gated\)" -- \
  "$bpftime" attach usdt "$six" "$target:bpftime_test:nope"
expect no-such-provider 1 "has no USDT probe other:six" -- \
  "$bpftime" attach usdt "$six" "$target:other:six"
expect binary-without-notes 1 "has no USDT probe a:b \(it has no .note.stapsdt notes at all\)" -- \
  "$bpftime" attach usdt "$six" "$bpftime:a:b"
expect malformed-arg-spec 1 "bpftime_test:bad: the site at 0x[0-9a-f]+ \('-4@%edi 3@%esi'\): argument 2 '3@%esi': size 3 is not 1, 2, 4 or 8 bytes" -- \
  "$bpftime" attach usdt "$six" "$bad:bpftime_test:bad"
expect bad-syntax 1 "expected BINARY:PROVIDER:NAME" -- "$bpftime" attach usdt "$six" "$target:six"
expect no-such-binary 1 "nope-binary: not found" -- "$bpftime" attach usdt "$six" "nope-binary:a:b"
"$bpftime" load "$objects/usdt_plain.bpf.o" >/dev/null
plain=$(KIND=program NAME=usdt_plain id_of "$bpftime")
expect program-without-specs-map 1 "program $plain \(usdt_plain\) does not use the __bpf_usdt_specs map: a USDT program reads its arguments through libbpf's usdt.bpf.h \(bpf_usdt_arg\)" -- \
  "$bpftime" attach usdt "$plain" "$target:bpftime_test:zero"
zero_links=$("$bpftime" list | grep -c ' link ')
expect no-section-no-args 1 "attach usdt needs BINARY:PROVIDER:NAME \(program $six has no usdt/BINARY:PROVIDER:NAME section\)" -- \
  "$bpftime" attach usdt "$six"
same refusals-leave-nothing "$zero_links" "$("$bpftime" list | grep -c ' link ')"
expect json-output 0 '^\[\{"link":[0-9]+,"target":[0-9]+,"address":[0-9]+,"spec":[0-9]+\}\]$' -- \
  "$bpftime" --json attach usdt "$six" "$target:bpftime_test:zero"
"$bpftime" reset >/dev/null

# --- the same object and commands through the kernel's uprobes ---
if ! out=$("$bpftime" --provider kernel load "$obj" 2>&1); then
  echo "SKIP kernel half: the kernel refuses eBPF here (needs root with CAP_BPF): $out"
  finish
  exit
fi
"$bpftime" reset --provider kernel >/dev/null 2>&1
attach_all --provider kernel
expect kernel-target 0 "^gated $rounds$" -- "$target" "$rounds"
same kernel-values "$want_seen" "$(seen_of --provider kernel)"
semaphore_check kernel "$bpftime" --provider kernel disable "$GATED_LINK"
finish

#!/usr/bin/env bash
# The bpftime command line as a user runs it: output and exit status of each command.
# Usage: cli_test.sh BPFTIME SOURCE_DIR CONFORMANCE_DIR
set -uo pipefail
bpftime=$1 src=$2 conf=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib.sh"

cat >"$tmp/add.s" <<'ASM'
# r0 = the two input words added
ldxw %r0, [%r1]
ldxw %r2, [%r1+4]
add32 %r0, %r2
exit
ASM
expect run-asm 0 '^r0 = 0x3$' -- "$bpftime" run --mem "01 00 00 00 02 00 00 00" "$tmp/add.s"
expect run-engine 0 '^r0 = 0x3$' -- "$bpftime" run --engine interp --mem 0100000002000000 "$tmp/add.s"
printf '\x05\x00\x00\x00\x07\x00\x00\x00' >"$tmp/mem.bin"
expect run-mem-file 0 '^r0 = 0xc$' -- "$bpftime" run --mem-file "$tmp/mem.bin" "$tmp/add.s"
expect run-repeat 0 'mean [0-9.]+ ns per run over 1000 runs' -- \
  "$bpftime" run --repeat 1000 --mem 0100000002000000 "$tmp/add.s"
expect run-out-of-bounds 1 'instruction 1 \(ldxw %r2, \[%r1\+4\]\): read of 4 bytes .* outside' -- \
  "$bpftime" run --mem "01 00 00 00" "$tmp/add.s"
expect run-bad-hex 1 '--mem: .*not a hex digit' -- "$bpftime" run --mem "zz" "$tmp/add.s"
expect run-missing-file 1 'nonexistent.s: No such file' -- "$bpftime" run "$tmp/nonexistent.s"
expect run-unknown-engine 1 "unknown engine 'fast'" -- "$bpftime" run --engine fast "$tmp/add.s"
expect run-jit 0 '^r0 = 0x3$' -- "$bpftime" run --engine jit --mem 0100000002000000 "$tmp/add.s"
expect run-jit-unchecked 0 '^r0 = 0x3$' -- \
  "$bpftime" run --engine jit --unchecked --mem 0100000002000000 "$tmp/add.s"
expect run-jit-out-of-bounds 1 'instruction 1 \(ldxw %r2, \[%r1\+4\]\): read of 4 bytes .* outside' -- \
  "$bpftime" run --engine jit --mem "01 00 00 00" "$tmp/add.s"

printf 'mov %%r0, 0\nloop:\nja loop\n' >"$tmp/loop.s"
expect run-budget 1 'instruction budget of 5000 is exhausted' -- \
  "$bpftime" run --budget 5000 "$tmp/loop.s"
expect run-budget-interp 1 'instruction budget of 5000 is exhausted' -- \
  "$bpftime" run --engine interp --budget 5000 "$tmp/loop.s"

printf 'mov %%r10, 1\nexit\n' >"$tmp/r10.s"
expect run-refused 1 'instruction 0 \(mov %r10, 1\): r10 is the read-only frame pointer' -- \
  "$bpftime" run "$tmp/r10.s"
printf 'frob %%r0\nexit\n' >"$tmp/bad.s"
expect run-bad-asm 1 'line 1' -- "$bpftime" run "$tmp/bad.s"

# Raw instruction bytes: an unknown opcode, then mov r0, 7; exit.
printf '\xff\x00\x00\x00\x00\x00\x00\x00' >"$tmp/bad.bin"
expect run-bad-opcode 1 'instruction 0 .*unknown opcode 0xff' -- "$bpftime" run "$tmp/bad.bin"
printf '\xb7\x00\x00\x00\x07\x00\x00\x00\x95\x00\x00\x00\x00\x00\x00\x00' >"$tmp/seven.bin"
expect run-raw 0 '^r0 = 0x7$' -- "$bpftime" run "$tmp/seven.bin"
printf '\xb7\x00\x00' >"$tmp/short.bin"
expect run-partial 1 'not a whole number of 8-byte instructions' -- "$bpftime" run "$tmp/short.bin"
expect asm-roundtrip 0 '^ldxw %r0, \[%r1\]$' -- \
  bash -c "'$bpftime' asm '$tmp/add.s' -o '$tmp/add.bin' && '$bpftime' disasm '$tmp/add.bin'"
expect disasm-raw 0 '^mov %r0, 7$' -- "$bpftime" disasm "$tmp/seven.bin"
expect disasm-asm 0 'ldxw %r2, \[%r1\+4\]' -- "$bpftime" disasm "$tmp/add.s"
expect disasm-numbered 0 '^ +3: exit$' -- "$bpftime" disasm --numbered "$tmp/add.s"
expect disasm-invalid 0 '^\.invalid 0xff' -- "$bpftime" disasm "$tmp/bad.bin"

if [[ -d $conf ]]; then
  expect conformance-pass 0 '^PASS ldxb$' -- "$bpftime" conformance "$conf/ldxb.data" "$conf/lddw.data"
  expect conformance-summary 0 '^2 passed, 0 failed, 0 skipped$' -- \
    "$bpftime" conformance --engine interp "$conf/ldxb.data" "$conf/lddw.data"
  expect run-conformance-file 0 '^r0 = 0x11$' -- "$bpftime" run "$conf/ldxb.data"
  expect conformance-jit 0 '^1 passed, 0 failed, 0 skipped$' -- \
    "$bpftime" conformance --engine jit "$conf/ldxb.data"
else
  echo "skip conformance CLI checks: $conf is absent"
fi
sed 's/^0x11$/0x12/' >"$tmp/wrong.data" <<'DATA'
-- asm
ldxb %r0, [%r1+2]
exit
-- mem
aa bb 11 cc dd
-- result
0x11
DATA
expect conformance-fail 1 '^FAIL wrong: (baseline tier: )?expected r0 = 0x12, got 0x11$' -- \
  "$bpftime" conformance "$tmp/wrong.data"
expect conformance-fail-summary 1 '^0 passed, 1 failed, 0 skipped$' -- \
  "$bpftime" conformance "$tmp/wrong.data"
printf -- '-- asm\nexit\n' >"$tmp/noresult.data"
expect conformance-malformed 1 "^FAIL .*no '-- result' or '-- error' section" -- \
  "$bpftime" conformance "$tmp/noresult.data"
expect no-subcommand 106 'A subcommand is required' -- "$bpftime"

finish

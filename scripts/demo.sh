#!/usr/bin/env bash
# The demo: installs what it needs, builds bpftime, and runs the example URL filter
# (examples/url_prefix.s) on a few request paths, then shows that a faulting program is
# stopped with an error instead of crashing its host.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DBPFTIME_ENABLE_TESTS=OFF -DBPFTIME_ENABLE_BENCHMARKS=OFF
bpftime=build/tools/bpftime

echo
echo "== the program (bpftime disasm examples/url_prefix.s)"
$bpftime disasm --numbered examples/url_prefix.s

echo
echo "== requests (bpftime run --mem <path bytes> examples/url_prefix.s)"
for path in /api/users /api/ /index.html /apix /ap; do
  hex=$(printf '%s' "$path" | od -An -tx1 | tr -d ' \n')
  r0=$($bpftime run --mem "$hex" examples/url_prefix.s)
  if [[ $r0 == "r0 = 0x0" ]]; then verdict="accepted"; else verdict="refused (403)"; fi
  printf '  GET %-12s -> %-14s [%s]\n' "$path" "$verdict" "$r0"
done

echo
echo "== speed (interpreter, 100000 runs)"
$bpftime run --repeat 100000 --mem "$(printf /api/users | od -An -tx1 | tr -d ' \n')" \
  examples/url_prefix.s

echo
echo "== a program that reads past its input is stopped, not crashed"
printf 'ldxdw %%r0, [%%r1+64]\nexit\n' >build/oob.s
$bpftime run --mem "00 01 02 03" build/oob.s || echo "  (exit status $?: the host carries on)"

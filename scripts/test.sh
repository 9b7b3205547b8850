#!/usr/bin/env bash
# Runs every test: installs what is missing, builds with g++ and runs CTest (unit tests and
# the shared conformance cases on every engine), builds a Release with Unix Makefiles and
# tests installing it (cmake --install, find_package, pkg-config, the Debian package), checks
# formatting, then builds everything again with clang + ASan/UBSan, runs CTest there too and
# fuzzes for a bounded time. Warnings are errors in every build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== build (g++)"
# Explicitly on: the demo builds into the same folder without tests and benchmarks.
scripts/build.sh -DBPFTIME_WERROR=ON -DBPFTIME_ENABLE_TESTS=ON -DBPFTIME_ENABLE_BENCHMARKS=ON

echo "== ctest"
# The install tests run once, below, on the Release build a package would come from.
ctest --test-dir build --output-on-failure --no-tests=error -j "$(nproc)" --timeout 300 -LE install

echo "== build (g++, Release, Unix Makefiles, installed under /usr)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_INSTALL_PREFIX=/usr -DBPFTIME_WERROR=ON \
  -DBPFTIME_ENABLE_TESTS=OFF -DBPFTIME_ENABLE_BENCHMARKS=OFF >/dev/null
cmake --build build-release -j "$(nproc)"
echo "== install test (cmake --install, find_package, pkg-config)"
tests/install/install_test.sh build-release
echo "== Debian package test (cpack -G DEB, dpkg)"
tests/install/deb_test.sh build-release

echo "== clang-format"
if ! git ls-files '*.cpp' '*.hpp' '*.h' '*.c' | xargs clang-format --dry-run --Werror; then
  echo "clang-format: the files above need formatting (clang-format -i)" >&2
  exit 1
fi

echo "== build (clang, ASan + UBSan, libFuzzer)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DBPFTIME_ENABLE_FUZZER=ON -DBPFTIME_ENABLE_ASAN=ON -DBPFTIME_ENABLE_UBSAN=ON \
  -DBPFTIME_ENABLE_BENCHMARKS=OFF -DBPFTIME_WERROR=ON >/dev/null
cmake --build build-fuzz -j "$(nproc)"
echo "== ctest under ASan + UBSan"
# Left out here, each run in full by the g++ build above: tests that preload bpftime's libraries
# into programs built without the sanitizers (Debian's funclatency, bashreadline, bash and nginx
# modules loaded by the sanitized server library; the libbpf loaders and tools of examples/tools
# and the C targets the agent is preloaded or injected into (USDT and the USDT site near a ret,
# override, syscall tracepoints,
# /bin/true, inject): C programs whose sanitizer runtime lacks the C++ parts the preloaded
# libraries need), tests that bound memory or mappings (ASan's quarantine and shadow grow them), the
# register tests of rewritten system call sites, full, short and plain path (their own inline site
# is not rewritten in the sanitized build), the malloc counter of the corpus (ASan replaces libc's malloc in its target), the
# install tests, and the fault campaign (its rounds start sanitized hosts by the hundred: over
# its time bound), and the dead ring buffer producer test (its libbpf loader, a C program, gets
# the sanitized interposer preloaded).
ctest --test-dir build-fuzz --output-on-failure --no-tests=error -j "$(nproc)" --timeout 300 \
  -LE install -E '^(tools\.|interposer\.loader$|usdt\.(loader|cli|near_ret)$|override\.return$|vmcalls\.interposer$|systp\.(cli|libbpf|restart)$|cli\.auto_attach$|stats\.map_dump$|stats_nginx\.decisions$|nginx\.reload$|cli\.inject(_fork_exec)?$|mapinmap\.loader$|systp\.clone_exits$|systp\.tpbtf$|SyscallIntercept\.RewrittenSitesKeepRegistersAndFlagsAsTheKernelDoes$|corpus\.malloc_count$|faults\.campaign$|faults\.ringbuf_dead_producer$|SyscallShortPath\.KeepsRegistersFlagsAndVectorsAndGivesTheKernelsRecord$|SyscallShortPath\.ThePlainPathKeepsRegistersFlagsAndVectorsThroughItsHandler$)'
echo "== fuzz (${BPFTIME_FUZZ_SECONDS:-30} s)"
# Seeds: every conformance program (input byte 0 is the memory length, here 0) and the saved
# corpus. New inputs go to build-fuzz/corpus*; to keep the ones that reach something new in the
# saved corpus: FUZZER -merge=1 fuzz/corpus/NAME build-fuzz/corpus... (CTest replays it).
mkdir -p build-fuzz/corpus build-fuzz/seeds
for f in ../shared/conformance/tests/*.data; do
  [[ -e $f ]] || break
  seed=build-fuzz/seeds/$(basename "$f" .data)
  build/tools/bpftime asm "$f" -o "$seed.prog" && { printf '\x00'; cat "$seed.prog"; } >"$seed"
  rm -f "$seed.prog"
done
build-fuzz/fuzz/bpftime_vm_fuzzer -max_total_time="${BPFTIME_FUZZ_SECONDS:-30}" \
  -print_final_stats=1 -seed=1 -artifact_prefix=build-fuzz/ \
  build-fuzz/corpus build-fuzz/seeds fuzz/corpus/vm 2>&1 | tail -n 15
echo "== differential fuzz, interpreter against jit (${BPFTIME_FUZZ_SECONDS:-30} s)"
# A difference leaves build-fuzz/crash-*; BPFTIME_DIFF_VERBOSE=1 and that file as the only
# argument (of the fuzzer, or of build/fuzz/bpftime_vm_diff_fuzzer_replay) print the program
# and both results again.
mkdir -p build-fuzz/corpus-diff
build-fuzz/fuzz/bpftime_vm_diff_fuzzer -max_total_time="${BPFTIME_FUZZ_SECONDS:-30}" \
  -print_final_stats=1 -seed=1 -artifact_prefix=build-fuzz/ \
  build-fuzz/corpus-diff fuzz/corpus/vm_diff 2>&1 | tail -n 15
echo "== segment fuzz (${BPFTIME_FUZZ_SECONDS:-30} s)"
# Segment images (the seeds are real segments, tests/security/make_segments.sh); a crash or a
# hang leaves build-fuzz/crash-* or timeout-*, which fuzz/corpus/segment should then keep.
mkdir -p build-fuzz/corpus-segment
build-fuzz/fuzz/bpftime_segment_fuzzer -max_total_time="${BPFTIME_FUZZ_SECONDS:-30}" \
  -print_final_stats=1 -seed=1 -artifact_prefix=build-fuzz/ -max_len=1048576 -timeout=20 \
  build-fuzz/corpus-segment fuzz/corpus/segment 2>&1 | tail -n 15
echo "fuzz: no crash and no sanitizer report"

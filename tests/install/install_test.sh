#!/usr/bin/env bash
# Installs a build as a user or a packager would and uses only the installed files:
#  - `cmake --install BUILD --prefix PREFIX`: every file under PREFIX, the layout (command,
#    libraries, preloaded agent, headers, CMake package, pkg-config file, examples), no file of
#    the CMake package or the pkg-config file naming the source or build tree, no private
#    dependency (LLVM, libbpf, libelf, Zydis) leaking to embedders;
#  - a C++ program built with find_package(bpftime) (CMAKE_PREFIX_PATH=PREFIX) creates a map
#    and a program through the public API, runs them and checks the results;
#  - a C program built with `pkg-config libbpftime` (PKG_CONFIG_PATH in PREFIX) filters two
#    requests through a URL filter that the installed bpftime loaded from the installed examples;
#  - the installed `bpftime start` preloads the installed agent (no $BPFTIME_AGENT), which
#    counts every call of a uprobed function;
#  - `DESTDIR=D cmake --install BUILD --prefix P` puts everything under D/P, names P in
#    libbpftime.pc, and that bpftime finds its agent under D/P too.
# Usage: install_test.sh BUILD_DIR. Exit status 0: everything as expected.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh" # expect, check, finish
if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR"
  exit 2
fi
build=$(realpath -- "$1")
source_dir=$(realpath -- "$here/../..")

work=$(mktemp -d "${TMPDIR:-/tmp}/bpftime-install-test.XXXXXX")
prefix=$work/prefix
export BPFTIME_SHM=bpftime-install-test-$$
unset BPFTIME_AGENT
cleanup() {
  local status=$?
  [[ -x $prefix/bin/bpftime ]] && "$prefix/bin/bpftime" reset >/dev/null 2>&1
  if [[ $status -ne 0 || $failures -ne 0 ]]; then
    echo "--- kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# Staged with DESTDIR and reached through a link at the prefix: install rules may write outside
# the prefix (the nginx module's link in /etc/nginx/modules-enabled), never into this machine.
stage=$work/stage
echo "== DESTDIR=$stage cmake --install $build --prefix $prefix"
if ! DESTDIR=$stage cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1; then
  echo "FAIL cmake --install:"
  sed 's/^/  | /' "$work/install.log"
  exit 1
fi
outside=$(sed -nE 's/^-- (Installing|Up-to-date): //p' "$work/install.log" | grep -v "^$stage/")
check "every installed file is under DESTDIR${outside:+ (not: $outside)}" test -z "$outside"
ln -s "$stage$prefix" "$prefix"
lib=$(dirname "$(find -H "$prefix" -name libbpftime.so -print -quit)")
check "libbpftime.so is installed (in $lib)" test -f "$lib/libbpftime.so"
for f in bin/bpftime include/bpftime/bpftime.hpp include/bpftime/minimal_syscall_server.h \
  include/bpftime/nginx_filter.h share/bpftime/examples/url_allowlist.bpf.o \
  share/bpftime/examples/uprobe_count.bpf.o share/bpftime/examples/url_allowlist.bpf.c; do
  check "installed: $f" test -f "$prefix/$f"
done
for f in libbpftime_server.so bpftime/libbpftime_agent.so cmake/bpftime/bpftimeConfig.cmake \
  cmake/bpftime/bpftimeConfigVersion.cmake cmake/bpftime/bpftimeTargets.cmake \
  pkgconfig/libbpftime.pc; do
  check "installed: ${lib#"$prefix"/}/$f" test -f "$lib/$f"
done
check "libbpftime.so is a link to the versioned library" test -L "$lib/libbpftime.so"
expect soname 0 'SONAME +libbpftime\.so\.0\.1$' -- objdump -p "$lib/libbpftime.so"
check "libbpftime.so resolves every library it needs" \
  bash -c "! ldd '$lib/libbpftime.so' | grep 'not found'"
check "the CMake package and libbpftime.pc name neither the source nor the build tree" \
  bash -c "! grep -rlF -e '$source_dir/' -e '$build/' '$lib/cmake' '$lib/pkgconfig'"
private='llvm|libbpf([^t]|$)|libelf|zydis|PkgConfig::|bpftime_(isa|vm|maps|helpers|store|loader|attach|hook|uprobe|manager|provider)'
check "the exported targets carry no private dependency (LLVM, libbpf, libelf, Zydis, archives)" \
  bash -c "! grep -iE '$private' '$lib'/cmake/bpftime/bpftimeTargets*.cmake"

echo "== C++ through find_package(bpftime)"
embed_build=$work/embed-build
expect cmake-configure 0 '' -- cmake -S "$here/embed" -B "$embed_build" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_BUILD_TYPE=Release
found=$(sed -n 's/^bpftime_DIR:PATH=//p' "$embed_build/CMakeCache.txt")
check "find_package found the installed package ($found)" \
  test "$(realpath -- "$found")" = "$(realpath -- "$lib/cmake/bpftime")"
expect cmake-build 0 '' -- cmake --build "$embed_build" -j 2
expect embed-runs 0 '^embed: ok, results 42 42 42, map total 120$' -- \
  "$embed_build/embed" "$BPFTIME_SHM-embed"
loaded=$(ldd "$embed_build/embed" | awk '$1 == "libbpftime.so.0.1" { print $3 }')
check "embed loads the installed libbpftime.so.0.1 ($loaded)" \
  test "$(realpath -- "$loaded")" = "$(realpath -- "$lib/libbpftime.so.0.1")"

echo "== C through pkg-config"
export PKG_CONFIG_PATH=$lib/pkgconfig
expect pc-prefix 0 "^$prefix\$" -- pkg-config --variable=prefix libbpftime
expect pc-version 0 '^0\.1\.0$' -- pkg-config --modversion libbpftime
expect pc-libs 0 "^-L$lib -lbpftime *\$" -- pkg-config --libs libbpftime
expect pc-nothing-private 0 '^$' -- pkg-config --print-requires-private libbpftime
# shellcheck disable=SC2046 # pkg-config prints one flag per word
expect cc-pkg-config 0 '' -- cc -Wall -Wextra -Werror -o "$work/embed_c" "$here/embed/embed_c.c" \
  $(pkg-config --cflags libbpftime) $(pkg-config --libs libbpftime) -Wl,-rpath,"$lib"
bpftime=$prefix/bin/bpftime
"$bpftime" reset >/dev/null 2>&1
# load_example NAME OBJECT: loads an installed example; sets MAP[name] and PROG[name].
declare -A MAP PROG
load_example() {
  local kind id name
  if "$bpftime" load "$prefix/share/bpftime/examples/$2" >"$work/load.out" 2>&1; then
    echo "ok   $1"
  else
    echo "FAIL $1: bpftime load $2:"
    sed 's/^/  | /' "$work/load.out"
    failures=$((failures + 1))
  fi
  while read -r kind id name; do
    case $kind in
      map) MAP[$name]=$id ;;
      program) PROG[$name]=$id ;;
    esac
  done <"$work/load.out"
}
load_example load-installed-example url_allowlist.bpf.o
expect allow-api 0 '' -- "$bpftime" map update "${MAP[allow_prefixes]:-}" str:/api/ 0
expect attach-filter 0 '^link [0-9]+' -- "$bpftime" attach nginx-url "${PROG[url_allowlist]:-}"
expect c-host-filters 0 $'^attached 1\n/api/users 0\n/admin 403$' -- "$work/embed_c" "$BPFTIME_SHM"
"$bpftime" reset >/dev/null

echo "== the installed bpftime start preloads the installed agent"
expect installed-agent 0 "^$(realpath -- "$lib/bpftime/libbpftime_agent.so")\$" -- \
  "$bpftime" start sh -c 'realpath "$LD_PRELOAD"'
expect cc-target 0 '' -- cc -O2 -o "$work/probe_me" "$here/probe_me.c"
load_example load-uprobe-example uprobe_count.bpf.o
expect attach-uprobe 0 '^link [0-9]+' -- \
  "$bpftime" attach uprobe "${PROG[count_entry]:-}" "$work/probe_me:probed_add"
expect start-counts 0 'bpftime-agent\[[0-9]+\]: following segment' -- "$bpftime" start "$work/probe_me" 100
expect start-target-result 0 '^sum 5150$' -- "$bpftime" start "$work/probe_me" 100
expect agent-counted 0 'key: 00 00 00 00  value: c8 00 00 00 00 00 00 00' -- \
  "$bpftime" map dump "${MAP[totals]:-}"
"$bpftime" reset >/dev/null

echo "== DESTDIR"
dest=$work/destdir
staged=/opt/bpftime-install-test-$$
expect destdir-install 0 '' -- env DESTDIR="$dest" cmake --install "$build" --prefix "$staged"
check "nothing written to $staged itself" test ! -e "$staged"
check "DESTDIR holds the command" test -x "$dest$staged/bin/bpftime"
expect destdir-pc-prefix 0 "^prefix=$staged\$" -- \
  grep '^prefix=' "$dest$staged/${lib#"$prefix"/}/pkgconfig/libbpftime.pc"
expect destdir-agent 0 "^$dest$staged/${lib#"$prefix"/}/bpftime/libbpftime_agent\\.so\$" -- \
  "$dest$staged/bin/bpftime" start sh -c 'realpath "$LD_PRELOAD"'
finish

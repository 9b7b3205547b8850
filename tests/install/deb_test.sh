#!/usr/bin/env bash
# The Debian package as a user gets it: `cpack -G DEB` in a build, then
#  - dpkg-deb --info: name, version, section, maintainer, description, and the dependencies
#    dpkg-shlibdeps found (libbpf, LLVM, libelf, Zydis, the C++ runtime);
#  - dpkg-deb --contents: the command, the libraries, the agent, headers, CMake package,
#    pkg-config file and examples, under /usr, and the nginx module in Debian's module layout
#    (its modules-enabled link the one entry under /etc);
#  - unpacked into a temporary root (dpkg-deb -x): `bpftime --help`, `bpftime load` of an
#    installed example, and `bpftime start` of a small program with the unpacked agent, which
#    counts every call of a uprobed function;
#  - as root, when dpkg knows no bpftime package already: installed with dpkg -i, the same
#    commands from /usr/bin, then removed with dpkg --purge (the machine is left as it was; CTest
#    runs this test under the dpkg resource lock).
# Usage: deb_test.sh BUILD_DIR.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh" # expect, check, finish
if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR"
  exit 2
fi
build=$(realpath -- "$1")
for tool in cpack dpkg-deb dpkg-shlibdeps cc; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool is missing (scripts/install-deps.sh installs it)"
    exit 77
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bpftime-deb-test.XXXXXX")
export BPFTIME_SHM=bpftime-deb-test-$$
unset BPFTIME_AGENT
installed_by_us=0
cleanup() {
  local status=$?
  for b in "$work/root/usr/bin/bpftime" /usr/bin/bpftime; do
    [[ -x $b ]] && "$b" reset >/dev/null 2>&1
  done
  if ((installed_by_us)); then
    dpkg --purge bpftime >/dev/null 2>&1 ||
      echo "FAIL: dpkg --purge bpftime failed; remove it by hand"
  fi
  if [[ $status -ne 0 || $failures -ne 0 ]]; then
    echo "--- kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

echo "== cpack -G DEB"
if ! (cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg") \
  >"$work/cpack.log" 2>&1; then
  echo "FAIL cpack:"
  sed 's/^/  | /' "$work/cpack.log"
  exit 1
fi
deb=$(find "$work/pkg" -maxdepth 1 -name 'bpftime_*.deb' -print -quit)
check "cpack made bpftime_<version>_<arch>.deb (${deb##*/})" test -f "$deb"
[[ -f $deb ]] || finish || exit 1

info=$(dpkg-deb --info "$deb")
expect info-package 0 '^ Package: bpftime$' -- echo "$info"
expect info-version 0 '^ Version: 0\.1\.0' -- echo "$info"
expect info-section 0 '^ Section: devel$' -- echo "$info"
expect info-maintainer 0 '^ Maintainer: .+<.+@.+>$' -- echo "$info"
expect info-description 0 '^ Description: user-space eBPF runtime' -- echo "$info"
for dep in libbpf1 libllvm15 libelf1 libzydis4 'libstdc\+\+6' libc6; do
  expect "depends-$dep" 0 "^ Depends: .*\\b$dep\\b" -- echo "$info"
done

contents=$(dpkg-deb --contents "$deb" | awk '{ print $6 }')
libdir=$(sed -n 's|^\./\(usr/lib[^ ]*\)/libbpftime\.so\.0\.1\.0$|\1|p' <<<"$contents")
check "the package holds libbpftime.so.0.1.0 (in /$libdir)" test -n "$libdir"
for f in usr/bin/bpftime "$libdir/libbpftime.so" "$libdir/libbpftime_server.so" \
  "$libdir/bpftime/libbpftime_agent.so" usr/include/bpftime/bpftime.hpp \
  "$libdir/cmake/bpftime/bpftimeConfig.cmake" "$libdir/pkgconfig/libbpftime.pc" \
  usr/share/bpftime/examples/url_allowlist.bpf.o; do
  expect "contents: /$f" 0 "^\\./$f\$" -- echo "$contents"
done
# The nginx module in Debian's module layout, when the build made it: the module, its
# load_module line, and the modules-enabled link (the one entry outside /usr, as Debian's
# libnginx-mod-* packages have it).
if grep -q '^BPFTIME_NGINX_MODULE:' "$build/CMakeCache.txt"; then
  # The nginx ABI the module was built for, as Debian's module packages depend on it.
  abi=$(sed -n 's/^nginx:abi=//p' /usr/share/nginx/src/debian/libnginx-mod.abisubstvars 2>/dev/null)
  if [[ -n $abi ]]; then
    expect "depends-$abi" 0 "^ Depends: .*\b$abi\b" -- echo "$info"
  fi
  for f in usr/lib/nginx/modules/ngx_http_bpftime_module.so \
    usr/share/nginx/modules-available/mod-http-bpftime.conf \
    etc/nginx/modules-enabled/50-mod-http-bpftime.conf; do
    expect "contents: /$f" 0 "^\\./$f\$" -- echo "$contents"
  done
fi
check "every other file is under /usr" bash -c \
  "! grep -v '^\\./usr/\\|^\\./\$\\|^\\./etc/\\(nginx/\\(modules-enabled/\\(50-mod-http-bpftime\\.conf\\)\\?\\)\\?\\)\\?\$' <<<'$contents'"

expect cc-target 0 '' -- cc -O2 -o "$work/probe_me" "$here/probe_me.c"

# run_installed ROOT NAME: the installed command under ROOT (/ or the unpacked tree).
run_installed() {
  local root=${1%/} name=$2 bpftime=${1%/}/usr/bin/bpftime
  echo "== $name"
  expect "$name-help" 0 'load' -- "$bpftime" --help
  "$bpftime" reset >/dev/null 2>&1
  expect "$name-load" 0 '^program [0-9]+ count_entry$' -- \
    "$bpftime" load "$root/usr/share/bpftime/examples/uprobe_count.bpf.o"
  local prog totals
  prog=$("$bpftime" list | awk '$2 == "program" && $3 == "count_entry" { print $1 }')
  totals=$("$bpftime" list | awk '$2 == "map" && $3 == "totals" { print $1 }')
  expect "$name-attach" 0 '^link [0-9]+' -- \
    "$bpftime" attach uprobe "${prog:-0}" "$work/probe_me:probed_add"
  expect "$name-agent" 0 "^$root/$libdir/bpftime/libbpftime_agent\\.so\$" -- \
    "$bpftime" start sh -c 'realpath "$LD_PRELOAD"'
  expect "$name-start" 0 '^sum 5150$' -- "$bpftime" start "$work/probe_me" 100
  expect "$name-counted" 0 'key: 00 00 00 00  value: 64 00 00 00 00 00 00 00' -- \
    "$bpftime" map dump "${totals:-0}"
  "$bpftime" reset >/dev/null 2>&1
}

expect unpack 0 '' -- dpkg-deb -x "$deb" "$work/root"
run_installed "$work/root" unpacked

if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP dpkg -i half: needs root"
elif dpkg-query -W bpftime >/dev/null 2>&1; then
  echo "SKIP dpkg -i half: dpkg knows a bpftime package already; it is left alone"
else
  installed_by_us=1
  expect dpkg-install 0 '' -- dpkg -i "$deb"
  run_installed / dpkg
  expect dpkg-purge 0 "" -- dpkg --purge bpftime
  installed_by_us=0
  check "dpkg --purge removed /usr/bin/bpftime" test ! -e /usr/bin/bpftime
  check "dpkg --purge removed the agent" test ! -e "/$libdir/bpftime/libbpftime_agent.so"
  check "dpkg knows no bpftime package any more (not even its configuration)" \
    bash -c "! dpkg-query -W bpftime >/dev/null 2>&1"
fi
finish

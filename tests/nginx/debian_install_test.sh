#!/usr/bin/env bash
# Debian's layout: `cmake --install --component nginx` into a DESTDIR puts the module where
# Debian's nginx loads modules from, its load_module line in share/nginx/modules-available and
# the modules-enabled link, as Debian's libnginx-mod-* packages do. Then Debian's nginx runs
# with its stock nginx.conf (user www-data, worker_processes auto, modules-enabled/*.conf
# included) pointed at the DESTDIR, and a site with bpftime_url_filter on: the filter decides.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

build=$(dirname "$(dirname "$MODULE")")
[[ -f $build/CMakeCache.txt ]] || { echo "FAIL: no build tree above $MODULE"; exit 1; }
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$build/CMakeCache.txt")
libdir=${libdir:-lib}

install_to() { # install_to DESTDIR PREFIX
  local out
  if ! out=$(DESTDIR=$1 cmake --install "$build" --component nginx --prefix "$2" 2>&1); then
    echo "FAIL: cmake --install --component nginx --prefix $2:"
    sed 's/^/  | /' <<<"$out"
    failures=$((failures + 1))
    exit 1
  fi
}

dest=$WORK/dest
install_to "$dest" /usr
mod=$dest/usr/lib/nginx/modules/ngx_http_bpftime_module.so
avail=$dest/usr/share/nginx/modules-available/mod-http-bpftime.conf
link=$dest/etc/nginx/modules-enabled/50-mod-http-bpftime.conf
check "the module is in usr/lib/nginx/modules, mode 0644" test "$(stat -c %a "$mod" 2>/dev/null)" == 644
check "modules-available/mod-http-bpftime.conf loads it as Debian's do" \
  test "$(cat "$avail" 2>/dev/null)" == "load_module modules/ngx_http_bpftime_module.so;"
check "modules-enabled/50-mod-http-bpftime.conf links to it: $(readlink "$link")" \
  test "$(readlink "$link")" == /usr/share/nginx/modules-available/mod-http-bpftime.conf
runpath=$(readelf -d "$mod" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
check "the installed module finds libbpftime_server.so in usr/$libdir ($runpath)" \
  test "$(realpath -m "$(dirname "$mod")/${runpath#\$ORIGIN/}")" == "$(realpath -m "$dest/usr/$libdir")"
check "and not in the build tree" test "${runpath/$build/}" == "$runpath"
check "nothing was installed outside usr/ and etc/nginx/" \
  test -z "$(cd "$dest" && find . -mindepth 1 -maxdepth 1 ! -name usr ! -name etc)"
expect "installing again replaces the link" 0 "50-mod-http-bpftime.conf" \
  -- env DESTDIR="$dest" cmake --install "$build" --component nginx --prefix /usr

# Another prefix: the load_module line names the full path.
install_to "$WORK/dest-local" /usr/local
check "with /usr/local, load_module names the full path" \
  test "$(cat "$WORK/dest-local/usr/local/share/nginx/modules-available/mod-http-bpftime.conf")" \
  == "load_module /usr/local/lib/nginx/modules/ngx_http_bpftime_module.so;"

# Debian's nginx with its stock nginx.conf, moved into $WORK: the DESTDIR stands for /.
stock=/etc/nginx/nginx.conf
if [[ $(id -u) -ne 0 ]] || ! grep -q '^include /etc/nginx/modules-enabled/\*.conf;' "$stock" 2>/dev/null ||
  ! grep -q '^user www-data;' "$stock"; then
  echo "ok   (the run with Debian's stock nginx.conf needs root and Debian's $stock; skipped)"
  finish
  exit
fi
# libbpftime_server.so where the runtime's install puts it, unless it is there already.
if [[ ! -e $dest/usr/$libdir/libbpftime_server.so ]]; then
  mkdir -p "$dest/usr/$libdir"
  cp "$build/server/libbpftime_server.so" "$dest/usr/$libdir/"
fi
ln -s "$dest/usr/lib/nginx/modules" "$WORK/modules" # as /usr/share/nginx/modules is
mkdir -p "$WORK/modules-enabled" "$WORK/sites-enabled" "$WORK/logs"
ln -s "$dest$(readlink "$link")" "$WORK/modules-enabled/50-mod-http-bpftime.conf"

load_object "$TEST_BPF/status_codes.bpf.o"
attach_prog "${PROG[status_codes]}"

for attempt in 1 2 3 4 5 6 7 8; do
  PORT=$((10000 + RANDOM % 22000))
  sed -e "s|/etc/nginx/modules-enabled/|$WORK/modules-enabled/|" \
    -e "s|/etc/nginx/sites-enabled/|$WORK/sites-enabled/|" \
    -e "s|/var/log/nginx/|$WORK/logs/|" -e "s|/run/nginx.pid|$WORK/nginx.pid|" \
    "$stock" >"$WORK/nginx.conf"
  # The site: the one line bpftime needs, and the segment's name (workers do not see
  # $BPFTIME_SHM; the default segment, "bpftime", needs no bpftime_shm line).
  cat >"$WORK/sites-enabled/default" <<EOF2
bpftime_shm $BPFTIME_SHM;
server {
    listen 127.0.0.1:$PORT;
    location / {
        bpftime_url_filter on;
        empty_gif;
    }
}
EOF2
  : >"$WORK/logs/error.log"
  if out=$(ngx_run -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/logs/error.log" 2>&1); then
    break
  fi
  grep -q "Address already in use" <<<"$out" && continue
  echo "FAIL: Debian's nginx with the stock nginx.conf did not start:"
  sed 's/^/  | /' <<<"$out"
  failures=$((failures + 1))
  exit 1
done
MASTER_PID=$(cat "$WORK/nginx.pid")
NGX_WORKERS=$(nproc)
ngx_wait_workers ""
for w in $(ngx_workers); do
  check "worker $w runs as www-data" test "$(ngx_user_of "$w")" == www-data
done
check "the module came from the DESTDIR" grep -q "$dest/usr/lib/nginx/modules/ngx_http_bpftime_module.so" "/proc/$MASTER_PID/maps"
many 30 "$WORK/stock" /legal /gone /ok
expect_tally "the stock configuration plus the snippet filters" "$WORK/stock" "10 /gone 410
10 /legal 451
10 /ok 200"
check_no_crash
finish

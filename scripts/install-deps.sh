#!/usr/bin/env bash
# Installs every Debian 12 package bpftime needs to build, test and run its demo.
# Safe to run again: apt-get skips what is already there.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build pkg-config git file
  clang libclang-rt-14-dev llvm clang-format llvm-15-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev
  libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev nlohmann-json3-dev libzydis-dev
  libbpf-tools
  nginx nginx-dev libnginx-mod-http-lua wrk curl
  python3 python3-prometheus-client
  systemtap-sdt-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

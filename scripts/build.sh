#!/usr/bin/env bash
# Configures and builds bpftime with g++ into build/ (or $BPFTIME_BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BPFTIME_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BPFTIME_BUILD_TYPE:-RelWithDebInfo} \
  -DCMAKE_CXX_COMPILER=g++ -DCMAKE_C_COMPILER=gcc "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"

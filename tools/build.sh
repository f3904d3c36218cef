#!/usr/bin/env bash
# Configures and builds mnemo into ./build (targets given as arguments, or all).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build "$@"

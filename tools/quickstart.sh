#!/usr/bin/env bash
# Quick start: install what is missing, build, open an embedded store in
# ./data, import a generated sample and query it.
# (Runs through the engine in-process until the mnemod daemon exists.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
bash tools/build.sh mnemo-local
export OPENBLAS_NUM_THREADS=1
./build/tools/mnemo-local --data-dir ./data quickstart "$@"

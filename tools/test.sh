#!/usr/bin/env bash
# Installs what is missing, builds everything, runs every test suite:
# GoogleTest through ctest, then pytest. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
bash tools/build.sh
export OPENBLAS_NUM_THREADS=1   # FAISS threads with OpenMP; see README "Threads"

status=0
(cd build && ctest --output-on-failure -j2 --timeout 900) || status=1
/usr/bin/python3 -m pytest -q tests/python || status=1
exit $status

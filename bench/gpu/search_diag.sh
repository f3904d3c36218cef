#!/usr/bin/env bash
# Diagnosis, not a benchmark: net_vs_faiss on one index under several mnemod
# settings on the GPU machine, one line each (after bench/gpu/pack.sh here).
#   bash bench/gpu/search_diag.sh HNSW32 "" "--busy-poll-us 0" "--io-threads 1"
set -uo pipefail
cd "$(dirname "$0")/../.."
index=$1
shift
for flags in "$@"; do
  echo "== ${MNEMOD_NAME:-mnemod} ${flags:-defaults}"
  bash bench/gpu/run.sh search --index "$index" --rounds ${ROUNDS:-3} --queries 4000 --mnemod-flags "$flags" 2>&1 | grep -E "^$index |round by round|during"
done

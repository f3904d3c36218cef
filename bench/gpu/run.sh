#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after bench/gpu/pack.sh
# here: unpacks build/gpu-carry.tar.gz and runs the KV and the search
# benchmarks with the carried binaries. Output goes to stdout (and $OUT).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${TMPDIR:-/tmp}/mnemo-gpu
rm -rf "$work" && mkdir -p "$work"
tar -C "$work" -xzf build/gpu-carry.tar.gz
carry=$work/gpu-carry
export LD_LIBRARY_PATH=$carry/lib PATH=$carry/bin:$PATH OPENBLAS_NUM_THREADS=1
export PYTHONPATH=$PWD/reader:$carry/python
# OpenBLAS picks its kernel by the CPU's model number; on some of these
# virtual CPUs it falls back to Prescott (SSE3), 3.3x slower for a flat
# batch. Both sides of a benchmark then run the kernel of the CPU they have.
if [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -qw avx512f /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
py=$(command -v python3)
mnemod=$carry/bin/${MNEMOD_NAME:-mnemod}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; python $($py -V 2>&1)"
# Arguments after the first go to the benchmark it names, e.g.
#   bash bench/gpu/run.sh search --index HNSW32 --mnemod-flags "--batch-concurrency 1"
mode=${1:-all}
shift || true
case "$mode" in
  kv) $py bench/kv_throughput.py --mnemod "$mnemod" ${KV_ARGS:-} "$@" ;;
  search) MNEMOD=$mnemod "$carry/bin/net_vs_faiss" ${SEARCH_ARGS:-} "$@" ;;
  hnsw-lone) "$carry/bin/hnsw_lone_query" "$@" ;;
  all)
    $py bench/kv_throughput.py --mnemod "$mnemod" ${KV_ARGS:-}
    MNEMOD=$mnemod "$carry/bin/net_vs_faiss" ${SEARCH_ARGS:-} ;;
  *) echo "usage: run.sh [kv|search|hnsw-lone|all] [benchmark arguments]" >&2; exit 2 ;;
esac

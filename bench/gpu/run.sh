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
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); OpenBLAS kernel ${OPENBLAS_CORETYPE:-auto}; python $($py -V 2>&1)"
# Arguments after the first go to the benchmark it names, e.g.
#   bash bench/gpu/run.sh search --index HNSW32 --mnemod-flags "--batch-concurrency 1"
# The GPU reader's benchmarks run torch, which must not see the carried
# libraries (Debian's libstdc++ is older than the one torch was built
# with): mnemod gets them through a wrapper, $wrapper.
mnemod_wrapper() {
  wrapper=$work/mnemod.sh
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$carry/lib" "$mnemod" > "$wrapper"
  chmod +x "$wrapper"
}
mode=${1:-all}
shift || true
case "$mode" in
  kv) $py bench/kv_throughput.py --mnemod "$mnemod" ${KV_ARGS:-} "$@" ;;
  search) MNEMOD=$mnemod "$carry/bin/net_vs_faiss" ${SEARCH_ARGS:-} "$@" ;;
  hnsw-lone) "$carry/bin/hnsw_lone_query" "$@" ;;
  memory)
    # Decode with memory / without: the 8B shape (3 memory layers), then the
    # reference model (memory in every layer); extra arguments go to both.
    mnemod_wrapper
    env -u LD_LIBRARY_PATH $py bench/memory_decode.py --daemon "$wrapper" "$@"
    env -u LD_LIBRARY_PATH $py bench/memory_decode.py --daemon "$wrapper" --model models/mnemo-ref \
      --memory-layers all "$@" ;;
  train)
    # Trains models/mnemo-ref (train/train_reference.py), then measures it
    # (bench/memory_quality.py). With $OUT set (the device tool), the model
    # comes back in 15 MB parts: cat model.safetensors.part-* > model.safetensors.
    dst=$work/mnemo-ref
    mkdir -p "$dst" && cp models/mnemo-ref/tokenizer.model "$dst/"
    env -u LD_LIBRARY_PATH $py train/train_reference.py --data "$carry/refmodel-data" --out "$dst" "$@"
    if [[ -n "${OUT:-}" ]]; then
      cp "$dst"/*.json "$OUT/" && split -b 15M "$dst/model.safetensors" "$OUT/model.safetensors.part-"
    fi
    env -u LD_LIBRARY_PATH $py bench/memory_quality.py --model "$dst" --data "$carry/refmodel-data" ${QUALITY_ARGS:-} ;;
  quality)
    env -u LD_LIBRARY_PATH $py bench/memory_quality.py --data "$carry/refmodel-data" "$@" ;;
  reader|ttft|breakdown)
    # The GPU reader against transformers, then TTFT with reuse.
    mnemod_wrapper
    if [[ $mode == reader ]]; then
      env -u LD_LIBRARY_PATH $py bench/reader_vs_transformers.py --mnemod "$wrapper"
    fi
    if [[ $mode == breakdown ]]; then
      env -u LD_LIBRARY_PATH $py bench/reader_breakdown.py --mnemod "$wrapper" "$@"
    else
      env -u LD_LIBRARY_PATH $py bench/reader_ttft.py --mnemod "$wrapper" ${TTFT_ARGS:-} "$@"
    fi ;;
  all)
    $py bench/kv_throughput.py --mnemod "$mnemod" ${KV_ARGS:-}
    MNEMOD=$mnemod "$carry/bin/net_vs_faiss" ${SEARCH_ARGS:-} ;;
  compare)
    # This build beside the earlier one that pack.sh carried (BASE_BUILD):
    # each benchmark runs twice in turn, base first, on this machine.
    [[ -x $carry/bin/mnemod-base ]] || { echo "no base build carried: see pack.sh" >&2; exit 2; }
    echo "base: $(cat "$carry/base-reader/REV"); this: $(git rev-parse --short HEAD 2>/dev/null || echo working tree)"
    for side in base this; do
      sfx=$([[ $side == base ]] && echo -base || true)
      echo "== engine_vs_faiss, $side"
      "$carry/bin/engine_vs_faiss$sfx" ${ENGINE_ARGS:-}
    done
    for side in base this; do
      sfx=$([[ $side == base ]] && echo -base || true)
      echo "== net_vs_faiss, $side mnemod"
      MNEMOD=$carry/bin/mnemod$sfx "$carry/bin/net_vs_faiss" ${SEARCH_ARGS:-}
    done
    for side in base this; do
      sfx=$([[ $side == base ]] && echo -base || true)
      reader=$([[ $side == base ]] && echo "$carry/base-reader" || echo "$PWD/reader")
      echo "== kv_throughput, $side mnemod and client"
      MNEMO_READER=$reader $py bench/kv_throughput.py --mnemod "$carry/bin/mnemod$sfx" ${KV_ARGS:-}
    done ;;
  *) echo "usage: run.sh [kv|search|hnsw-lone|reader|ttft|breakdown|memory|train|quality|all|compare] [benchmark arguments]" >&2; exit 2 ;;
esac

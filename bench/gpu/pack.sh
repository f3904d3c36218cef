#!/usr/bin/env bash
# Packs what the GPU machine (Ubuntu 24.04, no apt, no network) needs to run
# mnemod and the benchmarks: the stripped binaries, every shared library they
# load that is not glibc's, redis-server for bench/kv_throughput.py, and the
# pure-Python modules the client and the benchmark import (flatbuffers,
# redis). Writes build/gpu-carry.tar.gz; bench/gpu/run.sh unpacks and runs it.
#
#   bash tools/install_deps.sh --bench && bash bench/gpu/pack.sh   # after building into build/
#   BASE_BUILD=/tmp/build-old BASE_REV=abc123 bash bench/gpu/pack.sh   # also an earlier build
# then, with the device tool: carry ["build/gpu-carry.tar.gz"] and run
#   bash bench/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/gpu-carry
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib" "$out/python"
bins=(build/tools/mnemod build/tools/mnemo build/bench/net_vs_faiss build/bench/engine_vs_faiss
      build/bench/hnsw_lone_query /usr/bin/redis-server)
# PERF=1 adds perf(1), for profiling mnemod there (perf record -p PID).
if [[ "${PERF:-}" == 1 ]]; then bins+=("$(readlink -f /usr/bin/perf)"); fi
# EXTRA_BINS="/tmp/mnemod-variant ...": more binaries, e.g. a mnemod to compare
# (run.sh picks it with MNEMOD_NAME=mnemod-variant).
read -r -a extra <<<"${EXTRA_BINS:-}"
bins+=("${extra[@]}")
strip_mode=--strip-unneeded
[[ "${PERF:-}" == 1 ]] && strip_mode=--strip-debug  # keep function names for perf report
for b in "${bins[@]}"; do
  strip $strip_mode -o "$out/bin/$(basename "$b")" "$b"
  ldd "$b" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;;  # the target's own
      *) cp -L "$lib" "$out/lib/" ;;
    esac
  done
done
# BASE_BUILD=DIR BASE_REV=REV: a build of an earlier commit (REV) to compare
# with (run.sh compare): its mnemod and benchmarks as *-base, and its Python
# client as base-reader/.
if [[ -n "${BASE_BUILD:-}" ]]; then
  for b in tools/mnemod bench/engine_vs_faiss; do
    strip --strip-unneeded -o "$out/bin/$(basename "$b")-base" "$BASE_BUILD/$b"
  done
  mkdir -p "$out/base-reader"
  git archive "${BASE_REV:?BASE_REV names the commit BASE_BUILD was built from}" reader |
    tar -x -C "$out/base-reader" --strip-components=1
  echo "$BASE_REV" > "$out/base-reader/REV"
fi
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
cp -r /usr/lib/python3/dist-packages/flatbuffers /usr/lib/python3/dist-packages/redis "$out/python/"
# The reference model's tokens (run.sh train / quality): sentencepiece and
# the Debian text packages are here, not there.
/usr/bin/python3 train/prepare_data.py --out "$out/refmodel-data"
tar -C build -czf build/gpu-carry.tar.gz gpu-carry
du -sh build/gpu-carry build/gpu-carry.tar.gz

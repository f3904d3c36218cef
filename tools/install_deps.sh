#!/usr/bin/env bash
# Installs everything mnemo needs to build and test: Debian 12 packages only.
# Safe to run again; run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libfaiss-dev libopenblas-dev liblapack-dev          # index/: FAISS (static) + BLAS
  librocksdb-dev                                      # storage/
  libboost-dev libboost-system-dev                    # net/: Asio, Beast
  libflatbuffers-dev flatbuffers-compiler             # net/: wire schema
  libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev
  libxxhash-dev libzstd-dev liblz4-dev libhdf5-dev nlohmann-json3-dev libimath-dev
  libgtest-dev libgmock-dev libbenchmark-dev          # tests/, bench/
  clang libclang-rt-14-dev libomp-dev                 # the wire fuzzer (libFuzzer), the thread-safety check
  python3 python3-numpy python3-flatbuffers python3-pytest python3-h5py
  python3-torch                                       # reader/mnemo/reader: the Llama core on the CPU
  python3-sentencepiece                               # the reference model's tokenizer (models/mnemo-ref)
  fortunes                                            # a text corpus for the quick start
)
# --bench: what bench/gpu/pack.sh needs besides: the reference model's
# training text (train/prepare_data.py) and Redis for bench/kv_throughput.py.
if [[ "${1:-}" == --bench ]]; then
  PACKAGES+=(linux-doc bible-kjv bible-kjv-text redis-server python3-redis)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "install_deps: ${#PACKAGES[@]} packages present"

#!/usr/bin/env bash
# Checks the layering that ARCHITECTURE.md states, from the sources and the
# built `mnemo` binary. Usage: tests/check_layering.sh BUILD_DIR
# Prints each rule broken and exits 1 if any is; else one line and 0.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
broken=0
fail() { echo "layering: $*"; broken=1; }

# Which top-level folders a folder's files include from (quoted includes).
includes_of() { grep -rhoE '#include "[a-z_]+/' "$@" | sed -E 's/#include "([a-z_]+)\//\1/' | sort -u; }

# 1. Each folder includes only the folders below it.
allowed() {
  case $1 in
    common) echo "common" ;;
    storage|index|kvcache) echo "common $1" ;;
    engine) echo "common storage index kvcache engine" ;;
    net) echo "common engine net" ;;
    tools) echo "common engine net tools" ;;
  esac
}
for dir in common storage index kvcache engine net tools; do
  for inc in $(includes_of "$dir"); do
    [[ " $(allowed "$dir") " == *" $inc "* ]] || fail "$dir/ includes from $inc/: $(grep -rlE "#include \"$inc/" "$dir" | tr '\n' ' ')"
  done
done

# 2. The client side of net/ (what the client library and the CLI compile)
#    includes only the engine's public types, never its implementation.
client_files="net/client.h net/client.cc net/conversions.h net/conversions.cc net/protocol.h
              net/protocol.cc net/buffer_pool.h net/buffer_pool.cc tools/mnemo.cc tools/describe.h
              tools/vector_file.h tools/vector_file.cc tools/import_state.h tools/import_state.cc"
for f in $client_files; do
  grep -hoE '#include "(engine|storage|index|kvcache)/[a-z_]+\.h"' "$f" | grep -v '"engine/types.h"' |
    while read -r line; do echo "layering: $f: client code $line"; done | grep . && broken=1
  grep -hoE '#include "net/[a-z_]+\.h"' "$f" |
    grep -vE '"net/(client|conversions|protocol|buffer_pool|mnemo_generated)\.h"' |
    while read -r line; do echo "layering: $f: client code includes server code: $line"; done | grep . && broken=1
done

# 3. The command-line tool links neither RocksDB nor FAISS nor BLAS.
cli="$build/tools/mnemo"
if [[ ! -x $cli ]]; then
  fail "no $cli: build it first"
else
  if ldd "$cli" | grep -E 'rocksdb|faiss|openblas|blas|lapack'; then fail "$cli links a storage or index library (ldd above)"; fi
  symbols=$(nm -C "$cli" | grep -cE 'rocksdb::|faiss::')
  [[ $symbols -eq 0 ]] || fail "$cli holds $symbols RocksDB/FAISS symbols"
fi

if [[ $broken -ne 0 ]]; then exit 1; fi
echo "layering: every rule of ARCHITECTURE.md holds"

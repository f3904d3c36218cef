#!/usr/bin/env bash
# Diagnosis, not a benchmark: runs net_vs_faiss on one index on the GPU
# machine while perf records mnemod (after PERF=1 bash bench/gpu/pack.sh
# here), then prints where mnemod's threads spent their time. Arguments after
# the index go to net_vs_faiss, e.g.
#   bash bench/gpu/profile_search.sh HNSW32 --mnemod-flags "--io-threads 1"
set -uo pipefail
cd "$(dirname "$0")/../.."
index=$1
shift
out=${OUT:-/tmp}
bash bench/gpu/run.sh search --index "$index" --queries 4000 --rounds 5 "$@" >"$out/bench.txt" 2>&1 &
bench=$!
carry=${TMPDIR:-/tmp}/mnemo-gpu/gpu-carry
until pid=$(pgrep -n -x "${MNEMOD_NAME:-mnemod}"); do sleep 0.1; done
# Record the searches, not the data load: wait until the clients of (a) are
# connected (mnemod then holds more than 30 sockets).
until (($(ls -l /proc/"$pid"/fd 2>/dev/null | grep -c socket) > 30)); do sleep 0.05; done
perf() { LD_LIBRARY_PATH=$carry/lib "$carry/bin/perf" "$@"; }
perf record -F 1999 -g -p "$pid" -o "$out/perf.data" 2>"$out/perf.err" &
rec=$!
wait $bench
wait $rec
cat "$out/bench.txt"
tail -3 "$out/perf.err"
perf report -i "$out/perf.data" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -${PROFILE_LINES:-70}
perf report -i "$out/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
echo "== the I/O thread alone"
perf report -i "$out/perf.data" --no-children --comms mnemo-io --sort dso,sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -${PROFILE_LINES:-70}

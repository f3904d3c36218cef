#!/usr/bin/env bash
# Quick start: install what is missing, build, start mnemod on an embedded
# store in ./data (127.0.0.1:7070, admin http 127.0.0.1:7071), import a
# generated sample through the Python client and query it. The daemon keeps
# running afterwards; the script says how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
bash tools/build.sh mnemod mnemo
export OPENBLAS_NUM_THREADS=1
mkdir -p data
pidfile=data/mnemod.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "mnemod already running (pid $(cat "$pidfile"))"
else
  nohup ./build/tools/mnemod --data-dir ./data >data/mnemod.out 2>data/mnemod.log &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    grep -q "listening" data/mnemod.out 2>/dev/null && break
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat data/mnemod.log; exit 1; }
    sleep 0.1
  done
  cat data/mnemod.out
fi
PYTHONPATH=reader /usr/bin/python3 tools/quickstart.py --addr 127.0.0.1:7070 "$@"

# Real text: the fortunes package's quotations, chunked and embedded with the
# hashed n-gram stand-in (tools/make_corpus.py), imported by `mnemo import`.
if ./build/tools/mnemo create corpus --dim 256 --metric cosine --index HNSW32 2>/dev/null; then
  /usr/bin/python3 tools/make_corpus.py --out data/corpus.jsonl
  ./build/tools/mnemo import corpus data/corpus.jsonl
fi
echo 'text search: "computers are useless, they only give answers"'
/usr/bin/python3 tools/make_corpus.py --query "computers are useless, they only give answers"
echo "mnemod keeps running (pid $(cat "$pidfile")); stop it with: kill $(cat "$pidfile")"

#!/usr/bin/env bash
# Runs clang's thread-safety analysis (-Wthread-safety, as errors) over
# mnemo's own sources, with the include paths and definitions of the build's
# compile_commands.json. GCC builds mnemo; this only checks it.
# Usage: tools/check_thread_safety.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
clang=${CLANGXX:-clang++}
command -v "$clang" >/dev/null || { echo "check_thread_safety: $clang not found"; exit 1; }
[[ -f $build/compile_commands.json ]] || { echo "check_thread_safety: no $build/compile_commands.json"; exit 1; }

# One line per source: the file, then its -I/-isystem/-D flags.
/usr/bin/python3 - "$build/compile_commands.json" > "$build/thread_safety_units.txt" <<'PY'
import json, os, shlex, sys
root = os.getcwd()
for unit in json.load(open(sys.argv[1])):
    path = os.path.relpath(unit["file"], root)
    if path.split("/")[0] not in ("common", "storage", "index", "kvcache", "engine", "net", "tools"):
        continue
    args = unit.get("arguments") or shlex.split(unit["command"])
    keep, it = [], iter(args)
    for a in it:
        if a in ("-I", "-isystem", "-D"):
            keep += [a, next(it)]
        elif a.startswith(("-I", "-D", "-isystem")):
            keep.append(a)
    print(" ".join([shlex.quote(path)] + [shlex.quote(k) for k in keep]))
PY
units=$(wc -l < "$build/thread_safety_units.txt")
# -fopenmp: OpenMP pragmas and omp.h as the GCC build sees them.
if xargs -P "$(nproc)" -L 1 sh -c "$clang"' -std=c++20 -fsyntax-only -fopenmp -Wthread-safety \
      -Werror=thread-safety -Wno-unknown-warning-option "$@" 2>&1 | grep -E "error|warning: .*thread" || true' sh \
    < "$build/thread_safety_units.txt" | tee "$build/thread_safety.log" | grep -q .; then
  echo "check_thread_safety: clang's analysis failed in $units units:"
  cat "$build/thread_safety.log"
  exit 1
fi
echo "check_thread_safety: $units units pass clang -Wthread-safety"

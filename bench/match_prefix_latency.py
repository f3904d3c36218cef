#!/usr/bin/env python3
"""How long match_prefix takes from a Python client over loopback: the call a
serving engine makes on its critical path (SGLang HiCache's batch_exists,
vLLM's get_num_new_matched_tokens).

Starts a mnemod on a temporary directory, stores the chunks of a prompt of
--chunks chunks (tiny layers: the size of a segment does not enter a match),
then times --calls matches of the whole prompt (every chunk stored), of a
prompt that diverges half-way, and of one that shares nothing. Prints p50 and
p99 in microseconds, with the machine's cores.

    python3 bench/match_prefix_latency.py [--mnemod build/tools/mnemod] [--chunks 64]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# MNEMO_READER: another copy of the client package (bench/gpu/run.sh compare).
sys.path.insert(0, os.environ.get("MNEMO_READER") or
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
import mnemo  # noqa: E402


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    p = argparse.ArgumentParser()
    p.add_argument("--mnemod", default=os.path.join(root, "build", "tools", "mnemod"))
    p.add_argument("--chunks", type=int, default=64, help="chunks of the prompt (16k tokens / 256)")
    p.add_argument("--calls", type=int, default=3000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([args.mnemod, "--data-dir", d, "--listen", "127.0.0.1:0",
                                 "--http", "127.0.0.1:0", "--log-level", "warn"],
                                stdout=subprocess.PIPE, text=True)
        try:
            c = mnemo.Client(proc.stdout.readline().split()[3])
            c.create_kv_space("m", layers=1, kv_heads=1, head_dim=8, dtype="f16", chunk_tokens=4)
            tokens = list(range(args.chunks * 4))
            hashes = mnemo.prefix_hashes(tokens, 4, "bench")
            kv = np.zeros((1, 1, 4, 8), np.float16)
            for h in hashes:
                c.put_kv("m", h, kv, kv)
            half = hashes[:args.chunks // 2] + mnemo.prefix_hashes([7] * len(tokens), 4, "x")[args.chunks // 2:]
            none = mnemo.prefix_hashes(tokens, 4, "other")
            print(f"machine: {os.cpu_count()} cores; {args.chunks} chunk hashes per call, "
                  f"{args.calls} calls each")
            for name, query, want in (("all stored", hashes, args.chunks),
                                      ("half stored", half, args.chunks // 2), ("none stored", none, 0)):
                times = []
                for _ in range(args.calls):
                    t = time.perf_counter()
                    n = c.match_prefix("m", query)
                    times.append((time.perf_counter() - t) * 1e6)
                    assert n == want, (name, n, want)
                times.sort()
                print(f"match_prefix, {name:12s} p50 {statistics.median(times):7.1f} us   "
                      f"p99 {times[int(0.99 * (len(times) - 1))]:7.1f} us")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()

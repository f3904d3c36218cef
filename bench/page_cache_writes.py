#!/usr/bin/python3
"""How fast one process writes 32 MiB (8 layers of 4 MiB) over page-cached
file pages, into one file or spread over several written by as many
threads: the measurement behind the value log's lanes (storage/value_log.h,
ValueLogOptions::reserve_lanes), which a same-host put_kv fills in
parallel. Prints MB/s and the ratio to one thread into one file, measured
side by side in one run.

Usage: /usr/bin/python3 bench/page_cache_writes.py [--dir DIR] [--rounds 3]
"""
import argparse
import os
import statistics
import tempfile
import threading
import time

import numpy as np

LAYERS, LAYER_BYTES = 8, 4 << 20
SLOTS = 4  # segments' room per file, written round robin (pages stay cached)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--segments", type=int, default=16)
    args = p.parse_args()
    layers = np.random.default_rng(0).integers(0, 255, (LAYERS, LAYER_BYTES), dtype=np.uint8)
    seg = LAYERS * LAYER_BYTES
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        fds = []
        for j in range(LAYERS):
            fd = os.open(os.path.join(tmp, f"lane{j}"), os.O_RDWR | os.O_CREAT)
            os.pwrite(fd, bytes(SLOTS * seg), 0)  # cached pages to write over
            fds.append(fd)

        def segment_rate(files):
            """Layer l goes to file l % files at its slot; one thread per file."""
            def lane(j, slot):
                for i, l in enumerate(range(j, LAYERS, files)):
                    os.pwrite(fds[j], layers[l], slot * seg + i * LAYER_BYTES)
            start = time.perf_counter()
            for s in range(args.segments):
                threads = [threading.Thread(target=lane, args=(j, s % SLOTS)) for j in range(files)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            return args.segments * seg / (time.perf_counter() - start) / 1e6

        counts = (1, 2, 4, 8)
        rates = {n: [] for n in counts}
        for _ in range(args.rounds):
            for n in counts:  # alternating, so that drift hits all alike
                rates[n].append(segment_rate(n))
        base = statistics.median(rates[1])
        print(f"32 MiB segments over cached pages, {os.cpu_count()} cores, medians of {args.rounds} rounds")
        for n in counts:
            m = statistics.median(rates[n])
            print(f"{n} file(s), {n} thread(s): {m:8.0f} MB/s  ({m / base:.2f}x one file)")
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    main()

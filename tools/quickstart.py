#!/usr/bin/python3
"""Imports a generated sample into a running mnemod and queries it.

Usage: PYTHONPATH=reader /usr/bin/python3 tools/quickstart.py [--addr 127.0.0.1:7070]
"""
import argparse
import sys
import time

import numpy as np

import mnemo


def clustered(n, dim, rng, centres):
    return (centres[rng.integers(0, len(centres), n)]
            + rng.normal(size=(n, dim)).astype(np.float32))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7070")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--index", default="IVF256,Flat")
    args = p.parse_args()

    rng = np.random.default_rng(2024)
    centres = rng.normal(size=(100, args.dim)).astype(np.float32) * 2
    base = clustered(args.n, args.dim, rng, centres)
    queries = clustered(100, args.dim, rng, centres)

    c = mnemo.Client(args.addr)
    try:
        c.create_collection("quickstart", dim=args.dim, index=args.index)
    except mnemo.AlreadyExists:
        print(f"collection 'quickstart' exists with {c.stats('quickstart').count} entries "
              "(reopened from disk)")
    start = time.time()
    for at in range(0, args.n, 5000):
        c.upsert("quickstart", np.arange(at, min(at + 5000, args.n)), base[at:at + 5000])
    took = time.time() - start
    print(f"imported {args.n} generated vectors (dim {args.dim}) into 'quickstart' "
          f"({args.index}) in {took:.2f}s ({args.n / took:.0f}/s)")

    _, ids = c.search("quickstart", queries, k=10, nprobe=16)
    d2 = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    truth = np.argsort(d2, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    print("query 0 -> ids:", " ".join(str(i) for i in ids[0]))
    print(f"recall@10 over {len(queries)} queries against brute force: {recall:.3f}")
    s = c.stats("quickstart")
    print(f"{s.name}: dim={s.dim} index={s.index} count={s.count} trained={s.trained} "
          f"storage_bytes={s.storage_bytes}")
    return 0 if recall > 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Turns a text corpus from a Debian package into jsonl chunks with vectors
for `mnemo import`, and searches such a collection with a text query.

    make_corpus.py --out corpus.jsonl [SOURCE ...]
    make_corpus.py --query "text" --collection corpus [--addr 127.0.0.1:7070]

SOURCE is a file or a directory of plain-text files. The default is the
`fortunes` package (/usr/share/games/fortunes: quotations separated by lines
holding "%"); the kernel documentation (`linux-doc`) or
/usr/share/common-licenses work as well. Files are cut into chunks: one
fortune each, or paragraphs joined up to --max-chars.

The vectors are NOT a language model's: until the GPU reader embeds text, a
chunk's vector is a deterministic hashed character n-gram embedding (3- to
5-grams of the lower-cased text, each hashed to one of --dim signed buckets,
counts damped by log1p, the vector L2-normalised; compare with cosine).
Texts that share spelling land close together, which is enough to see
import and search work end to end on real text. Each record is
{"id": n, "vector": [...], "group": source file number, "text": chunk}.
"""
import argparse
import json
import os
import sys

import numpy as np

DEFAULT_SOURCE = "/usr/share/games/fortunes"
NGRAMS = (3, 4, 5)


def embed(text, dim=256):
    """The hashed character n-gram vector of `text` (float32[dim], norm 1)."""
    data = np.frombuffer(" ".join(text.lower().split()).encode("utf-8"), dtype=np.uint8)
    vec = np.zeros(dim, dtype=np.float64)
    for n in NGRAMS:
        if len(data) < n:
            continue
        # A polynomial hash of every n-gram at once, then a multiplicative
        # mix; bit 32 gives the sign, the high bits the bucket.
        h = np.zeros(len(data) - n + 1, dtype=np.uint64)
        for j in range(n):
            h = h * np.uint64(257) + data[j:len(data) - n + 1 + j].astype(np.uint64)
        h = (h + np.uint64(n)) * np.uint64(0x9E3779B97F4A7C15)
        bucket = (h >> np.uint64(40)) % np.uint64(dim)
        sign = np.where((h >> np.uint64(32)) & np.uint64(1), 1.0, -1.0)
        vec += np.bincount(bucket.astype(np.int64), weights=sign, minlength=dim)
    vec = np.sign(vec) * np.log1p(np.abs(vec))
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).astype(np.float32)


def chunks_of(path, max_chars):
    """Chunks of one text file: one per fortune in a fortune file (records
    split at '%' lines); otherwise paragraphs, short ones joined up to
    max_chars."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if sum(1 for line in lines if line.strip() == "%") > 2:
        for part in "\n".join(lines).split("\n%\n"):
            if part.strip() and part.strip() != "%":
                yield part.strip()[:max_chars]
        return
    chunk = ""
    for part in (p.strip() for p in "\n".join(lines).split("\n\n")):
        if not part:
            continue
        if chunk and len(chunk) + len(part) > max_chars:
            yield chunk
            chunk = ""
        chunk = f"{chunk}\n\n{part}" if chunk else part
    if chunk:
        yield chunk


def text_files(sources):
    for source in sources:
        if os.path.isdir(source):
            for root, _, names in sorted(os.walk(source)):
                for name in sorted(names):
                    path = os.path.join(root, name)
                    if not name.endswith((".dat", ".u8", ".gz")) and not os.path.islink(path):
                        yield path
        elif os.path.isfile(source):
            yield source
        else:
            raise SystemExit(f"no such file or directory: {source} "
                             "(apt-get install fortunes, or name another text source)")


def make(args):
    written = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for group, path in enumerate(text_files(args.sources or [DEFAULT_SOURCE])):
            for chunk in chunks_of(path, args.max_chars):
                if len(chunk) < args.min_chars:
                    continue
                record = {"id": args.start_id + written, "vector": embed(chunk, args.dim).tolist(),
                          "group": group, "text": chunk}
                out.write(json.dumps(record) + "\n")
                written += 1
                if args.limit and written >= args.limit:
                    break
            if args.limit and written >= args.limit:
                break
    print(f"wrote {written} chunks of dimension {args.dim} to {args.out}")


def query(args):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
    import mnemo
    c = mnemo.Client(args.addr)
    dist, ids = c.search(args.collection, embed(args.query, args.dim)[None, :], k=args.k)
    found = c.get(args.collection, ids[0][ids[0] >= 0].astype(np.uint64))
    texts = dict(zip(found.ids.tolist(), found.payloads))
    for d, i in zip(dist[0], ids[0]):
        if i < 0:
            continue
        text = texts.get(int(i), b"")
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        print(f"[{i}] {d:.3f}  " + " ".join(text.split())[:160])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="*", help=f"text files or directories (default {DEFAULT_SOURCE})")
    p.add_argument("--out", help="jsonl file to write")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--max-chars", type=int, default=1200)
    p.add_argument("--min-chars", type=int, default=20)
    p.add_argument("--start-id", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="stop after this many chunks")
    p.add_argument("--query", help="search --collection with this text instead")
    p.add_argument("--collection", default="corpus")
    p.add_argument("--addr", default="127.0.0.1:7070")
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args()
    if args.query:
        query(args)
    elif args.out:
        make(args)
    else:
        p.error("give --out FILE to make a corpus, or --query TEXT to search one")


if __name__ == "__main__":
    main()

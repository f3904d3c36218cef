#!/usr/bin/python3
"""KV segment put/get throughput from the Python client over loopback,
against the loopback TCP limit and against Redis, measured side by side in
one run; then each codec's compression ratio and reconstruction error on
structured tensors.

  (a) mnemo MB/s / loopback TCP MB/s (a plain Python socket copy of the same
      bytes, the same way the client moves them: sendall / recv_into)
  (b) mnemo MB/s / Redis SET-GET MB/s (redis-server from Debian, no
      persistence, redis-py)

put and get are measured twice: by a client on the daemon's machine, which
writes the layers straight into the daemon's value-log files and reads them
from there (Client(same_host=None), the default for a loopback address),
and by one that moves them on the connection (same_host=False, and
recycle_bytes=0: every get gets new arrays), which loopback TCP bounds.

Segments are 4 MiB per layer (keys + values: 8 KV heads x 1024 tokens x 128
dims x f16 each), 8 layers: 32 MiB per put and per get (--layers and
--tokens change that: --layers 32 --tokens 256 is a 32-layer model's chunk
of 256 tokens, 1 MiB per layer). Rounds alternate
between the three so that drift hits them alike; medians are printed, of
the rounds after a warm-up round (which grows mnemod's store and Redis's
memory; its numbers are printed too).

Usage: OPENBLAS_NUM_THREADS=1 PYTHONPATH=reader /usr/bin/python3 bench/kv_throughput.py
       [--mnemod build/tools/mnemod] [--segments 16] [--rounds 5] [--warmup 1]
Needs redis-server and python3-redis (apt-get install redis-server python3-redis).
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

# MNEMO_READER: another copy of the client package (bench/gpu/run.sh compare).
sys.path.insert(0, os.environ.get("MNEMO_READER") or
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
import mnemo  # noqa: E402

LAYERS, HEADS, TOKENS, DIM = 8, 8, 1024, 128


def structured(seed, dtype=np.float16, layers=None, tokens=None):
    """Keys/values shaped like a model's: smooth along tokens, a few outlier
    channels, per-head offsets."""
    layers, tokens = layers or LAYERS, tokens or TOKENS
    rng = np.random.default_rng(seed)
    t = np.arange(tokens, dtype=np.float32)[None, None, :, None]
    d = np.arange(DIM, dtype=np.float32)[None, None, None, :]
    phase = rng.normal(size=(layers, HEADS, 1, DIM)).astype(np.float32)
    x = np.sin(0.01 * t * (1 + (d % 7)) + phase)
    x += 0.05 * rng.standard_normal(size=(layers, HEADS, tokens, DIM), dtype=np.float32)
    x[..., ::37] *= 12  # outlier channels
    return x.astype(dtype)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, ready, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline()
    if ready not in line:
        p.kill()
        raise SystemExit(f"{cmd[0]} did not start: {line}")
    return p, line


def tcp_round(payload_bytes, count):
    """Copies `count` buffers of payload_bytes over loopback one way and
    back, as a request and its reply would; returns MB/s of payload."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    buf = bytearray(payload_bytes)

    def echo():
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        inbox = bytearray(payload_bytes)
        view = memoryview(inbox)
        for _ in range(count):
            got = 0
            while got < payload_bytes:
                got += conn.recv_into(view[got:], payload_bytes - got)
            conn.sendall(view)
        conn.close()

    t = threading.Thread(target=echo)
    t.start()
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = bytearray(payload_bytes)
    view = memoryview(back)
    start_t = time.perf_counter()
    for _ in range(count):
        c.sendall(buf)
        got = 0
        while got < payload_bytes:
            got += c.recv_into(view[got:], payload_bytes - got)
    secs = time.perf_counter() - start_t
    c.close()
    t.join()
    srv.close()
    return 2 * payload_bytes * count / secs / 1e6  # bytes moved both ways


def mnemo_round(c, unrecycled, space, hashes, k, v, staging):
    """put over the connection, then on the same host (the space holds one
    set of hashes: each put replaces a segment); get into new arrays (each
    get's result is held until the next one's is in, as a reader that uses
    them would), on the same host by a client that recycles their memory
    and over the connection by one that does not (recycle_bytes=0,
    same_host=False); get into the caller's (staging) arrays, same host."""
    seg = k.nbytes + v.nbytes
    puts = []
    for client in (unrecycled, c):
        start_t = time.perf_counter()
        for h in hashes:
            client.put_kv(space, h, k, v)
        puts.append(len(hashes) * seg / (time.perf_counter() - start_t) / 1e6)
    gets = []
    for client in (c, unrecycled):
        start_t = time.perf_counter()
        held = None
        for h in hashes:
            held = client.get_kv(space, h)
        gets.append(len(hashes) * seg / (time.perf_counter() - start_t) / 1e6)
        del held
    start_t = time.perf_counter()
    for h in hashes:
        c.get_kv(space, h, out=staging)
    get_out = len(hashes) * seg / (time.perf_counter() - start_t) / 1e6
    return puts[1], puts[0], gets[0], gets[1], get_out


def redis_round(r, hashes, k, v):
    kb, vb = k.tobytes(), v.tobytes()
    start_t = time.perf_counter()
    for h in hashes:
        r.set(h + b"k", kb)
        r.set(h + b"v", vb)
    put = len(hashes) * (len(kb) + len(vb)) / (time.perf_counter() - start_t) / 1e6
    start_t = time.perf_counter()
    for h in hashes:
        k2 = np.frombuffer(r.get(h + b"k"), dtype=k.dtype).reshape(k.shape)
        v2 = np.frombuffer(r.get(h + b"v"), dtype=v.dtype).reshape(v.shape)
    get = len(hashes) * (k2.nbytes + v2.nbytes) / (time.perf_counter() - start_t) / 1e6
    return put, get


def mnemod_metrics(admin):
    import urllib.request
    return urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()


def mnemod_count(admin, op):
    """How many `op` requests mnemod answered."""
    found = re.search(rf'mnemo_requests_total{{op="{op}"}} (\d+)', mnemod_metrics(admin))
    return int(found.group(1)) if found else 0


def mnemod_seconds(admin):
    """Mean seconds mnemod spent per put_kv and get_kv (arrival to reply
    built, before it is written), from its /metrics."""
    text = mnemod_metrics(admin)
    sums = dict(re.findall(r'mnemo_request_duration_seconds_sum\{op="(\w+)"\} (\S+)', text))
    counts = dict(re.findall(r'mnemo_request_duration_seconds_count\{op="(\w+)"\} (\S+)', text))
    return {op: float(sums[op]) / float(counts[op]) for op in sums if float(counts[op])}


def codec_table(c):
    """Compression ratio and error of each codec on structured f16 tensors."""
    k, v = structured(7, layers=2), structured(8, layers=2)
    rows = []
    for codec in ["raw", "int8", "int4", "int4:64", "entropy"]:
        name = "codec_" + codec.replace(":", "_")
        c.create_kv_space(name, 2, HEADS, DIM, dtype="f16", chunk_tokens=TOKENS, codec=codec)
        c.put_kv(name, b"c" * 32, k, v)
        k2, v2 = c.get_kv(name, b"c" * 32)
        st = c.kv_stats(name)
        kf, vf = k.astype(np.float32), v.astype(np.float32)
        err_k = np.abs(k2.astype(np.float32) - kf)
        err_v = np.abs(v2.astype(np.float32) - vf)
        rel = (np.linalg.norm(k2.astype(np.float32) - kf) + np.linalg.norm(v2.astype(np.float32) - vf)) / \
            (np.linalg.norm(kf) + np.linalg.norm(vf))
        rows.append((codec, st.raw_bytes / st.bytes_stored, max(err_k.max(), err_v.max()), rel))
    return rows


def main():
    global LAYERS, TOKENS  # --layers, --tokens
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    p.add_argument("--mnemod", default=os.path.join(root, "build", "tools", "mnemod"))
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--layers", type=int, default=LAYERS, help="layers of a segment")
    p.add_argument("--tokens", type=int, default=TOKENS,
                   help="tokens of a segment (1024: 4 MiB per layer; 256: a common chunk)")
    p.add_argument("--warmup", type=int, default=1,
                   help="rounds run first and left out of the medians, alike for all three")
    args = p.parse_args()
    LAYERS, TOKENS = args.layers, args.tokens
    if not shutil.which("redis-server"):
        raise SystemExit("needs redis-server: apt-get install redis-server python3-redis")
    import redis

    tmp = tempfile.mkdtemp(prefix="mnemo-kv-bench-")
    port = free_port()
    daemon, line = start([args.mnemod, "--data-dir", os.path.join(tmp, "data"), "--listen",
                    f"127.0.0.1:{port}", "--http", "127.0.0.1:0", "--log-level", "warn"],
                   "listening", env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    rport = free_port()
    rds = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly",
                            "no", "--dir", tmp, "--proto-max-bulk-len", "1gb"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=rport)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        c = mnemo.Client(f"127.0.0.1:{port}")
        unrecycled = mnemo.Client(f"127.0.0.1:{port}", recycle_bytes=0, same_host=False)
        k, v = structured(1), structured(2)
        seg = k.nbytes + v.nbytes
        # A cache at its steady state: the space holds one round of segments,
        # so from the second round on every put evicts the oldest segment.
        c.create_kv_space("bench", LAYERS, HEADS, DIM, dtype="f16", chunk_tokens=TOKENS,
                          capacity_bytes=args.segments * seg + seg // 2)
        print(f"segment: {LAYERS} layers x {HEADS} heads x {TOKENS} tokens x {DIM} dims, f16: "
              f"{seg / 2**20:.0f} MiB ({seg / LAYERS / 2**20:.2g} MiB per layer), "
              f"{args.segments} segments per round, {args.warmup} + {args.rounds} rounds, "
              f"{os.cpu_count()} cores")
        staging = (np.empty_like(k), np.empty_like(v))
        results = {key: [] for key in ("tcp", "mput", "mput_tcp", "mget", "mget_new", "mget_out",
                                       "rput", "rget")}
        for rnd in range(args.warmup + args.rounds):
            hashes = [bytes([rnd, i]) * 16 for i in range(args.segments)]
            results["tcp"].append(tcp_round(seg, args.segments))
            mp, mpt, mg, mgn, mgo = mnemo_round(c, unrecycled, "bench", hashes, k, v, staging)
            rp, rg = redis_round(r, hashes, k, v)
            for key, val in (("mput", mp), ("mput_tcp", mpt), ("mget", mg), ("mget_new", mgn),
                             ("mget_out", mgo), ("rput", rp), ("rget", rg)):
                results[key].append(val)
            r.flushall()
        med = {key: statistics.median(vals[args.warmup:]) for key, vals in results.items()}
        print(f"loopback TCP (Python socket copy, payload MB/s): {med['tcp']:.0f}")
        admin = re.search(r"admin http (\S+)\)", line).group(1)
        print(f"same-host put by round (the space holds one round: round 1 grows the store, later "
              f"rounds evict as they put; medians leave out the first {args.warmup}): " +
              ", ".join(f"{x:.0f}" for x in results["mput"]) +
              f" MB/s; same-host puts done: {mnemod_count(admin, 'reserve_kv')}, gets: "
              f"{mnemod_count(admin, 'locate_kv')}")
        print(f"{'':22} {'mnemo MB/s':>11} {'redis MB/s':>11} {'(a) vs TCP':>11} {'(b) vs redis':>13}")
        for label, m, rr in (("put, same host", med["mput"], med["rput"]),
                             ("put over TCP", med["mput_tcp"], med["rput"]),
                             ("get, same host", med["mget"], med["rget"]),
                             ("get over TCP", med["mget_new"], med["rget"]),
                             ("get into out=, same h.", med["mget_out"], med["rget"])):
            print(f"{label:22} {m:11.0f} {rr:11.0f} {m / med['tcp']:11.2f} {m / rr:13.2f}")
        print("targets: (a) >= 0.8, (b) >= 5")
        spent = mnemod_seconds(admin)
        print(f"mnemod's time per segment (arrival to reply built, not sent): put (both paths) "
              f"{spent.get('put_kv', 0) * 1e3:.1f} ms, get {spent.get('get_kv', 0) * 1e3:.1f} ms; "
              f"the segment at the TCP rate: {seg / med['tcp'] / 1e3:.1f} ms")
        print()
        print(f"codecs on structured f16 tensors (2 layers x {HEADS} heads x {TOKENS} tokens x {DIM}):")
        print(f"{'codec':9} {'ratio':>6} {'max abs err':>12} {'rel L2 err':>11}")
        for codec, ratio, err, rel in codec_table(c):
            print(f"{codec:9} {ratio:6.2f} {err:12.4g} {rel:11.2e}")
        print("CacheGen reports 3.5-4.3x smaller KV than 8-bit quantization baselines "
              "with its own encoder; these ratios are against raw f16.")
    finally:
        daemon.terminate()
        daemon.wait()
        rds.terminate()
        rds.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

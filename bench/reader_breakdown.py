#!/usr/bin/env python3
"""Where the time to first token with reuse goes, on the GPU machine: the
parts of ``Reader.prefill`` measured one by one for the model and store of
bench/reader_ttft.py (Llama-3-8B shape, random bf16 weights, mnemod on the
same host).

Per prompt length and codec, medians of a few runs:

  prefill      Reader.prefill(prompt, logits_to_keep=1), as reader_ttft times it,
               (load) the loader's time within it, and si: the prefill again
               with a shorter GIL switch interval (threads waiting for the GIL
               while the model's thread launches kernels);
  hash+match   the chunk hashes and match_prefix;
  by layers per step: the prefill with each KvLoader.layers_per_step;
  load         KvLoader.load alone (every layer on the GPU, nothing else running);
  forward      the last token's forward over a cache already on the GPU;
  reads        the same-host reads alone (no GPU), by 1, 4, 8 and the
               loader's number of threads: GB/s of stored bytes.

prefill ~ hash+match + max(load, forward) when loading and the forward
overlap well; prefill ~ hash+match + load + forward when they do not.

    PYTHONPATH=reader python3 bench/reader_breakdown.py --mnemod /tmp/mnemod.sh
    (TTFT_ARGS is not read; bash bench/gpu/run.sh breakdown runs it there)
"""
import argparse
import concurrent.futures
import contextlib
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
import mnemo  # noqa: E402
from mnemo.reader import Reader  # noqa: E402
from reader_ttft import build_model, pinned_copy_rate, running_mnemod, sync  # noqa: E402


def timed(fn, repeats):
    """Median seconds of fn() (synchronized), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_rate(loader, hashes, threads, repeats=3):
    """GB/s of the same-host reads of a load, with no GPU work."""
    s = loader.stats
    shape = (s.layers, s.kv_heads, len(hashes) * s.chunk_tokens, s.head_dim)
    keys = torch.empty(shape, dtype=loader.dtype, device="meta")
    best = 0.0
    workers, loader.workers = loader.workers, threads  # a step in as many parts
    try:
        with contextlib.ExitStack() as stack:
            steps = loader._same_host_steps(hashes, keys, keys, stack)
            bufs = [torch.empty(st.nbytes, dtype=torch.uint8, pin_memory=torch.cuda.is_available()).numpy()
                    for st in steps]
            parts = [(st, buf, p) for st, buf in zip(steps, bufs) for p in range(st.parts)]
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                for _ in range(repeats):
                    t = time.perf_counter()
                    row = max(pool.map(lambda a: a[0].fill(a[1], a[2]), parts))
                    took = time.perf_counter() - t
                    best = max(best, sum(st.rows * row for st in steps) / took / 1e9)
    finally:
        loader.workers = workers
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnemod", required=True)
    p.add_argument("--tokens", default="4096,16384,32768")
    p.add_argument("--codecs", default="int8,raw")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layers-per-step", default="1,2,4,8",
                   help="the prefill is also timed with each of these KvLoader.layers_per_step")
    p.add_argument("--switch-interval", type=float, default=0.0005,
                   help="the prefill is timed again with this sys.setswitchinterval (the GIL's)")
    p.add_argument("--smoke", action="store_true", help="a small model on the CPU")
    args = p.parse_args()
    device = "cpu" if args.smoke else "cuda"
    lengths = [int(x) for x in args.tokens.split(",")]
    if args.smoke:
        model = build_model(args.layers, device, vocab_size=512, hidden_size=256,
                            intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    else:
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} cores; "
              f"pinned copy {pinned_copy_rate():.1f} GB/s")
        model = build_model(args.layers, device)
    ids_all = torch.randint(0, model.config.vocab_size, (1, max(lengths)), device=device)
    with running_mnemod(args.mnemod) as address:
        print(f"{'tokens':>6} {'codec':5} {'prefill':>8} {'(load)':>7} {'si ' + str(args.switch_interval * 1e3):>8} "
              f"{'hash+match':>10} {'load':>7} "
              f"{'forward':>7}  reads GB/s by threads")
        for codec in args.codecs.split(","):
            space = "breakdown-" + codec.replace(":", "-")
            r = Reader(model, mnemo.Client(address), space, codec=codec, namespace="bench",
                       same_host=True)
            default_per = r.loader.layers_per_step
            steps = [int(x) for x in args.layers_per_step.split(",")]
            r.prefill(ids_all, logits_to_keep=1)
            r.wait_for_writes()
            os.sync()
            for n in lengths:
                ids = ids_all[:, :n]
                hashes = r.hashes(ids)
                def run_prefill():
                    r.prefill(ids, logits_to_keep=1).logits[:, -1].argmax().item()
                    in_prefill.append(r.loader.last.seconds)
                in_prefill, by_step = [], {}
                for per in steps:
                    r.loader.layers_per_step = per
                    by_step[per] = timed(run_prefill, args.repeats)
                r.loader.layers_per_step = default_per
                in_prefill.clear()
                prefill = timed(run_prefill, args.repeats)
                load_in_prefill = statistics.median(in_prefill)
                default_interval = sys.getswitchinterval()
                sys.setswitchinterval(args.switch_interval)
                try:
                    prefill_si = timed(run_prefill, args.repeats)
                finally:
                    sys.setswitchinterval(default_interval)
                match = timed(lambda: r.client.match_prefix(r.space, r.hashes(ids)), args.repeats)
                load = timed(lambda: r.loader.load(hashes, n - 1), args.repeats)
                k, v = r.loader.load(hashes, n - 1)
                cache = [(k[i][None], v[i][None]) for i in range(k.shape[0])]
                pos = torch.tensor([[n - 1]], device=device)
                with torch.no_grad():
                    forward = timed(lambda: model(ids[:, n - 1:], position_ids=pos, past_key_values=cache,
                                                  logits_to_keep=1).logits.argmax().item(), args.repeats)
                k = v = cache = None  # the loaded cache goes before the reads are timed
                threads = sorted({1, 4, 8, r.loader.workers})
                reads = "  ".join(f"{t}:{read_rate(r.loader, hashes, t):5.1f}" for t in threads)
                print(f"{n:6d} {codec:5} {prefill * 1e3:8.1f} {load_in_prefill * 1e3:7.1f} "
                      f"{prefill_si * 1e3:8.1f} {match * 1e3:10.1f} {load * 1e3:7.1f} "
                      f"{forward * 1e3:7.1f}  {reads}", flush=True)
                print("        prefill by layers per step: " +
                      "  ".join(f"{per}: {t * 1e3:.1f} ms" for per, t in by_step.items()), flush=True)
            r.close()


if __name__ == "__main__":
    main()

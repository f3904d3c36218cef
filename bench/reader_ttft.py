#!/usr/bin/env python3
"""Time to first token with context reuse against a full prefill, on the GPU
machine, for a Llama-3-8B-shaped model (random bf16 weights) and a mnemod
on the same host.

For each prompt length (default 4k, 16k, 32k tokens) and codec (raw, int8,
int4), the prompt's chunks are stored once (a first prefill writes them
back); then, alternating in one run so that drift hits both alike:

  full:  model(prompt, logits_to_keep=1) and the argmax token, synchronized;
  reuse: Reader.prefill(prompt, logits_to_keep=1) and the argmax: chained
         hashes, match_prefix, the stored chunks loaded into the cache
         (same host: read from mnemod's files into pinned memory; TCP:
         encoded layers over loopback), the last token computed.

Prints, per length, codec and transport, the median TTFT of each and their
ratio (targets: <= 0.15 at 16k and <= 0.10 at 32k for the best codec,
<= 0.30 at 16k with raw), and the load rate (decoded KV bytes per second of
load, and bytes read per second) as a fraction of the pinned host-to-GPU
copy rate measured in the same run (aim >= 0.5). The prompts of 4k and 16k
are prefixes of the 32k one: their chunks are the 32k prompt's.

    PYTHONPATH=reader python3 bench/reader_ttft.py --mnemod /tmp/mnemod.sh
    (bash bench/gpu/run.sh reader does it all on the GPU machine)
"""
import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
import mnemo  # noqa: E402
from mnemo.reader import LlamaConfig, LlamaForCausalLM, Reader  # noqa: E402

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 rms_norm_eps=1e-5, max_position_embeddings=131072,
                 rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192})


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pinned_copy_rate(nbytes=1 << 30, repeats=5):
    """Host-to-GPU GB/s of a pinned buffer (best of a few)."""
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    best = 0.0
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        sync()
        best = max(best, nbytes / (time.perf_counter() - t) / 1e9)
    del host, dev
    return best


def build_model(layers, device, **overrides):
    cfg = LlamaConfig(**dict(LLAMA3_8B, num_hidden_layers=layers, **overrides))
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        if device == "cpu":  # torch 1.13 (the smoke test) has no device context
            model = LlamaForCausalLM(cfg).eval()
        else:  # built on the GPU: initializing 8 B weights on the CPU takes minutes
            with torch.device(device):
                model = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    return model


@contextlib.contextmanager
def running_mnemod(binary, data_dir=None):
    """A mnemod on loopback ports over a fresh store (under ``data_dir``
    when given); yields its address and stops it after."""
    with tempfile.TemporaryDirectory(dir=data_dir) as d:
        proc = subprocess.Popen([binary, "--data-dir", d, "--listen", "127.0.0.1:0",
                                 "--http", "127.0.0.1:0", "--log-level", "warn"],
                                stdout=subprocess.PIPE, text=True)
        try:
            yield proc.stdout.readline().split()[3]
        finally:
            proc.terminate()
            proc.wait()


def first_token_full(model, ids):
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        tok = model(ids, logits_to_keep=1).logits[:, -1].argmax(-1)
    tok.item()
    return time.perf_counter() - t, tok


def first_token_reuse(reader, ids):
    sync()
    t = time.perf_counter()
    out = reader.prefill(ids, logits_to_keep=1)
    tok = out.logits[:, -1].argmax(-1)
    tok.item()
    return time.perf_counter() - t, tok, out.reused_tokens


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnemod", required=True)
    p.add_argument("--tokens", default="4096,16384,32768")
    p.add_argument("--codecs", default="raw,int8,int4")
    p.add_argument("--transports", default="same-host,tcp")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--data-dir", default=None, help="mnemod's store (default: a fresh temp dir)")
    p.add_argument("--smoke", action="store_true",
                   help="a small model on the CPU: checks the script, measures nothing")
    args = p.parse_args()
    device = "cpu" if args.smoke else "cuda"
    lengths = [int(x) for x in args.tokens.split(",")]
    codecs = args.codecs.split(",")
    transports = args.transports.split(",")

    if args.smoke:
        rate = 1.0
        model = build_model(args.layers, device, vocab_size=512, hidden_size=256,
                            intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    else:
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} cores")
        rate = pinned_copy_rate()
        print(f"pinned host-to-GPU copy: {rate:.1f} GB/s; "
              f"PYTORCH_CUDA_ALLOC_CONF={os.environ.get('PYTORCH_CUDA_ALLOC_CONF', '')!r}")
        model = build_model(args.layers, device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: Llama-3-8B shape, {args.layers} layers, {params / 1e9:.2f} B parameters, bf16, "
          f"random weights; chunks of {args.chunk_tokens} tokens")
    cfg = model.config
    kv_per_token = 2 * args.layers * cfg.num_key_value_heads * cfg.head_dim * 2
    ids_all = torch.randint(0, cfg.vocab_size, (1, max(lengths)), device=device)
    # Warm the kernels of every length once.
    for n in lengths:
        first_token_full(model, ids_all[:, :n])

    with running_mnemod(args.mnemod, args.data_dir) as address:
        rows = []
        for codec in codecs:
            space = "ttft-" + codec.replace(":", "-")
            store = Reader(model, mnemo.Client(address), space, codec=codec,
                           chunk_tokens=args.chunk_tokens, namespace="bench")
            t = time.perf_counter()
            store.prefill(ids_all, logits_to_keep=1)
            store.wait_for_writes()
            os.sync()  # the page cache's writeback of the new segments must not compete with the reads
            st = store.client.kv_stats(space)
            print(f"{codec}: stored {st.segments} chunks, {st.bytes_stored / 2**30:.2f} GiB "
                  f"({st.bytes_stored / st.raw_bytes:.3f} of raw) in {time.perf_counter() - t:.1f} s")
            store.close()
            for transport in transports:
                r = Reader(model, mnemo.Client(address), space, namespace="bench",
                           same_host=(transport == "same-host"))
                if transport == "same-host" and codec == codecs[0]:
                    print(f"loader: {r.loader.workers} read threads")
                for n in lengths:
                    ids = ids_all[:, :n]
                    first_token_reuse(r, ids)  # warm-up: pinned buffers, kernels
                    full_t, reuse_t, ratios, loads = [], [], [], []
                    for _ in range(args.repeats):
                        ft, want = first_token_full(model, ids)
                        rt, got, reused = first_token_reuse(r, ids)
                        full_t.append(ft)
                        reuse_t.append(rt)
                        ratios.append(rt / ft)
                        loads.append(r.loader.last)
                    last = loads[-1]
                    load_s = statistics.median(x.seconds for x in loads)
                    row = dict(tokens=n, codec=codec, transport=last.transport,
                               full=statistics.median(full_t), reuse=statistics.median(reuse_t),
                               ratio=statistics.median(ratios), spread=(min(ratios), max(ratios)),
                               load=load_s, loaded_gbs=last.bytes_loaded / load_s / 1e9,
                               read_gbs=last.bytes_read / load_s / 1e9, reused=reused,
                               same_token=bool(torch.equal(got, want)))
                    rows.append(row)
                    print(f"{n:6d} {codec:5} {row['transport']:9} full {row['full'] * 1e3:8.1f} ms"
                          f"  reuse {row['reuse'] * 1e3:7.1f} ms (load {load_s * 1e3:6.1f})"
                          f"  ratio {row['ratio']:.3f} [{row['spread'][0]:.3f}-{row['spread'][1]:.3f}]"
                          f"  load {row['loaded_gbs']:5.1f} GB/s decoded ({row['loaded_gbs'] / rate:.2f}"
                          f" of pinned), read {row['read_gbs']:5.1f} GB/s ({row['read_gbs'] / rate:.2f})"
                          f"  reused {reused}  same first token: {row['same_token']}", flush=True)
                r.close()
        print()
        print(f"KV per token: {kv_per_token / 1024:.0f} KiB (bf16); pinned copy {rate:.1f} GB/s")
        print(f"{'tokens':>6} {'codec':5} {'transport':9} {'full ms':>8} {'reuse ms':>8} "
              f"{'ratio':>6} {'target':>6} {'load/pinned':>11}")
        for row in rows:
            target = {16384: 0.15, 32768: 0.10}.get(row["tokens"])
            if row["codec"] == "raw" and row["tokens"] == 16384:
                target = 0.30
            print(f"{row['tokens']:6d} {row['codec']:5} {row['transport']:9} {row['full'] * 1e3:8.1f} "
                  f"{row['reuse'] * 1e3:8.1f} {row['ratio']:6.3f} "
                  f"{'' if target is None else f'{target:.2f}':>6} {row['loaded_gbs'] / rate:11.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Decode speed with long-term memory (mnemo.reader.memory) against decode
without it, measured side by side in one run.

The memory of each memory layer holds --memory-tokens tokens of one
document (random keys and values of the model's shape: retrieval costs the
same whatever they hold). Greedy decode of --new-tokens after a short
prompt, timed with and without memory, alternating; the ratio of tokens/s
is the figure (target >= 0.5 with the device tier at 1M tokens per memory
layer and k = 32). --daemon also times the daemon-only tier (DaemonMemory,
--daemon-tokens per layer; filling it is slow, so it holds fewer).

    PYTHONPATH=reader python3 bench/memory_decode.py --model 8b --memory-layers 8,16,24
    PYTHONPATH=reader python3 bench/memory_decode.py --smoke        # CPU: checks the script
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
import mnemo  # noqa: E402
from mnemo.reader import memory as mem  # noqa: E402
from mnemo.reader.llama import LlamaForCausalLM  # noqa: E402
from reader_ttft import build_model, running_mnemod, sync  # noqa: E402


def fill(bank, model, tokens, group, device, dtype, batch=1 << 16):
    cfg = model.config
    g, d = cfg.num_key_value_heads, cfg.head_dim
    done = 0
    while done < tokens:
        n = min(batch, tokens - done)
        keys = [torch.randn(g, n, d, device=device, dtype=dtype) for _ in bank.layers]
        values = [torch.randn(g, n, d, device=device, dtype=dtype) for _ in bank.layers]
        bank.add(group, keys, values, n)
        done += n


def decode_rate(model, bank, prompt, group, new_tokens):
    sync()
    t = time.perf_counter()
    out = mem.generate(model, bank, prompt, group, max_new_tokens=new_tokens)
    sync()
    return new_tokens / (time.perf_counter() - t), out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="8b",
                   help="8b (Llama-3-8B-shaped, random bf16 weights) or a folder (e.g. models/mnemo-ref)")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--memory-layers", default="8,16,24", help="or 'all'")
    p.add_argument("--memory-tokens", type=int, default=1 << 20)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--daemon", default=None, help="mnemod binary: also time the daemon-only tier")
    p.add_argument("--daemon-tokens", type=int, default=1 << 14)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        model = build_model(4, device, vocab_size=512, hidden_size=256, intermediate_size=512,
                            num_attention_heads=4, num_key_value_heads=2)
        args.memory_tokens, args.new_tokens, args.daemon_tokens = 4096, 4, 512
        layers = [1, 3]
    else:
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} cores")
        if args.model == "8b":
            model = build_model(args.layers, device)
        else:
            model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device=device).eval()
        print(f"model {args.model}: {model.config.num_hidden_layers} layers, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, {model.dtype}")
        layers = ([*range(model.config.num_hidden_layers)] if args.memory_layers == "all"
                  else [int(x) for x in args.memory_layers.split(",")])
    dtype = model.dtype
    print(f"memory layers {layers}, {args.memory_tokens} tokens each, k = {args.k}, "
          f"{args.new_tokens} new tokens")
    bank = mem.MemoryBank(layers, k=args.k)
    fill(bank, model, args.memory_tokens, "doc", device, dtype)
    plain = mem.MemoryBank(layers, k=args.k)
    prompt = torch.randint(0, model.config.vocab_size, (1, 16), device=device)
    decode_rate(model, bank, prompt, "doc", 2)  # warm-up
    without, with_memory = [], []
    for _ in range(args.repeats):
        without.append(decode_rate(model, plain, prompt, None, args.new_tokens)[0])
        with_memory.append(decode_rate(model, bank, prompt, "doc", args.new_tokens)[0])
    w, m = statistics.median(without), statistics.median(with_memory)
    print(f"decode without memory {w:7.1f} tok/s, with the device tier {m:7.1f} tok/s: ratio {m / w:.3f}")
    if args.daemon:
        with running_mnemod(args.daemon) as address:
            cfg = model.config
            tier = mem.DaemonMemory(mnemo.Client(address), "bench", layers, cfg.num_key_value_heads,
                                    cfg.head_dim, k=args.k)
            t = time.perf_counter()
            fill(tier, model, args.daemon_tokens, 1, device, dtype, batch=4096)
            print(f"daemon tier: {args.daemon_tokens} tokens per layer stored in "
                  f"{time.perf_counter() - t:.1f} s")
            decode_rate(model, tier, prompt, 1, 2)
            rates = [decode_rate(model, tier, prompt, 1, args.new_tokens)[0] for _ in range(args.repeats)]
            r = statistics.median(rates)
            print(f"decode with the daemon-only tier {r:7.1f} tok/s: ratio {r / w:.3f} "
                  f"({args.daemon_tokens} tokens per layer)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""mnemo.reader's Llama core against transformers' LlamaForCausalLM, on the
GPU machine (torch 2.x, transformers >= 5, safetensors; no weights needed).

Checks, printing each figure:
  1. the same random weights give the same logits (float32, max |delta|),
     both ways through the Hugging Face folder layout: mnemo's
     save_pretrained read by transformers, and transformers' read by mnemo;
  2. a forward continued from the cache equals the full forward in both;
  3. mnemo's fallback safetensors reader reads what the package writes, and
     the package reads what the fallback writes, bit for bit;
  4. long-term memory through transformers' attention interface
     (mnemo.reader.hf's "mnemo_memory"): a document memorized window by
     window gives the same logits as mnemo's core with the same memory,
     and, with k at least the memory's size, the full forward's;
  5. with --mnemod, a daemon started here: Reader's reuse (raw) equals the
     full prefill, for mnemo's core and for transformers' model attached
     through mnemo.reader.hf.

    PYTHONPATH=reader python3 bench/reader_vs_transformers.py [--device cuda] [--mnemod PATH]
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reader"))
from mnemo.reader import LlamaConfig, LlamaForCausalLM  # noqa: E402
from mnemo.reader import safetensors_io  # noqa: E402
from reader_ttft import running_mnemod  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--mnemod", help="a mnemod binary: also check reuse through a daemon")
    args = p.parse_args()
    import safetensors.torch
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"device {args.device}")
    failures = 0

    def check(what, ok, figure=""):
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what} {figure}")

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    for tied in (False, True):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512,
                          num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
                          rope_parameters=rope, tie_word_embeddings=tied,
                          max_position_embeddings=4096)
        ours = LlamaForCausalLM(cfg).eval().to(args.device)
        ids = torch.randint(0, cfg.vocab_size, (2, args.tokens), device=args.device)
        with tempfile.TemporaryDirectory() as d:
            ours.save_pretrained(d)
            theirs = transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float32)
            theirs = theirs.eval().to(args.device)
            with torch.no_grad():
                a = ours(ids).logits
                b = theirs(ids).logits
            delta = (a - b).abs().max().item()
            check(f"mnemo -> transformers logits, tied={tied}", delta <= 1e-4,
                  f"max |delta| {delta:.2e} (limit 1e-4)")
        with tempfile.TemporaryDirectory() as d:
            theirs.save_pretrained(d)
            back = LlamaForCausalLM.from_pretrained(d, device=args.device).eval()
            with torch.no_grad():
                c = back(ids).logits
            delta = (c - b).abs().max().item()
            check(f"transformers -> mnemo logits, tied={tied}", delta <= 1e-4,
                  f"max |delta| {delta:.2e}")
        with torch.no_grad():
            head = ours(ids[:, :173])
            tail = ours(ids[:, 173:], past_key_values=head.past_key_values)
            cont = (tail.logits - a[:, 173:]).abs().max().item()
            dc = transformers.DynamicCache()
            h2 = theirs(ids[:, :173], past_key_values=dc, use_cache=True)
            t2 = theirs(ids[:, 173:], past_key_values=h2.past_key_values, use_cache=True,
                        position_ids=torch.arange(173, ids.shape[1], device=args.device)[None].expand(2, -1))
            cont_t = (t2.logits - b[:, 173:]).abs().max().item()
        check("continued forward = full forward (mnemo)", cont <= 1e-4, f"max |delta| {cont:.2e}")
        check("continued forward = full forward (transformers)", cont_t <= 1e-4,
              f"max |delta| {cont_t:.2e}")

    memory_checks(ours, theirs, ids[:1], check)

    tensors = {"f32": torch.randn(7, 3), "bf16": torch.randn(5).bfloat16(),
               "f16": torch.randn(2, 2, 2).half(), "i64": torch.arange(4), "empty": torch.zeros(0, 3)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "package.safetensors")
        safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
        got = safetensors_io.read_file(path)
        check("fallback reader reads the package's file",
              all(got[k].dtype == t.dtype and torch.equal(got[k], t) for k, t in tensors.items()))
        path = os.path.join(d, "fallback.safetensors")
        safetensors_io.write_file(tensors, path, metadata={"format": "pt"})
        got = safetensors.torch.load_file(path)
        check("package reads the fallback's file",
              all(got[k].dtype == t.dtype and torch.equal(got[k], t) for k, t in tensors.items()))
    if args.mnemod:
        reuse_checks(args, ours, theirs, ids[:1], check)
    print("all checks passed" if failures == 0 else f"{failures} checks failed")
    return 1 if failures else 0


def memory_checks(ours, theirs, ids, check, window=64):
    from mnemo.reader import memory as mem
    from mnemo.reader.hf import HfCausalLM
    hf = HfCausalLM(theirs)
    with torch.no_grad():
        full = ours(ids).logits
    n = ids.shape[1]
    for k in (8, n):
        got = {}
        for name, model in (("mnemo", ours), ("transformers", hf)):
            bank = mem.MemoryBank([0, 2], k=k)
            got[name] = torch.cat(mem.memorize(model, bank, ids, "doc", window), dim=1)
        delta = (got["mnemo"] - got["transformers"]).abs().max().item()
        check(f"memory through transformers' attention = mnemo's core (k {k}, layers 0 and 2)",
              delta <= 1e-4, f"max |delta| {delta:.2e}")
    every = {}
    for name, model in (("mnemo", ours), ("transformers", hf)):
        bank = mem.MemoryBank(range(ours.config.num_hidden_layers), k=n)
        every[name] = torch.cat(mem.memorize(model, bank, ids, "doc", window), dim=1)
        delta = (every[name] - full).abs().max().item()
        check(f"memory with k >= its size = full attention ({name}, every layer)", delta <= 1e-4,
              f"max |delta| {delta:.2e}")
    with torch.no_grad():
        plain = hf(ids).logits                     # the plain attention is back after memory
    delta = (plain - full).abs().max().item()
    check("transformers without memory after a memory forward = full forward", delta <= 1e-4,
          f"max |delta| {delta:.2e}")


def reuse_checks(args, ours, theirs, prompt, check):
    import mnemo
    from mnemo.reader import Reader
    from mnemo.reader.hf import HfCausalLM
    with running_mnemod(args.mnemod) as address:
        for name, model in (("mnemo", ours), ("transformers", HfCausalLM(theirs))):
            r = Reader(model, mnemo.Client(address), "reuse-" + name, codec="raw", chunk_tokens=64)
            with torch.no_grad():
                full = model(prompt).logits
            first = r.prefill(prompt)
            r.wait_for_writes()
            again = r.prefill(prompt)
            delta = (again.logits - full[:, again.reused_tokens:]).abs().max().item()
            check(f"reuse = full prefill ({name}, raw, {again.reused_tokens} of "
                  f"{prompt.shape[1]} tokens reused)",
                  first.reused_tokens == 0 and again.reused_tokens > 0 and delta <= 1e-4,
                  f"max |delta| {delta:.2e}")
            r.close()


if __name__ == "__main__":
    sys.exit(main())

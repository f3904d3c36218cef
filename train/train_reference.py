"""Trains mnemo's reference model on the GPU machine: a small Llama (GQA,
RoPE, tied embeddings; about 12M parameters, 25 MB in bf16) with a short
window, written to ``models/mnemo-ref`` in Hugging Face layout.

    bash bench/gpu/run.sh train          # on the GPU machine, after pack.sh here
    python3 train/train_reference.py --data build/refmodel-data --minutes 6

The data comes from ``train/prepare_data.py`` (Debian packages only;
WikiText stays held out). Two things are mixed in, both written down in
bench/README.md:

* Positional skips (PoSE, Zhu et al. 2023): in half of the text sequences
  the positions after a random cut jump ahead by up to ``--max-skip``
  tokens, so that a model trained on 512-token windows has seen relative
  distances as long as those its memory layers meet when they retrieve
  keys from far back in a document (the keys keep their true positions).
* Synthetic pass-key documents (``--passkey-fraction`` of the sequences):
  text, "The pass key is 12345. Remember it. 12345 is the pass key.", more
  text, then "What is the pass key? The pass key is 12345", with a
  positional skip between the statement and the question.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "reader"))
from mnemo.reader.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402
from prepare_data import passkey_tokens  # noqa: E402  (train/, this script's folder)

ROOT = os.path.dirname(HERE)


def reference_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=384, intermediate_size=1024,
                       num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                       max_position_embeddings=16384, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


class Batches:
    """Training sequences of ``window`` tokens with their positions."""

    def __init__(self, tokens: np.ndarray, passkey: dict, window: int, batch: int,
                 max_skip: int, skip_fraction: float, passkey_fraction: float, seed: int):
        self.tokens, self.pk, self.window, self.batch = tokens, passkey, window, batch
        self.max_skip, self.skip_fraction, self.passkey_fraction = max_skip, skip_fraction, passkey_fraction
        self.rng = np.random.default_rng(seed)

    def text(self, n: int) -> np.ndarray:
        start = self.rng.integers(0, len(self.tokens) - n)
        return self.tokens[start:start + n].astype(np.int64)

    def passkey_sequence(self):
        w, rng = self.window, self.rng
        key, state, ask = passkey_tokens(self.pk, rng)
        tail = ask + key
        filler = w - len(state) - len(tail)
        before = int(rng.integers(0, filler // 2))
        seq = np.concatenate([self.text(before), state, self.text(filler - before), tail])
        cut = before + len(state) + int(rng.integers(0, filler - before))
        return seq, cut

    def __iter__(self):
        w = self.window
        while True:
            ids = np.empty((self.batch, w + 1), dtype=np.int64)
            pos = np.tile(np.arange(w + 1), (self.batch, 1))
            for b in range(self.batch):
                if self.rng.random() < self.passkey_fraction:
                    seq, cut = self.passkey_sequence()
                    ids[b, :w] = seq[:w]
                    ids[b, w] = seq[w] if len(seq) > w else self.pk["eos"]
                    skip = self.rng.integers(0, self.max_skip + 1)
                else:
                    ids[b] = self.text(w + 1)
                    cut = int(self.rng.integers(1, w))
                    skip = self.rng.integers(0, self.max_skip + 1) if self.rng.random() < self.skip_fraction else 0
                pos[b, cut:] += skip
            yield torch.from_numpy(ids), torch.from_numpy(pos)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(ROOT, "build", "refmodel-data"))
    p.add_argument("--out", default=os.path.join(ROOT, "models", "mnemo-ref"))
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--steps", type=int, default=20000, help="at most this many steps")
    p.add_argument("--minutes", type=float, default=6.0, help="at most this long (the schedule ends then)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-skip", type=int, default=16 * 512 + 1024)
    p.add_argument("--skip-fraction", type=float, default=0.5)
    p.add_argument("--passkey-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens = np.fromfile(os.path.join(args.data, "train.u16"), dtype=np.uint16)
    with open(os.path.join(args.data, "passkey.json")) as f:
        passkey = json.load(f)
    held = len(tokens) // 100                    # the last 1%: a validation loss of the same text
    train, val = tokens[:-held], tokens[-held:]
    config = reference_config(8192)
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters; data: {len(train) / 1e6:.2f} M tokens; "
          f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; torch {torch.__version__}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95),
                            **({"fused": True} if device == "cuda" else {}))  # torch 1.13 has no fused
    warmup = min(200, max(1, args.steps // 10))

    def lr_at(step, progress):
        """Warmup, then a cosine to a tenth over the run, whose end is
        --steps or --minutes, whichever comes first."""
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    batches = iter(Batches(train, passkey, args.window, args.batch, args.max_skip,
                           args.skip_fraction, args.passkey_fraction, args.seed))
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")
    start, log, done = time.time(), [], 0
    for step in range(args.steps):
        progress = max(step / args.steps, (time.time() - start) / (args.minutes * 60))
        if progress >= 1:
            print(f"stopping at step {step}: --minutes {args.minutes} reached")
            break
        ids, pos = next(batches)
        ids, pos = ids.to(device, non_blocking=True), pos.to(device, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, progress)
        with autocast:
            logits = model(ids[:, :-1], position_ids=pos[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done += 1
        if step % 100 == 0 or step == args.steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - start, 1)})
            print(log[-1], flush=True)
    model.eval()
    with torch.no_grad(), autocast:
        v = torch.from_numpy(val[: (len(val) // (args.window + 1)) * (args.window + 1)].astype(np.int64))
        v = v.view(-1, args.window + 1)[:64].to(device)
        val_loss = F.cross_entropy(model(v[:, :-1]).logits.float().reshape(-1, config.vocab_size),
                                   v[:, 1:].reshape(-1)).item()
    print(f"validation loss (last 1% of the training text, not trained on): {val_loss:.3f}")
    model.to(torch.bfloat16).save_pretrained(args.out)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"args": vars(args), "parameters": n_params, "steps": done,
                   "tokens_seen": done * args.batch * args.window,
                   "validation_loss": round(val_loss, 4), "log": log,
                   "torch": torch.__version__}, f, indent=1)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": False, "add_eos_token": False,
                   "model_max_length": args.window}, f, indent=1)


if __name__ == "__main__":
    main()

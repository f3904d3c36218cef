#!/usr/bin/env python3
"""What long-term memory buys the reference model (models/mnemo-ref, a
512-token window): perplexity on held-out WikiText-2 with and without
memory, and pass-key retrieval with the key placed far beyond the window.

Perplexity: each split is cut into documents of --doc-tokens; a document
is read window by window (``memory.memorize``). Without memory each window
sees only itself; with memory its memory layers also retrieve the top-k
keys of the document's earlier windows (device tier, exact). Full context
(the whole document in one forward) is printed beside them.

Pass key: a five-digit key stated near the start of a document of
--passkey-distance windows of WikiText-2 text, then, in the last window,
"What is the pass key? The pass key is" and five greedy tokens. Accuracy
(all five digits right) without memory (the last window alone), with
memory (the document memorized, then the last window), and inside the
window (the key stated in the last window itself: the ceiling).

    bash bench/gpu/run.sh quality          # on the GPU machine, after pack.sh
    PYTHONPATH=reader python3 bench/memory_quality.py --data build/refmodel-data --smoke
"""
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
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "reader"))
sys.path.insert(0, os.path.join(ROOT, "train"))
from mnemo.reader import memory as mem  # noqa: E402
from mnemo.reader.llama import LlamaForCausalLM  # noqa: E402
from prepare_data import passkey_tokens  # noqa: E402


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")


def perplexity(model, tokens, doc_tokens, window, layers, k, device):
    """exp(mean NLL) without memory, with memory, and with the full document."""
    sums = {"window": 0.0, "memory": 0.0, "full": 0.0}
    count = 0
    n_docs = len(tokens) // doc_tokens
    for d in range(n_docs):
        ids = torch.from_numpy(tokens[d * doc_tokens:(d + 1) * doc_tokens].astype(np.int64))[None].to(device)
        targets = ids[0, 1:]
        for name, bank in (("window", mem.MemoryBank([], k)), ("memory", mem.MemoryBank(layers, k))):
            logits = torch.cat(mem.memorize(model, bank, ids, f"doc{d}", window), dim=1)[0, :-1]
            sums[name] += nll(logits, targets).sum().item()
        with torch.no_grad():
            sums["full"] += nll(model(ids).logits[0, :-1], targets).sum().item()
        count += len(targets)
    return {name: math.exp(s / count) for name, s in sums.items()}, n_docs, count


class PassKey:
    def __init__(self, template, filler, window, rng):
        self.t, self.filler, self.window, self.rng = template, filler, window, rng

    def text(self, n):
        start = self.rng.integers(0, len(self.filler) - n)
        return self.filler[start:start + n].astype(np.int64)

    def trial(self, distance_windows):
        """(document before the last window, last window, key tokens)."""
        w = self.window
        key, state, ask = passkey_tokens(self.t, self.rng)
        doc_len = distance_windows * w
        at = int(self.rng.integers(0, w // 2))
        doc = np.concatenate([self.text(at), state, self.text(doc_len - at - len(state))])
        last = np.concatenate([self.text(w - len(ask)), ask])
        at_last = int(self.rng.integers(0, w // 2))
        inside = np.concatenate([last[:at_last], state, last[at_last:len(last) - len(ask) - len(state)], ask])
        return doc, last, inside, key


def passkey(model, template, filler, window, distance, layers, k, trials, device, seed):
    pk = PassKey(template, filler, window, np.random.default_rng(seed))
    right = {"no memory": 0, "memory": 0, "inside the window": 0}
    as_ids = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))[None].to(device)  # noqa: E731
    for i in range(trials):
        doc, last, inside, key = pk.trial(distance)
        blank = mem.MemoryBank([], k)
        bank = mem.MemoryBank(layers, k)
        mem.memorize(model, bank, as_ids(doc), "doc", window)
        outs = {"no memory": mem.generate(model, blank, as_ids(last), None, 5),
                "memory": mem.generate(model, bank, as_ids(last), "doc", 5),
                "inside the window": mem.generate(model, blank, as_ids(inside), None, 5)}
        for name, out in outs.items():
            right[name] += out[0, -5:].tolist() == key
    return {name: r / trials for name, r in right.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "mnemo-ref"))
    p.add_argument("--data", default=os.path.join(ROOT, "build", "refmodel-data"))
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--doc-tokens", type=int, default=8192)
    p.add_argument("--memory-layers", default="all", help="e.g. 3,4,5 (default: every layer)")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--splits", default="valid,test")
    p.add_argument("--passkey-distance", type=int, default=16, help="windows between the key and the question")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few documents and trials on the CPU")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32, device=device).eval()
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers)) if args.memory_layers == "all" else [int(x) for x in args.memory_layers.split(",")]
    with open(os.path.join(args.data, "passkey.json")) as f:
        template = json.load(f)
    training = os.path.join(args.model, "training.json")
    trained = json.load(open(training)) if os.path.exists(training) else {}
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{trained.get('steps', '?')} steps; window {args.window}; memory layers {layers}, k {args.k}; "
          f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; torch {torch.__version__}")
    start = time.time()
    for split in args.splits.split(","):
        tokens = np.fromfile(os.path.join(args.data, f"wikitext-{split}.u16"), dtype=np.uint16)
        if args.smoke:
            tokens = tokens[:2 * args.doc_tokens]
        ppl, docs, count = perplexity(model, tokens, args.doc_tokens, args.window, layers, args.k, device)
        print(f"perplexity, wikitext-2-{split} ({docs} documents of {args.doc_tokens} tokens, {count} predicted): "
              f"window alone {ppl['window']:.2f}, with memory {ppl['memory']:.2f}, "
              f"full context {ppl['full']:.2f}  ({time.time() - start:.0f} s)", flush=True)
    filler = np.fromfile(os.path.join(args.data, "wikitext-test.u16"), dtype=np.uint16)
    trials = 3 if args.smoke else args.trials
    acc = passkey(model, template, filler, args.window, args.passkey_distance, layers, args.k,
                  trials, device, args.seed)
    ceiling = acc["inside the window"]
    print(f"pass key {args.passkey_distance} windows back ({args.passkey_distance * args.window} tokens), "
          f"{trials} trials: no memory {acc['no memory']:.2f}, with memory {acc['memory']:.2f}, "
          f"inside the window {ceiling:.2f}; memory / inside = "
          f"{acc['memory'] / ceiling if ceiling else float('nan'):.2f}  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

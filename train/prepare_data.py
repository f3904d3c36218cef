"""Prepares the reference model's data on a Debian machine: the training
text from Debian packages, its SentencePiece tokenizer, and the token files
that the trainer and the quality benchmark read on the GPU machine (which
has neither the packages nor sentencepiece).

    /usr/bin/python3 train/prepare_data.py --out build/refmodel-data

Sources (installed by tools/install_deps.sh --bench): the kernel
documentation (``linux-doc-*``: every ``.rst``/``.txt`` under
Documentation), the King James Bible (``bible-kjv``'s ``bible`` tool over
``bible-kjv-text``) and ``fortunes``. WikiText-2 is tokenized for evaluation
only, never trained on.

Writes into --out:
  train.u16            the training tokens, documents separated by EOS
  wikitext-valid.u16, wikitext-test.u16   the held-out splits, tokenized
  passkey.json         token ids of the pass-key template (train and bench)
The tokenizer is ``models/mnemo-ref/tokenizer.model``; it is trained only
when missing (or with --retrain), so that the committed model and its
tokenizer stay a pair.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL_DIR = os.path.join(ROOT, "models", "mnemo-ref")
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")
VOCAB = 8192

#: The pass-key task (the format of Mohtashami & Jaggi's landmark attention
#: and LongLoRA): a five-digit key stated once, text, then the question.
#: Built in token space (``passkey.json``): state[0], key, state[1], key,
#: state[2]; then ask, and the key is the answer. A key is preceded by the
#: word-boundary piece and is one token per digit.
PASSKEY_STATE = (" The pass key is", ". Remember it.", " is the pass key.")
PASSKEY_ASK = " What is the pass key? The pass key is"


def passkey_template(sp) -> dict:
    """The pass-key template's token ids under SentencePiece model ``sp``
    (what ``passkey.json`` holds)."""
    return {
        "state": [sp.encode(s) for s in PASSKEY_STATE],
        "ask": sp.encode(PASSKEY_ASK),
        "space": sp.piece_to_id("\u2581"),
        "digits": [sp.piece_to_id(str(d)) for d in range(10)],
        "bos": sp.bos_id(), "eos": sp.eos_id(),
    }


def passkey_tokens(template: dict, rng):
    """A random five-digit key drawn from ``rng`` (numpy Generator): its
    tokens, the statement of it, and the question (which ends where the
    key's first digit comes). Lists of token ids."""
    t = template
    key = [t["digits"][d] for d in rng.integers(0, 10, 5)]
    sp = [t["space"]]
    state = t["state"][0] + sp + key + t["state"][1] + sp + key + t["state"][2]
    return key, state, t["ask"] + sp


def kernel_docs():
    root = glob.glob("/usr/share/doc/linux-doc-*/Documentation")
    if not root:
        sys.exit("linux-doc is not installed (apt-get install linux-doc)")
    for path in sorted(glob.glob(os.path.join(root[0], "**", "*.gz"), recursive=True)):
        if path.endswith((".rst.gz", ".txt.gz")):
            with gzip.open(path, "rt", errors="replace") as f:
                yield f.read()


def bible():
    out = subprocess.run(["bible", "-l0", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True)
    # One document per book: a book starts with a line "Name N" after a blank line.
    book, books = [], []
    for line in out.stdout.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped[0].isdigit() and stripped.endswith(" 1") and book:
            books.append("\n".join(book))
            book = []
        book.append(stripped.lstrip("0123456789 ") if stripped[0].isdigit() else stripped)
    books.append("\n".join(book))
    return books


def fortunes():
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if os.path.isfile(path) and not path.endswith((".dat", ".u8")):
            with open(path, errors="replace") as f:
                yield from (p.strip() for p in f.read().split("\n%\n") if p.strip())


def corpus():
    """Documents, kernel docs first; fortunes are joined a hundred to a document."""
    docs = list(kernel_docs()) + bible()
    f = list(fortunes())
    docs += ["\n\n".join(f[i:i + 100]) for i in range(0, len(f), 100)]
    return docs


def train_tokenizer(docs, path):
    import sentencepiece as spm
    text = os.path.join(os.path.dirname(path), "tokenizer-train.txt")
    rng = random.Random(0)
    with open(text, "w") as f:
        for d in docs:
            for line in d.splitlines():
                if line.strip() and rng.random() < 0.5:
                    f.write(line.strip() + "\n")
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=path[:-len(".model")], vocab_size=VOCAB, model_type="bpe",
        split_digits=True, byte_fallback=True, character_coverage=0.9995,
        input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=os.cpu_count(),
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    os.remove(text)
    os.remove(path[:-len(".model")] + ".vocab")


def tokenize(sp, docs):
    eos = sp.eos_id()
    out = []
    for ids in sp.encode(docs):
        out.extend(ids)
        out.append(eos)
    return np.asarray(out, dtype=np.uint16)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "build", "refmodel-data"))
    p.add_argument("--retrain", action="store_true", help="train the tokenizer again")
    args = p.parse_args()
    import sentencepiece as spm
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(MODEL_DIR, exist_ok=True)
    docs = corpus()
    tok = os.path.join(MODEL_DIR, "tokenizer.model")
    if args.retrain or not os.path.exists(tok):
        train_tokenizer(docs, tok)
    sp = spm.SentencePieceProcessor(model_file=tok)
    train = tokenize(sp, docs)
    train.tofile(os.path.join(args.out, "train.u16"))
    print(f"train: {len(docs)} documents, {sum(map(len, docs)) / 1e6:.1f} M characters, "
          f"{len(train) / 1e6:.2f} M tokens")
    for split in ("valid", "test"):
        with open(os.path.join(SHARED_DATA, f"wikitext-2-{split}.txt")) as f:
            ids = np.asarray(sp.encode(f.read()), dtype=np.uint16)
        ids.tofile(os.path.join(args.out, f"wikitext-{split}.u16"))
        print(f"wikitext-2-{split}: {len(ids) / 1e3:.0f} k tokens")
    template = passkey_template(sp)
    # A digit must be one token whatever precedes it (split_digits), or
    # the key's tokens would depend on the text around it.
    assert sp.encode("is 12345") == sp.encode("is") + [template["space"]] + [
        template["digits"][d] for d in (1, 2, 3, 4, 5)], sp.encode("is 12345")
    with open(os.path.join(args.out, "passkey.json"), "w") as f:
        json.dump(template, f)


if __name__ == "__main__":
    main()

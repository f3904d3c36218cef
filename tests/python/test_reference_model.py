"""The reference model in models/mnemo-ref (trained by train/train_reference.py
on the GPU machine): it loads in Hugging Face layout, its tokenizer keeps
digits apart, its long-term memory is exact with k at the memory's size, and
it retrieves a pass key from far beyond its window only with memory."""
import json
import pathlib

import numpy as np
import pytest
import torch

from mnemo.reader import memory as mem
from mnemo.reader.llama import LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mnemo-ref"
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2-test.txt"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlamaForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def sp():
    import sentencepiece
    return sentencepiece.SentencePieceProcessor(model_file=str(MODEL / "tokenizer.model"))


@pytest.fixture(scope="module")
def text_ids(sp):
    with open(WIKITEXT) as f:
        text = f.read(200_000)
    return np.asarray(sp.encode(text), dtype=np.int64)


def test_reference_model_is_a_small_gqa_llama_in_hugging_face_layout(model):
    c = model.config
    assert c.num_key_value_heads < c.num_attention_heads          # grouped-query attention
    size = sum(f.stat().st_size for f in MODEL.iterdir())
    assert size < 30 * 2**20, size
    with open(MODEL / "config.json") as f:
        assert json.load(f)["architectures"] == ["LlamaForCausalLM"]
    with open(MODEL / "training.json") as f:
        trained = json.load(f)
    assert trained["validation_loss"] < 5.0, trained["validation_loss"]   # far below log(8192) = 9.0


def test_reference_tokenizer_round_trips_and_splits_digits(sp):
    text = "The pass key is 90210. Remember it."
    assert sp.decode(sp.encode(text)) == text
    assert sum(1 for p in sp.encode_as_pieces("90210") if p.strip("\u2581")) == 5


def test_exact_memory_of_the_reference_model_equals_full_attention(model, text_ids):
    ids = torch.from_numpy(text_ids[:768])[None]
    with torch.no_grad():
        full = model(ids).logits
    layers = list(range(model.config.num_hidden_layers))
    bank = mem.MemoryBank(layers, k=ids.shape[1])
    got = torch.cat(mem.memorize(model, bank, ids, "doc", window=256), dim=1)
    assert (got - full).abs().max().item() <= 1e-4
    # Greedy decoding after the memorized document: the same tokens as
    # with the whole document in the window.
    prompt = torch.from_numpy(text_ids[768:800])[None]
    with_memory = mem.generate(model, bank, prompt, "doc", max_new_tokens=8)
    with torch.no_grad():
        whole = torch.cat([ids, prompt], dim=1)
        for _ in range(8):
            whole = torch.cat([whole, model(whole).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(with_memory[0, -8:], whole[0, -8:])


def test_reference_model_recalls_a_pass_key_beyond_its_window_only_with_memory(model, sp, text_ids):
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    from memory_quality import PassKey
    from prepare_data import passkey_template   # bench/memory_quality put train/ on the path
    pk = PassKey(passkey_template(sp), text_ids.astype(np.uint16), window=512, rng=np.random.default_rng(1))
    right = {"none": 0, "memory": 0}
    trials = 5
    for _ in range(trials):
        doc, last, _, key = pk.trial(distance_windows=4)            # 2048 tokens back
        bank = mem.MemoryBank(range(model.config.num_hidden_layers), k=32)
        mem.memorize(model, bank, torch.from_numpy(doc)[None], "doc", 512)
        last = torch.from_numpy(last)[None]
        right["memory"] += mem.generate(model, bank, last, "doc", 5)[0, -5:].tolist() == key
        right["none"] += mem.generate(model, mem.MemoryBank([]), last, None, 5)[0, -5:].tolist() == key
    assert right["memory"] >= 4 and right["none"] == 0, right


def test_reference_model_generates_text_and_predicts_held_out_text(model, sp, text_ids):
    prompt = torch.tensor([sp.encode("And God said unto Moses,")])
    out = mem.generate(model, mem.MemoryBank([]), prompt, None, max_new_tokens=16)
    new = out[0, prompt.shape[1]:].tolist()
    assert len(set(new)) > 3 and sp.decode(new).strip()
    # WikiText-2 is held out of training: the loss on 4 windows of it is
    # far below a uniform guess's log(8192) = 9.0 (measured 5.47; the
    # GPU figure over the whole split is in bench/README.md).
    ids = torch.from_numpy(text_ids[:4 * 512].copy()).view(4, 512)
    with torch.no_grad():
        logits = model(ids[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert loss.item() < 6.0, loss.item()

"""Long-term memory inside attention (mnemo.reader.memory), on the CPU:
exact against attention over the whole past, with small random Llamas."""
import math

import pytest
import torch

from mnemo.reader import LlamaConfig, LlamaForCausalLM
from mnemo.reader import memory as mem
from mnemo.reader.llama import apply_rope, rope_cos_sin

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def tiny(layers=4, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, rope_parameters=LLAMA3_ROPE)
    return LlamaForCausalLM(cfg).eval()


def windowed_reference(model, ids, window, memory_layers):
    """The oracle, written out: memory layers attend over the whole past,
    the others over their own window only (explicit masks, one pass)."""
    n = ids.shape[1]
    pos = torch.arange(n)
    x = model.model.embed_tokens(ids)
    cos, sin = rope_cos_sin(model._inv_freq, pos[None], x.dtype)
    causal = pos[:, None] >= pos[None, :]
    same_window = (pos[:, None] // window) == (pos[None, :] // window)
    for i, layer in enumerate(model.model.layers):
        a = layer.self_attn
        hn = layer.input_layernorm(x)
        q = apply_rope(a.q_proj(hn).view(1, n, a.heads, a.head_dim).transpose(1, 2), cos, sin)
        k = apply_rope(a.k_proj(hn).view(1, n, a.kv_heads, a.head_dim).transpose(1, 2), cos, sin)
        v = a.v_proj(hn).view(1, n, a.kv_heads, a.head_dim).transpose(1, 2)
        r = a.heads // a.kv_heads
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        mask = causal if i in memory_layers else causal & same_window
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(a.head_dim)
        o = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        x = x + a.o_proj(o.transpose(1, 2).reshape(1, n, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.model.norm(x))


def read(model, bank, ids, window, group="doc"):
    return torch.cat(mem.memorize(model, bank, ids, group, window), dim=1)


@torch.no_grad()
def test_exact_memory_in_every_layer_equals_full_attention_and_decodes_the_same_tokens():
    m = tiny()
    doc = torch.randint(0, 256, (1, 96))
    bank = mem.MemoryBank(range(4), k=96)
    got = read(m, bank, doc, window=32)
    full = m(doc).logits
    assert (got - full).abs().max().item() <= 1e-4
    assert bank.tokens("doc") == 96
    # Generation after the document: the same greedy tokens as with it all in context.
    prompt = torch.randint(0, 256, (1, 5))
    with_memory = mem.generate(m, bank, prompt, "doc", max_new_tokens=12)
    ids = torch.cat([doc, prompt], dim=1)
    for _ in range(12):
        ids = torch.cat([ids, m(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(with_memory, ids[:, 96:])


@pytest.mark.parametrize("layers", [[0], [1], [2], [3], [1, 3]])
@torch.no_grad()
def test_exact_memory_in_some_layers_equals_attention_over_the_past_there_and_the_window_elsewhere(layers):
    m = tiny()
    doc = torch.randint(0, 256, (1, 80))
    got = read(m, mem.MemoryBank(layers, k=80), doc, window=24)
    want = windowed_reference(m, doc, 24, set(layers))
    assert (got - want).abs().max().item() <= 1e-4
    # Without memory each window is on its own: a different result.
    alone = read(m, mem.MemoryBank([], k=80), doc, window=24)
    assert (alone - want).abs().max().item() > 1e-3


@torch.no_grad()
def test_an_empty_memory_reproduces_the_base_model_exactly():
    m = tiny()
    ids = torch.randint(0, 256, (1, 40))
    bank = mem.MemoryBank(range(4), k=8)
    with bank.reading(["nothing-here"]):
        got = m(ids, memory=bank).logits
    assert torch.equal(got, m(ids).logits)


@torch.no_grad()
def test_memory_hits_in_any_order_give_the_same_attention(monkeypatch):
    m = tiny()
    doc = torch.randint(0, 256, (1, 64))
    want = read(m, mem.MemoryBank([1, 2], k=8, neighbours=1), doc, window=16)
    search_row = mem.MemoryBank._search_row

    def shuffled(self, layer, q, group):
        found = search_row(self, layer, q, group)
        if found is None:
            return None
        order = torch.randperm(found[0].shape[2])
        return found[0][:, :, order], found[1][:, :, order], found[2][:, :, order]
    monkeypatch.setattr(mem.MemoryBank, "_search_row", shuffled)
    got = read(m, mem.MemoryBank([1, 2], k=8, neighbours=1), doc, window=16)
    assert (got - want).abs().max().item() <= 1e-5


@torch.no_grad()
def test_exact_memory_error_falls_as_k_rises_toward_the_memory_size():
    m = tiny()
    doc = torch.randint(0, 256, (1, 128))
    want = m(doc).logits
    errors = []
    for k in (1, 4, 16, 64, 128):
        got = read(m, mem.MemoryBank(range(4), k=k), doc, window=32)
        errors.append((got - want).abs().max().item())
    print("max |delta logits| by k 1, 4, 16, 64, 128:", " ".join(f"{e:.2e}" for e in errors))
    assert all(later <= earlier * 1.05 for earlier, later in zip(errors, errors[1:]))
    assert errors[0] > 1e-3 and errors[-1] <= 1e-4


@torch.no_grad()
def test_exact_memory_of_one_document_is_untouched_by_others_and_by_batch_composition():
    m = tiny()
    a, b = torch.randint(0, 256, (1, 64)), torch.randint(0, 256, (1, 64))
    bank = mem.MemoryBank([0, 2], k=64)
    read(m, bank, a, window=16, group="a")
    prompt = torch.randint(0, 256, (2, 6))
    pos = torch.arange(64, 70)[None]

    def logits(groups, ids):
        with bank.reading(groups):
            return m(ids, position_ids=pos.expand(ids.shape[0], -1), memory=bank).logits
    alone_a = logits(["a"], prompt[:1])
    read(m, bank, b, window=16, group="b")  # another document joins the daemon's memory
    assert torch.equal(logits(["a"], prompt[:1]), alone_a)
    alone_b = logits(["b"], prompt[1:])
    both = logits(["a", "b"], prompt)
    assert (both[:1] - alone_a).abs().max().item() <= 1e-5
    assert (both[1:] - alone_b).abs().max().item() <= 1e-5
    # A row without memory in a batch with memories: its plain forward.
    mixed = logits([None, "b"], prompt)
    assert (mixed[:1] - m(prompt[:1], position_ids=pos).logits).abs().max().item() <= 1e-5


@torch.no_grad()
def test_exact_memory_kept_by_the_daemon_equals_full_attention_and_the_device_tier(daemon):
    import mnemo
    m = tiny()
    doc = torch.randint(0, 256, (1, 64))
    c = mnemo.Client(daemon.address)
    tier = mem.DaemonMemory(c, "mem", range(4), kv_heads=2, head_dim=16, k=64)
    got = read(m, tier, doc, window=16, group=7)
    assert (got - m(doc).logits).abs().max().item() <= 1e-4
    # Document 0 is a document like any other, in both tiers.
    for bank in (tier, mem.MemoryBank(range(4), k=64)):
        assert (read(m, bank, doc, window=16, group=0) - m(doc).logits).abs().max().item() <= 1e-4
        prompt0 = torch.randint(0, 256, (1, 3))
        want = m(torch.cat([doc, prompt0], dim=1)).logits[:, -1].argmax(-1)
        assert torch.equal(mem.generate(m, bank, prompt0, 0, max_new_tokens=1)[:, -1], want)
    assert tier.tokens(7) == 64
    # Another process (client) sees the document; the device tier gives the same result.
    other = mem.DaemonMemory(mnemo.Client(daemon.address), "mem", range(4), kv_heads=2, head_dim=16, k=8)
    assert other.tokens(7) == 64
    prompt = torch.randint(0, 256, (1, 4))
    device = mem.MemoryBank(range(4), k=64)  # memorized as the daemon's tier was
    read(m, device, doc, window=16, group=7)
    device.k = 8
    pos = torch.arange(64, 68)[None]
    with other.reading([7]):
        from_daemon = m(prompt, position_ids=pos, memory=other).logits
    with device.reading([7]):
        from_device = m(prompt, position_ids=pos, memory=device).logits
    assert (from_daemon - from_device).abs().max().item() <= 1e-5
    # A second document (group) leaves the first one's results as they were.
    read(m, tier, torch.randint(0, 256, (1, 32)), window=16, group=8)
    with other.reading([7]):
        assert (m(prompt, position_ids=pos, memory=other).logits - from_daemon).abs().max().item() <= 1e-6
    other.forget(7)
    assert tier.tokens(7) == 0 and tier.tokens(8) == 32


@torch.no_grad()
def test_exact_memory_through_the_reader_decodes_what_full_attention_decodes(daemon):
    import mnemo
    from mnemo.reader import Reader
    m = tiny()
    doc = torch.randint(0, 256, (1, 72))
    r = Reader(m, mnemo.Client(daemon.address), "memreader", memory_layers=[0, 1, 2, 3], memory_k=72,
               memory_window=24)
    r.memorize(doc[:, :48], group=3)
    r.memorize(doc[:, 48:], group=3)  # continues the document
    prompt = torch.randint(0, 256, (1, 4))
    got = r.generate(prompt, max_new_tokens=8, group=3)
    ids = torch.cat([doc, prompt], dim=1)
    for _ in range(8):
        ids = torch.cat([ids, m(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(got, ids[:, 72:])
    # A new Reader (another process, say) finds the document in the daemon, its
    # device tier empty: searched in the daemon, the same tokens.
    again = Reader(m, mnemo.Client(daemon.address), "memreader", memory_layers=[0, 1, 2, 3],
                   memory_k=72, memory_window=24)
    assert again.memory.device.tokens(3) == 0
    assert torch.equal(again.generate(prompt, max_new_tokens=8, group=3), got)
    again.memory.load(3)  # then brought to the device tier
    assert again.memory.device.tokens(3) == 72
    assert torch.equal(again.generate(prompt, max_new_tokens=8, group=3), got)
    with pytest.raises(mnemo.FailedPrecondition):
        Reader(m, mnemo.Client(daemon.address), "memreader").memorize(doc, group=3)

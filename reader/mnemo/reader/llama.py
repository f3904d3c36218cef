"""A Llama in plain PyTorch, readable in one sitting (as nanoGPT is).

It loads and saves the Hugging Face folder layout (``config.json`` with
``"architectures": ["LlamaForCausalLM"]``, ``model.safetensors``) and names
its parameters as transformers' ``LlamaForCausalLM`` does, so weights move
between the two unchanged. It runs on Debian's torch 1.13 (CPU, CI) and on
torch 2.x (GPU). What it adds for mnemo: the cache of every layer holds the
keys after RoPE and the values, [batch, kv_heads, tokens, head_dim] each, the
layout mnemo's KV spaces store, and a forward continues from any such cache
at explicit positions.

Shapes in comments: B batch, T tokens computed now, P tokens already in the
cache, H query heads, G kv heads, D head dim, C hidden size.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mnemo.reader import safetensors_io

# A layer's cache: (keys after RoPE, values), each (B, G, P, D).
LayerCache = Tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class LlamaConfig:
    """A Llama's shape, with Hugging Face's field names (``config.json``)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    #: Key/value heads (grouped-query attention); None: as many as query heads.
    num_key_value_heads: Optional[int] = None
    #: None: hidden_size / num_attention_heads.
    head_dim: Optional[int] = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    #: transformers < 5: ``{"rope_type": "llama3", "factor": 8.0, ...}``.
    rope_scaling: Optional[Dict[str, Any]] = None
    #: transformers >= 5: ``{"rope_type": ..., "rope_theta": ..., ...}``;
    #: wins over rope_theta / rope_scaling when given.
    rope_parameters: Optional[Dict[str, Any]] = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[Any] = None
    #: Recorded, as transformers records it; the weights' own dtype rules.
    torch_dtype: Optional[str] = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                                 f"num_attention_heads {self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        rope = self.rope()
        if rope.get("rope_type", "default") not in ("default", "llama3"):
            raise ValueError(f"rope_type {rope['rope_type']!r} is not supported (default, llama3)")

    def rope(self) -> Dict[str, Any]:
        """The RoPE parameters, in transformers 5's form, whichever way given."""
        if self.rope_parameters:
            p = dict(self.rope_parameters)
            p.setdefault("rope_theta", self.rope_theta)
        else:
            p = dict(self.rope_scaling or {})
            p["rope_theta"] = self.rope_theta
        if "type" in p and "rope_type" not in p:
            p["rope_type"] = p.pop("type")
        p.setdefault("rope_type", "default")
        return p

    def to_dict(self) -> Dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        d["architectures"] = ["LlamaForCausalLM"]
        d["model_type"] = "llama"
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LlamaConfig":
        """From a ``config.json``; unknown fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "dtype" in d and "torch_dtype" not in d:
            d = dict(d, torch_dtype=d["dtype"])
        return cls(**{k: v for k, v in d.items() if k in names})


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """(D/2,) float32: the rotation speed of each pair of channels."""
    p = config.rope()
    dim = config.head_dim
    inv = 1.0 / (p["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if p["rope_type"] == "llama3":
        # Llama 3.1: wavelengths longer than the original context are
        # stretched by `factor`, shorter than original/high_freq_factor are
        # kept, and the band between is blended smoothly.
        factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        original = p["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv
        long_wave, short_wave = original / low, original / high
        stretched = torch.where(wavelength > long_wave, inv / factor, inv)
        blend = (original / wavelength - low) / (high - low)
        smoothed = (1 - blend) * stretched / factor + blend * stretched
        middle = (wavelength >= short_wave) & (wavelength <= long_wave)
        inv = torch.where(middle, smoothed, stretched)
    return inv.to(torch.float32)


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor,
                 dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, (B, T, D), for positions (B, T): each frequency twice, as
    the two halves of a head are rotated against each other."""
    angles = positions[..., None].to(torch.float32) * inv_freq.to(positions.device)  # (B, T, D/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, D) rotated: pairs (i, i + D/2), as transformers pairs them."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.float32)
        if _rms_norm is not None:  # one kernel instead of five: decoding is launch-bound
            x32 = _rms_norm(x32, (x32.shape[-1],), eps=self.eps)
        else:
            x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


_rms_norm = getattr(F, "rms_norm", None)  # torch >= 2.4


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        c, h, g, d = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.heads, self.kv_heads, self.head_dim = h, g, d
        self.q_proj = nn.Linear(c, h * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(c, g * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(c, g * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(h * d, c, bias=config.attention_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                past: Optional[LayerCache], lookup: Optional[MemoryLookup] = None
                ) -> Tuple[torch.Tensor, LayerCache]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, G, T, D)
        # Queries and keys rotated together: a few kernels fewer per layer.
        qk = apply_rope(torch.cat([q, k], dim=2).transpose(1, 2), cos, sin)          # (B, H + G, T, D)
        q, k = qk[:, :self.heads], qk[:, self.heads:]
        if past is None:  # the cache keeps k: not a view that holds the queries too
            k = k.contiguous()
        else:
            k = torch.cat([past[0], k], dim=2)  # (B, G, P + T, D)
            v = torch.cat([past[1], v], dim=2)
        hits = lookup(q) if lookup is not None else None
        out = attend(q, k, v) if hits is None else attend_with_memory(q, k, v, hits)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


#: What a memory layer retrieves for queries (B, H, T, D): per batch row,
#: KV group and query token, U past keys and values (B, G, T, U, D) each,
#: after RoPE at their own positions, and which of the U are hits (B, G, T,
#: U) bool (False: padding or a duplicate). None: no memory to attend.
MemoryHits = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
MemoryLookup = Callable[[torch.Tensor], Optional[MemoryHits]]


def attend_with_memory(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       hits: MemoryHits) -> torch.Tensor:
    """Causal attention of q (B, H, T, D) over the local k, v (B, G, S, D)
    and each query's retrieved memories, in one softmax (no gate): with
    every earlier key retrieved it is attention over the whole past."""
    mk, mv, valid = hits
    b, h, t, d = q.shape
    g, s = k.shape[1], k.shape[2]
    r = h // g
    qg = q.reshape(b, g, r, t, d).float()
    scale = 1.0 / math.sqrt(d)
    local = torch.einsum("bgrtd,bgsd->bgrts", qg, k.float()) * scale
    causal = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
    local = local.masked_fill(~causal, float("-inf"))
    remote = torch.einsum("bgrtd,bgtud->bgrtu", qg, mk.float()) * scale
    remote = remote.masked_fill(~valid[:, :, None], float("-inf"))
    p = torch.softmax(torch.cat([local, remote], dim=-1), dim=-1)
    out = (torch.einsum("bgrts,bgsd->bgrtd", p[..., :s], v.float()) +
           torch.einsum("bgrtu,bgtud->bgrtd", p[..., s:], mv.float()))
    return out.to(q.dtype).reshape(b, h, t, d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of the last T positions (q) over all P + T (k, v):
    query i sees keys up to P + i. The query heads of one group share its
    key/value head."""
    b, h, t, d = q.shape
    g, s = k.shape[1], k.shape[2]
    r = h // g
    if t == 1:  # one new token sees every key: no mask, and the query heads of a group fold
        return _attend_masked(q.reshape(b, g, r, d), k, v, None).reshape(b, h, t, d)
    if g != h and t < s and t <= 256:
        # A continuation (a few new tokens over a long cache): the query
        # heads of a group become rows of one query block over its key/value
        # head, so the cache is read once instead of copied r times. Query
        # head gi * r + j's token i is row j * t + i of group gi.
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
        return _attend_masked(q.reshape(b, g, r * t, d), k, v, mask.repeat(r, 1)).reshape(b, h, t, d)
    if g != h:
        k = k.repeat_interleave(r, dim=1)
        v = v.repeat_interleave(r, dim=1)
    sdpa = getattr(F, "scaled_dot_product_attention", None)  # torch >= 2.0
    if sdpa is not None and t == s:
        return sdpa(q, k, v, is_causal=True)
    mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
    return _attend_masked(q, k, v, mask)


def _attend_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Attention of q (B, N, T, D) over k, v (B, N, S, D) where mask (T, S)
    is True (None: over all of them)."""
    sdpa = getattr(F, "scaled_dot_product_attention", None)  # torch >= 2.0
    if sdpa is not None:
        return sdpa(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])                     # (B, N, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


def greedy_tokens(model, logits: torch.Tensor, cache: List[LayerCache], position: int,
                  max_new_tokens: int, **forward_args) -> List[torch.Tensor]:
    """The next ``max_new_tokens`` greedy tokens, (1, 1) each, after a
    forward's ``logits`` and ``cache`` whose next position is ``position``;
    ``forward_args`` go to every step's forward (e.g. ``memory``)."""
    tokens = []
    for _ in range(max_new_tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(nxt)
        step = model(nxt, position_ids=torch.tensor([[position]], device=nxt.device),
                     past_key_values=cache, **forward_args)
        cache, logits = step.past_key_values, step.logits
        position += 1
    return tokens


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        c, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(c, i, bias=config.mlp_bias)
        self.up_proj = nn.Linear(c, i, bias=config.mlp_bias)
        self.down_proj = nn.Linear(i, c, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, past, lookup=None):
        attended, cache = self.self_attn(self.input_layernorm(x), cos, sin, past, lookup)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


@dataclasses.dataclass
class CausalLMOutput:
    #: (B, T, vocab), in the model's dtype.
    logits: torch.Tensor
    #: Per layer (keys after RoPE, values), (B, G, P + T, D) each.
    past_key_values: List[LayerCache]


class LlamaForCausalLM(nn.Module):
    """A causal Llama. ``model(input_ids).logits`` as transformers returns it.

    Parameters
    ----------
    config : LlamaConfig
        Weights start random (seed torch first for reproducible ones).
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Not a buffer: module.to(dtype) would round it; RoPE angles are
        # computed in float32 whatever the weights' dtype (as transformers does).
        self._inv_freq = rope_inverse_frequencies(config)
        self._init_weights()

    def _init_weights(self, std: float = 0.02):
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                past_key_values: Optional[List[LayerCache]] = None,
                logits_to_keep: int = 0, memory=None) -> CausalLMOutput:
        """Runs the tokens ``input_ids`` (B, T) after those in
        ``past_key_values`` (P tokens per layer, or none).

        ``position_ids`` (B, T) default to P .. P + T - 1. Returns the logits
        of the T positions (of the last ``logits_to_keep`` when that is not
        0, as transformers' argument of that name: a prefill needs only the
        last) and the cache of all P + T.

        ``memory``: long-term memory (``mnemo.reader.memory``), whose
        ``lookup(layer)`` gives each memory layer's retrieval (None for the
        other layers); its layers attend over local and retrieved keys."""
        b, t = input_ids.shape
        past_len = 0 if not past_key_values else past_key_values[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=input_ids.device).expand(b, t)
        x = self.model.embed_tokens(input_ids)                                            # (B, T, C)
        if self._inv_freq.device != x.device:
            self._inv_freq = self._inv_freq.to(x.device)
        cos, sin = rope_cos_sin(self._inv_freq, position_ids, x.dtype)
        caches = []
        for i, layer in enumerate(self.model.layers):
            x, cache = layer(x, cos, sin, past_key_values[i] if past_key_values else None,
                             memory.lookup(i) if memory is not None else None)
            caches.append(cache)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return CausalLMOutput(self.lm_head(self.model.norm(x)), caches)

    # --- the Hugging Face folder layout ---------------------------------

    def save_pretrained(self, folder: str) -> None:
        """Writes ``config.json`` and ``model.safetensors`` (a tied
        ``lm_head.weight`` is left out, as transformers leaves it out)."""
        os.makedirs(folder, exist_ok=True)
        config = self.config.to_dict()
        config["torch_dtype"] = str(self.dtype).replace("torch.", "")
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        tensors = {k: v for k, v in self.state_dict().items()
                   if not (self.config.tie_word_embeddings and k == "lm_head.weight")}
        safetensors_io.save_file(tensors, os.path.join(folder, "model.safetensors"),
                                 metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, folder: str, dtype: Optional[torch.dtype] = None,
                        device: Optional[str] = None) -> "LlamaForCausalLM":
        """Loads a folder that ``save_pretrained`` or transformers wrote
        (one ``model.safetensors``, or shards listed in
        ``model.safetensors.index.json``). Raises ValueError when a weight is
        missing, unexpected or of another shape."""
        with open(os.path.join(folder, "config.json")) as f:
            raw = json.load(f)
        architectures = raw.get("architectures") or ["LlamaForCausalLM"]
        if "LlamaForCausalLM" not in architectures:
            raise ValueError(f"{folder} holds {architectures}, not a LlamaForCausalLM")
        config = LlamaConfig.from_dict(raw)
        tensors = {}
        index = os.path.join(folder, "model.safetensors.index.json")
        files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
                 else ["model.safetensors"])
        for name in files:
            tensors.update(safetensors_io.load_file(os.path.join(folder, name)))
        model = cls(config)
        if config.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        stored = tensors.get("model.embed_tokens.weight")
        if stored is not None and stored.is_floating_point():
            model = model.to(stored.dtype)  # the weights' own dtype, as transformers keeps it
        expected = {k for k in model.state_dict()
                    if not (config.tie_word_embeddings and k == "lm_head.weight")}
        missing, unexpected = expected - tensors.keys(), tensors.keys() - expected
        if missing or unexpected:
            raise ValueError(f"{folder}: missing weights {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        model.load_state_dict(tensors, strict=False)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        if dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        return model


"""A transformers (>= 5) causal LM, seen as ``mnemo.reader.llama`` sees its
own: ``HfCausalLM(model)`` takes a list of per-layer (keys after RoPE,
values) as its cache and returns one, so ``Reader`` drives either alike.

    from transformers import LlamaForCausalLM as HfLlama
    from mnemo.reader import Reader
    from mnemo.reader.hf import HfCausalLM
    r = Reader(HfCausalLM(HfLlama.from_pretrained(folder)), client, space="llama")

A prefill continues from loaded keys and values through
``DynamicCache(ddp_cache_data=[(k, v), ...])`` with explicit position ids;
transformers builds the causal mask from the cache's length. The attention
stays transformers' own (sdpa, eager): an attention function registered
with ``AttentionInterface`` needs a mask function registered under the same
name (``AttentionMaskInterface``), or it is called with no mask and sdpa's
top-left causal mask gives wrong logits once a cache is continued.

Long-term memory (``mnemo.reader.memory``): ``forward(..., memory=bank)``
runs the model with the attention function ``mnemo_memory``, registered
here with its mask function (sdpa's). transformers hands it each layer's
queries, its post-RoPE keys and its un-repeated KV heads, which is what the
memory stores and searches; in a memory layer it attends over local and
retrieved keys in one softmax (``llama.attend_with_memory``), elsewhere it
is transformers' sdpa attention. The bank reaches it as the keyword
argument ``mnemo_memory``, which transformers passes from the model's
forward down to the attention function.

Needs transformers, which Debian does not package: this module is tested on
the GPU machine (bench/reader_vs_transformers.py).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from mnemo.reader.llama import CausalLMOutput, LayerCache, attend_with_memory

MEMORY_ATTENTION = "mnemo_memory"
_registered = False


def _memory_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      mnemo_memory=None, **kwargs):
    """transformers' attention signature: query (B, H, T, D), key and value
    (B, G, S, D) after RoPE and before GQA repetition; returns (B, T, H, D)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    lookup = mnemo_memory.lookup(module.layer_idx) if mnemo_memory is not None else None
    hits = lookup(query) if lookup is not None else None
    if hits is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if scaling is not None and abs(scaling * query.shape[-1] ** 0.5 - 1) > 1e-6:
        raise ValueError(f"memory attention assumes the scale 1/sqrt(head_dim), got {scaling}")
    return attend_with_memory(query, key, value, hits).transpose(1, 2), None


def _register_memory_attention():
    global _registered
    if not _registered:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask
        AttentionInterface.register(MEMORY_ATTENTION, _memory_attention)
        AttentionMaskInterface.register(MEMORY_ATTENTION, sdpa_mask)
        _registered = True


@dataclasses.dataclass
class _Shape:
    """The fields Reader reads off a model's config."""
    num_hidden_layers: int
    num_key_value_heads: int
    head_dim: int

    def to_dict(self):
        return dataclasses.asdict(self)


class HfCausalLM(torch.nn.Module):
    """Wraps a transformers causal LM (Llama family) for ``Reader``."""

    def __init__(self, model):
        super().__init__()
        self.hf = model
        c = model.config
        heads = c.num_attention_heads
        self.config = _Shape(c.num_hidden_layers, getattr(c, "num_key_value_heads", None) or heads,
                             getattr(c, "head_dim", None) or c.hidden_size // heads)
        self._hf_config = c

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                past_key_values: Optional[List[LayerCache]] = None,
                logits_to_keep: int = 0, memory=None) -> CausalLMOutput:
        """As ``LlamaForCausalLM.forward``; ``memory``: long-term memory
        attended in its layers (the attention function is then mnemo's)."""
        from transformers import DynamicCache
        cache = (DynamicCache(ddp_cache_data=[(k, v) for k, v in past_key_values])
                 if past_key_values else DynamicCache())
        past = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]
        extra = {}
        if memory is not None:
            _register_memory_attention()
            if self._hf_config._attn_implementation != MEMORY_ATTENTION:
                self._plain_attention = self._hf_config._attn_implementation
                self.hf.set_attn_implementation(MEMORY_ATTENTION)
            extra["mnemo_memory"] = memory
        elif getattr(self, "_plain_attention", None):
            self.hf.set_attn_implementation(self._plain_attention)
            self._plain_attention = None
        out = self.hf(input_ids=input_ids, position_ids=position_ids, past_key_values=cache,
                      use_cache=True, logits_to_keep=logits_to_keep, **extra)
        return CausalLMOutput(out.logits, _layers(out.past_key_values))


def _layers(cache) -> List[LayerCache]:
    """A transformers cache as per-layer (keys, values)."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]

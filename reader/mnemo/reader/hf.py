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

Needs transformers, which Debian does not package: this module is tested on
the GPU machine (bench/reader_vs_transformers.py).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from mnemo.reader.llama import CausalLMOutput, LayerCache


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
                logits_to_keep: int = 0) -> CausalLMOutput:
        from transformers import DynamicCache
        cache = (DynamicCache(ddp_cache_data=[(k, v) for k, v in past_key_values])
                 if past_key_values else DynamicCache())
        past = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]
        out = self.hf(input_ids=input_ids, position_ids=position_ids, past_key_values=cache,
                      use_cache=True, logits_to_keep=logits_to_keep)
        return CausalLMOutput(out.logits, _layers(out.past_key_values))


def _layers(cache) -> List[LayerCache]:
    """A transformers cache as per-layer (keys, values)."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]

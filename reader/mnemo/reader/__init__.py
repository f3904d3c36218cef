"""mnemo.reader: language models attached to a mnemod daemon (SPEC, "The GPU
reader"). ``llama`` is a Llama in plain PyTorch (CPU in CI, GPU in use);
``Reader`` reuses the keys and values a daemon stores for a prompt's prefix.
Importing it needs torch; ``import mnemo`` alone does not.

Importing it before CUDA starts also asks PyTorch's caching allocator for
expandable segments (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``)
unless that variable is already set (an empty value keeps PyTorch's
default). Measured on an H100 with an 8B-shaped model (bench/README.md):
loading a 16k-token prompt's int8 KV right after a full prefill took 146 ms
with the default allocator, which had to find room for a prompt's cache
beside the prefill's freed blocks, and 44-64 ms with expandable segments;
time to first token with reuse went from 0.32 to 0.12-0.16 of a full
prefill.
"""
import os

import torch

if not torch.cuda.is_initialized():  # the allocator reads it once, at the first allocation
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

from mnemo.reader.llama import CausalLMOutput, LlamaConfig, LlamaForCausalLM
from mnemo.reader.reader import PrefillOutput, Reader, model_namespace

__all__ = ["CausalLMOutput", "LlamaConfig", "LlamaForCausalLM", "PrefillOutput", "Reader",
           "model_namespace"]

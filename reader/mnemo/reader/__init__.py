"""mnemo.reader: language models attached to a mnemod daemon (SPEC, "The GPU
reader"). ``llama`` is a Llama in plain PyTorch (CPU in CI, GPU in use);
``Reader`` reuses the keys and values a daemon stores for a prompt's prefix.
Importing it needs torch; ``import mnemo`` alone does not.
"""
from mnemo.reader.llama import CausalLMOutput, LlamaConfig, LlamaForCausalLM
from mnemo.reader.reader import PrefillOutput, Reader, model_namespace

__all__ = ["CausalLMOutput", "LlamaConfig", "LlamaForCausalLM", "PrefillOutput", "Reader",
           "model_namespace"]

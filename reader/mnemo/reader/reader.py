"""Reader: a model attached to a mnemod daemon (SPEC, "The GPU reader").

Context reuse: a prompt is cut into chunks of the KV space's
``chunk_tokens``; each full chunk is named by the chained hash of the prompt
up to its end, under a namespace naming the model (``mnemo.prefix_hashes``).
Before a prefill the Reader asks the daemon how many leading chunks it
stores, loads their keys (after RoPE) and values into the model's cache, and
computes only the rest; the new full chunks are written back on another
thread, after the logits are returned. A prompt whose chunks are all stored
still computes its last token: the logits need it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
from typing import List, Optional

import torch

from mnemo import errors
from mnemo.client import Client
from mnemo.hashing import prefix_hashes
from mnemo.reader import memory
from mnemo.reader.kv_load import KvLoader
from mnemo.reader.llama import LayerCache, greedy_tokens

log = logging.getLogger(__name__)

_SPACE_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@dataclasses.dataclass
class PrefillOutput:
    #: (1, T - reused_tokens, vocab): the logits of the positions computed.
    logits: torch.Tensor
    #: Prompt tokens whose keys and values came from the daemon.
    reused_tokens: int
    #: The model's cache for the whole prompt, per layer (keys, values),
    #: (1, G, T, D) each.
    past_key_values: List[LayerCache]


def model_namespace(model: torch.nn.Module) -> str:
    """A name for the model's identity: its config and a digest of every
    weight's name, shape, dtype and first bytes. Two processes that load
    (or seed and build) the same weights get the same namespace; another
    model, or the same shape with other weights, gets another."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        sample = t.detach().reshape(-1)[:1024].cpu().contiguous()
        h.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return "llama/" + h.hexdigest()[:32]


class Reader:
    """A causal LM whose prompts reuse the keys and values a daemon stores.

    Parameters
    ----------
    model : LlamaForCausalLM
        ``mnemo.reader.llama``'s (or any module with its ``config``,
        ``forward(input_ids, position_ids, past_key_values)`` and output).
    client : mnemo.Client
        Used on the calling thread; writes go through a second connection
        to the same address, on a thread of their own.
    space : str
        The KV space; created when absent, shaped from the model.
    codec, chunk_tokens, capacity_bytes
        For a space this creates (see ``Client.create_kv_space``).
    namespace : str, optional
        Names the model in the chunk hashes; default ``model_namespace(model)``.
    same_host : bool, optional
        Load stored chunks straight from the daemon's files (``KvLoader``);
        None (the default) tries it when the daemon's address is loopback.
    memory_layers : sequence of int, optional
        Long-term memory (``memorize``; ``generate(group=...)``) in these
        layers: kept by the daemon (collections ``{space}.memory.*``) with
        a tier on the model's device (``mnemo.reader.memory``).
    memory_k, memory_window
        Hits per query head and step; the tokens ``memorize`` reads at once.
    """

    def __init__(self, model, client: Client, space: str, codec: str = "raw",
                 chunk_tokens: int = 256, capacity_bytes: Optional[int] = None,
                 namespace: Optional[str] = None, same_host: Optional[bool] = None,
                 memory_layers: Optional[List[int]] = None, memory_k: int = 32,
                 memory_window: int = 512):
        self.model = model
        self.client = client
        self.space = space
        cfg = model.config
        dtype = _SPACE_DTYPES.get(model.dtype)
        if dtype is None:
            raise errors.InvalidArgument(f"model dtype {model.dtype} has no KV space dtype")
        try:
            stats = client.kv_stats(space)
        except errors.NotFound:
            stats = client.create_kv_space(space, cfg.num_hidden_layers, cfg.num_key_value_heads,
                                           cfg.head_dim, dtype=dtype, chunk_tokens=chunk_tokens,
                                           codec=codec, capacity_bytes=capacity_bytes)
        want = (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, dtype)
        have = (stats.layers, stats.kv_heads, stats.head_dim, stats.dtype)
        if want != have:
            raise errors.FailedPrecondition(
                f"KV space '{space}' holds layers, kv_heads, head_dim, dtype = {have}; "
                f"the model needs {want}")
        self.chunk_tokens = stats.chunk_tokens
        self.loader = KvLoader(client, space, stats, self.model.device, same_host=same_host)
        self.namespace = namespace or model_namespace(model)
        self._writer_client = Client(client.address, client.api_key)
        self._writes = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mnemo-kv-write")
        self._pending: List[concurrent.futures.Future] = []
        self.memory: Optional[memory.MemoryBank] = None
        self.memory_window = memory_window
        if memory_layers:
            self.memory = memory.TieredMemory(memory.DaemonMemory(
                client, f"{space}.memory", memory_layers, cfg.num_key_value_heads, cfg.head_dim,
                k=memory_k))

    def memorize(self, input_ids: torch.Tensor, group: int) -> None:
        """Reads a long document (1, N) into long-term memory under
        ``group`` (an int), ``memory_window`` tokens at a time; a later call
        with the same group continues the document."""
        if self.memory is None:
            raise errors.FailedPrecondition("this Reader has no memory layers (Reader(memory_layers=...))")
        memory.memorize(self.model, self.memory, input_ids.to(self.model.device), group,
                        self.memory_window)

    def close(self) -> None:
        self.wait_for_writes()
        self._writes.shutdown()
        self._writer_client.close()
        self.loader.close()

    def hashes(self, input_ids: torch.Tensor) -> List[bytes]:
        """The chunk hashes of a prompt (1, T)."""
        return prefix_hashes(input_ids[0].tolist(), self.chunk_tokens, self.namespace)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> PrefillOutput:
        """Computes a prompt (1, T), reusing the stored chunks of its prefix.

        Parameters
        ----------
        logits_to_keep : int
            0: the logits of every position computed; n: of the last n only
            (the first token needs only the last).

        Returns
        -------
        PrefillOutput
            The logits of the positions computed (reused_tokens onwards).
            ``self.loader.last`` tells how the stored chunks were loaded.
        """
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise errors.InvalidArgument(f"input_ids must be (1, T), got {tuple(input_ids.shape)}")
        total = input_ids.shape[1]
        hashes = self.hashes(input_ids)
        stored = self.client.match_prefix(self.space, hashes) if hashes else 0
        reused = min(stored * self.chunk_tokens, total - 1)
        device = self.model.device
        out = None
        if reused > 0:
            # The model runs layer by layer as the stored chunks' layers come in.
            cache = self.loader.start(hashes[:stored], reused)
            try:
                out = self.model(input_ids[:, reused:].to(device),
                                 position_ids=torch.arange(reused, total, device=device)[None],
                                 past_key_values=cache, logits_to_keep=logits_to_keep)
            except errors.NotFound:  # evicted since the match: compute it all
                log.info("stored chunks went before they were loaded; full prefill")
                reused = 0
            except errors.Error as e:  # a load that failed midway: compute it all
                log.warning("loading the stored chunks failed (%s); full prefill", e)
                reused = 0
            self.loader.finish()
        if out is None:
            out = self.model(input_ids.to(device), logits_to_keep=logits_to_keep)
        self._write_back(hashes, stored, out.past_key_values)
        return PrefillOutput(out.logits, reused, out.past_key_values)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32,
                 group: Optional[int] = None) -> torch.Tensor:
        """Greedy continuation: (1, T + max_new_tokens). With ``group``, the
        prompt follows that memorized document: the memory layers retrieve
        from it at every step (no context reuse then)."""
        if group is not None:
            if self.memory is None:
                raise errors.FailedPrecondition("this Reader has no memory layers (Reader(memory_layers=...))")
            return memory.generate(self.model, self.memory, input_ids.to(self.model.device), group,
                                   max_new_tokens)
        out = self.prefill(input_ids)
        new = greedy_tokens(self.model, out.logits, out.past_key_values, input_ids.shape[1],
                            max_new_tokens)
        return torch.cat([input_ids.to(self.model.device)] + new, dim=1)

    def wait_for_writes(self) -> None:
        """Blocks until every chunk written back so far is stored; raises the
        first write's error."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def _write_back(self, hashes: List[bytes], stored: int, cache: List[LayerCache]) -> None:
        """Stores the full chunks after the `stored` ones, on the writer
        thread (the caller's logits do not wait for it)."""
        if stored >= len(hashes):
            return
        c = self.chunk_tokens
        k = torch.stack([layer[0][0] for layer in cache])  # (L, G, T, D)
        v = torch.stack([layer[1][0] for layer in cache])
        chunks = [(hashes[i], k[:, :, i * c:(i + 1) * c], v[:, :, i * c:(i + 1) * c])
                  for i in range(stored, len(hashes))]

        def write():
            for h, kc, vc in chunks:
                self._writer_client.put_kv(self.space, h, kc.contiguous().cpu(), vc.contiguous().cpu())
        self._pending.append(self._writes.submit(write))


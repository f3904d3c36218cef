"""Long-term memory inside attention (Memorizing / Extended Mind
Transformers), the tier on the model's device.

A document far longer than the model's window is read window by window
(``memorize``): each window attends over its own tokens and, in the memory
layers, over the keys of every earlier window that its queries retrieve;
then its keys (after RoPE, at their positions in the document) and values
join the memory. Later prompts of the same document (``group``) continue at
the positions after it and retrieve the same way.

Retrieval is exact top-k by inner product (a matmul on the device), per
query head; the query heads of one KV group attend over the union of their
hits (each once), and a hit may bring its neighbours (Neurocache). Local and
retrieved keys share one softmax, with no gate. Because the keys are kept as
the attention saw them (rotated at their own positions), retrieving every
earlier key gives exactly the attention over the whole past: Extended Mind
keeps keys unrotated and cannot.

Not thread-safe: one model forward at a time reads a bank.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from mnemo import errors
from mnemo.reader.llama import MemoryHits, MemoryLookup, greedy_tokens


class MemoryBank:
    """Keys and values of memorized tokens, per document and memory layer.

    Parameters
    ----------
    layers : sequence of int
        The memory layers (the others attend over their window only).
    k : int
        Hits per query head and step.
    neighbours : int
        Tokens on each side of a hit that come with it.
    """

    def __init__(self, layers: Sequence[int], k: int = 32, neighbours: int = 0):
        if k < 1 or neighbours < 0:
            raise errors.InvalidArgument(f"k must be >= 1 and neighbours >= 0, got {k}, {neighbours}")
        self.layers = sorted(set(int(x) for x in layers))
        self.k, self.neighbours = k, neighbours
        # (group, layer) -> (G, capacity, D); the first tokens(group) are memories.
        self._keys: Dict[Tuple[str, int], torch.Tensor] = {}
        self._values: Dict[Tuple[str, int], torch.Tensor] = {}
        self._tokens: Dict[str, int] = {}
        self._rows: Sequence[Optional[str]] = ()

    def tokens(self, group: str) -> int:
        """How many tokens of ``group`` are memorized (the next position)."""
        return self._tokens.get(group, 0)

    def add(self, group: str, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
            tokens: int) -> None:
        """Appends ``tokens`` tokens to ``group``: per memory layer (in
        ``layers``' order) keys (after RoPE) and values (G, tokens, D)."""
        if len(keys) != len(self.layers) or len(values) != len(self.layers):
            raise errors.InvalidArgument(f"{len(keys)} layers of keys for {len(self.layers)} memory layers")
        n = tokens
        for layer, k, v in zip(self.layers, keys, values):
            if k.shape != v.shape or k.dim() != 3 or k.shape[1] != n:
                raise errors.InvalidArgument(f"keys {tuple(k.shape)} and values {tuple(v.shape)} "
                                             f"of layer {layer} are not (G, {n}, D) both")
        have = self.tokens(group)
        for layer, k, v in zip(self.layers, keys, values):
            key = (group, layer)
            self._keys[key] = _grown(self._keys.get(key), have, k)
            self._values[key] = _grown(self._values.get(key), have, v)
        self._tokens[group] = have + n

    def forget(self, group: str) -> None:
        """Drops every memory of ``group``."""
        for layer in self.layers:
            self._keys.pop((group, layer), None)
            self._values.pop((group, layer), None)
        self._tokens.pop(group, None)

    @contextlib.contextmanager
    def reading(self, groups: Sequence[Optional[str]]) -> Iterator["MemoryBank"]:
        """While open, a forward that gets this bank as ``memory`` reads
        batch row i's memories from ``groups[i]`` (None: none)."""
        self._rows = list(groups)
        try:
            yield self
        finally:
            self._rows = ()

    def lookup(self, layer: int) -> Optional[MemoryLookup]:
        """The retrieval of ``layer`` for the rows being read; None where
        it is not a memory layer or no row has memories."""
        if layer not in self.layers or not any((g, layer) in self._keys for g in self._rows if g is not None):
            return None
        return lambda q: self.search(layer, q)

    def search(self, layer: int, q: torch.Tensor) -> Optional[MemoryHits]:
        """Top-k of each query head (q: (B, H, T, D), after RoPE) among the
        memories of its row's group; the hits of one KV group's heads
        merged, each once."""
        b, h, t, _ = q.shape
        if len(self._rows) != b:
            raise errors.InvalidArgument(f"reading {len(self._rows)} groups for a batch of {b}")
        found = [self._search_row(layer, q[i], g) for i, g in enumerate(self._rows)]
        width = max(f[0].shape[2] for f in found if f is not None)
        some = next(f for f in found if f is not None)
        g_, d = some[0].shape[0], some[0].shape[3]
        mk = q.new_zeros((b, g_, t, width, d), dtype=some[0].dtype)
        mv = torch.zeros_like(mk)
        valid = torch.zeros((b, g_, t, width), dtype=torch.bool, device=q.device)
        for i, f in enumerate(found):
            if f is not None:
                u = f[0].shape[2]
                mk[i, :, :, :u], mv[i, :, :, :u], valid[i, :, :, :u] = f
        return mk, mv, valid

    def _search_row(self, layer: int, q: torch.Tensor, group: Optional[str]):
        key = (group, layer)
        if group is None or key not in self._keys:
            return None
        n = self._tokens[group]
        keys, values = self._keys[key][:, :n], self._values[key][:, :n]        # (G, N, D)
        g, n, d = keys.shape
        h, t = q.shape[0], q.shape[1]
        r = h // g
        # In the memory's dtype: a float32 copy of a million keys per step
        # would cost more than the search (the hits' scores are recomputed
        # in float32 by the attention).
        scores = torch.einsum("grtd,gnd->grtn", q.reshape(g, r, t, d).to(keys.dtype), keys)
        idx = scores.topk(min(self.k, n), dim=-1).indices                      # (G, r, T, k)
        if self.neighbours:
            around = torch.arange(-self.neighbours, self.neighbours + 1, device=idx.device)
            idx = (idx[..., None] + around).clamp(0, n - 1).flatten(-2)
        idx = idx.permute(0, 2, 1, 3).reshape(g, t, -1).sort(dim=-1).values   # the group's union
        valid = torch.ones_like(idx, dtype=torch.bool)
        valid[..., 1:] = idx[..., 1:] != idx[..., :-1]                          # each hit once
        heads = torch.arange(g, device=idx.device)[:, None, None]
        return keys[heads, idx], values[heads, idx], valid


def _grown(buf: Optional[torch.Tensor], used: int, new: torch.Tensor) -> torch.Tensor:
    """``buf`` (G, capacity, D) holding ``used`` tokens, with ``new`` (G, n,
    D) after them; the capacity at least doubles when it must grow, so that
    reading a document window by window copies each memory O(1) times."""
    n = new.shape[1]
    if buf is None or used + n > buf.shape[1]:
        capacity = max(used + n, 2 * (buf.shape[1] if buf is not None else 0))
        grown = new.new_empty((new.shape[0], capacity, new.shape[2]))
        if used:
            grown[:, :used] = buf[:, :used]
        buf = grown
    buf[:, used:used + n] = new
    return buf


def memorize(model, bank: MemoryBank, input_ids: torch.Tensor, group: str, window: int) -> List[torch.Tensor]:
    """Reads ``input_ids`` (1, N) into ``bank`` under ``group``, ``window``
    tokens at a time, each window attending over its own tokens and what
    its queries retrieve from the earlier ones. Returns each window's
    logits (1, w, vocab)."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise errors.InvalidArgument(f"input_ids must be (1, N), got {tuple(input_ids.shape)}")
    if window < 1:
        raise errors.InvalidArgument(f"window must be >= 1, got {window}")
    logits = []
    device = input_ids.device
    with torch.no_grad():
        for start in range(0, input_ids.shape[1], window):
            ids = input_ids[:, start:start + window]
            first = bank.tokens(group)
            positions = torch.arange(first, first + ids.shape[1], device=device)[None]
            with bank.reading([group]):
                out = model(ids, position_ids=positions, memory=bank)
            bank.add(group, [out.past_key_values[i][0][0] for i in bank.layers],
                     [out.past_key_values[i][1][0] for i in bank.layers], ids.shape[1])
            logits.append(out.logits)
    return logits


def generate(model, bank: MemoryBank, input_ids: torch.Tensor, group: Optional[str],
             max_new_tokens: int = 32) -> torch.Tensor:
    """Greedy continuation of ``input_ids`` (1, T) read after the memories
    of ``group`` (its positions follow them), retrieving in the memory
    layers at every step: (1, T + max_new_tokens)."""
    first = bank.tokens(group) if group is not None else 0
    device = input_ids.device
    with torch.no_grad(), bank.reading([group]):
        positions = torch.arange(first, first + input_ids.shape[1], device=device)[None]
        out = model(input_ids, position_ids=positions, memory=bank)
        new = greedy_tokens(model, out.logits, out.past_key_values, first + input_ids.shape[1],
                            max_new_tokens, memory=bank)
    return torch.cat([input_ids] + new, dim=1)


class DaemonMemory(MemoryBank):
    """The durable, shared tier: memories kept by mnemod, in one collection
    per memory layer and KV head (``{name}.l{layer}.h{head}``, inner
    product, exact ``Flat`` unless told otherwise): the key as the vector,
    the value as the payload (float32 bytes), the document as the group,
    its position in the document in the id. A search per KV head and batch
    row, all of one layer in one round trip (``search_many``), returns the
    hits' keys and values with their ids.

    Documents are named by int (their group); ``tokens`` of a document is
    kept in ``{name}.docs`` so that another process reads it too.
    """

    def __init__(self, client, name: str, layers: Sequence[int], kv_heads: int, head_dim: int,
                 k: int = 32, index: str = "Flat"):
        super().__init__(layers, k)
        self.client, self.name = client, name
        self.kv_heads, self.head_dim = kv_heads, head_dim
        have = {c.name for c in client.list()}
        for layer in self.layers:
            for g in range(kv_heads):
                if self._collection(layer, g) not in have:
                    client.create_collection(self._collection(layer, g), head_dim, metric="ip", index=index)
        if f"{name}.docs" not in have:
            client.create_collection(f"{name}.docs", 1)

    def _collection(self, layer: int, head: int) -> str:
        return f"{self.name}.l{layer}.h{head}"

    def tokens(self, group) -> int:
        if group is None:
            return 0
        e = self.client.get(f"{self.name}.docs", [int(group)])
        return int(e.payloads[0]) if len(e.ids) else 0

    def add(self, group, keys, values, tokens: int) -> None:
        if len(keys) != len(self.layers) or len(values) != len(self.layers):
            raise errors.InvalidArgument(f"{len(keys)} layers of keys for {len(self.layers)} memory layers")
        if not 0 <= int(group) < 1 << 32:
            raise errors.InvalidArgument(f"a document of the daemon's memory is an int in [0, 2**32), "
                                         f"got {group!r}")
        first = self.tokens(group)
        ids = (int(group) << 32) + first + torch.arange(tokens).numpy().astype("uint64")
        groups = [int(group)] * tokens
        batches = []
        for layer, k, v in zip(self.layers, keys, values):
            k, v = k.float().cpu().numpy(), v.float().cpu().numpy()
            for g in range(self.kv_heads):
                batches.append(dict(name=self._collection(layer, g), ids=ids, vectors=k[g],
                                    groups=groups, payloads=[row.tobytes() for row in v[g]]))
        self.client.upsert_many(batches)  # every layer and head in one pipelined round trip
        # The count last: a document's tokens are all stored once it says so.
        self.client.upsert(f"{self.name}.docs", [int(group)], [[0.0]],
                           payloads=[str(first + tokens).encode()])

    def forget(self, group) -> None:
        n = self.tokens(group)
        ids = (int(group) << 32) + torch.arange(n).numpy().astype("uint64")
        self.client.delete(f"{self.name}.docs", [int(group)])  # first: no reader counts on the rest
        for layer in self.layers:
            for g in range(self.kv_heads):
                self.client.delete(self._collection(layer, g), ids)

    def lookup(self, layer: int) -> Optional[MemoryLookup]:
        if layer not in self.layers or not any(g is not None for g in self._rows):
            return None
        return lambda q: self.search(layer, q)

    def search(self, layer: int, q: torch.Tensor) -> Optional[MemoryHits]:
        import numpy as np
        b, h, t, d = q.shape
        if len(self._rows) != b:
            raise errors.InvalidArgument(f"reading {len(self._rows)} groups for a batch of {b}")
        g_ = self.kv_heads
        r = h // g_
        qs = q.float().reshape(b, g_, r * t, d).cpu().numpy()
        specs, where = [], []
        for i, group in enumerate(self._rows):
            if group is None:
                continue
            for g in range(g_):
                specs.append(dict(name=self._collection(layer, g), queries=qs[i, g], k=self.k,
                                  group=int(group), with_entries=True))
                where.append((i, g))
        if not specs:
            return None
        found = self.client.search_many(specs)
        width = r * self.k
        mk = np.zeros((b, g_, t, width, d), np.float32)
        mv = np.zeros_like(mk)
        valid = np.zeros((b, g_, t, width), bool)
        for (i, g), (_, ids, e) in zip(where, found):
            if ids.shape[1] == 0 or len(e.ids) == 0:
                continue
            union = np.sort(ids.reshape(r, t, -1).transpose(1, 0, 2).reshape(t, -1), axis=1)  # (T, r*k)
            u = union.shape[1]
            ok = union >= 0
            ok[:, 1:] &= union[:, 1:] != union[:, :-1]                                       # each once
            rows = np.searchsorted(e.ids, union.clip(0).astype(np.uint64)).clip(0, len(e.ids) - 1)
            ok &= e.ids[rows] == union.clip(0).astype(np.uint64)  # a hit deleted meanwhile: left out
            values = np.frombuffer(b"".join(e.payloads), np.float32).reshape(len(e.ids), d)
            mk[i, g, :, :u], mv[i, g, :, :u], valid[i, g, :, :u] = e.vectors[rows], values[rows], ok
        dev = q.device
        return (torch.from_numpy(mk).to(dev, q.dtype), torch.from_numpy(mv).to(dev, q.dtype),
                torch.from_numpy(valid).to(dev))


class TieredMemory(MemoryBank):
    """The device tier in front of the daemon's: every memory is written to
    both; a document whose memories are on the device (memorized here, or
    brought with ``load``) is searched there, with no round trip per step;
    any other document is searched in the daemon."""

    def __init__(self, daemon: DaemonMemory, device: Optional[MemoryBank] = None):
        super().__init__(daemon.layers, daemon.k)
        self.daemon = daemon
        self.device = device or MemoryBank(daemon.layers, daemon.k)

    def tokens(self, group) -> int:
        return self.daemon.tokens(group)

    def add(self, group, keys, values, tokens: int) -> None:
        if self.device.tokens(group) != self.daemon.tokens(group):
            self.load(group)  # the device tier continues where the daemon's is
        self.daemon.add(group, keys, values, tokens)
        self.device.add(group, keys, values, tokens)

    def load(self, group, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        """Brings document ``group``'s memories from the daemon to the device tier."""
        import numpy as np
        d = self.daemon
        n = d.tokens(group)
        self.device.forget(group)
        if n == 0:
            return
        ids = (int(group) << 32) + np.arange(n, dtype=np.uint64)
        keys, values = [], []
        for layer in d.layers:
            ks, vs = [], []
            for g in range(d.kv_heads):
                e = d.client.get(d._collection(layer, g), ids)
                if len(e.ids) != n:
                    raise errors.NotFound(f"document {group}: {n - len(e.ids)} of {n} memories of layer "
                                          f"{layer} are missing")
                ks.append(torch.from_numpy(e.vectors.copy()))
                vs.append(torch.from_numpy(np.frombuffer(b"".join(e.payloads), np.float32)
                                           .reshape(n, d.head_dim).copy()))
            keys.append(torch.stack(ks).to(device=device, dtype=dtype))
            values.append(torch.stack(vs).to(device=device, dtype=dtype))
        self.device.add(group, keys, values, n)

    def forget(self, group) -> None:
        self.device.forget(group)
        self.daemon.forget(group)

    @contextlib.contextmanager
    def reading(self, groups):
        with self.device.reading(groups), self.daemon.reading(groups), super().reading(groups):
            yield self

    def lookup(self, layer: int) -> Optional[MemoryLookup]:
        if layer not in self.layers or not any(g is not None for g in self._rows):
            return None
        on_device = all(g is None or self.device.tokens(g) for g in self._rows)
        return (self.device if on_device else self.daemon).lookup(layer)

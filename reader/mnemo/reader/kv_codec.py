"""Decoding stored KV layers in torch, on the GPU or the CPU.

mnemod stores each layer of a KV segment as kvcache/codec.h describes (that
header is the one place that documents the bytes):

    u8 codec id | u8 dtype id | u16 group | u32 tokens | u32 keys-part bytes
    | keys part | values part

The reader asks for layers as stored (``Client.get_kv_stored``, or reading
the daemon's files itself, ``Client.locate_kv``) and decodes them here, many
at once: ``decode`` takes a batch of stored layers of one shape as the rows
of a uint8 tensor and returns their keys and values with a few tensor
operations for the whole batch (no per-token or per-layer Python loop), so
int8 and int4 cross PCIe at a half and a quarter of their decoded size.
The arithmetic is mnemod's (x = q * s for int8, x = m + q * s for int4, in
float32, then rounded to the space's dtype), so the results equal the
daemon's own decoding bit for bit on the CPU; on the GPU they may differ in
the last bit where the compiler fuses a multiply-add.

The entropy codec (zstd inside) is not decoded here; the reader asks the
daemon to decode those spaces.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np
import torch

from mnemo import errors
from mnemo._same_host import DTYPE_IDS

HEADER_BYTES = 12
RAW, INT8, INT4, ENTROPY = 0, 1, 2, 3
CODEC_IDS = {"raw": RAW, "int8": INT8, "int4": INT4, "entropy": ENTROPY}
TORCH_DTYPES = {0: torch.float16, 1: torch.bfloat16, 2: torch.float32}  # kvcache::Dtype ids


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a space's dtype name (``f16``, ``bf16``, ``f32``)."""
    return TORCH_DTYPES[DTYPE_IDS[name]]


def codec_id(name: str) -> int:
    """The codec id of a space's codec name (``int4:G`` is int4)."""
    return CODEC_IDS[name.split(":")[0]]


@dataclasses.dataclass(frozen=True)
class LayerFormat:
    """What the headers of a batch of stored layers say (all the same)."""

    codec: int
    dtype: torch.dtype
    group: int
    tokens: int
    keys_bytes: int

    def part_bytes(self, heads: int, head_dim: int, keys: bool) -> int:
        """The size a part of this format must have."""
        n = heads * self.tokens * head_dim
        if self.codec == RAW:
            return n * torch.tensor([], dtype=self.dtype).element_size()
        if self.codec == INT8:
            return 4 * heads * head_dim + n
        if self.codec == INT4:
            return 8 * _int4_groups(heads, self.tokens, head_dim, self.group, keys) + (n + 1) // 2
        raise errors.InvalidArgument(f"codec id {self.codec} is decoded by the daemon, not here")


def read_format(headers: np.ndarray, heads: int, head_dim: int) -> LayerFormat:
    """The format of a batch of stored layers from their headers, (N, 12)
    uint8 (on the host); Corruption unless all rows agree and the sizes fit
    the shape."""
    h = np.ascontiguousarray(headers, dtype=np.uint8).reshape(-1, HEADER_BYTES)
    if h.shape[0] == 0:
        raise errors.InvalidArgument("no stored layers to decode")
    if not (h == h[0]).all():
        raise errors.Corruption("stored KV layers of one batch have different headers")
    codec, dtype = int(h[0, 0]), int(h[0, 1])
    group = int(h[0, 2:4].view(np.uint16)[0])
    tokens, keys_bytes = (int(x) for x in h[0, 4:12].view(np.uint32))
    if dtype not in TORCH_DTYPES or codec not in (RAW, INT8, INT4, ENTROPY):
        raise errors.Corruption(f"stored KV layer header names codec {codec}, dtype {dtype}")
    if codec == INT4 and group < 2:
        raise errors.Corruption(f"stored int4 KV layer has group {group}")
    f = LayerFormat(codec, TORCH_DTYPES[dtype], group, tokens, keys_bytes)
    if codec != ENTROPY and f.part_bytes(heads, head_dim, True) != keys_bytes:
        raise errors.Corruption(f"stored KV layer's keys part is {keys_bytes} bytes; "
                                f"{f.part_bytes(heads, head_dim, True)} expected")
    return f


def stored_bytes(f: LayerFormat, heads: int, head_dim: int) -> int:
    """The length of one stored layer of format ``f``."""
    return HEADER_BYTES + f.part_bytes(heads, head_dim, True) + f.part_bytes(heads, head_dim, False)


def layer_format(codec: str, dtype: str, tokens: int) -> LayerFormat:
    """The format a space of ``codec`` (``raw``, ``int8``, ``int4[:G]``) and
    ``dtype`` (``f16``, ``bf16``, ``f32``) stores a layer of ``tokens`` in."""
    cid = codec_id(codec)
    group = int(codec.split(":")[1]) if cid == INT4 and ":" in codec else (32 if cid == INT4 else 0)
    return LayerFormat(cid, torch_dtype(dtype), group, tokens, 0)


def decode(stored: torch.Tensor, f: LayerFormat, heads: int, head_dim: int,
           out: Tuple[torch.Tensor, torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decodes N stored layers of format ``f``, the rows of ``stored`` (N, S)
    uint8 (S at least the stored length; any device), into keys and values,
    each (N, heads, tokens, head_dim) of the stored dtype on that device.
    With ``out``, writes them there instead (any tensors of that many
    elements whose last three dimensions are those, e.g. strided views into
    a model's cache, (layers, chunks, heads, tokens, head_dim)) and returns
    them."""
    n = stored.shape[0]
    kb = f.part_bytes(heads, head_dim, True)
    vb = f.part_bytes(heads, head_dim, False)
    if stored.dtype != torch.uint8 or stored.dim() != 2 or stored.shape[1] < HEADER_BYTES + kb + vb:
        raise errors.InvalidArgument(f"stored layers must be (N, >= {HEADER_BYTES + kb + vb}) "
                                     f"uint8, got {tuple(stored.shape)} {stored.dtype}")
    shape = (n, heads, f.tokens, head_dim)
    parts = []
    for at, keys in ((HEADER_BYTES, True), (HEADER_BYTES + kb, False)):
        part = stored[:, at:at + (kb if keys else vb)]
        if f.codec == RAW:
            x = _view(part, f.dtype).reshape(shape)
        elif f.codec == INT8:
            x = _int8(part, shape)
        else:
            x = _int4(part, shape, f.group, keys)
        parts.append(x)
    if out is None:
        return tuple(p if p.dtype == f.dtype else p.to(f.dtype) for p in parts)
    for p, o in zip(parts, out):
        if o.numel() != p.numel() or o.shape[-3:] != p.shape[-3:]:
            raise errors.InvalidArgument(f"out {tuple(o.shape)} does not hold {tuple(p.shape)}")
        o.copy_(p.view(o.shape))  # rounds float32 to the dtype as the daemon does (to nearest even)
    return out


def _view(part: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The rows of a uint8 (N, bytes) slice reinterpreted as ``dtype``."""
    size = torch.tensor([], dtype=dtype).element_size()
    if part.stride(0) % size or part.storage_offset() % size:
        part = part.contiguous()  # unaligned rows: one copy
    return part.view(dtype)


def _int8(part: torch.Tensor, shape) -> torch.Tensor:
    n, h, t, d = shape
    scale = _view(part[:, :4 * h * d], torch.float32).reshape(n, h, 1, d)
    q = _view(part[:, 4 * h * d:], torch.int8).reshape(shape)
    return q.float() * scale


def _int4_groups(h: int, t: int, d: int, g: int, keys: bool) -> int:
    return h * -(-t // g) * d if keys else h * t * -(-d // g)


def _int4(part: torch.Tensor, shape, g: int, keys: bool) -> torch.Tensor:
    n, h, t, d = shape
    groups = _int4_groups(h, t, d, g, keys)
    scale = _view(part[:, :4 * groups], torch.float32)
    low = _view(part[:, 4 * groups:8 * groups], torch.float32)
    packed = part[:, 8 * groups:]
    # Two elements a byte, the even one in the low nibble.
    q = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(n, -1)[:, :h * t * d]
    q = q.reshape(shape).float()
    if keys:  # groups [h][t / g][d]: g tokens of one channel
        tg = -(-t // g)
        scale = scale.reshape(n, h, tg, 1, d).expand(n, h, tg, g, d).reshape(n, h, tg * g, d)[:, :, :t]
        low = low.reshape(n, h, tg, 1, d).expand(n, h, tg, g, d).reshape(n, h, tg * g, d)[:, :, :t]
    else:  # groups [h][t][d / g]: g channels of one token
        dg = -(-d // g)
        scale = scale.reshape(n, h, t, dg, 1).expand(n, h, t, dg, g).reshape(n, h, t, dg * g)[..., :d]
        low = low.reshape(n, h, t, dg, 1).expand(n, h, t, dg, g).reshape(n, h, t, dg * g)[..., :d]
    return low + q * scale  # two roundings, as mnemod computes it

"""What the client returns: plain dataclasses, no connection inside."""
from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np
import numpy.typing as npt


@dataclasses.dataclass
class CollectionStats:
    """What ``Client.stats``, ``Client.list`` and ``Client.create_collection``
    report for a collection."""

    name: str
    dim: int
    metric: str
    #: The FAISS factory string of its index.
    index: str
    #: Live entries.
    count: int
    #: Slots of replaced or deleted entries, awaiting compaction.
    deleted_slots: int
    #: False while an index that needs training gathers its training data.
    trained: bool
    train_size: int
    #: Bumped at each training.
    epoch: int
    index_memory_bytes: int
    storage_bytes: int
    #: HNSW: the efConstruction new vectors are linked with; 0 for other indexes.
    ef_construction: int = 0


@dataclasses.dataclass
class KvSpaceStats:
    """What ``Client.kv_stats`` and ``Client.create_kv_space`` report."""

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    #: ``f16``, ``bf16`` or ``f32``.
    dtype: str
    chunk_tokens: int
    #: ``raw``, ``int8``, ``int4``, ``int4:G`` or ``entropy``.
    codec: str
    #: 0: unbounded; else least recently used segments are evicted beyond.
    capacity_bytes: int
    #: 0: forever; else segments vanish this many seconds after their put.
    ttl_s: int
    segments: int
    #: Encoded bytes of all stored layers.
    bytes_stored: int
    #: What they hold in the space's dtype.
    raw_bytes: int
    hits: int
    misses: int
    evictions: int
    expirations: int


@dataclasses.dataclass
class Entries:
    """Entries returned by ``Client.get``: only the ids that exist, in the
    order asked."""

    ids: npt.NDArray[np.uint64]       # (m,)
    vectors: npt.NDArray[np.float32]  # (m, dim)
    groups: npt.NDArray[np.uint64]    # (m,)
    payloads: List[bytes]             # m


@dataclasses.dataclass
class KvLocations:
    """Where ``Client.locate_kv`` says the stored layers of several segments
    lie in the daemon's value-log files (same-host gets). Range i is layer
    ``layers[i % len(layers)]`` of segment ``i // len(layers)``:
    ``length[i]`` bytes at ``offset[i]`` of ``files[file[i]]``, a layer as
    mnemod stores it (kvcache/codec.h: a 12-byte header, the keys' part,
    the values' part), whose XXH3-64 is ``checksum[i]``. The daemon keeps the
    files as they are for ``lease_ms``."""

    #: (absolute path, device, inode) of each file named.
    files: List[Tuple[str, int, int]]
    layers: npt.NDArray[np.uint32]
    #: Tokens of each segment.
    tokens: npt.NDArray[np.uint32]
    file: npt.NDArray[np.uint32]
    offset: npt.NDArray[np.uint64]
    length: npt.NDArray[np.uint64]
    checksum: npt.NDArray[np.uint64]
    lease_ms: int
    codec: str
    dtype: str
    kv_heads: int
    head_dim: int


@dataclasses.dataclass
class StoredLayers:
    """One segment's layers as mnemod stores them (``Client.get_kv_stored``),
    back to back in ``data``, ``lengths[i]`` bytes for layer ``layers[i]``;
    ``mnemo.reader.kv_codec`` decodes them."""

    data: npt.NDArray[np.uint8]
    lengths: npt.NDArray[np.uint64]
    layers: npt.NDArray[np.uint32]
    tokens: int
    codec: str
    dtype: str
    kv_heads: int
    head_dim: int

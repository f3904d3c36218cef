"""The network client for mnemod.

Wire format (``net/mnemo.fbs``, "Framing"): an 8-byte header (the
FlatBuffer's length and the attachment's, little-endian uint32s), one
FlatBuffer, then the attachment: KV layers, sent from and received into the
caller's arrays without joined copies. A ``Client`` is one TCP connection;
it is not safe to share between threads (make one per thread).
"""
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import socket
import struct
import sys
import threading
import weakref
from typing import List, Optional

import flatbuffers
import numpy as np

from mnemo import errors
from mnemo.wire import (Ack, Backup, CollectionInfo, CollectionList, CreateCollection, CreateKvSpace,
                        Delete, DropCollection, DropKvSpace, Entries as WireEntries, Error as
                        WireError, Get, GetKv, GetKvStats, GetStats, KvReservation, KvSegment,
                        KvSpaceInfo, ListCollections, MatchPrefix, Payload, PutKv, Request,
                        RequestFrame, ReserveKv, Response, ResponseFrame, Search, SearchResult,
                        Train, Upsert)

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
_HEADER = struct.Struct("<II")  # FlatBuffer bytes, attachment bytes
_IOV_MAX = 1024  # buffers per sendmsg / pwritev
# A same-host put costs a round trip more than one over the connection; it
# pays from about a megabyte of layers on.
_SAME_HOST_MIN_BYTES = 1 << 20
_VALUE_FILES_KEPT = 16  # open value-log files a same-host client keeps
_MAX_REPLY = 1 << 31


_NUMPY_DTYPES = {"f16": np.float16, "f32": np.float32, "bf16": np.uint16}


def _write_all(write, parts):
    """Calls write(buffers) -> bytes written with every part, no joined
    copy, until all are written (short writes resume where they stopped)."""
    views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
    while views:
        done = write(views[:_IOV_MAX])
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def _send_all(sock, parts):
    _write_all(sock.sendmsg, parts)


def _pwrite_all(fd, parts, offset):
    def write(views):
        nonlocal offset
        n = os.pwritev(fd, views, offset)
        if n == 0:
            raise OSError("pwritev wrote nothing")
        offset += n
        return n
    _write_all(write, parts)


def _interleaved(k, v, layers):
    """The flat bytes k and v of `layers` layers as the wire orders them:
    keys of layer 0, values of layer 0, keys of layer 1, ... (views)."""
    lb = k.nbytes // layers if layers else 0
    parts = []
    for layer in range(layers):
        parts += [k[layer * lb:(layer + 1) * lb], v[layer * lb:(layer + 1) * lb]]
    return parts


def _close_fds(fds):
    """Closes the descriptors of a {key: fd} dict and empties it."""
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def _is_loopback(host: str) -> bool:
    return host.strip("[]") in ("localhost", "::1") or host.startswith("127.")


def _bytes_vector(b, data):
    """A [ubyte] vector holding `data` (bytes, or a flat uint8 array), copied
    into the builder once (flatbuffers' CreateNumpyVector copies it twice)."""
    view = memoryview(data).cast("B")
    n = view.nbytes
    b.StartVector(1, n, 1)
    b.head = b.Head() - n
    b.Bytes[b.Head():b.Head() + n] = view
    b.vectorNumElems = n
    return b.EndVector()


def _raw_bytes(x, writable=False):
    """The bytes of a numpy array or torch tensor, as a flat uint8 array
    (no copy when it is contiguous and on the CPU; with ``writable``, only
    then, and the array is its memory)."""
    if hasattr(x, "detach") and hasattr(x, "element_size"):  # torch, without importing it
        if writable and (x.device.type != "cpu" or not x.is_contiguous()):
            raise errors.InvalidArgument("out tensors must be contiguous and on the CPU")
        x = x.detach().cpu().contiguous()
        import torch
        return x.view(torch.uint8).reshape(-1).numpy()
    if writable and not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.flags.writeable):
        raise errors.InvalidArgument("out arrays must be writable C-contiguous numpy arrays")
    a = np.ascontiguousarray(x)
    if a.dtype not in (np.float16, np.float32, np.uint16):
        raise errors.InvalidArgument(f"KV tensors must be float16, bfloat16 or float32, got {a.dtype}")
    return a.view(np.uint8).reshape(-1)


@dataclasses.dataclass
class KvSpaceStats:
    name: str
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    chunk_tokens: int
    codec: str
    capacity_bytes: int
    ttl_s: int
    segments: int
    bytes_stored: int
    raw_bytes: int
    hits: int
    misses: int
    evictions: int
    expirations: int


def _kv_stats(i) -> KvSpaceStats:
    return KvSpaceStats(i.Name().decode(), i.Layers(), i.KvHeads(), i.HeadDim(),
                        i.Dtype().decode(), i.ChunkTokens(), i.Codec().decode(),
                        i.CapacityBytes(), i.TtlS(), i.Segments(), i.BytesStored(),
                        i.RawBytes(), i.Hits(), i.Misses(), i.Evictions(), i.Expirations())


@dataclasses.dataclass
class CollectionStats:
    """What ``Client.stats`` and ``Client.list`` report for a collection."""
    name: str
    dim: int
    metric: str
    index: str
    count: int              # live entries
    deleted_slots: int      # replaced or deleted, awaiting compaction
    trained: bool           # False while an index gathers training data
    train_size: int
    epoch: int
    index_memory_bytes: int
    storage_bytes: int


@dataclasses.dataclass
class Entries:
    """Entries returned by ``Client.get``: only the ids that exist."""
    ids: np.ndarray          # uint64[m]
    vectors: np.ndarray      # float32[m, dim]
    groups: np.ndarray       # uint64[m]
    payloads: List[bytes]    # m


def _table(b, module, **fields):
    """Builds one table from a generated module; values are scalars or
    offsets made beforehand (FlatBuffers forbids nesting)."""
    module.Start(b)
    for name, value in fields.items():
        if value is not None:
            getattr(module, "Add" + name)(b, value)
    return module.End(b)


def _string(b, s):
    return None if s is None else b.CreateString(s)


def _u64(b, values):
    return b.CreateNumpyVector(np.ascontiguousarray(values, dtype=np.uint64).ravel())


def _stats(info) -> CollectionStats:
    def s(v):
        return v.decode() if v is not None else ""
    return CollectionStats(s(info.Name()), info.Dim(), s(info.Metric()), s(info.Index()),
                           info.Count(), info.DeletedSlots(), bool(info.Trained()),
                           info.TrainSize(), info.Epoch(), info.IndexMemoryBytes(),
                           info.StorageBytes())


class _RecycledBlocks:
    """Memory for get_kv's result arrays, reused once the caller holds no
    array of it any more.

    Why: numpy takes arrays of many MiB from mmap, and glibc gives blocks
    that large back to the kernel when they are freed, so every get into
    fresh arrays paid for the kernel zeroing new pages (4.2 ms against
    1.2 ms to fill 32 MiB of reused memory on a 16-core host, a quarter of a
    get's time at loopback TCP speed).

    The rule: every array made from a block, and every view or torch tensor
    of those, holds a reference to the block (numpy's ``base``), so a block
    whose reference count is back to what this list alone holds is in use
    by nobody and is given out again; an array the caller keeps is never
    written. Up to ``idle_bytes`` of unused blocks are kept (the least
    recently used go first); blocks under ``MIN_BYTES`` are not worth it."""

    MIN_BYTES = 1 << 20
    MAX_BLOCKS = 64  # blocks followed at once; beyond, the oldest are left to the caller

    def __init__(self, idle_bytes: int):
        self.idle_bytes = idle_bytes
        self._blocks = []  # uint8 arrays, least recently given out first
        probe = [np.empty(1, np.uint8)]
        self._unused_refs = sys.getrefcount(probe[0])  # what the list alone holds, seen this way

    def _unused(self, i):
        return sys.getrefcount(self._blocks[i]) == self._unused_refs

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 array of nbytes whose contents are undefined."""
        if nbytes < self.MIN_BYTES or self.idle_bytes <= 0:
            return np.empty(nbytes, np.uint8)
        found = next((i for i in range(len(self._blocks))
                      if self._blocks[i].nbytes == nbytes and self._unused(i)), None)
        block = self._blocks.pop(found) if found is not None else np.empty(nbytes, np.uint8)
        idle = 0
        for i in reversed(range(len(self._blocks))):  # keep the most recent unused ones
            if self._unused(i):
                idle += self._blocks[i].nbytes
                if idle > self.idle_bytes:
                    del self._blocks[i]
        del self._blocks[:max(0, len(self._blocks) + 1 - self.MAX_BLOCKS)]
        self._blocks.append(block)
        return block


class _KvStream:
    """The frames of one streamed get_kv reply, read a layer at a time: each
    KvSegment frame holds layers [part_first, part_first + part_layers) of
    the reply in its attachment (part_layers 0: all of them, one frame); an
    Error frame ends the reply early. The caller holds the client's lock."""

    def __init__(self, client):
        self._client = client
        self._part = None      # the open frame's context, from Client._reply
        self._read_into = None
        self._next = 0         # the next layer to read, an index into the reply's layers
        self._part_end = 0     # the end of the open part
        self._total = None     # layers in the whole reply; None before the first part
        self._ended = False    # an Error frame (or a broken connection) ended the reply

    def next_part(self):
        """Closes the open part and reads the next frame's FlatBuffer;
        returns its KvSegment or raises the error that ended the reply."""
        self._close_part()
        try:
            part = self._client._reply()
            f, self._read_into = part.__enter__()
            self._part = part
            seg = self._client._body(f, KvSegment.KvSegment, Response.Response.KvSegment)
            first, count = seg.PartFirst(), seg.PartLayers()
            if count == 0:
                first, count = 0, seg.LayersLength()
            if self._total is None:
                self._total = seg.LayersLength()
            if first != self._next or first + count > self._total or (count == 0 and self._total):
                raise errors.Internal(f"reply part of layers {first}+{count} where layer "
                                      f"{self._next} of {self._total} was due")
        except BaseException:
            self._ended = True  # nothing more of this reply can be read in step
            raise
        self._part_end = first + count
        return seg

    def read_layer(self, keys, values):
        if self._next == self._part_end:
            self.next_part()
        self._read_into(keys)
        self._read_into(values)
        self._next += 1

    def skip_rest(self):
        """Reads what is left of the reply, so that the connection stays in
        step when the reader stopped early; an error frame among it ends it."""
        try:
            while not self._ended and self._total is not None and self._part_end < self._total:
                self._next = self._part_end
                self.next_part()
        except errors.Error:
            pass
        finally:
            self._close_part()

    def _close_part(self):
        part, self._part = self._part, None
        if part is not None:
            part.__exit__(None, None, None)  # skips the part's unread attachment


class Client:
    """A connection to mnemod.

    >>> c = Client("127.0.0.1:7070")
    >>> c.create_collection("docs", dim=128, index="IVF1024,PQ16")
    >>> c.upsert("docs", ids, vectors)          # uint64[n], float32[n, 128]
    >>> D, I = c.search("docs", queries, k=10)  # float32[q, 10], int64[q, 10]

    ``recycle_bytes``: the memory of get_kv's arrays is reused for later gets
    once the caller holds none of them; up to this much of it is kept while
    unused (0: every get allocates new arrays).

    ``same_host``: a put_kv of a megabyte or more into a raw space writes its
    layers straight into the daemon's value-log file, when the daemon runs
    on this machine and this user may write that file, instead of sending
    them on the connection (one copy instead of three, and no loopback TCP).
    None (the default) tries it for a loopback address; False never does.
    Whenever it cannot be used, the put goes over the connection.
    """

    def __init__(self, address: str = "127.0.0.1:7070", api_key: Optional[str] = None,
                 timeout: Optional[float] = None, *, recycle_bytes: int = 256 << 20,
                 same_host: Optional[bool] = None):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise errors.InvalidArgument(f"address {address!r} is not HOST:PORT")
        self.address = address
        self.api_key = api_key
        self._next_id = 1
        self._kv_shapes = {}  # space -> (kv_heads, head_dim, codec), for put_kv
        self._same_host = _is_loopback(host) if same_host is None else same_host
        self._value_files = {}  # (path, device, inode) -> fd, oldest first
        # Closed with the client, or when it is collected without close().
        weakref.finalize(self, _close_fds, self._value_files)
        self._lane_pool = None  # threads that write a same-host put's lanes
        self._lane_pool_size = 0
        self._blocks = _RecycledBlocks(recycle_bytes)  # for get_kv's arrays
        self._lock = threading.Lock()  # guards misuse across threads, not a pool
        try:
            self._sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except OSError as e:
            raise errors.Unavailable(f"cannot connect to {address}: {e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self._sock.close()
        _close_fds(self._value_files)
        if self._lane_pool is not None:
            self._lane_pool.shutdown()
            self._lane_pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- transport -------------------------------------------------------

    def _call(self, request_type, build, size_hint=256, attachment=()):
        """Sends one request built by ``build(builder) -> offset`` (and the
        buffers of ``attachment``) and returns the reply's ResponseFrame;
        raises the server's error."""
        with self._exchange(request_type, build, size_hint, attachment) as (f, _):
            return f

    @contextlib.contextmanager
    def _exchange(self, request_type, build, size_hint=256, attachment=()):
        """Sends a request and reads its reply's FlatBuffer; yields
        (ResponseFrame, read_into) where read_into(buffer) fills a writable
        buffer from the reply's attachment. Holds the connection until the
        block ends, and then skips what of the attachment was not read."""
        with self._lock:
            self._send(request_type, build, size_hint, attachment)
            with self._reply() as got:
                yield got

    def _send(self, request_type, build, size_hint, attachment=()):
        """Sends one request frame; the caller holds self._lock."""
        b = flatbuffers.Builder(size_hint)
        body = build(b)
        key = _string(b, self.api_key)
        rid = self._next_id
        self._next_id += 1
        frame = _table(b, RequestFrame, Version=PROTOCOL_VERSION, RequestId=rid,
                       ApiKey=key, RequestType=request_type, Request=body)
        b.Finish(frame)
        data = memoryview(b.Bytes)[b.Head():]
        parts = [memoryview(p).cast("B") for p in attachment]
        try:
            _send_all(self._sock, [_HEADER.pack(len(data), sum(p.nbytes for p in parts)), data,
                                   *parts])
        except OSError as e:
            raise errors.Unavailable(f"connection to {self.address} failed: {e}") from None

    @contextlib.contextmanager
    def _reply(self):
        """Reads one reply frame (the caller holds self._lock); yields
        (ResponseFrame, read_into) as _exchange does, or raises its error."""
        try:
            length, left = _HEADER.unpack(self._recv_exact(_HEADER.size))
            if length > _MAX_REPLY:
                raise errors.Internal(f"reply of {length} bytes is implausible")
            reply = self._recv_exact(length)
        except OSError as e:
            raise errors.Unavailable(f"connection to {self.address} failed: {e}") from None
        f = ResponseFrame.ResponseFrame.GetRootAs(reply, 0)

        def read_into(buf):
            nonlocal left
            view = memoryview(buf).cast("B")
            if view.nbytes > left:
                raise errors.Internal(f"the reply's attachment has {left} bytes left, "
                                      f"not {view.nbytes}")
            self._recv_into(view)
            left -= view.nbytes

        try:
            if f.ResponseType() == Response.Response.Error:
                err = WireError.Error()
                err.Init(f.Response().Bytes, f.Response().Pos)
                raise errors.from_code(err.Code(), (err.Message() or b"").decode())
            yield f, read_into
        finally:
            scratch = memoryview(bytearray(min(left, 1 << 20)))
            while left:  # keeps the stream in step when a reader stops early
                n = min(left, scratch.nbytes)
                self._recv_into(scratch[:n])
                left -= n

    def _recv_into(self, view):
        got, n = 0, view.nbytes
        try:
            while got < n:
                k = self._sock.recv_into(view[got:], n - got)
                if k == 0:
                    raise errors.Unavailable(f"mnemod at {self.address} closed the connection")
                got += k
        except OSError as e:
            raise errors.Unavailable(f"connection to {self.address} failed: {e}") from None

    def _recv_exact(self, n):
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return buf  # FlatBuffers reads a bytearray as it is: no copy

    @staticmethod
    def _body(f, cls, expected):
        if f.ResponseType() != expected:
            raise errors.Internal(f"unexpected reply type {f.ResponseType()}")
        t = cls()
        t.Init(f.Response().Bytes, f.Response().Pos)
        return t

    # --- collections -----------------------------------------------------

    def create_collection(self, name: str, dim: int, metric: str = "l2", index: str = "Flat",
                          capacity: Optional[int] = None, evict: Optional[str] = None,
                          train_size: Optional[int] = None) -> CollectionStats:
        def build(b):
            return _table(b, CreateCollection, Name=_string(b, name), Dim=int(dim),
                          Metric=_string(b, metric), Index=_string(b, index),
                          Capacity=int(capacity or 0), Evict=_string(b, evict or ""),
                          TrainSize=int(train_size or 0))
        f = self._call(Request.Request.CreateCollection, build)
        return _stats(self._body(f, CollectionInfo.CollectionInfo, Response.Response.CollectionInfo))

    def drop(self, name: str) -> None:
        self._call(Request.Request.DropCollection,
                   lambda b: _table(b, DropCollection, Name=_string(b, name)))

    def list(self) -> List[CollectionStats]:
        f = self._call(Request.Request.ListCollections, lambda b: _table(b, ListCollections))
        lst = self._body(f, CollectionList.CollectionList, Response.Response.CollectionList)
        return [_stats(lst.Collections(i)) for i in range(lst.CollectionsLength())]

    def stats(self, name: str) -> CollectionStats:
        f = self._call(Request.Request.GetStats,
                       lambda b: _table(b, GetStats, Name=_string(b, name)))
        return _stats(self._body(f, CollectionInfo.CollectionInfo, Response.Response.CollectionInfo))

    def train(self, name: str) -> None:
        self._call(Request.Request.Train, lambda b: _table(b, Train, Name=_string(b, name)))

    def backup(self, dir: str) -> None:
        """A consistent copy of the daemon's whole store in `dir`, an absolute
        path on the daemon's machine that must not exist yet. Writes go on
        meanwhile; the copy holds every write acknowledged before the call."""
        self._call(Request.Request.Backup, lambda b: _table(b, Backup, Dir=_string(b, dir)))

    def upsert(self, name: str, ids, vectors, groups=None, payloads=None) -> int:
        """Inserts or replaces entries. ids: uint64[n]; vectors: float32[n, dim];
        groups: uint64[n] or None; payloads: n bytes/str or None. Returns n once
        the batch is durable (in the daemon's write-ahead log)."""
        ids = np.ascontiguousarray(ids, dtype=np.uint64).ravel()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors.reshape(len(ids), -1) if len(ids) else vectors.reshape(0, 0)
        if groups is not None and len(groups) != len(ids):
            raise errors.InvalidArgument(f"{len(groups)} groups for {len(ids)} ids")
        if payloads is not None and len(payloads) != len(ids):
            raise errors.InvalidArgument(f"{len(payloads)} payloads for {len(ids)} ids")

        def build(b):
            pv = None
            if payloads is not None:
                offs = []
                for p in payloads:
                    data = p.encode() if isinstance(p, str) else bytes(p)
                    offs.append(_table(b, Payload, Data=_bytes_vector(b, data)))
                Upsert.StartPayloadsVector(b, len(offs))
                for o in reversed(offs):
                    b.PrependUOffsetTRelative(o)
                pv = b.EndVector()
            gv = _u64(b, groups) if groups is not None else None
            vv = b.CreateNumpyVector(vectors.ravel())
            iv = _u64(b, ids)
            return _table(b, Upsert, Collection=_string(b, name), Ids=iv, Vectors=vv,
                          Groups=gv, Payloads=pv)
        f = self._call(Request.Request.Upsert, build, 1024 + vectors.nbytes + ids.nbytes * 2)
        return self._body(f, Ack.Ack, Response.Response.Ack).Count()

    def get(self, name: str, ids) -> Entries:
        ids = np.ascontiguousarray(ids, dtype=np.uint64).ravel()
        f = self._call(Request.Request.Get,
                       lambda b: _table(b, Get, Collection=_string(b, name), Ids=_u64(b, ids)))
        e = self._body(f, WireEntries.Entries, Response.Response.Entries)
        found = e.IdsAsNumpy() if e.IdsLength() else np.zeros(0, np.uint64)
        m = len(found)
        vectors = e.VectorsAsNumpy() if e.VectorsLength() else np.zeros(0, np.float32)
        groups = e.GroupsAsNumpy() if e.GroupsLength() else np.zeros(0, np.uint64)
        payloads = []
        for i in range(e.PayloadsLength()):
            p = e.Payloads(i)
            payloads.append(p.DataAsNumpy().tobytes() if p.DataLength() else b"")
        return Entries(np.array(found, dtype=np.uint64),
                       np.array(vectors, dtype=np.float32).reshape(m, -1) if m else
                       np.zeros((0, 0), np.float32),
                       np.array(groups, dtype=np.uint64), payloads)

    def delete(self, name: str, ids) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.uint64).ravel()
        f = self._call(Request.Request.Delete,
                       lambda b: _table(b, Delete, Collection=_string(b, name), Ids=_u64(b, ids)))
        return self._body(f, Ack.Ack, Response.Response.Ack).Count()

    def search(self, name: str, queries, k: int = 10, nprobe: Optional[int] = None,
               ef: Optional[int] = None, group: Optional[int] = None):
        """Returns (D, I): float32[q, k] distances (squared L2 for l2, inner
        products for ip and cosine) and int64[q, k] ids, -1 where fewer than
        k entries qualified."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        rows = 1 if q.ndim == 1 else q.shape[0]

        def build(b):
            qv = b.CreateNumpyVector(q.ravel())
            return _table(b, Search, Collection=_string(b, name), Queries=qv, K=int(k),
                          Nprobe=int(nprobe or 0), Ef=int(ef or 0),
                          HasGroup=group is not None, Group=int(group or 0))
        f = self._call(Request.Request.Search, build, 256 + q.nbytes)
        r = self._body(f, SearchResult.SearchResult, Response.Response.SearchResult)
        n, kk = r.N(), r.K()
        if n * kk == 0:
            return np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64)
        return (np.array(r.DistancesAsNumpy(), dtype=np.float32).reshape(n, kk),
                np.array(r.IdsAsNumpy(), dtype=np.int64).reshape(n, kk))

    # --- KV segments ------------------------------------------------------

    def create_kv_space(self, name: str, layers: int, kv_heads: int, head_dim: int,
                        dtype: str = "f16", chunk_tokens: int = 256, codec: str = "raw",
                        capacity_bytes: Optional[int] = None,
                        ttl_s: Optional[int] = None) -> "KvSpaceStats":
        """codec: raw, int8, int4, int4:G (group size G) or entropy (see
        kv/codec.h). capacity_bytes: LRU eviction beyond; ttl_s: segments
        older than this many seconds are gone."""
        f = self._call(Request.Request.CreateKvSpace, lambda b: _table(
            b, CreateKvSpace, Name=_string(b, name), Layers=layers, KvHeads=kv_heads,
            HeadDim=head_dim, Dtype=_string(b, dtype), ChunkTokens=chunk_tokens,
            Codec=_string(b, codec), CapacityBytes=int(capacity_bytes or 0),
            TtlS=int(ttl_s or 0)))
        return _kv_stats(self._body(f, KvSpaceInfo.KvSpaceInfo, Response.Response.KvSpaceInfo))

    def drop_kv_space(self, name: str) -> None:
        self._call(Request.Request.DropKvSpace,
                   lambda b: _table(b, DropKvSpace, Name=_string(b, name)))
        self._kv_shapes.pop(name, None)

    def kv_stats(self, name: str) -> "KvSpaceStats":
        f = self._call(Request.Request.GetKvStats,
                       lambda b: _table(b, GetKvStats, Name=_string(b, name)))
        return _kv_stats(self._body(f, KvSpaceInfo.KvSpaceInfo, Response.Response.KvSpaceInfo))

    def put_kv(self, space: str, chunk_hash: bytes, keys, values) -> None:
        """keys, values: [layers, kv_heads, tokens, head_dim] in the space's
        dtype (numpy float16/float32, or torch tensors of any of f16, bf16,
        f32, which travel as their raw bytes)."""
        shape = tuple(keys.shape)
        if len(shape) != 4 or tuple(values.shape) != shape:
            raise errors.InvalidArgument(
                f"keys and values must both be [layers, kv_heads, tokens, head_dim], "
                f"got {shape} and {tuple(values.shape)}")
        heads, dim, codec = self._kv_shape(space)
        if (shape[1], shape[3]) != (heads, dim):
            raise errors.InvalidArgument(f"KV space '{space}' holds kv_heads={heads}, "
                                         f"head_dim={dim}; got the shape {shape}")
        k, v = _raw_bytes(keys), _raw_bytes(values)
        if (self._same_host and codec == "raw" and k.nbytes + v.nbytes >= _SAME_HOST_MIN_BYTES
                and self._put_kv_same_host(space, chunk_hash, shape, k, v)):
            return
        # The layers travel in the attachment, each layer's keys then values,
        # straight from the tensors' memory.
        self._call(Request.Request.PutKv, lambda b: _table(
            b, PutKv, Space=_string(b, space), ChunkHash=_bytes_vector(b, chunk_hash),
            Tokens=int(shape[2])), attachment=_interleaved(k, v, shape[0]))

    def _put_kv_same_host(self, space, chunk_hash, shape, k, v) -> bool:
        """put_kv through a reserved range of the daemon's value log (net/mnemo.fbs,
        ReserveKv); False when that cannot be used here, and nothing was stored."""
        try:
            f = self._call(Request.Request.ReserveKv, lambda b: _table(
                b, ReserveKv, Space=_string(b, space), Tokens=int(shape[2])))
        except errors.InvalidArgument:
            return False  # e.g. tokens out of range: the put over the connection says why
        r = self._body(f, KvReservation.KvReservation, Response.Response.KvReservation)
        if shape[0] != r.Layers() or k.nbytes != r.Layers() * r.LayerBytes():
            return False  # not the space's shape: the put over the connection says how
        lanes = [r.Lanes(j) for j in range(r.LanesLength())]
        fds = [self._value_file(lane.Path().decode(), lane.Device(), lane.Inode()) for lane in lanes]
        if not lanes or None in fds:
            self._same_host = False  # another machine, container or user
            return False
        header = r.LayerHeaderAsNumpy().tobytes()
        kv = _interleaved(k, v, shape[0])
        writes = [(fd, [p for i in range(j, shape[0], len(lanes))
                        for p in (header, kv[2 * i], kv[2 * i + 1])], lane.Offset())
                  for j, (fd, lane) in enumerate(zip(fds, lanes))]
        try:
            # One thread per lane: the kernel takes each file's writes in turn.
            list(self._lane_writers(len(writes)).map(lambda w: _pwrite_all(*w), writes))
        except OSError as e:
            log.warning("same-host put_kv failed (%s); putting over the connection", e)
            return False  # the reservation lapses unused
        self._call(Request.Request.PutKv, lambda b: _table(
            b, PutKv, Space=_string(b, space), ChunkHash=_bytes_vector(b, chunk_hash),
            Tokens=int(shape[2]), Reservation=r.Id()))
        return True

    def _lane_writers(self, lanes):
        """A pool of at least `lanes` threads, kept for later puts."""
        if self._lane_pool is None or self._lane_pool_size < lanes:
            if self._lane_pool is not None:
                self._lane_pool.shutdown()
            self._lane_pool = concurrent.futures.ThreadPoolExecutor(
                lanes, thread_name_prefix="mnemo-lane")
            self._lane_pool_size = lanes
        return self._lane_pool

    def _value_file(self, path, device, inode):
        """A writable descriptor of the daemon's file at path, or None when
        this process cannot open it or opens another file there."""
        key = (path, device, inode)
        if key in self._value_files:
            return self._value_files[key]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (device, inode):
            os.close(fd)
            return None
        while len(self._value_files) >= _VALUE_FILES_KEPT:
            os.close(self._value_files.pop(next(iter(self._value_files))))
        self._value_files[key] = fd
        return fd

    def _kv_shape(self, space: str):
        if space not in self._kv_shapes:
            st = self.kv_stats(space)
            self._kv_shapes[space] = (st.kv_heads, st.head_dim, st.codec)
        return self._kv_shapes[space]

    def get_kv(self, space: str, chunk_hash: bytes, layers=None, out=None):
        """(keys, values), each [len(layers), kv_heads, tokens, head_dim]:
        numpy float16 / float32, or uint16 holding bf16 bits (view them with
        torch as bfloat16). The bytes are received straight into the arrays;
        with ``out=(keys, values)`` (C-contiguous numpy arrays or CPU torch
        tensors of that shape and element size, e.g. pinned staging buffers)
        into those, which are returned. Raises NotFound when the segment is
        not stored."""
        with self._kv_reply(space, chunk_hash, layers) as (shape, dtype, _, read_layer):
            if out is None:
                keys, values = self._result_arrays(shape, dtype)
                kb, vb = keys, values
            else:
                keys, values = out
                kb, vb = _raw_bytes(keys, writable=True), _raw_bytes(values, writable=True)
                want = int(np.prod(shape)) * np.dtype(dtype).itemsize
                if kb.nbytes != want or vb.nbytes != want:
                    raise errors.InvalidArgument(
                        f"out arrays must hold {shape} of {np.dtype(dtype).name} "
                        f"({want} bytes each), got {kb.nbytes} and {vb.nbytes} bytes")
            kb, vb = kb.reshape(shape[0], -1), vb.reshape(shape[0], -1)
            for i in range(shape[0]):
                read_layer(kb[i], vb[i])
        return keys, values

    def get_kv_layers(self, space: str, chunk_hash: bytes, layers=None):
        """Yields (layer, keys, values) for each layer in order, each
        [kv_heads, tokens, head_dim], as soon as that layer has arrived: a
        model can run layer 0 while later layers are still read and sent. The
        connection is busy until the iteration ends."""
        with self._kv_reply(space, chunk_hash, layers) as (shape, dtype, numbers, read_layer):
            for layer in numbers:
                k, v = self._result_arrays(shape[1:], dtype)
                read_layer(k, v)
                yield layer, k, v

    def _result_arrays(self, shape, dtype):
        """Two arrays of shape for a reply's keys and values, in one block
        of recycled memory (see _RecycledBlocks)."""
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        block = self._blocks.take(2 * n)
        return block[:n].view(dtype).reshape(shape), block[n:].view(dtype).reshape(shape)

    @contextlib.contextmanager
    def _kv_reply(self, space, chunk_hash, layers):
        """GetKv, its reply streamed in parts (mnemod sends each part as
        soon as its layers are read); yields (shape, numpy dtype, layer
        numbers, read_layer) once the first part's FlatBuffer is in, where
        read_layer(keys, values) receives the next layer into two writable
        buffers. Holds the connection until the block ends, and then skips
        what was not read."""
        def build(b):
            lv = None
            if layers is not None:
                lv = b.CreateNumpyVector(np.ascontiguousarray(layers, dtype=np.uint32))
            return _table(b, GetKv, Space=_string(b, space), ChunkHash=_bytes_vector(b, chunk_hash),
                          Layers=lv, Attachment=True, Stream=True)
        with self._lock:
            self._send(Request.Request.GetKv, build, 256)
            stream = _KvStream(self)
            try:
                seg = stream.next_part()
                dtype = _NUMPY_DTYPES[seg.Dtype().decode()]
                shape = (seg.LayersLength(), seg.KvHeads(), seg.Tokens(), seg.HeadDim())
                if int(np.prod(shape[1:])) * np.dtype(dtype).itemsize != seg.LayerBytes():
                    raise errors.Internal(f"reply of layers {shape[1:]} of {seg.Dtype().decode()} "
                                          f"in {seg.LayerBytes()} bytes each")
                numbers = [int(x) for x in seg.LayersAsNumpy()] if seg.LayersLength() else []
                yield shape, dtype, numbers, stream.read_layer
            finally:
                stream.skip_rest()

    def match_prefix(self, space: str, chunk_hashes) -> int:
        """How many leading chunk hashes (32 bytes each) the space stores."""
        joined = b"".join(bytes(h) for h in chunk_hashes)
        f = self._call(Request.Request.MatchPrefix, lambda b: _table(
            b, MatchPrefix, Space=_string(b, space), ChunkHashes=_bytes_vector(b, joined)))
        return int(self._body(f, Ack.Ack, Response.Response.Ack).Count())

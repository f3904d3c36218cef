"""The network client for mnemod: ``Client``, one connection to a daemon.

The pieces behind it are private modules: ``_transport`` (framing, one
connection), ``_builders`` (request tables), ``_kv_stream`` (a streamed
get_kv reply), ``_same_host`` (puts through the daemon's files) and
``_buffers`` (reused memory for get_kv's arrays).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from mnemo import errors
from mnemo._buffers import RecycledBlocks
from mnemo._builders import (bytes_vector, layers_vector, offsets_vector, string, table,
                             u64_vector)
from mnemo._kv_stream import KvStream
from mnemo._same_host import MIN_BYTES as _SAME_HOST_MIN_BYTES
from mnemo._same_host import (SameHostReader, SameHostWriter, interleaved, is_loopback,
                               raw_layer_header)
from mnemo._transport import Connection, body
from mnemo.types import CollectionStats, Entries, KvLocations, KvSpaceStats, StoredLayers
from mnemo.wire import (Ack, Backup, CollectionInfo, CollectionList, CreateCollection, CreateKvSpace,
                        Delete, DropCollection, DropKvSpace, Entries as WireEntries, Get, GetKv,
                        GetKvStats, GetStats, KvLocations as WireKvLocations, KvSegment,
                        KvSpaceInfo, ListCollections, LocateKv, MatchPrefix, Payload,
                        PutKv, Request, Response, Search, SearchResult, Train, Upsert)

__all__ = ["Client", "CollectionStats", "Entries", "KvLocations", "KvSpaceStats", "SearchSpec",
           "StoredLayers"]

_NUMPY_DTYPES = {"f16": np.float16, "f32": np.float32, "bf16": np.uint16}
_PIPELINE_DEPTH = 64  # requests search_many has in flight at most

#: A KV tensor: a numpy array (float16, float32, or uint16 holding bfloat16
#: bits) or a torch tensor of float16, bfloat16 or float32.
KvTensor = Any


def _raw_bytes(x: KvTensor, writable: bool = False) -> npt.NDArray[np.uint8]:
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


def _collection_stats(info) -> CollectionStats:
    def s(v):
        return v.decode() if v is not None else ""
    return CollectionStats(s(info.Name()), info.Dim(), s(info.Metric()), s(info.Index()),
                           info.Count(), info.DeletedSlots(), bool(info.Trained()),
                           info.TrainSize(), info.Epoch(), info.IndexMemoryBytes(),
                           info.StorageBytes(), info.EfConstruction())


def _kv_space_stats(i) -> KvSpaceStats:
    return KvSpaceStats(i.Name().decode(), i.Layers(), i.KvHeads(), i.HeadDim(),
                        i.Dtype().decode(), i.ChunkTokens(), i.Codec().decode(),
                        i.CapacityBytes(), i.TtlS(), i.Segments(), i.BytesStored(),
                        i.RawBytes(), i.Hits(), i.Misses(), i.Evictions(), i.Expirations())


#: One search of ``Client.search_many``: the keyword arguments of ``search``.
SearchSpec = Dict[str, Any]


def _wire_array(length: int, as_numpy, dtype) -> np.ndarray:
    """A FlatBuffers vector field as a numpy array of ``dtype`` (its
    ``...AsNumpy`` returns 0, not an array, when the field is absent)."""
    return as_numpy().astype(dtype) if length else np.zeros(0, dtype)


def _search_request(name: str, queries: npt.ArrayLike, k: int = 10, nprobe: Optional[int] = None,
                    ef: Optional[int] = None, group: Optional[int] = None, with_entries: bool = False):
    """(build, size hint, query rows, with_entries) of a Search request."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    rows = 1 if q.ndim == 1 else q.shape[0]

    def build(b):
        qv = b.CreateNumpyVector(q.ravel())
        return table(b, Search, Collection=string(b, name), Queries=qv, K=int(k),
                     Nprobe=int(nprobe or 0), Ef=int(ef or 0),
                     HasGroup=group is not None, Group=int(group or 0), WithEntries=bool(with_entries))
    return build, 256 + q.nbytes, rows, with_entries


def _entries(e) -> Entries:
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


def _search_result(f, rows: int, with_entries: bool = False):
    r = body(f, SearchResult.SearchResult, Response.Response.SearchResult)
    n, kk = r.N(), r.K()
    if n * kk == 0:
        d, i = np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64)
    else:
        d = np.array(r.DistancesAsNumpy(), dtype=np.float32).reshape(n, kk)
        i = np.array(r.IdsAsNumpy(), dtype=np.int64).reshape(n, kk)
    if not with_entries:
        return d, i
    e = r.Entries()
    if e is None:  # none sent (a daemon that predates with_entries)
        return d, i, Entries(np.zeros(0, np.uint64), np.zeros((0, 0), np.float32), np.zeros(0, np.uint64), [])
    return d, i, _entries(e)


class Client:
    """A connection to mnemod.

    >>> c = Client("127.0.0.1:7070")
    >>> c.create_collection("docs", dim=128, index="IVF1024,PQ16")
    >>> c.upsert("docs", ids, vectors)          # uint64[n], float32[n, 128]
    >>> D, I = c.search("docs", queries, k=10)  # float32[q, 10], int64[q, 10]

    Parameters
    ----------
    address : str
        ``HOST:PORT`` of the daemon.
    api_key : str, optional
        The key every request carries, when the daemon runs with
        ``--auth-file``.
    timeout : float, optional
        Seconds to wait for the connection and for each socket operation.
    recycle_bytes : int
        The memory of get_kv's arrays is reused for later gets once the
        caller holds none of them; up to this much of it is kept while
        unused (0: every get allocates new arrays).
    same_host : bool, optional
        A put_kv of a megabyte or more into a raw space writes its layers
        straight into the daemon's value-log files when the daemon runs on
        this machine and this user may write them (one copy instead of
        three, and no loopback TCP); a get_kv of such a segment reads them
        from there. None (the default) tries it for a
        loopback address; False never does. Whenever it cannot be used, the
        put goes over the connection.

    Notes
    -----
    Thread-safety: calls from several threads are safe but take turns on the
    one connection (a request and its reply are never interleaved with
    another's); a thread that needs throughput of its own should open its own
    Client. Errors raise ``mnemo.Error`` subclasses carrying the server's
    message; ``Error.retryable`` says whether the same call may succeed
    later.
    """

    def __init__(self, address: str = "127.0.0.1:7070", api_key: Optional[str] = None,
                 timeout: Optional[float] = None, *, recycle_bytes: int = 256 << 20,
                 same_host: Optional[bool] = None):
        self._connection = Connection(address, api_key, timeout)
        self.address = address
        self.api_key = api_key
        self._kv_spaces: Dict[str, KvSpaceStats] = {}  # shapes and codecs, for put_kv and get_kv
        local = is_loopback(self._connection.host) if same_host is None else same_host
        self._same_host = SameHostWriter(self._connection, local)
        self._same_host_reads = SameHostReader(local)
        self._blocks = RecycledBlocks(recycle_bytes)  # for get_kv's arrays

    def close(self) -> None:
        """Closes the connection and the daemon's files this client opened."""
        self._connection.close()
        self._same_host.close()
        self._same_host_reads.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, request_type: int, build, size_hint: int = 256, attachment: Sequence = ()):
        return self._connection.call(request_type, build, size_hint, attachment)

    # --- collections -----------------------------------------------------

    def create_collection(self, name: str, dim: int, metric: str = "l2", index: str = "Flat",
                          capacity: Optional[int] = None, evict: Optional[str] = None,
                          train_size: Optional[int] = None,
                          ef_construction: Optional[int] = None) -> CollectionStats:
        """Creates a collection.

        Parameters
        ----------
        name : str
            Its name; letters, digits, ``_``, ``-`` and ``.``.
        dim : int
            The dimension of every vector.
        metric : {"l2", "ip", "cosine"}
        index : str
            A FAISS factory string: ``"Flat"``, ``"HNSW32"``, ``"IVF1024,PQ16"``, ...
        capacity : int, optional
            At most this many entries; ``evict`` says which go beyond.
        evict : {"fifo", "lru"}, optional
        train_size : int, optional
            Entries gathered before an index that needs training is trained
            (default: FAISS's advice); searches are exact until then.
        ef_construction : int, optional
            HNSW: candidates kept while linking a new vector (default 64,
            at most 2048); larger builds a better graph, slower.

        Returns
        -------
        CollectionStats
            The new collection's.

        Raises
        ------
        AlreadyExists, InvalidArgument
        """
        def build(b):
            return table(b, CreateCollection, Name=string(b, name), Dim=int(dim),
                         Metric=string(b, metric), Index=string(b, index),
                         Capacity=int(capacity or 0), Evict=string(b, evict or ""),
                         TrainSize=int(train_size or 0), EfConstruction=int(ef_construction or 0))
        f = self._call(Request.Request.CreateCollection, build)
        return _collection_stats(
            body(f, CollectionInfo.CollectionInfo, Response.Response.CollectionInfo))

    def drop(self, name: str) -> None:
        """Deletes a collection and everything in it. Raises NotFound."""
        self._call(Request.Request.DropCollection,
                   lambda b: table(b, DropCollection, Name=string(b, name)))

    def list(self) -> List[CollectionStats]:
        """Every collection (a key bound to collections sees only those)."""
        f = self._call(Request.Request.ListCollections, lambda b: table(b, ListCollections))
        lst = body(f, CollectionList.CollectionList, Response.Response.CollectionList)
        return [_collection_stats(lst.Collections(i)) for i in range(lst.CollectionsLength())]

    def stats(self, name: str) -> CollectionStats:
        """A collection's figures. Raises NotFound."""
        f = self._call(Request.Request.GetStats,
                       lambda b: table(b, GetStats, Name=string(b, name)))
        return _collection_stats(
            body(f, CollectionInfo.CollectionInfo, Response.Response.CollectionInfo))

    def train(self, name: str) -> None:
        """Trains a collection's index on the entries stored so far, instead
        of waiting for ``train_size`` of them. Raises FailedPrecondition when
        it is already trained."""
        self._call(Request.Request.Train, lambda b: table(b, Train, Name=string(b, name)))

    def backup(self, dir: str) -> None:
        """Writes a consistent copy of the daemon's whole store to ``dir``.

        Parameters
        ----------
        dir : str
            An absolute path on the daemon's machine that must not exist yet
            (inside ``--backup-root`` when the daemon has one). Writes go on
            meanwhile; the copy holds every write acknowledged before the call.
        """
        self._call(Request.Request.Backup, lambda b: table(b, Backup, Dir=string(b, dir)))

    def upsert(self, name: str, ids: npt.ArrayLike, vectors: npt.ArrayLike,
               groups: Optional[npt.ArrayLike] = None,
               payloads: Optional[Sequence[Union[bytes, str]]] = None) -> int:
        """Inserts or replaces entries.

        Parameters
        ----------
        name : str
        ids : array_like of uint64, (n,)
            Client-chosen, at most 2**63 - 1; an existing id is replaced.
        vectors : array_like of float32, (n, dim)
        groups : array_like of uint64, (n,), optional
            A document, session or tenant per entry (searches can filter).
        payloads : sequence of bytes or str, optional
            n payloads (e.g. the text of a chunk).

        Returns
        -------
        int
            n, once the batch is durable (in the daemon's write-ahead log).
            On an error nothing of the batch is stored.
        """
        build, hint = self._upsert_request(name, ids, vectors, groups, payloads)
        f = self._call(Request.Request.Upsert, build, hint)
        return body(f, Ack.Ack, Response.Response.Ack).Count()

    @staticmethod
    def _upsert_request(name, ids, vectors, groups=None, payloads=None):
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
                offs = [table(b, Payload, Data=bytes_vector(b, p.encode() if isinstance(p, str)
                                                            else bytes(p)))
                        for p in payloads]
                pv = offsets_vector(b, Upsert.StartPayloadsVector, offs)
            gv = u64_vector(b, groups) if groups is not None else None
            vv = b.CreateNumpyVector(vectors.ravel())
            iv = u64_vector(b, ids)
            return table(b, Upsert, Collection=string(b, name), Ids=iv, Vectors=vv,
                         Groups=gv, Payloads=pv)
        return build, 1024 + vectors.nbytes + ids.nbytes * 2

    def get(self, name: str, ids: npt.ArrayLike) -> Entries:
        """The entries with these ids that exist, in the order asked."""
        ids = np.ascontiguousarray(ids, dtype=np.uint64).ravel()
        f = self._call(Request.Request.Get,
                       lambda b: table(b, Get, Collection=string(b, name), Ids=u64_vector(b, ids)))
        return _entries(body(f, WireEntries.Entries, Response.Response.Entries))

    def delete(self, name: str, ids: npt.ArrayLike) -> int:
        """Removes the entries with these ids; returns how many existed."""
        ids = np.ascontiguousarray(ids, dtype=np.uint64).ravel()
        f = self._call(Request.Request.Delete,
                       lambda b: table(b, Delete, Collection=string(b, name), Ids=u64_vector(b, ids)))
        return body(f, Ack.Ack, Response.Response.Ack).Count()

    def search(self, name: str, queries: npt.ArrayLike, k: int = 10, nprobe: Optional[int] = None,
               ef: Optional[int] = None, group: Optional[int] = None
               ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The k nearest entries of each query.

        Parameters
        ----------
        name : str
        queries : array_like of float32, (q, dim) or (dim,)
        k : int
        nprobe : int, optional
            IVF lists to probe (index default 1).
        ef : int, optional
            HNSW efSearch (index default 16).
        group : int, optional
            Only entries of this group.

        Returns
        -------
        D : ndarray of float32, (q, k)
            Squared L2 distances for l2, inner products for ip and cosine.
        I : ndarray of int64, (q, k)
            Ids, -1 where fewer than k entries qualified.
        """
        build, hint, rows, _ = _search_request(name, queries, k, nprobe, ef, group)
        return _search_result(self._call(Request.Request.Search, build, hint), rows)

    def search_entries(self, name: str, queries: npt.ArrayLike, k: int = 10,
                       nprobe: Optional[int] = None, ef: Optional[int] = None,
                       group: Optional[int] = None
                       ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], Entries]:
        """``search`` that also returns its hits' entries (vectors, groups,
        payloads; each distinct hit once, ids ascending) in the same round
        trip: (D, I, Entries). A hit deleted between the search and the
        read of its entry is missing from Entries."""
        build, hint, rows, _ = _search_request(name, queries, k, nprobe, ef, group, True)
        return _search_result(self._call(Request.Request.Search, build, hint), rows, True)

    def search_many(self, searches: Sequence[SearchSpec]
                    ) -> List[Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
        """Several searches, of one collection or many, in one round trip:
        every request is sent before the first reply is read (the daemon
        answers a connection's requests in order and batches concurrent
        searches of one collection into one FAISS call).

        Parameters
        ----------
        searches : sequence of SearchSpec
            Each the arguments of ``search`` as a dict: ``name``,
            ``queries``, and optionally ``k``, ``nprobe``, ``ef``, ``group``,
            ``with_entries`` (True: that search's result is (D, I, Entries),
            as ``search_entries`` returns it).

        Returns
        -------
        list of (D, I)
            One pair per search, in order, as ``search`` returns them.

        Raises
        ------
        Error
            The first search's error; the replies of the others are read
            (and dropped) first, so the connection stays usable.
        """
        requests = [_search_request(**spec) for spec in searches]
        return self._pipelined(
            [(Request.Request.Search, build, hint) for build, hint, _, _ in requests],
            lambda i, f: _search_result(f, requests[i][2], requests[i][3]))

    def upsert_many(self, batches: Sequence[dict]) -> List[int]:
        """Several upserts, of one collection or many, pipelined: every
        batch is sent before the first acknowledgement is read. Each batch
        is a dict of ``upsert``'s arguments (``name``, ``ids``, ``vectors``,
        optionally ``groups``, ``payloads``) and is atomic on its own; the
        batches are not one transaction. Returns each batch's count.

        Raises the first failed batch's error after every reply is read;
        the batches acknowledged before and after it are stored."""
        requests = [self._upsert_request(**batch) for batch in batches]
        return self._pipelined([(Request.Request.Upsert, build, hint) for build, hint in requests],
                               lambda i, f: body(f, Ack.Ack, Response.Response.Ack).Count())

    def _pipelined(self, requests, read):
        """Sends ``requests`` ((type, build, size hint)) on the connection,
        reading reply i with ``read(i, frame)`` as the daemon answers, at
        most _PIPELINE_DEPTH unanswered. Returns the results in order, or
        raises the first error once every reply is read (so the connection
        stays usable)."""
        results: list = []
        first_error: Optional[errors.Error] = None

        def receive():
            nonlocal first_error
            try:
                with self._connection.reply() as (f, _read):
                    results.append(read(len(results), f))
            except errors.Unavailable:
                raise  # the connection is gone: nothing more to read
            except errors.Error as e:
                results.append(None)
                first_error = first_error or e

        with self._connection.lock:
            # At most _PIPELINE_DEPTH unanswered: the daemon stops reading a
            # connection with too many (net/server.h, max_inflight) until its
            # replies are read, and this thread reads only after sending.
            for sent, (request_type, build, hint) in enumerate(requests):
                if sent - len(results) >= _PIPELINE_DEPTH:
                    receive()
                self._connection.send(request_type, build, hint)
            while len(results) < len(requests):
                receive()
        if first_error is not None:
            raise first_error
        return results

    # --- KV segments ------------------------------------------------------

    def create_kv_space(self, name: str, layers: int, kv_heads: int, head_dim: int,
                        dtype: str = "f16", chunk_tokens: int = 256, codec: str = "raw",
                        capacity_bytes: Optional[int] = None,
                        ttl_s: Optional[int] = None) -> KvSpaceStats:
        """Creates a store of KV segments for one model shape.

        Parameters
        ----------
        name : str
        layers, kv_heads, head_dim : int
            The model's shape.
        dtype : {"f16", "bf16", "f32"}
        chunk_tokens : int
            Tokens per segment at most (prefix_hashes' chunk size).
        codec : str
            ``raw``, ``int8``, ``int4``, ``int4:G`` (group size G) or
            ``entropy`` (kvcache/codec.h documents each).
        capacity_bytes : int, optional
            Least recently used segments are evicted beyond this.
        ttl_s : int, optional
            Segments older than this many seconds are gone.
        """
        f = self._call(Request.Request.CreateKvSpace, lambda b: table(
            b, CreateKvSpace, Name=string(b, name), Layers=layers, KvHeads=kv_heads,
            HeadDim=head_dim, Dtype=string(b, dtype), ChunkTokens=chunk_tokens,
            Codec=string(b, codec), CapacityBytes=int(capacity_bytes or 0),
            TtlS=int(ttl_s or 0)))
        return _kv_space_stats(body(f, KvSpaceInfo.KvSpaceInfo, Response.Response.KvSpaceInfo))

    def drop_kv_space(self, name: str) -> None:
        """Deletes a KV space and every segment in it. Raises NotFound."""
        self._call(Request.Request.DropKvSpace,
                   lambda b: table(b, DropKvSpace, Name=string(b, name)))
        self._kv_spaces.pop(name, None)

    def kv_stats(self, name: str) -> KvSpaceStats:
        """A KV space's figures. Raises NotFound."""
        f = self._call(Request.Request.GetKvStats,
                       lambda b: table(b, GetKvStats, Name=string(b, name)))
        return _kv_space_stats(body(f, KvSpaceInfo.KvSpaceInfo, Response.Response.KvSpaceInfo))

    def put_kv(self, space: str, chunk_hash: bytes, keys: KvTensor, values: KvTensor) -> None:
        """Stores the keys and values of one chunk (replacing a segment of
        the same hash).

        Parameters
        ----------
        space : str
        chunk_hash : bytes
            32 bytes, from ``mnemo.prefix_hashes``.
        keys, values : KvTensor, (layers, kv_heads, tokens, head_dim)
            In the space's dtype: numpy float16/float32, or torch tensors of
            float16, bfloat16 or float32 (which travel as their raw bytes).
        """
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
        if (self._same_host.enabled and codec == "raw"
                and k.nbytes + v.nbytes >= _SAME_HOST_MIN_BYTES
                and self._same_host.put(space, chunk_hash, shape, k, v)):
            return
        # The layers travel in the attachment, each layer's keys then values,
        # straight from the tensors' memory.
        self._call(Request.Request.PutKv, lambda b: table(
            b, PutKv, Space=string(b, space), ChunkHash=bytes_vector(b, chunk_hash),
            Tokens=int(shape[2])), attachment=interleaved(k, v, shape[0]))

    def _kv_shape(self, space: str) -> Tuple[int, int, str]:
        st = self._kv_space(space)
        return st.kv_heads, st.head_dim, st.codec

    def _kv_space(self, space: str) -> KvSpaceStats:
        if space not in self._kv_spaces:
            self._kv_spaces[space] = self.kv_stats(space)
        return self._kv_spaces[space]

    def _get_kv_same_host(self, space: str, chunk_hash: bytes, layers, out):
        """get_kv through the daemon's files (a raw space, a megabyte or
        more, the daemon on this machine); None when that cannot be done
        here, for the caller to get over the connection."""
        st = self._kv_space(space)
        count = st.layers if layers is None else len(layers)
        dtype = _NUMPY_DTYPES[st.dtype]
        if (st.codec != "raw" or 2 * count * st.chunk_tokens * st.kv_heads * st.head_dim
                * np.dtype(dtype).itemsize < _SAME_HOST_MIN_BYTES):
            return None
        try:
            loc = self.locate_kv(space, [chunk_hash], layers)
        except errors.StorageError:  # the daemon cannot name its files
            self._same_host_reads.enabled = False
            return None
        shape = (len(loc.layers), st.kv_heads, int(loc.tokens[0]), st.head_dim)
        lb = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
        header = raw_layer_header(st.dtype, shape[2], lb)
        keys, values = out if out is not None else self._result_arrays(shape, dtype)
        kb, vb = _raw_bytes(keys, writable=True), _raw_bytes(values, writable=True)
        if kb.nbytes != shape[0] * lb or vb.nbytes != shape[0] * lb:
            return None  # out of another shape: the connection's path says why
        if not self._same_host_reads.get(loc, header, kb.reshape(-1), vb.reshape(-1)):
            return None
        return keys, values

    def get_kv(self, space: str, chunk_hash: bytes, layers: Optional[Sequence[int]] = None,
               out: Optional[Tuple[KvTensor, KvTensor]] = None) -> Tuple[KvTensor, KvTensor]:
        """Reads one segment's keys and values.

        Parameters
        ----------
        space : str
        chunk_hash : bytes
        layers : sequence of int, optional
            A subset of layers, in this order (default: all).
        out : (keys, values), optional
            C-contiguous numpy arrays or CPU torch tensors of the result's
            shape and element size (e.g. pinned staging buffers): the bytes
            are received straight into them, and they are returned.

        Returns
        -------
        keys, values : ndarray, (len(layers), kv_heads, tokens, head_dim)
            numpy float16 / float32, or uint16 holding bf16 bits (view them
            with torch as bfloat16), received straight into the arrays.

        Raises
        ------
        NotFound
            The segment is not stored.

        Notes
        -----
        On the daemon's machine (``same_host``), a segment of a raw space of
        a megabyte or more is read straight from the daemon's value-log
        files (``locate_kv``), several layers at once, instead of over the
        connection.
        """
        if self._same_host_reads.enabled:
            got = self._get_kv_same_host(space, chunk_hash, layers, out)
            if got is not None:
                return got
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

    def get_kv_layers(self, space: str, chunk_hash: bytes, layers: Optional[Sequence[int]] = None
                      ) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        """Yields (layer, keys, values) for each layer in order, each
        (kv_heads, tokens, head_dim), as soon as that layer has arrived: a
        model can run layer 0 while later layers are still read and sent. The
        connection is busy until the iteration ends."""
        with self._kv_reply(space, chunk_hash, layers) as (shape, dtype, numbers, read_layer):
            for layer in numbers:
                k, v = self._result_arrays(shape[1:], dtype)
                read_layer(k, v)
                yield layer, k, v

    def _result_arrays(self, shape, dtype) -> Tuple[np.ndarray, np.ndarray]:
        """Two arrays of ``shape`` for a reply's keys and values, in one
        block of recycled memory (see _buffers.RecycledBlocks)."""
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
            lv = layers_vector(b, layers)
            return table(b, GetKv, Space=string(b, space), ChunkHash=bytes_vector(b, chunk_hash),
                         Layers=lv, Attachment=True, Stream=True)
        with self._connection.lock:
            self._connection.send(Request.Request.GetKv, build, 256)
            stream = KvStream(self._connection)
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

    def get_kv_stored(self, space: str, chunk_hash: bytes, layers: Optional[Sequence[int]] = None,
                      out: Optional[np.ndarray] = None) -> StoredLayers:
        """Reads one segment's layers as the daemon stores them (encoded by
        the space's codec), for the caller to decode: int8 and int4 travel at
        a half and a quarter of their decoded size (the GPU reader decodes
        them on the GPU, ``mnemo.reader.kv_codec``).

        Parameters
        ----------
        out : ndarray of uint8, optional
            C-contiguous memory to receive the bytes (e.g. a pinned staging
            buffer); ``data`` is then a view of its start. InvalidArgument
            when it is too small.
        """
        def build(b):
            lv = layers_vector(b, layers)
            return table(b, GetKv, Space=string(b, space), ChunkHash=bytes_vector(b, chunk_hash),
                         Layers=lv, Attachment=True, Encoded=True)
        with self._connection.exchange(Request.Request.GetKv, build) as (f, read_into):
            seg = body(f, KvSegment.KvSegment, Response.Response.KvSegment)
            lengths = _wire_array(seg.StoredBytesLength(), seg.StoredBytesAsNumpy, np.uint64)
            total = int(lengths.sum())
            if out is None:
                data = np.empty(total, np.uint8)
            else:
                flat = out.reshape(-1).view(np.uint8) if out.flags.c_contiguous else None
                if flat is None or flat.nbytes < total:
                    raise errors.InvalidArgument(f"out must be C-contiguous memory of at least "
                                                 f"{total} bytes")
                data = flat[:total]
            read_into(data)
            return StoredLayers(
                data=data, lengths=lengths,
                layers=_wire_array(seg.LayersLength(), seg.LayersAsNumpy, np.uint32),
                tokens=seg.Tokens(), codec=(seg.Codec() or b"").decode(),
                dtype=seg.Dtype().decode(), kv_heads=seg.KvHeads(), head_dim=seg.HeadDim())

    def locate_kv(self, space: str, chunk_hashes: Sequence[bytes],
                  layers: Optional[Sequence[int]] = None) -> KvLocations:
        """Where the stored layers of several segments lie in the daemon's
        value-log files, for a reader on the daemon's machine that reads
        them itself (see ``KvLocations``; the GPU reader's same-host
        loads). Counts as a get of each segment.

        Raises
        ------
        NotFound
            A segment is not stored.
        StorageError
            The daemon cannot name its files (get over the connection).
        """
        joined = b"".join(bytes(h) for h in chunk_hashes)

        def build(b):
            lv = layers_vector(b, layers)
            return table(b, LocateKv, Space=string(b, space),
                         ChunkHashes=bytes_vector(b, joined), Layers=lv)
        f = self._call(Request.Request.LocateKv, build, 256 + len(joined))
        r = body(f, WireKvLocations.KvLocations, Response.Response.KvLocations)
        files = [(r.Files(i).Path().decode(), r.Files(i).Device(), r.Files(i).Inode())
                 for i in range(r.FilesLength())]
        return KvLocations(
            files=files, layers=_wire_array(r.LayersLength(), r.LayersAsNumpy, np.uint32),
            tokens=_wire_array(r.TokensLength(), r.TokensAsNumpy, np.uint32),
            file=_wire_array(r.RangeFileLength(), r.RangeFileAsNumpy, np.uint32),
            offset=_wire_array(r.RangeOffsetLength(), r.RangeOffsetAsNumpy, np.uint64),
            length=_wire_array(r.RangeLengthLength(), r.RangeLengthAsNumpy, np.uint64),
            checksum=_wire_array(r.RangeChecksumLength(), r.RangeChecksumAsNumpy, np.uint64),
            lease_ms=r.LeaseMs(), codec=r.Codec().decode(), dtype=r.Dtype().decode(),
            kv_heads=r.KvHeads(), head_dim=r.HeadDim())

    def match_prefix(self, space: str, chunk_hashes: Sequence[bytes]) -> int:
        """How many leading chunk hashes (32 bytes each) the space stores."""
        joined = b"".join(bytes(h) for h in chunk_hashes)
        f = self._call(Request.Request.MatchPrefix, lambda b: table(
            b, MatchPrefix, Space=string(b, space), ChunkHashes=bytes_vector(b, joined)))
        return int(body(f, Ack.Ack, Response.Response.Ack).Count())

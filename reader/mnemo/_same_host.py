"""Same-host puts and gets: a client on the daemon's machine, run as the
daemon's user, moves a segment's layers through the daemon's value-log
files instead of the connection (one copy instead of three, and no loopback
TCP). Private to the package.

Puts (raw spaces): reserve_kv returns a reservation (lanes: files with an
offset each, the layer header, the layer size); the client writes each
layer as header, keys, values into its lane (layer l in lane l % lanes);
put_kv with the reservation's id makes the daemon seal and commit them.

Gets: locate_kv names the file ranges of the stored layers and leases the
files (the daemon neither deletes nor recycles them meanwhile); the client
reads them itself, several layers at once. A raw layer is read straight
into the caller's arrays; the GPU reader (mnemo.reader.kv_load) reads
encoded ones into pinned memory and decodes them on the GPU.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import weakref
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mnemo import errors
from mnemo._builders import bytes_vector, string, table
from mnemo._transport import Connection, body, pwrite_all
from mnemo.wire import KvReservation, PutKv, Request, ReserveKv, Response

log = logging.getLogger(__name__)

# A same-host put costs a round trip more than one over the connection; it
# pays from about a megabyte of layers on.
MIN_BYTES = 1 << 20
_FILES_KEPT = 16  # open value-log files a client keeps


def is_loopback(host: str) -> bool:
    return host.strip("[]") in ("localhost", "::1") or host.startswith("127.")


def interleaved(k: np.ndarray, v: np.ndarray, layers: int) -> List[np.ndarray]:
    """The flat bytes k and v of ``layers`` layers as the wire orders them:
    keys of layer 0, values of layer 0, keys of layer 1, ... (views)."""
    lb = k.nbytes // layers if layers else 0
    parts = []
    for layer in range(layers):
        parts += [k[layer * lb:(layer + 1) * lb], v[layer * lb:(layer + 1) * lb]]
    return parts


def _close_fds(fds: Dict[tuple, int]) -> None:
    """Closes the descriptors of a {key: fd} dict and empties it."""
    for fd in fds.values():
        os.close(fd)
    fds.clear()


class ReadOnlyFiles:
    """Read-only descriptors of the daemon's value-log files, each checked
    to be the file the daemon named (device and inode); thread-safe. Kept
    open for later reads; the oldest are closed beyond _KEPT, but only while
    no reader holds any (a closed descriptor's number may be reused by the
    next open: a reader must never read through one)."""

    _KEPT = 256  # a 32k-token prompt's chunks may lie in a hundred files or more

    def __init__(self):
        self._fds: Dict[Tuple[str, int, int], int] = {}
        self._lock = threading.Lock()
        self._readers = 0
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)

    @contextlib.contextmanager
    def opened(self, files: Sequence[Tuple[str, int, int]]) -> Iterator[Optional[List[int]]]:
        """Yields a descriptor per (path, device, inode), valid until the
        block ends, or None when one cannot be opened here or is another
        file."""
        with self._lock:
            if self._readers == 0:
                while len(self._fds) > self._KEPT:
                    os.close(self._fds.pop(next(iter(self._fds))))
            out: Optional[List[int]] = []
            for key in files:
                fd = self._fds.get(key)
                if fd is None:
                    try:
                        fd = os.open(key[0], os.O_RDONLY | os.O_CLOEXEC)
                    except OSError:
                        out = None
                        break
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) != (key[1], key[2]):
                        os.close(fd)
                        out = None
                        break
                    self._fds[key] = fd
                out.append(fd)
            self._readers += 1
        try:
            yield out
        finally:
            with self._lock:
                self._readers -= 1

    def close(self) -> None:
        with self._lock:
            _close_fds(self._fds)


#: kvcache::Dtype's ids, as a stored layer's header names its dtype.
DTYPE_IDS = {"f16": 0, "bf16": 1, "f32": 2}


def raw_layer_header(dtype: str, tokens: int, keys_bytes: int) -> bytes:
    """The 12 bytes before a raw layer's keys (kvcache/codec.h): codec 0,
    the dtype's id, group 0, tokens, the keys' bytes."""
    return (bytes([0, DTYPE_IDS[dtype], 0, 0]) + int(tokens).to_bytes(4, "little")
            + int(keys_bytes).to_bytes(4, "little"))


def monotonic() -> float:
    """Seconds on a monotonic clock (a seam for tests)."""
    return time.monotonic()


def lease_deadline(lease_ms: int) -> float:
    """When reads under a lease just granted must have ended: the daemon
    keeps the files as they are for ``lease_ms`` from its answer, less a
    margin for the answer's way here. A read that ends later may have read
    bytes of a recycled file: it is thrown away."""
    return monotonic() + 0.8 * lease_ms / 1000


def pread_into(fd: int, views: Sequence[memoryview], offset: int) -> None:
    """Reads consecutive file bytes at ``offset`` into ``views`` (one
    preadv, which leaves the GIL, and more only for short reads)."""
    views = [memoryview(v).cast("B") for v in views]
    while views:
        n = os.preadv(fd, views, offset)
        if n <= 0:
            raise errors.Corruption("a value-log file ends before a stored layer does")
        offset += n
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


class SameHostReader:
    """Gets of raw segments through the daemon's files for one client;
    gives up for good (``enabled`` False) once its files cannot be opened."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.files = ReadOnlyFiles()
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def close(self) -> None:
        self.files.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def get(self, loc, header: bytes, keys: np.ndarray, values: np.ndarray) -> bool:
        """Reads a located raw segment (one segment, its layers in order)
        into keys and values (flat bytes, layers back to back); False when
        that cannot be done here (nothing useful was written)."""
        deadline = lease_deadline(loc.lease_ms)
        with self.files.opened(loc.files) as fds:
            if fds is None:
                self.enabled = False  # another machine, container or user
                return False
            return self._read(fds, loc, header, keys, values, deadline)

    def _read(self, fds, loc, header: bytes, keys: np.ndarray, values: np.ndarray,
              deadline: float) -> bool:
        layers = len(loc.layers)
        lb = keys.nbytes // layers if layers else 0
        if len(loc.tokens) != 1 or (loc.length != len(header) + 2 * lb).any():
            return False

        def read(i: int) -> bool:
            head = bytearray(len(header))
            pread_into(fds[loc.file[i]], [head, keys[i * lb:(i + 1) * lb],
                                          values[i * lb:(i + 1) * lb]], int(loc.offset[i]))
            return bytes(head) == header
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="mnemo-get")
        try:
            whole = all(self._pool.map(read, range(layers)))
        except (OSError, errors.Error) as e:
            log.warning("same-host get_kv failed (%s); getting over the connection", e)
            return False
        if monotonic() > deadline:
            log.warning("a same-host get_kv outlasted its lease; getting over the connection")
            return False
        return whole


class SameHostWriter:
    """Puts through the daemon's files for one connection; gives up for good
    (``enabled`` False) once a file cannot be opened or is another file."""

    def __init__(self, connection: Connection, enabled: bool):
        self.enabled = enabled
        self._connection = connection
        self._files: Dict[Tuple[str, int, int], int] = {}  # (path, device, inode) -> fd, oldest first
        # Closed with the client, or when it is collected without close().
        self._finalizer = weakref.finalize(self, _close_fds, self._files)
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._pool_size = 0

    def close(self) -> None:
        _close_fds(self._files)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def put(self, space: str, chunk_hash: bytes, shape: Sequence[int], k: np.ndarray,
            v: np.ndarray) -> bool:
        """Stores a segment through a reservation; False when that cannot be
        used here, and nothing was stored (the caller puts over the
        connection, which says why where there is an error to say)."""
        try:
            f = self._connection.call(Request.Request.ReserveKv, lambda b: table(
                b, ReserveKv, Space=string(b, space), Tokens=int(shape[2])))
        except errors.InvalidArgument:
            return False  # e.g. tokens out of range
        r = body(f, KvReservation.KvReservation, Response.Response.KvReservation)
        if shape[0] != r.Layers() or k.nbytes != r.Layers() * r.LayerBytes():
            return False  # not the space's shape
        lanes = [r.Lanes(j) for j in range(r.LanesLength())]
        fds = [self._file(lane.Path().decode(), lane.Device(), lane.Inode()) for lane in lanes]
        if not lanes or None in fds:
            self.enabled = False  # another machine, container or user
            return False
        header = r.LayerHeaderAsNumpy().tobytes()
        kv = interleaved(k, v, shape[0])
        writes = [(fd, [p for i in range(j, shape[0], len(lanes))
                        for p in (header, kv[2 * i], kv[2 * i + 1])], lane.Offset())
                  for j, (fd, lane) in enumerate(zip(fds, lanes))]
        try:
            # One thread per lane: the kernel takes each file's writes in turn.
            list(self._writers(len(writes)).map(lambda w: pwrite_all(*w), writes))
        except OSError as e:
            log.warning("same-host put_kv failed (%s); putting over the connection", e)
            return False  # the reservation lapses unused
        self._connection.call(Request.Request.PutKv, lambda b: table(
            b, PutKv, Space=string(b, space), ChunkHash=bytes_vector(b, chunk_hash),
            Tokens=int(shape[2]), Reservation=r.Id()))
        return True

    def _writers(self, lanes: int) -> concurrent.futures.ThreadPoolExecutor:
        """A pool of at least ``lanes`` threads, kept for later puts."""
        if self._pool is None or self._pool_size < lanes:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = concurrent.futures.ThreadPoolExecutor(lanes, thread_name_prefix="mnemo-lane")
            self._pool_size = lanes
        return self._pool

    def _file(self, path: str, device: int, inode: int) -> Optional[int]:
        """A writable descriptor of the daemon's file at ``path``, or None
        when this process cannot open it or opens another file there."""
        key = (path, device, inode)
        if key in self._files:
            return self._files[key]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (device, inode):
            os.close(fd)
            return None
        while len(self._files) >= _FILES_KEPT:
            os.close(self._files.pop(next(iter(self._files))))
        self._files[key] = fd
        return fd

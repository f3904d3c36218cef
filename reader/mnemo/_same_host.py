"""Same-host puts: a client on the daemon's machine, run as the daemon's
user, writes a raw segment's layers straight into reserved ranges of the
daemon's value-log files instead of sending them on the connection (one copy
instead of three, and no loopback TCP). Private to the package.

The exchange (net/mnemo.fbs): reserve_kv returns a reservation (lanes: files
with an offset each, the layer header, the layer size); the client writes
each layer as header, keys, values into its lane (layer l in lane
l % lanes); put_kv with the reservation's id makes the daemon seal and
commit them.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

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

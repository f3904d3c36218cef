"""One connection to mnemod: framing, sending requests, reading replies.

Wire format (``net/mnemo.fbs``, "Framing"): an 8-byte header (the
FlatBuffer's length and the attachment's, little-endian uint32s), one
FlatBuffer, then the attachment: KV layers, sent from and received into the
caller's arrays without joined copies.

Private to the package: ``mnemo.Client`` is the public face.
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from typing import Callable, Iterator, Optional, Sequence, Tuple

import flatbuffers

from mnemo import errors
from mnemo._builders import string, table
from mnemo.wire import Error as WireError, RequestFrame, Response, ResponseFrame

PROTOCOL_VERSION = 2
HEADER = struct.Struct("<II")  # FlatBuffer bytes, attachment bytes
IOV_MAX = 1024  # buffers per sendmsg / pwritev
MAX_REPLY = 1 << 31

# build(builder) -> the offset of the request's table
Build = Callable[[flatbuffers.Builder], int]
# read_into(buffer) fills a writable buffer from the reply's attachment
ReadInto = Callable[[memoryview], None]


def write_all(write: Callable[[list], int], parts: Sequence) -> None:
    """Calls write(buffers) -> bytes written with every part, no joined
    copy, until all are written (short writes resume where they stopped)."""
    views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
    while views:
        done = write(views[:IOV_MAX])
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def pwrite_all(fd: int, parts: Sequence, offset: int) -> None:
    """Writes every part to ``fd`` at ``offset`` on, with pwritev."""
    def write(views):
        nonlocal offset
        n = os.pwritev(fd, views, offset)
        if n == 0:
            raise OSError("pwritev wrote nothing")
        offset += n
        return n
    write_all(write, parts)


def body(frame: ResponseFrame.ResponseFrame, cls, expected: int):
    """The reply's body as a ``cls`` table; Internal when it is another type."""
    if frame.ResponseType() != expected:
        raise errors.Internal(f"unexpected reply type {frame.ResponseType()}")
    t = cls()
    t.Init(frame.Response().Bytes, frame.Response().Pos)
    return t


class Connection:
    """A TCP connection that exchanges request and reply frames.

    ``lock`` serializes exchanges: a request and its reply are never
    interleaved with another thread's (the connection is then used in turn,
    not shared for throughput: one connection per thread is faster)."""

    def __init__(self, address: str, api_key: Optional[str], timeout: Optional[float]):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise errors.InvalidArgument(f"address {address!r} is not HOST:PORT")
        self.address = address
        self.host = host
        self.api_key = api_key
        self.lock = threading.Lock()
        self._next_id = 1
        try:
            self._sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except OSError as e:
            raise errors.Unavailable(f"cannot connect to {address}: {e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self._sock.close()

    def call(self, request_type: int, build: Build, size_hint: int = 256,
             attachment: Sequence = ()) -> ResponseFrame.ResponseFrame:
        """Sends one request (and the buffers of ``attachment``) and returns
        the reply's ResponseFrame; raises the server's error."""
        with self.exchange(request_type, build, size_hint, attachment) as (f, _):
            return f

    @contextlib.contextmanager
    def exchange(self, request_type: int, build: Build, size_hint: int = 256,
                 attachment: Sequence = ()) -> Iterator[Tuple[ResponseFrame.ResponseFrame, ReadInto]]:
        """Sends a request and reads its reply's FlatBuffer; yields
        (ResponseFrame, read_into). Holds the connection until the block
        ends, and then skips what of the attachment was not read."""
        with self.lock:
            self.send(request_type, build, size_hint, attachment)
            with self.reply() as got:
                yield got

    def send(self, request_type: int, build: Build, size_hint: int = 256,
             attachment: Sequence = ()) -> None:
        """Sends one request frame; the caller holds ``lock``."""
        b = flatbuffers.Builder(size_hint)
        request = build(b)
        key = string(b, self.api_key)
        rid = self._next_id
        self._next_id += 1
        frame = table(b, RequestFrame, Version=PROTOCOL_VERSION, RequestId=rid,
                      ApiKey=key, RequestType=request_type, Request=request)
        b.Finish(frame)
        data = memoryview(b.Bytes)[b.Head():]  # the finished buffer, without Output()'s copy
        parts = [memoryview(p).cast("B") for p in attachment]
        try:
            write_all(self._sock.sendmsg,
                      [HEADER.pack(len(data), sum(p.nbytes for p in parts)), data, *parts])
        except OSError as e:
            raise errors.Unavailable(f"connection to {self.address} failed: {e}") from None

    @contextlib.contextmanager
    def reply(self) -> Iterator[Tuple[ResponseFrame.ResponseFrame, ReadInto]]:
        """Reads one reply frame (the caller holds ``lock``); yields
        (ResponseFrame, read_into) as ``exchange`` does, or raises its error."""
        try:
            length, left = HEADER.unpack(self._recv_exact(HEADER.size))
            if length > MAX_REPLY:
                raise errors.Internal(f"reply of {length} bytes is implausible")
            reply = self._recv_exact(length)
        except OSError as e:
            raise errors.Unavailable(f"connection to {self.address} failed: {e}") from None
        f = ResponseFrame.ResponseFrame.GetRootAs(reply, 0)

        def read_into(buf) -> None:
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

    def _recv_into(self, view: memoryview) -> None:
        got, n = 0, view.nbytes
        try:
            while got < n:
                k = self._sock.recv_into(view[got:], n - got)
                if k == 0:
                    raise errors.Unavailable(f"mnemod at {self.address} closed the connection")
                got += k
        except OSError as e:
            raise errors.Unavailable(f"connection to {self.address} failed: {e}") from None

    def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return buf  # FlatBuffers reads a bytearray as it is: no copy

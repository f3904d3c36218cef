"""Loading a prompt's stored KV chunks into a model's cache, fast.

``KvLoader.load(hashes, tokens)`` returns the keys and values of the first
``tokens`` tokens as two tensors (layers, kv_heads, tokens, head_dim) on the
model's device. Three ways, picked per load:

* **same host** (the daemon on this machine, its files readable): one
  ``locate_kv`` names where every stored layer lies; worker threads read
  them from the daemon's value-log files (``os.preadv``, which leaves the
  GIL) into pinned host memory, one step = a few layers of every chunk;
* **over TCP, encoded**: each chunk's layers as stored
  (``get_kv_stored``), one step = one chunk, over a few connections;
* **over TCP, decoded by the daemon**, for codecs torch does not decode
  here (entropy).

Either way the bytes stay encoded until the GPU: a step's pinned buffer is
copied on a side stream while the previous step is decoded
(``kv_codec.decode``, batched over the step) straight into the cache
tensors, and workers read later steps meanwhile. No per-token Python loop.
On a machine without CUDA the same pipeline runs on the CPU (CI).
"""
from __future__ import annotations

import collections.abc
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mnemo import errors
from mnemo import _same_host
from mnemo._same_host import ReadOnlyFiles, is_loopback, pread_into
from mnemo.client import Client
from mnemo.reader import kv_codec
from mnemo.types import KvSpaceStats

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadStats:
    """What the last ``KvLoader.load`` did."""
    #: "same-host", "tcp" or "tcp-decoded".
    transport: str = ""
    chunks: int = 0
    #: Bytes read from the daemon (encoded as stored, or decoded).
    bytes_read: int = 0
    #: Bytes of keys and values in the cache (the space's dtype).
    bytes_loaded: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class _Step:
    """One unit of the pipeline: ``fill(buffer, part)`` puts part ``part``
    of its bytes into a host buffer (the ``parts`` parts on worker threads
    at once) and returns the length of each of its ``rows`` stored layers,
    which are then decoded into ``out()`` (views of the cache);
    ``decoded``: the buffer holds keys then values, decoded by the daemon."""
    nbytes: int  # buffer bytes it may need
    rows: int
    fill: Callable[[np.ndarray, int], int]
    out: Callable[[], Tuple[torch.Tensor, torch.Tensor]]
    decoded: bool = False
    done_layers: Sequence[int] = ()  # layers complete once this step is decoded
    parts: int = 1


class LoadingCache(collections.abc.Sequence):
    """A model's cache, per layer (keys, values) (1, kv_heads, tokens,
    head_dim), while it is still being loaded: taking layer i waits until
    that layer is in (on the GPU the caller's stream waits for its decode;
    the host waits only until the decode is queued). A model that takes its
    layers in order runs layer 0 while later layers are still read, copied
    and decoded. Raises the load's error (NotFound: a chunk went) when a
    layer it needs failed to load."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, tokens: int):
        self.keys, self.values, self.tokens = keys, values, tokens  # (L, G, stored, D)
        layers = keys.shape[0]
        self._ready = [threading.Event() for _ in range(layers)]
        self._events: List[Optional["torch.cuda.Event"]] = [None] * layers
        self._error: Optional[BaseException] = None

    def __len__(self) -> int:
        return len(self._ready)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        self._ready[i].wait()
        if self._error is not None:
            raise self._error
        if self._events[i] is not None:
            torch.cuda.current_stream(self.keys.device).wait_event(self._events[i])
        return self.keys[i][None, :, :self.tokens], self.values[i][None, :, :self.tokens]

    def wait(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Waits for every layer; (keys, values) (L, G, tokens, D)."""
        for i in range(len(self)):
            self[i]
        return self.keys[:, :, :self.tokens], self.values[:, :, :self.tokens]

    def _mark(self, layers: Sequence[int], event) -> None:
        for layer in layers:
            self._events[layer] = event
            self._ready[layer].set()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        for e in self._ready:
            e.set()


class KvLoader:
    """Loads stored chunks of one KV space into tensors on ``device``.

    Parameters
    ----------
    client : Client
        Used for the locate and the first connection; ``tcp_connections - 1``
        more connections are opened to its address for TCP loads.
    stats : KvSpaceStats
        The space's shape.
    same_host : bool, optional
        None: try the daemon's files when its address is loopback.
    workers : int, optional
        Threads reading steps ahead of the GPU (default: the cores less
        two, 4 to 16).
    layers_per_step : int
        Same host: the layers one step reads (of every chunk), copies and
        decodes. More: fewer, longer reads (a chunk's layers lie end to end)
        and fewer GPU launches; fewer: the model starts on layer 0 sooner.
    """

    def __init__(self, client: Client, space: str, stats: KvSpaceStats, device: torch.device,
                 same_host: Optional[bool] = None, workers: Optional[int] = None,
                 tcp_connections: int = 3, layers_per_step: int = 4):
        self.client, self.space, self.stats = client, space, stats
        self.device = torch.device(device)
        self.dtype = kv_codec.torch_dtype(stats.dtype)
        host = client.address.rsplit(":", 1)[0]
        self.same_host = is_loopback(host) if same_host is None else same_host
        self._files = ReadOnlyFiles()
        # One thread copies page-cached bytes at a few GB/s: the reads
        # scale with threads up to the host's memory bandwidth.
        self.workers = workers or max(4, min(16, (os.cpu_count() or 8) - 2))
        self.layers_per_step = layers_per_step
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers,
                                                           thread_name_prefix="mnemo-kv-load")
        self._tcp_count = max(1, tcp_connections)
        self._tcp: List[Client] = []
        self._tcp_free: "queue.Queue[Client]" = queue.Queue()
        self._slots: List[torch.Tensor] = []
        self._stage: List[torch.Tensor] = []
        self._cuda = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._decode_stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._runner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mnemo-kv-run")
        self._running: Optional[concurrent.futures.Future] = None
        self.last = LoadStats()

    def close(self) -> None:
        self._runner.shutdown()
        self._pool.shutdown()
        self._files.close()
        for c in self._tcp:
            c.close()

    # --- the public step ----------------------------------------------------

    def load(self, hashes: Sequence[bytes], tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the first ``tokens`` tokens of the chunks
        ``hashes`` (in prompt order), (layers, kv_heads, tokens, head_dim)
        each on the device. NotFound when a chunk is not (or no longer)
        stored."""
        cache = self.start(hashes, tokens)
        try:
            return cache.wait()
        finally:
            self.finish()  # ``last`` is set, and the next load may start

    def start(self, hashes: Sequence[bytes], tokens: int) -> LoadingCache:
        """Starts loading what ``load`` returns and returns at once: a
        ``LoadingCache`` to run the model on while later layers load. One
        load at a time: the next start waits for this one to end."""
        s = self.stats
        shape = (s.layers, s.kv_heads, len(hashes) * s.chunk_tokens, s.head_dim)
        keys = torch.empty(shape, dtype=self.dtype, device=self.device)
        values = torch.empty(shape, dtype=self.dtype, device=self.device)
        cache = LoadingCache(keys, values, tokens)
        if self._cuda:  # the loads' stream may reuse memory the model's stream just freed
            self._decode_stream.wait_stream(torch.cuda.current_stream(self.device))
        if self._running is not None:
            self._running.result()
        self._running = self._runner.submit(self._load, list(hashes), cache)
        return cache

    def finish(self) -> None:
        """Waits for the load started last to end (its ``last`` figures set)."""
        if self._running is not None:
            self._running.result()

    def _load(self, hashes: List[bytes], cache: LoadingCache) -> None:
        """start's body, on the runner thread."""
        started = time.perf_counter()
        s = self.stats
        keys, values = cache.keys, cache.values
        codec = kv_codec.codec_id(s.codec)
        self.last = LoadStats(chunks=len(hashes))
        marked = [0]

        def mark(layers, event):
            marked[0] += len(layers)
            cache._mark(layers, event)
        try:
            with torch.cuda.stream(self._decode_stream) if self._cuda else contextlib.nullcontext():
                done = False
                if self.same_host and codec != kv_codec.ENTROPY:
                    try:
                        with contextlib.ExitStack() as stack:
                            self._run(self._same_host_steps(hashes, keys, values, stack), mark)
                        self.last.transport = "same-host"
                        done = True
                    except errors.NotFound:
                        raise
                    except (errors.Error, OSError) as e:
                        if marked[0]:  # the model may have read layers already
                            raise
                        log.warning("same-host KV load failed (%s); loading over TCP from now on", e)
                        self.same_host = False
                if not done:
                    decoded = codec == kv_codec.ENTROPY
                    self._run(self._tcp_steps(hashes, keys, values, decoded), mark)
                    self.last.transport = "tcp-decoded" if decoded else "tcp"
        except BaseException as e:  # noqa: B902 (handed to the model's thread)
            cache._fail(e)
            return
        self.last.bytes_loaded = 2 * keys[:, :, :cache.tokens].numel() * keys.element_size()
        self.last.seconds = time.perf_counter() - started

    # --- the steps of each way ------------------------------------------------

    def _same_host_steps(self, hashes, keys, values, stack: contextlib.ExitStack) -> List[_Step]:
        s = self.stats
        loc = self.client.locate_kv(self.space, hashes)
        deadline = _same_host.lease_deadline(loc.lease_ms)
        fds = stack.enter_context(self._files.opened(loc.files))  # until the load ends
        if fds is None:
            raise errors.FailedPrecondition("the daemon's files cannot be opened here")
        n, layers = len(hashes), s.layers
        if len(loc.tokens) != n or len(loc.layers) != layers or not (loc.tokens == s.chunk_tokens).all():
            raise errors.FailedPrecondition("located segments are not whole chunks of every layer")
        lengths = loc.length.reshape(n, layers)
        if not (lengths == lengths[0, 0]).all():
            raise errors.Corruption("stored layers of one space's whole chunks differ in length")
        row = int(lengths[0, 0])
        file_of = loc.file.reshape(n, layers)
        offset_of = loc.offset.reshape(n, layers)
        # A put appends a chunk's layers one after another: where they lie
        # end to end in one file, one preadv reads several into their rows.
        follows = np.zeros((n, layers), dtype=bool)
        follows[:, 1:] = ((file_of[:, 1:] == file_of[:, :-1]) &
                          (offset_of[:, 1:] == offset_of[:, :-1] + row))
        t = s.chunk_tokens

        parts = max(1, min(self.workers, n))

        def step(first: int, m: int) -> _Step:
            # Buffer rows layer-major: row (j, c) holds layer first + j of
            # chunk c. Part p reads chunks p, p + parts, ...
            def fill(buf: np.ndarray, part: int) -> int:
                mv = memoryview(buf)
                for c in range(part, n, parts):
                    j = 0
                    while j < m:
                        e = j + 1
                        while e < m and follows[c, first + e]:
                            e += 1
                        pread_into(fds[file_of[c, first + j]],
                                   [mv[(i * n + c) * row:(i * n + c + 1) * row] for i in range(j, e)],
                                   int(offset_of[c, first + j]))
                        j = e
                if _same_host.monotonic() > deadline:
                    raise errors.Unavailable("a same-host KV read outlasted the daemon's lease "
                                             "on its files")
                return row

            def out():
                # (m, G, n * t, D) seen as (m, n, G, t, D): chunk c's tokens.
                def view(x):
                    return x[first:first + m].view(m, s.kv_heads, n, t, s.head_dim).transpose(1, 2)
                return view(keys), view(values)
            return _Step(m * n * row, m * n, fill, out, done_layers=range(first, first + m),
                         parts=parts)
        per = max(1, min(self.layers_per_step, layers))
        return [step(first, min(per, layers - first)) for first in range(0, layers, per)]

    def _tcp_steps(self, hashes, keys, values, decoded: bool) -> List[_Step]:
        s = self.stats
        t = s.chunk_tokens
        if not self._tcp:
            self._tcp = [Client(self.client.address, self.client.api_key, same_host=False)
                         for _ in range(self._tcp_count)]
            for c in self._tcp:
                self._tcp_free.put(c)
        lb = s.kv_heads * t * s.head_dim * keys.element_size()  # one layer's keys, decoded
        shape = (s.layers, s.kv_heads, t, s.head_dim)
        np_dtype = np.float32 if s.dtype == "f32" else np.uint16
        if decoded:
            room = 2 * s.layers * lb
        else:  # a whole chunk's layers as the space stores them
            room = s.layers * kv_codec.stored_bytes(kv_codec.layer_format(s.codec, s.dtype, t),
                                                    s.kv_heads, s.head_dim)

        def step(i: int, h: bytes) -> _Step:
            def fill(buf: np.ndarray, part: int) -> int:
                conn = self._tcp_free.get()  # one request per connection at a time
                try:
                    if decoded:
                        k = buf[:s.layers * lb].view(np_dtype).reshape(shape)
                        v = buf[s.layers * lb:2 * s.layers * lb].view(np_dtype).reshape(shape)
                        conn.get_kv(self.space, h, out=(k, v))
                        return 0
                    got = conn.get_kv_stored(self.space, h, out=buf)
                    if len(got.lengths) != s.layers or not (got.lengths == got.lengths[0]).all():
                        raise errors.Corruption("a stored chunk's layers differ in length")
                    return int(got.lengths[0])
                finally:
                    self._tcp_free.put(conn)

            def out():
                return keys[:, :, i * t:(i + 1) * t], values[:, :, i * t:(i + 1) * t]
            last = i == len(hashes) - 1
            return _Step(room, s.layers, fill, out, decoded,
                         done_layers=range(s.layers) if last else ())
        return [step(i, h) for i, h in enumerate(hashes)]

    # --- the pipeline -----------------------------------------------------------

    def _slot_pool(self, count: int, nbytes: int) -> List[torch.Tensor]:
        """``count`` host buffers of ``nbytes`` (pinned with CUDA), kept and
        reused across loads: pinning costs far more than a load."""
        if len(self._slots) < count or self._slots[0].numel() < nbytes:
            self._slots = [torch.empty(nbytes, dtype=torch.uint8, pin_memory=self._cuda)
                           for _ in range(count)]
        return self._slots[:count]

    def _stage_buffers(self, nbytes: int) -> List[torch.Tensor]:
        if not self._cuda:
            return []
        if len(self._stage) < 2 or self._stage[0].numel() < nbytes:
            self._stage = [torch.empty(nbytes, dtype=torch.uint8, device=self.device) for _ in range(2)]
        return self._stage

    def _run(self, steps: List[_Step], mark) -> None:
        """Fills the steps' buffers on the workers, in order, while this
        thread copies each to the GPU (side stream) and decodes it into its
        place: host buffer k + 1 is read while k is copied and k - 1 decoded.
        A step's parts are read at once, so its first layers come in soon
        and few buffers are in use."""
        if not steps:
            return
        fills_at_once = -(-self.workers // min(st.parts for st in steps))
        slots = self._slot_pool(min(len(steps), fills_at_once + 3), max(st.nbytes for st in steps))
        stage = self._stage_buffers(slots[0].numel())
        free = list(range(len(slots)))
        filling: List[Tuple[int, List[concurrent.futures.Future]]] = []  # (slot, parts) per step

        def fill_more() -> None:  # the pool runs parts first in, first out: steps in order
            while len(filling) < len(steps) and free:
                st, slot = steps[len(filling)], free.pop()
                buf = slots[slot].numpy()
                filling.append((slot, [self._pool.submit(st.fill, buf, p) for p in range(st.parts)]))

        in_flight: List[Tuple[Optional["torch.cuda.Event"], int]] = []
        stage_done: List[Optional["torch.cuda.Event"]] = [None, None]
        try:
            fill_more()
            for k, st in enumerate(steps):
                slot, parts = filling[k]
                row = max(f.result() for f in parts)
                used = st.nbytes if st.decoded else st.rows * row
                self.last.bytes_read += used
                host = slots[slot][:used]
                # The headers are checked on the host, before any GPU work.
                fmt = None if st.decoded else kv_codec.read_format(
                    host.numpy().reshape(st.rows, row)[:, :kv_codec.HEADER_BYTES],
                    self.stats.kv_heads, self.stats.head_dim)
                copied = None
                if self._cuda:
                    dev = stage[k % 2][:used]
                    with torch.cuda.stream(self._copy_stream):
                        if stage_done[k % 2] is not None:  # its last decode has read it
                            self._copy_stream.wait_event(stage_done[k % 2])
                        dev.copy_(host, non_blocking=True)
                        copied = torch.cuda.Event()
                        copied.record(self._copy_stream)
                    torch.cuda.current_stream(self.device).wait_event(copied)
                else:
                    dev = host
                self._decode(st, dev, row, fmt)
                decoded = None
                if self._cuda:
                    decoded = torch.cuda.Event()
                    decoded.record(torch.cuda.current_stream(self.device))
                    stage_done[k % 2] = decoded
                if st.done_layers:
                    mark(st.done_layers, decoded)
                in_flight.append((copied, slot))
                # A host buffer is free once its copy is done; wait for the
                # one before last, so that the next copy is already queued.
                while len(in_flight) > (1 if self._cuda else 0):
                    ev, sl = in_flight.pop(0)
                    if ev is not None:
                        ev.synchronize()
                    free.append(sl)
                fill_more()
            if self._cuda:  # the load's time ends when its last decode does
                torch.cuda.current_stream(self.device).synchronize()
        finally:
            for ev, _ in in_flight:
                if ev is not None:
                    ev.synchronize()
            # No worker may still write a buffer the next load uses.
            concurrent.futures.wait([f for _, parts in filling for f in parts])

    def _decode(self, st: _Step, dev: torch.Tensor, row: int, fmt) -> None:
        s = self.stats
        k_out, v_out = st.out()
        if st.decoded:
            half = dev.numel() // 2
            k_out.copy_(dev[:half].view(self.dtype).view(k_out.shape))
            v_out.copy_(dev[half:].view(self.dtype).view(v_out.shape))
            return
        if fmt.tokens != k_out.shape[-2]:
            raise errors.Corruption(f"stored layers hold {fmt.tokens} tokens, not {k_out.shape[-2]}")
        kv_codec.decode(dev.view(st.rows, row), fmt, s.kv_heads, s.head_dim, out=(k_out, v_out))


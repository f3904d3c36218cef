"""Reused memory for get_kv's result arrays. Private to the package.

Why: numpy takes arrays of many MiB from mmap, and glibc gives blocks that
large back to the kernel when they are freed, so every get into fresh
arrays paid for the kernel zeroing new pages (a quarter of a get's time at
loopback TCP speed; bench/README.md has the figures).
"""
from __future__ import annotations

import ctypes
import weakref
from typing import List, Tuple

import numpy as np
import numpy.typing as npt


class RecycledBlocks:
    """Blocks of memory given out again once nobody holds an array of them.

    The rule: a block is never given out bare. Each time it is given out,
    ``take`` wraps it in a fresh ctypes array over the same memory (a
    "holder", which supports weak references) and returns a numpy array
    made on the holder; that array, every view of it and every torch tensor
    made from it keep the holder alive (numpy's ``base`` chain). The pool
    holds the block strongly and the holder weakly, so the block is free
    exactly when the holder is gone: an array the caller keeps is never
    written.
    Up to ``idle_bytes`` of free blocks are kept (the least recently used go
    first); blocks under ``MIN_BYTES`` are not worth it.

    Not thread-safe: the owning client calls it under its lock."""

    MIN_BYTES = 1 << 20
    MAX_BLOCKS = 64  # blocks followed at once; beyond, the oldest are left to the caller

    def __init__(self, idle_bytes: int):
        self.idle_bytes = idle_bytes
        # (block, weak reference to the holder it was last given out in),
        # least recently given out first.
        self._blocks: List[Tuple[np.ndarray, weakref.ref]] = []

    def take(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """A writable uint8 array of ``nbytes`` whose contents are undefined."""
        if nbytes < self.MIN_BYTES or self.idle_bytes <= 0:
            return np.empty(nbytes, np.uint8)
        found = next((i for i, (block, user) in enumerate(self._blocks)
                      if block.nbytes == nbytes and user() is None), None)
        block = self._blocks.pop(found)[0] if found is not None else np.empty(nbytes, np.uint8)
        idle = 0
        for i in reversed(range(len(self._blocks))):  # keep the most recent free ones
            if self._blocks[i][1]() is None:
                idle += self._blocks[i][0].nbytes
                if idle > self.idle_bytes:
                    del self._blocks[i]
        del self._blocks[:max(0, len(self._blocks) + 1 - self.MAX_BLOCKS)]
        holder = (ctypes.c_ubyte * nbytes).from_buffer(block)
        self._blocks.append((block, weakref.ref(holder)))
        return np.frombuffer(holder, dtype=np.uint8)

"""Reading a streamed get_kv reply a layer at a time. Private to the package."""
from __future__ import annotations

from typing import Optional

from mnemo import errors
from mnemo._transport import Connection, body
from mnemo.wire import KvSegment, Response


class KvStream:
    """The frames of one streamed get_kv reply, read a layer at a time: each
    KvSegment frame holds layers [part_first, part_first + part_layers) of
    the reply in its attachment (part_layers 0: all of them, one frame); an
    Error frame ends the reply early. The caller holds the connection's
    lock throughout."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._part = None      # the open frame's context, from Connection.reply
        self._read_into = None
        self._next = 0         # the next layer to read, an index into the reply's layers
        self._part_end = 0     # the end of the open part
        self._total: Optional[int] = None  # layers in the whole reply; None before the first part
        self._ended = False    # an Error frame (or a broken connection) ended the reply

    def next_part(self) -> KvSegment.KvSegment:
        """Closes the open part and reads the next frame's FlatBuffer;
        returns its KvSegment or raises the error that ended the reply."""
        self._close_part()
        try:
            part = self._connection.reply()
            f, self._read_into = part.__enter__()
            self._part = part
            seg = body(f, KvSegment.KvSegment, Response.Response.KvSegment)
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

    def read_layer(self, keys, values) -> None:
        """Receives the next layer's keys and values into two writable buffers."""
        if self._next == self._part_end:
            self.next_part()
        self._read_into(keys)
        self._read_into(values)
        self._next += 1

    def skip_rest(self) -> None:
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

    def _close_part(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            part.__exit__(None, None, None)  # skips the part's unread attachment

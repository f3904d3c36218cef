"""Building request tables with the public ``flatbuffers.Builder`` API.

FlatBuffers forbids nesting: strings and vectors are made before the table
that holds them. Private to the package.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional, Union

import flatbuffers
import numpy as np
import numpy.typing as npt


def table(b: flatbuffers.Builder, module: ModuleType, **fields) -> int:
    """Builds one table from a generated module; values are scalars or
    offsets made beforehand. Fields that are None are left out (absent)."""
    module.Start(b)
    for name, value in fields.items():
        if value is not None:
            getattr(module, "Add" + name)(b, value)
    return module.End(b)


def string(b: flatbuffers.Builder, s: Optional[str]) -> Optional[int]:
    return None if s is None else b.CreateString(s)


def u64_vector(b: flatbuffers.Builder, values: npt.ArrayLike) -> int:
    return b.CreateNumpyVector(np.ascontiguousarray(values, dtype=np.uint64).ravel())


def layers_vector(b: flatbuffers.Builder, layers) -> Optional[int]:
    """A [uint] vector of layer numbers; None (absent: every layer) for None."""
    if layers is None:
        return None
    return b.CreateNumpyVector(np.ascontiguousarray(layers, dtype=np.uint32))


def bytes_vector(b: flatbuffers.Builder, data: Union[bytes, bytearray, memoryview, np.ndarray]) -> int:
    """A [ubyte] vector holding ``data`` (bytes, or a flat uint8 array)."""
    return b.CreateByteVector(bytes(memoryview(data).cast("B")))


def offsets_vector(b: flatbuffers.Builder, start_vector, offsets) -> int:
    """A vector of tables made beforehand; ``start_vector`` is the generated
    ``Start<Field>Vector`` of the table that will hold it."""
    start_vector(b, len(offsets))
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()

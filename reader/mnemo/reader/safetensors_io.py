"""Reading and writing ``.safetensors`` files.

The ``safetensors`` package does this where it is installed (the GPU
machine); Debian 12 has no package of it, so this module falls back to its
own reader and writer of the documented format:

    u64 little-endian N | N bytes of JSON header | data
    header: {"NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...,
             "__metadata__": {"key": "value", ...}}   (optional)

Offsets count from the start of the data; tensors are little-endian and
row-major. The writer pads the header with spaces to a multiple of 8 bytes,
as the package does, and lays the tensors out in the header's order.
"""
from __future__ import annotations

import json
import struct
from typing import Dict, Optional

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}

try:  # the package, where installed
    import safetensors.torch as _package
except ImportError:  # Debian 12: the fallback below
    _package = None


def save_file(tensors: Dict[str, torch.Tensor], path: str,
              metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes ``tensors`` (CPU or not; copied to the CPU) to ``path``."""
    if _package is not None:
        _package.save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                           path, metadata=metadata)
        return
    write_file(tensors, path, metadata)


def load_file(path: str) -> Dict[str, torch.Tensor]:
    """Every tensor in ``path``, on the CPU."""
    if _package is not None:
        return _package.load_file(path)
    return read_file(path)


def write_file(tensors: Dict[str, torch.Tensor], path: str,
               metadata: Optional[Dict[str, str]] = None) -> None:
    """The fallback writer (also used by tests beside the package)."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold")
        data = _tensor_bytes(t)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for data in blobs:
            f.write(data)


def read_file(path: str) -> Dict[str, torch.Tensor]:
    """The fallback reader. Raises ValueError for a file that is not one."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header of {n} bytes runs past the end of the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {info['dtype']}")
        shape = info["shape"]
        count = 1
        for s in shape:
            count *= s
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(data) or end - begin != count * itemsize:
            raise ValueError(f"{path}: tensor {name!r} has offsets {begin}..{end} "
                             f"for {shape} of {info['dtype']}")
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype)
        out[name] = flat.reshape(shape)
    return out


def _tensor_bytes(t: torch.Tensor) -> bytes:
    if t.numel() == 0:
        return b""
    # Through uint8: numpy has no bfloat16.
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()

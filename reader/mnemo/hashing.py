"""Chained prefix hashes for KV segments (SPEC, "KV segment").

h_i = SHA-256(h_{i-1} || namespace || token ids of chunk i as little-endian
int64), with h_{-1} = 32 zero bytes. The namespace names the model and space
(e.g. "llama-3-8b/f16"), so that two models never share chunks. SHA-256 is
the same in every process and on every machine, unlike Python's seeded
hash(). Only full chunks are hashed: a trailing partial chunk has no hash.
"""
import hashlib
from typing import List, Sequence

import numpy as np


def prefix_hashes(token_ids: Sequence[int], chunk_tokens: int, namespace: str = "") -> List[bytes]:
    """The chained hash of every full chunk of a prompt.

    Parameters
    ----------
    token_ids : sequence of int
        The prompt's token ids.
    chunk_tokens : int
        Tokens per chunk (the KV space's ``chunk_tokens``).
    namespace : str
        Names the model and space, so that two models never share chunks.

    Returns
    -------
    list of bytes
        32 bytes per full chunk, in order: hash i covers tokens
        [0, (i + 1) * chunk_tokens). A trailing partial chunk has none.
    """
    tokens = np.asarray(token_ids, dtype="<i8")
    parent = bytes(32)
    ns = namespace.encode("utf-8")
    out = []
    for at in range(0, len(tokens) - chunk_tokens + 1, chunk_tokens):
        parent = hashlib.sha256(parent + ns + tokens[at:at + chunk_tokens].tobytes()).digest()
        out.append(parent)
    return out

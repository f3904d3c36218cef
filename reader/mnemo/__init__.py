"""mnemo: an external-memory database for language models.

``Client`` talks to a ``mnemod`` daemon; errors raise ``mnemo.Error``
subclasses carrying the server's message.
"""
from mnemo.client import Client
from mnemo.types import CollectionStats, Entries, KvSpaceStats
from mnemo.hashing import prefix_hashes
from mnemo.errors import (AlreadyExists, Corruption, Error, FailedPrecondition, Internal,
                          InvalidArgument, NotFound, OutOfRange, PermissionDenied,
                          ResourceExhausted, StorageError, Unauthenticated, Unavailable,
                          Unimplemented)

__all__ = [
    "Client", "CollectionStats", "Entries", "KvSpaceStats", "prefix_hashes", "Error", "AlreadyExists", "Corruption",
    "FailedPrecondition", "Internal", "InvalidArgument", "NotFound", "OutOfRange",
    "PermissionDenied", "ResourceExhausted", "StorageError", "Unauthenticated", "Unavailable",
    "Unimplemented",
]

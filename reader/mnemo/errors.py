"""mnemo's exceptions: one base class, one subclass per server status code."""
from typing import Optional


class Error(Exception):
    """A request failed. ``code`` is the server's status code (see
    ``common/status.h``), ``message`` its explanation, and ``retryable``
    whether the same call may succeed later without anything being fixed."""

    code = 0
    retryable = False

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(Error):
    code = 1


class NotFound(Error):
    code = 2


class AlreadyExists(Error):
    code = 3


class OutOfRange(Error):
    code = 4


class FailedPrecondition(Error):
    """Fix the state first: e.g. train before that, or a store that stopped
    taking writes after a failed write (a full disk): restart the daemon once
    the cause is fixed."""
    code = 5


class Unavailable(Error):
    """The daemon could not be reached or is overloaded: worth retrying."""
    code = 6
    retryable = True


class ResourceExhausted(Error):
    """A limit was reached (connections, reservations in flight): worth retrying."""
    code = 7
    retryable = True


class StorageError(Error):
    code = 8


class Corruption(Error):
    code = 9


class Internal(Error):
    """The daemon failed inside (a bug, memory); the message says what it kept."""
    code = 10


class Unauthenticated(Error):
    code = 11


class PermissionDenied(Error):
    code = 12


class Unimplemented(Error):
    code = 13


_BY_CODE = {cls.code: cls for cls in Error.__subclasses__()}


def from_code(code: int, message: str) -> Error:
    """The exception for a server status code (``Error`` for unknown codes)."""
    return _BY_CODE.get(code, Error)(message, code)

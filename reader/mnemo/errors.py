"""mnemo's exceptions: one base class, one subclass per server status code."""


class Error(Exception):
    """A request failed. ``code`` is the server's status code (see
    ``common/status.h``), ``message`` its explanation."""

    code = 0
    retryable = False

    def __init__(self, message, code=None):
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
    code = 5


class Unavailable(Error):
    """The daemon could not be reached or is overloaded: worth retrying."""
    code = 6
    retryable = True


class ResourceExhausted(Error):
    code = 7
    retryable = True


class StorageError(Error):
    code = 8


class Corruption(Error):
    code = 9


class Internal(Error):
    code = 10


class Unauthenticated(Error):
    code = 11


class PermissionDenied(Error):
    code = 12


class Unimplemented(Error):
    code = 13


_BY_CODE = {cls.code: cls for cls in Error.__subclasses__()}


def from_code(code, message):
    """The exception for a server status code (``Error`` for unknown codes)."""
    return _BY_CODE.get(code, Error)(message, code)

"""Exceptions: one class per status of the C library (per kind of mesh error)."""

from ._lib import lib


class MeshError(Exception):
    """A call into mesh failed. `status` is the C status (an int), `kind` its stable name."""

    kind = "internal"

    def __init__(self, status, message):
        name = lib.mesh_status_name(status).decode()
        super().__init__(f"{name}: {message}")
        self.status = status
        self.status_name = name
        self.message = message


class InvalidInput(MeshError, ValueError):
    """An argument was invalid (NULL, bad UTF-8, bad JSON, a bad id or value)."""

    kind = "invalid_input"


class NotFound(MeshError, KeyError):
    """The thing asked for does not exist."""

    kind = "not_found"

    def __str__(self):  # KeyError would quote the message
        return Exception.__str__(self)


class AlreadyExists(MeshError):
    """It exists already."""

    kind = "already_exists"


class Forbidden(MeshError, PermissionError):
    """The member's role (or the hub) does not allow it."""

    kind = "forbidden"


class StorageError(MeshError):
    """The local store failed."""

    kind = "storage"


class TransportError(MeshError):
    """A remote failed in some other way (a 5xx)."""

    kind = "transport"


class Closed(MeshError):
    """The client was closed."""

    kind = "closed"


class Timeout(MeshError, TimeoutError):
    """No event came before the timeout."""

    kind = "timeout"


class Unsupported(MeshError):
    """This build does not support the request."""

    kind = "unsupported"


class Offline(MeshError, ConnectionError):
    """A remote cannot be reached: try later (the engine retries by itself)."""

    kind = "offline"


class Unauthorized(MeshError):
    """A remote refused the credentials: sign in again."""

    kind = "unauthorized"


class Revoked(MeshError):
    """The device or its token was revoked: enroll the device again."""

    kind = "revoked"


class ProtocolError(MeshError):
    """A remote answered something that is not the protocol."""

    kind = "protocol"


class QuotaExceeded(MeshError):
    """A size or count limit of the remote was exceeded."""

    kind = "quota"


class RateLimited(MeshError):
    """The remote asks to slow down."""

    kind = "rate_limited"


class Conflict(MeshError):
    """The entry changed since the expected version."""

    kind = "conflict"


class Locked(MeshError):
    """The store is open in another client (this process or another)."""

    kind = "locked"


class Mismatch(MeshError):
    """The hub says the token belongs to another user or device."""

    kind = "mismatch"


#: The exception class of each status (the values of mesh.h's mesh_status).
BY_STATUS = {
    1: InvalidInput,  # NULL_ARGUMENT
    2: InvalidInput,  # INVALID_UTF8
    3: InvalidInput,  # INVALID_JSON
    4: InvalidInput,
    5: NotFound,
    6: AlreadyExists,
    7: Forbidden,
    8: StorageError,
    9: TransportError,
    10: Closed,
    11: Timeout,
    12: Unsupported,
    13: MeshError,  # PANIC
    14: MeshError,  # INTERNAL
    15: Offline,
    16: Unauthorized,
    17: Revoked,
    18: ProtocolError,
    19: QuotaExceeded,
    20: RateLimited,
    21: Conflict,
    22: Locked,
    23: Mismatch,
}

#: The exception class of each error kind name (as in `sync_error` events).
BY_KIND = {cls.kind: cls for cls in set(BY_STATUS.values())}
BY_KIND["transport"] = TransportError
BY_KIND["internal"] = MeshError


def error_for(status, message):
    """The exception for a status and a message."""
    return BY_STATUS.get(status, MeshError)(status, message)

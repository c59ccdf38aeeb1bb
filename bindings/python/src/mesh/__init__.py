"""mesh for Python: the mesh SDK's C library (libmesh_ffi) through ctypes.

    import mesh
    with mesh.Hub() as hub, mesh.Client("ann", "laptop", hub=hub,
                                        remotes=[{"name": "hub", "in_process": True}]) as c:
        folder = c.create_folder("Groceries", mesh.FolderKind.app("todo"))
        c.create_feed(folder, "todos", "To do")
        c.put(folder, "todos", "Buy milk", {"done": False})
        c.sync_now()

Errors are exceptions, one class per kind (`mesh.Offline`, `mesh.Unauthorized`,
`mesh.Revoked`, `mesh.Locked`…), all subclasses of `mesh.MeshError`.
"""

from .client import Client, FolderKind, Hub, Subscription, exception_of, status_name, version
from .errors import (
    AlreadyExists,
    Closed,
    Conflict,
    Forbidden,
    InvalidInput,
    Locked,
    MeshError,
    Mismatch,
    NotFound,
    Offline,
    ProtocolError,
    QuotaExceeded,
    RateLimited,
    Revoked,
    StorageError,
    Timeout,
    TransportError,
    Unauthorized,
    Unsupported,
)

__all__ = [
    "AlreadyExists", "Client", "Closed", "Conflict", "FolderKind", "Forbidden", "Hub",
    "InvalidInput",
    "Locked", "MeshError", "Mismatch", "NotFound", "Offline", "ProtocolError",
    "QuotaExceeded", "RateLimited", "Revoked", "StorageError", "Subscription", "Timeout",
    "TransportError", "Unauthorized", "Unsupported", "exception_of", "status_name", "version",
]

"""Loading libmesh_ffi and declaring every exported function (see mesh-ffi/include/mesh.h)."""

import ctypes as C
import ctypes.util
import os
from pathlib import Path

P = C.c_void_p
S = C.c_char_p
OUT = C.POINTER(C.c_void_p)  # char ** and handle ** out-parameters
ERR = C.POINTER(C.c_void_p)  # mesh_error **
I = C.c_int

CALLBACK = C.CFUNCTYPE(None, P, S)
FINALIZER = C.CFUNCTYPE(None, P)

# name: (restype, argtypes). Every function of mesh.h, in the header's order.
SIGNATURES = {
    "mesh_version": (S, []),
    "mesh_client_open": (I, [S, P, OUT, ERR]),
    "mesh_client_close": (None, [P]),
    "mesh_client_free": (None, [P]),
    "mesh_client_devices": (I, [P, OUT, ERR]),
    "mesh_client_rename_device": (I, [P, S, OUT, ERR]),
    "mesh_client_create_folder": (I, [P, S, S, OUT, ERR]),
    "mesh_client_folders": (I, [P, OUT, ERR]),
    "mesh_client_folder": (I, [P, S, OUT, ERR]),
    "mesh_client_create_feed": (I, [P, S, S, S, ERR]),
    "mesh_client_feeds": (I, [P, S, OUT, ERR]),
    "mesh_client_put": (I, [P, S, S, S, OUT, ERR]),
    "mesh_client_put_with_id": (I, [P, S, S, S, S, OUT, ERR]),
    "mesh_client_get": (I, [P, S, S, S, OUT, ERR]),
    "mesh_client_delete": (I, [P, S, S, S, ERR]),
    "mesh_client_query": (I, [P, S, S, S, OUT, ERR]),
    "mesh_client_members": (I, [P, S, OUT, ERR]),
    "mesh_client_invite": (I, [P, S, S, S, OUT, ERR]),
    "mesh_client_invitations": (I, [P, OUT, ERR]),
    "mesh_client_accept": (I, [P, S, OUT, ERR]),
    "mesh_client_decline": (I, [P, S, ERR]),
    "mesh_client_set_role": (I, [P, S, S, S, OUT, ERR]),
    "mesh_client_remove_member": (I, [P, S, S, ERR]),
    "mesh_client_map_folder": (I, [P, S, S, OUT, ERR]),
    "mesh_client_unmap_folder": (I, [P, S, ERR]),
    "mesh_client_rescan": (I, [P, S, ERR]),
    "mesh_client_sync_now": (I, [P, OUT, ERR]),
    "mesh_client_conflicts": (I, [P, S, OUT, ERR]),
    "mesh_client_resolve": (I, [P, S, S, S, S, OUT, ERR]),
    "mesh_client_poll_event": (I, [P, C.c_uint32, OUT, ERR]),
    "mesh_client_status": (I, [P, OUT, ERR]),
    "mesh_client_listen_peers": (I, [P, S, S, OUT, ERR]),
    "mesh_client_add_peer": (I, [P, S, S, S, ERR]),
    "mesh_client_remove_peer": (I, [P, S, ERR]),
    "mesh_client_publish_peer_addresses": (I, [P, S, ERR]),
    "mesh_client_peer_addresses": (I, [P, OUT, ERR]),
    "mesh_client_discover_peers": (I, [P, S, S, S, ERR]),
    "mesh_error_status": (I, [P]),
    "mesh_error_message": (S, [P]),
    "mesh_error_free": (None, [P]),
    "mesh_status_name": (S, [I]),
    "mesh_string_free": (None, [P]),
    "mesh_client_subscribe": (I, [P, S, S, CALLBACK, P, FINALIZER, OUT, ERR]),
    "mesh_subscription_free": (None, [P]),
    "mesh_hub_new": (I, [OUT, ERR]),
    "mesh_hub_add_user": (I, [P, S, ERR]),
    "mesh_hub_free": (None, [P]),
}


def _candidates():
    env = os.environ.get("MESH_FFI_LIB")
    if env:
        yield env
        return
    here = Path(__file__).resolve()
    targets = []
    if os.environ.get("CARGO_TARGET_DIR"):
        targets.append(Path(os.environ["CARGO_TARGET_DIR"]))
    # A checkout: bindings/python/src/mesh/_lib.py -> the workspace's target/.
    targets.append(here.parents[4] / "target")
    for t in targets:
        for profile in ("debug", "release"):
            yield str(t / profile / "libmesh_ffi.so")
    found = ctypes.util.find_library("mesh_ffi")
    if found:
        yield found


def load():
    """The library: MESH_FFI_LIB if set, else the workspace's target/{debug,release}, else the
    system's library path."""
    tried = []
    for path in _candidates():
        tried.append(path)
        if os.path.exists(path) or os.sep not in path:
            try:
                lib = C.CDLL(path)
            except OSError:
                continue
            for name, (restype, argtypes) in SIGNATURES.items():
                f = getattr(lib, name)
                f.restype, f.argtypes = restype, argtypes
            return lib
    raise ImportError(
        "libmesh_ffi not found (build it with `cargo build -p mesh-ffi`, or set MESH_FFI_LIB); "
        f"tried {tried}"
    )


lib = load()

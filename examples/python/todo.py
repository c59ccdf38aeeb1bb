#!/usr/bin/env python3
"""The to-do flow of examples/c/todo.c, from Python through ctypes and libmesh_ffi.so.

    cargo build -p mesh-ffi && python3 examples/python/todo.py [HUB_URL TOKEN]

MESH_FFI_LIB names the shared library (default: target/debug/libmesh_ffi.so beside the
workspace). Every string the library returns is freed with mesh_string_free.
"""

import ctypes as C
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = os.environ.get("MESH_FFI_LIB") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "libmesh_ffi.so"
)
mesh = C.CDLL(LIB)

OK, NOT_FOUND, PERMISSION_DENIED, CLOSED, TIMEOUT, UNSUPPORTED = 0, 5, 7, 10, 11, 12

P = C.c_void_p
S = C.c_char_p
OUT = C.POINTER(C.c_void_p)  # char ** and handle ** out-parameters
ERR = C.POINTER(C.c_void_p)  # mesh_error **

CALLBACK = C.CFUNCTYPE(None, P, S)
FINALIZER = C.CFUNCTYPE(None, P)


def sig(name, restype, *argtypes):
    f = getattr(mesh, name)
    f.restype, f.argtypes = restype, list(argtypes)


sig("mesh_version", S)
sig("mesh_status_name", S, C.c_int)
sig("mesh_error_message", S, P)
sig("mesh_error_free", None, P)
sig("mesh_string_free", None, P)
sig("mesh_hub_new", C.c_int, OUT, ERR)
sig("mesh_hub_free", None, P)
sig("mesh_client_open", C.c_int, S, P, OUT, ERR)
sig("mesh_client_close", None, P)
sig("mesh_client_free", None, P)
sig("mesh_client_create_folder", C.c_int, P, S, S, OUT, ERR)
sig("mesh_client_create_feed", C.c_int, P, S, S, S, ERR)
sig("mesh_client_put_with_id", C.c_int, P, S, S, S, S, OUT, ERR)
sig("mesh_client_get", C.c_int, P, S, S, S, OUT, ERR)
sig("mesh_client_query", C.c_int, P, S, S, S, OUT, ERR)
sig("mesh_client_invite", C.c_int, P, S, S, S, OUT, ERR)
sig("mesh_client_invitations", C.c_int, P, OUT, ERR)
sig("mesh_client_accept", C.c_int, P, S, OUT, ERR)
sig("mesh_client_sync_now", C.c_int, P, OUT, ERR)
sig("mesh_client_folders", C.c_int, P, OUT, ERR)
sig("mesh_client_poll_event", C.c_int, P, C.c_uint32, OUT, ERR)
sig("mesh_client_subscribe", C.c_int, P, S, S, CALLBACK, P, FINALIZER, OUT, ERR)
sig("mesh_subscription_free", None, P)


class MeshError(Exception):
    def __init__(self, status, message):
        super().__init__(f"{mesh.mesh_status_name(status).decode()}: {message}")
        self.status = status


def call(fn, *args, out=False):
    """Calls a mesh function with an error out-parameter (and a result one when `out`);
    returns the result pointer, or raises MeshError with the library's message."""
    err = C.c_void_p()
    result = C.c_void_p()
    extra = (C.byref(result),) if out else ()
    status = getattr(mesh, fn)(*args, *extra, C.byref(err))
    if status != OK:
        message = mesh.mesh_error_message(err).decode()
        mesh.mesh_error_free(err)
        raise MeshError(status, message)
    return result


def take_string(ptr):
    """Copies a library-owned string into Python and frees it."""
    try:
        return C.string_at(ptr).decode()
    finally:
        mesh.mesh_string_free(ptr)


def call_json(fn, *args):
    return json.loads(take_string(call(fn, *args, out=True)))


def b(s):
    return s.encode()


def open_client(hub, user, device, url=None, token=None):
    remote = {"name": "hub", "url": url, "token": token} if url else {"name": "hub", "in_process": True}
    config = {"user": user, "device": device, "sync": {"auto": False}, "remotes": [remote]}
    return call("mesh_client_open", b(json.dumps(config)), hub, out=True)


def main():
    url, token = (sys.argv[1:3] + [None, None])[:2]
    print("mesh", mesh.mesh_version().decode())
    hub = call("mesh_hub_new", out=True)
    try:
        ann = open_client(hub, "ann", "ann-laptop", url, token)
        bob = open_client(hub, "bob", "bob-phone", url, token)
    except MeshError as e:
        mesh.mesh_hub_free(hub)
        if e.status == UNSUPPORTED:
            print(e, file=sys.stderr)
            return 2
        raise

    events = []
    finalized = []
    on_event = CALLBACK(lambda _ud, ev: events.append(json.loads(ev.decode())))
    on_final = FINALIZER(lambda _ud: finalized.append(True))
    sub = call("mesh_client_subscribe", ann, None, None, on_event, None, on_final, out=True)

    folder = take_string(call("mesh_client_create_folder", ann, b"Groceries", b"app/todo", out=True))
    f = b(folder)
    call("mesh_client_create_feed", ann, f, b"todos", b"To do")
    milk = {"title": "Buy milk", "content": {"done": False}}
    call("mesh_client_put_with_id", ann, f, b"todos", b"milk", b(json.dumps(milk)), None)
    call("mesh_client_invite", ann, f, b"bob", b"author", None)
    call("mesh_client_sync_now", ann, None)

    call("mesh_client_sync_now", bob, None)
    invitations = call_json("mesh_client_invitations", bob)
    assert [i["folder"] for i in invitations] == [folder], invitations
    call("mesh_client_accept", bob, f, None)
    call("mesh_client_sync_now", bob, None)  # pushes the acceptance
    call("mesh_client_sync_now", bob, None)  # pulls the folder's feeds
    titles = [e["content"]["title"] for e in call_json("mesh_client_query", bob, f, b"todos", None)]
    print("bob sees:", titles)
    assert titles == ["Buy milk"], titles
    bread = {"title": "Buy bread", "content": {"done": False}}
    call("mesh_client_put_with_id", bob, f, b"todos", b"bread", b(json.dumps(bread)), None)
    try:
        call("mesh_client_put_with_id", bob, f, b"todos", b"milk", b(json.dumps(milk)), None)
        raise AssertionError("an author changed someone else's entry")
    except MeshError as e:
        assert e.status == PERMISSION_DENIED, e
        print("bob ticks ann's item:", e)
    call("mesh_client_sync_now", bob, None)

    call("mesh_client_sync_now", ann, None)
    got = call_json("mesh_client_get", ann, f, b"todos", b"bread")
    print("ann gets:", got["content"]["title"])
    try:
        call_json("mesh_client_get", ann, f, b"todos", b"eggs")
        raise AssertionError("a missing entry was found")
    except MeshError as e:
        assert e.status == NOT_FOUND, e

    polled = []
    while True:
        try:
            polled.append(call_json("mesh_client_poll_event", ann, C.c_uint32(100)))
        except MeshError as e:
            assert e.status == TIMEOUT, e
            break
    print(f"ann: {len(polled)} events polled, {len(events)} delivered to the callback")
    assert polled and events

    mesh.mesh_subscription_free(sub)
    assert finalized == [True]
    mesh.mesh_client_close(ann)
    try:
        call("mesh_client_folders", ann, out=True)
        raise AssertionError("a closed client answered")
    except MeshError as e:
        assert e.status == CLOSED, e
    mesh.mesh_client_free(ann)
    mesh.mesh_client_free(bob)
    mesh.mesh_hub_free(hub)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

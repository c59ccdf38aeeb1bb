"""Pythonic classes over the C library: Hub, Client, Subscription."""

import ctypes as C
import json
import threading

from ._lib import CALLBACK, FINALIZER, lib
from .errors import BY_KIND, MeshError, error_for

OK, TIMEOUT = 0, 11


def _b(s):
    """A str argument as UTF-8 bytes (None stays NULL)."""
    return None if s is None else str(s).encode()


def _j(v):
    """A JSON argument (None stays NULL)."""
    return None if v is None else json.dumps(v).encode()


def _call(fn, *args, out=False):
    """Calls `fn` with an error out-parameter (and a result one when `out`); returns the
    result pointer, or raises the exception class of the status."""
    err = C.c_void_p()
    result = C.c_void_p()
    extra = (C.byref(result),) if out else ()
    status = fn(*args, *extra, C.byref(err))
    if status != OK:
        message = lib.mesh_error_message(err).decode() if err.value else ""
        lib.mesh_error_free(err)
        raise error_for(status, message)
    return result


class FolderKind(str):
    """What a folder holds, as the text the library takes: `FolderKind.FILES` (a tree of
    files that devices can map onto a directory), `FolderKind.app("todo")` (an application's
    data, `"app/todo"`), or another kind of `/`-separated segments of ASCII letters, digits,
    `-`, `_` and `.` (at most 128 bytes). The library checks every kind it is given."""

    FILES = "files"

    @classmethod
    def app(cls, name):
        """`app/<name>`: the data of the application `name`."""
        return cls("app/" + name)


FolderKind.FILES = FolderKind("files")


def _take(p):
    """The string the library returned (and frees it)."""
    if not p.value:
        return None
    try:
        return C.string_at(p.value).decode()
    finally:
        lib.mesh_string_free(p)


def _json(p):
    s = _take(p)
    return None if s is None else json.loads(s)


def version():
    """The C library's version."""
    return lib.mesh_version().decode()


def status_name(status):
    """The name of a status (`"MESH_STATUS_OFFLINE"`)."""
    return lib.mesh_status_name(int(status)).decode()


def exception_of(event):
    """The exception a `sync_error` event stands for (an instance, not raised), else None."""
    if event.get("type") != "sync_error":
        return None
    cls = BY_KIND.get(event.get("error_kind"), MeshError)
    return cls(event.get("status", 14), event.get("error", ""))


class Hub:
    """A hub in this process that clients can sync through (`in_process` remotes)."""

    def __init__(self):
        self._ptr = C.c_void_p()
        self._ptr = _call(lib.mesh_hub_new, out=True)

    @property
    def handle(self):
        if not self._ptr.value:
            raise error_for(10, "the hub was freed")
        return self._ptr

    def add_user(self, user):
        """Records that `user` has an account here. From the first call on, the hub refuses
        invitations of anyone else (a `refused` event with `error_kind` `not_found`, and the
        inviting client withdraws its invitation)."""
        _call(lib.mesh_hub_add_user, self.handle, _b(user))

    def close(self):
        """Frees the hub (clients connected to it keep their own reference)."""
        if self._ptr.value:
            lib.mesh_hub_free(self._ptr)
            self._ptr = C.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Subscription:
    """Delivery of a client's events to a callback, on the library's threads, until `cancel`."""

    def __init__(self, client, callback, folder, feed):
        def deliver(_user_data, event):
            try:
                callback(json.loads(event.decode()))
            except Exception:  # never let an exception unwind into C
                pass

        # The ctypes function objects must live as long as the subscription.
        self._cb = CALLBACK(deliver)
        self._fin = FINALIZER(lambda _u: None)
        self._ptr = C.c_void_p()
        self._ptr = _call(
            lib.mesh_client_subscribe,
            client.handle,
            _b(folder),
            _b(feed),
            self._cb,
            None,
            self._fin,
            out=True,
        )

    def cancel(self):
        """Stops delivery; once it returns the callback is not running and never runs again."""
        if self._ptr.value:
            lib.mesh_subscription_free(self._ptr)
            self._ptr = C.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()

    def __del__(self):
        self.cancel()


class Client:
    """A mesh client: a local store, its remotes and background sync.

    `Client(user, device, store_path=None, remotes=(), hub=None, ...)`; a remote is
    `{"name": "hub", "in_process": True}` (then pass `hub`) or
    `{"name": "cloud", "url": "http://127.0.0.1:7300", "token": "..."}`. Use it as a context
    manager, or call `close()`: afterwards every call raises `mesh.Closed`.
    """

    def __init__(self, user, device, *, store_path=None, remotes=(), hub=None,
                 device_name=None, device_kind=None, sync=None):
        config = {"user": user, "device": device, "remotes": list(remotes)}
        if store_path is not None:
            config["store_path"] = str(store_path)
        if device_name is not None:
            config["device_name"] = device_name
        if device_kind is not None:
            config["device_kind"] = device_kind
        if sync is not None:
            config["sync"] = sync
        self._ptr = C.c_void_p()
        self._hub = hub  # keeps the hub alive as long as the client
        self._lock = threading.Lock()
        self._ptr = _call(
            lib.mesh_client_open,
            json.dumps(config).encode(),
            hub.handle if hub is not None else None,
            out=True,
        )

    @property
    def handle(self):
        if not self._ptr.value:
            raise error_for(10, "the client is closed")
        return self._ptr

    # ---- life ----------------------------------------------------------------------------

    def close(self):
        """Stops syncing, wakes blocked `poll_event` calls, frees the client. Idempotent."""
        with self._lock:
            if self._ptr.value:
                lib.mesh_client_close(self._ptr)
                lib.mesh_client_free(self._ptr)
                self._ptr = C.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _j(self, fn, *args):
        return _json(_call(fn, self.handle, *args, out=True))

    # ---- devices -------------------------------------------------------------------------

    def devices(self):
        """This user's devices."""
        return self._j(lib.mesh_client_devices)

    def rename_device(self, name):
        """Renames this device; returns its record."""
        return self._j(lib.mesh_client_rename_device, _b(name))

    # ---- folders and feeds ---------------------------------------------------------------

    def create_folder(self, name, kind):
        """Creates a folder (the caller is its owner); returns its id. `kind` is a
        `FolderKind` or its text (`"files"`, `"app/<name>"`, `"acme/ledger"`…); the library
        checks it, and a malformed kind raises `InvalidInput` and creates nothing."""
        return _take(_call(lib.mesh_client_create_folder, self.handle, _b(name), _b(kind),
                           out=True))

    def folders(self):
        """The folders this user is a member of."""
        return self._j(lib.mesh_client_folders)

    def folder(self, folder):
        """One folder's record (raises NotFound)."""
        return self._j(lib.mesh_client_folder, _b(folder))

    def create_feed(self, folder, name, title):
        """Creates a feed in a folder."""
        _call(lib.mesh_client_create_feed, self.handle, _b(folder), _b(name), _b(title))

    def feeds(self, folder):
        """The feeds of a folder."""
        return self._j(lib.mesh_client_feeds, _b(folder))

    # ---- entries -------------------------------------------------------------------------

    def put(self, folder, feed, title, content, id=None):
        """Writes an entry (a new one, or a new version of `id`); returns it."""
        draft = _j({"title": title, "content": content})
        if id is None:
            return self._j(lib.mesh_client_put, _b(folder), _b(feed), draft)
        return self._j(lib.mesh_client_put_with_id, _b(folder), _b(feed), _b(id), draft)

    def get(self, folder, feed, id):
        """One live entry; raises NotFound when it is absent or deleted."""
        return self._j(lib.mesh_client_get, _b(folder), _b(feed), _b(id))

    def delete(self, folder, feed, id):
        """Deletes an entry (a tombstone that syncs)."""
        _call(lib.mesh_client_delete, self.handle, _b(folder), _b(feed), _b(id))

    def query(self, folder, feed, query=None):
        """Entries matching a query (see mesh-ffi/README.md for its JSON); all live ones when
        `query` is None."""
        return self._j(lib.mesh_client_query, _b(folder), _b(feed), _j(query))

    # ---- members -------------------------------------------------------------------------

    def members(self, folder):
        """A folder's members."""
        return self._j(lib.mesh_client_members, _b(folder))

    def invite(self, folder, user, role):
        """Invites a user with a role (`reader`, `author`, `full`, `owner`)."""
        return self._j(lib.mesh_client_invite, _b(folder), _b(user), _b(role))

    def invitations(self):
        """Folders this user is invited to."""
        return self._j(lib.mesh_client_invitations)

    def accept(self, folder):
        """Accepts an invitation."""
        return self._j(lib.mesh_client_accept, _b(folder))

    def decline(self, folder):
        """Declines an invitation."""
        _call(lib.mesh_client_decline, self.handle, _b(folder))

    def set_role(self, folder, user, role):
        """Changes a member's role."""
        return self._j(lib.mesh_client_set_role, _b(folder), _b(user), _b(role))

    def remove_member(self, folder, user):
        """Removes a member (or leaves, for oneself)."""
        _call(lib.mesh_client_remove_member, self.handle, _b(folder), _b(user))

    # ---- folders of files ----------------------------------------------------------------

    def map_folder(self, folder, path):
        """Keeps a folder equal to a directory on this device."""
        return self._j(lib.mesh_client_map_folder, _b(folder), _b(path))

    def unmap_folder(self, folder):
        """Stops mapping a folder (local files stay)."""
        _call(lib.mesh_client_unmap_folder, self.handle, _b(folder))

    def rescan(self, folder):
        """Scans a mapped directory now."""
        _call(lib.mesh_client_rescan, self.handle, _b(folder))

    # ---- sync, conflicts, status, events -------------------------------------------------

    def sync_now(self):
        """Syncs with every remote now; returns one report per remote."""
        return self._j(lib.mesh_client_sync_now)

    # ---- peers -----------------------------------------------------------------------------

    def listen_peers(self, addr="127.0.0.1:0", hub="hub"):
        """Listens for the user's other devices on `addr`, with the certificate the remote `hub`
        issued to this device (it must have synced with it on a `store_path` store); returns
        the address it listens on ("ip:port"). The listener lives until the client closes."""
        return _take(_call(lib.mesh_client_listen_peers, self.handle, _b(addr), _b(hub),
                           out=True))

    def add_peer(self, name, addr, hub="hub"):
        """Syncs with the peer listening at `addr` as the remote `name` (it shows in
        `status()`), authenticating with the certificate the remote `hub` issued."""
        _call(lib.mesh_client_add_peer, self.handle, _b(name), _b(addr), _b(hub))

    def remove_peer(self, name):
        """Stops syncing with the remote `name`; raises NotFound when none is syncing."""
        _call(lib.mesh_client_remove_peer, self.handle, _b(name))

    def publish_peer_addresses(self, addrs):
        """Publishes where this device listens (a list of "ip:port"; [] withdraws them)."""
        _call(lib.mesh_client_publish_peer_addresses, self.handle, _j(list(addrs)))

    def peer_addresses(self):
        """Where the user's other devices said they listen: [{"device", "addr"}]."""
        return self._j(lib.mesh_client_peer_addresses)

    def discover_peers(self, interfaces, port=5353, listening_addr=None, hub="hub", *,
                       multicast_ttl=None):
        """Finds peers by mDNS on `interfaces` (IPv4 addresses of local interfaces; nothing is
        sent anywhere else) and syncs with each that proves to be the device it announced, as
        the remote "lan:<device>" (events "peer_discovered" / "peer_lost"). With
        `listening_addr` (from `listen_peers`) this device is announced too."""
        cfg = {"interfaces": list(interfaces), "port": port}
        if multicast_ttl is not None:
            cfg["multicast_ttl"] = multicast_ttl
        _call(lib.mesh_client_discover_peers, self.handle, _j(cfg), _b(listening_addr),
              _b(hub))

    def conflicts(self, folder):
        """The entries of a folder that have conflicts."""
        return self._j(lib.mesh_client_conflicts, _b(folder))

    def resolve(self, folder, feed, id, *, keep=None, pick=None, write=None, delete=False):
        """Resolves an entry's conflicts: `keep=version` (a version of the entry — the entry
        itself or one of its `sync.conflicts` — or its topmost history item; raises Conflict
        when that version is no longer there), `pick=n` (0 the winner, n conflict n-1),
        `write=(title, content)`, or `delete=True`. Returns the entry."""
        chosen = (keep, pick, write, delete or None)
        if sum(x is not None for x in chosen) != 1:
            raise ValueError("give exactly one of keep, pick, write, delete")
        if keep is not None:
            top = keep["sync"]["history"][0] if "sync" in keep else keep
            resolution = {"keep": top}
        elif pick is not None:
            resolution = {"pick": pick}
        elif write is not None:
            resolution = {"write": {"title": write[0], "content": write[1]}}
        else:
            resolution = "delete"
        return self._j(lib.mesh_client_resolve, _b(folder), _b(feed), _b(id), _j(resolution))

    def status(self):
        """Every remote's state: online, last_sync_ms, pending_up, pending_down, last_error."""
        return self._j(lib.mesh_client_status)

    def poll_event(self, timeout=0.0):
        """The next event (a dict), or None after `timeout` seconds. Raises Closed once the
        client is closed (also when it is closed while waiting)."""
        ms = max(0, min(int(timeout * 1000), 0xFFFFFFFF))
        out = C.c_void_p()
        err = C.c_void_p()
        status = lib.mesh_client_poll_event(self.handle, ms, C.byref(out), C.byref(err))
        if status == TIMEOUT:
            lib.mesh_error_free(err)
            return None
        if status != OK:
            message = lib.mesh_error_message(err).decode() if err.value else ""
            lib.mesh_error_free(err)
            raise error_for(status, message)
        return _json(out)

    def events(self, timeout=1.0):
        """Iterates over events as they come; stops after `timeout` seconds without one (or
        when the client is closed)."""
        while True:
            try:
                e = self.poll_event(timeout)
            except MeshError as ex:
                if ex.kind == "closed":
                    return
                raise
            if e is None:
                return
            yield e

    def subscribe(self, callback, folder=None, feed=None):
        """Calls `callback(event)` on the library's threads for each event (of one folder or
        feed, when given) until the returned Subscription is cancelled."""
        return Subscription(self, callback, folder, feed)

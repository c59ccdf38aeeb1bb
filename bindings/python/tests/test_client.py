"""The Python package against the C library: every function, errors as exceptions, events."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mesh

from conftest import open_client


def folder_with_feed(c):
    f = c.create_folder("Groceries", "app/todo")
    c.create_feed(f, "todos", "To do")
    return f


def test_version_and_status_names():
    assert mesh.version()
    assert mesh.status_name(15) == "MESH_STATUS_OFFLINE"
    assert mesh.status_name(22) == "MESH_STATUS_LOCKED"
    assert mesh.status_name(999) == "MESH_STATUS_UNKNOWN"


def test_folder_kinds_are_checked(ann):
    for bad in ["my files", "app/", "", "a//b", "x" * 129]:
        with pytest.raises(mesh.InvalidInput, match="folder kind"):
            ann.create_folder("F", bad)
    assert ann.folders() == []
    files = ann.create_folder("Docs", mesh.FolderKind.FILES)
    todo = ann.create_folder("Groceries", mesh.FolderKind.app("todo"))
    ledger = ann.create_folder("Ledger", "acme/ledger.v2")
    assert {f["id"]: f["kind"] for f in ann.folders()} == {
        files: "files", todo: "app/todo", ledger: "acme/ledger.v2"}


def test_an_invitation_the_hub_refuses_is_reported_and_withdrawn(hub):
    hub.add_user("ann")
    hub.add_user("bob")
    with pytest.raises(mesh.InvalidInput):
        hub.add_user("")
    with open_client(hub, "ann", "laptop") as ann:
        f = ann.create_folder("Notes", mesh.FolderKind.app("notes"))
        ann.invite(f, "nobody", "reader")
        ann.invite(f, "bob", "reader")
        ann.sync_now()
        refused = next(e for e in ann.events(timeout=5.0) if e["type"] == "refused")
        assert (refused["error_kind"], refused["feed"], refused["id"]) == (
            "not_found", "members", "nobody")
        assert sorted(m["user"] for m in ann.members(f)) == ["ann", "bob"]


def test_entries_queries_and_feeds(ann):
    f = folder_with_feed(ann)
    assert [x["id"] for x in ann.folders()] == [f]
    assert ann.folder(f)["name"] == "Groceries"
    assert [x["name"] for x in ann.feeds(f)] == ["todos"]
    milk = ann.put(f, "todos", "Buy milk", {"done": False})
    ann.put(f, "todos", "Buy eggs", {"done": True}, id="eggs")
    assert ann.get(f, "todos", "eggs")["content"]["title"] == "Buy eggs"
    open_items = ann.query(f, "todos", {"filter": {"eq": [{"content": ["done"]}, False]}})
    assert [e["content"]["title"] for e in open_items] == ["Buy milk"]
    assert milk["sync"]["id"] == open_items[0]["sync"]["id"]
    ann.delete(f, "todos", "eggs")
    with pytest.raises(mesh.NotFound):
        ann.get(f, "todos", "eggs")
    assert len(ann.query(f, "todos")) == 1


def test_bad_input_raises_typed_exceptions(ann):
    f = folder_with_feed(ann)
    with pytest.raises(mesh.InvalidInput):
        ann.invite(f, "bob", "emperor")
    with pytest.raises(mesh.InvalidInput):
        ann.query(f, "todos", {"filter": {"explode": 1}})
    with pytest.raises(mesh.NotFound):
        ann.get(f, "todos", "missing")
    with pytest.raises(ValueError):
        ann.resolve("f", "todos", "x", pick=0, delete=True)


def test_devices_members_invitations_and_roles(hub, ann):
    ann.rename_device("Ann's laptop")
    assert [d["name"] for d in ann.devices()] == ["Ann's laptop"]
    f = folder_with_feed(ann)
    ann.invite(f, "bob", "reader")
    ann.sync_now()
    with open_client(hub, "bob", "desk") as bob:
        bob.sync_now()
        assert [i["folder"] for i in bob.invitations()] == [f]
        bob.accept(f)
        bob.sync_now()
        with pytest.raises(mesh.Forbidden):
            bob.put(f, "todos", "not mine", {})
        ann.sync_now()
        assert ann.set_role(f, "bob", "author")["role"] == "author"
        assert {m["user"] for m in ann.members(f)} == {"ann", "bob"}
        ann.remove_member(f, "bob")
    g = ann.create_folder("Other", "app/todo")
    ann.invite(g, "carl", "reader")
    ann.sync_now()
    with open_client(hub, "carl", "phone") as carl:
        carl.sync_now()
        carl.decline(g)
        carl.sync_now()
        assert carl.invitations() == []


def test_conflicts_and_resolution(hub):
    with open_client(hub, "ann", "a") as a, open_client(hub, "ann", "b") as b:
        f = folder_with_feed(a)
        a.put(f, "todos", "v0", 0, id="x")
        a.sync_now()
        b.sync_now()
        a.put(f, "todos", "a's", 1, id="x")
        b.put(f, "todos", "b's", 2, id="x")
        a.sync_now()
        b.sync_now()
        a.sync_now()
        (conflict,) = a.conflicts(f)
        assert conflict["feed"] == "todos"
        versions = [conflict["entry"]] + conflict["entry"]["sync"]["conflicts"]
        bs = next(v for v in versions if v["content"]["title"] == "b's")
        e = a.resolve(f, "todos", "x", keep=bs)
        assert e["content"]["title"] == "b's"
        assert a.conflicts(f) == []
        # On b, once it heard of the resolution, the other version is gone.
        b.sync_now()
        a.sync_now()
        b.sync_now()
        with pytest.raises(mesh.Conflict):
            b.resolve(f, "todos", "x", keep=versions[0])


def test_events_status_and_subscriptions(ann):
    f = folder_with_feed(ann)
    got = []
    done = threading.Event()

    def on_event(e):
        got.append(e)
        if e.get("type") == "entry_changed":
            done.set()

    with ann.subscribe(on_event, folder=f):
        ann.put(f, "todos", "x", 1)
        assert done.wait(5)
    kinds = [e["type"] for e in ann.events(timeout=0.2)]
    assert "entry_changed" in kinds
    ann.sync_now()
    (st,) = ann.status()
    assert st["remote"] == "hub" and st["online"] is True and st["last_error"] is None


def test_folders_of_files(ann, tmp_path):
    f = ann.create_folder("Docs", "mesh/files")
    (tmp_path / "a.txt").write_text("hello")
    ann.map_folder(f, str(tmp_path))
    ann.rescan(f)
    ann.unmap_folder(f)
    assert (tmp_path / "a.txt").read_text() == "hello"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_unreachable_hub_raises_offline_and_says_so_in_events():
    url = f"http://127.0.0.1:{free_port()}/"
    with mesh.Client("ann", "d", remotes=[{"name": "cloud", "url": url, "token": "t"}]) as c:
        with pytest.raises(mesh.Offline) as e:
            c.sync_now()
        assert isinstance(e.value, ConnectionError)
        errors = [x for x in c.events(timeout=2) if x["type"] == "sync_error"]
        assert errors and isinstance(mesh.exception_of(errors[0]), mesh.Offline)
        assert c.status()[0]["last_error"]["kind"] == "offline"


def test_a_store_is_opened_by_one_client_at_a_time(tmp_path):
    db = tmp_path / "notes.db"
    with mesh.Client("ann", "laptop", store_path=db):
        with pytest.raises(mesh.Locked):
            mesh.Client("ann", "laptop", store_path=db)
        # Another process too.
        code = (
            "import mesh, sys\n"
            "try:\n"
            f"    mesh.Client('ann', 'laptop', store_path={str(db)!r})\n"
            "except mesh.Locked:\n"
            "    sys.exit(7)\n"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(mesh.__file__).resolve().parents[1]))
        assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 7
    with mesh.Client("ann", "laptop", store_path=db):
        pass


def test_close_wakes_a_blocked_poller_and_later_calls_raise_closed(ann):
    result = {}

    def poll():
        t = time.monotonic()
        try:
            ann.poll_event(timeout=60)
            result["r"] = "event"
        except mesh.Closed:
            result["r"] = "closed"
        result["t"] = time.monotonic() - t

    # Drain, so that the poller blocks.
    list(ann.events(timeout=0))
    th = threading.Thread(target=poll)
    th.start()
    lib = mesh.client.lib
    lib.mesh_client_close(ann.handle)  # close (not free) from this thread
    th.join(10)
    assert not th.is_alive()
    assert result["r"] == "closed" and result["t"] < 10
    with pytest.raises(mesh.Closed):
        ann.folders()
    ann.close()
    with pytest.raises(mesh.Closed):
        ann.folders()

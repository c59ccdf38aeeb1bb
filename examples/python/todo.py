#!/usr/bin/env python3
"""The to-do flow of examples/c/todo.c, in Python on the `mesh` package (bindings/python).

    cargo build -p mesh-ffi && python3 examples/python/todo.py [HUB_URL ANN_TOKEN BOB_TOKEN]

Uses the installed package (`pip install ./bindings/python`) or, when it is not installed,
the one in this checkout. MESH_FFI_LIB names the C library (by default the workspace's
target/debug/libmesh_ffi.so, or CARGO_TARGET_DIR's).
"""

import sys
import threading
from pathlib import Path

try:
    import mesh
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python" / "src"))
    import mesh


def main():
    url, token_a, token_b = (sys.argv[1:4] + [None] * 3)[:3]
    print("mesh", mesh.version())

    def remote(token):
        if url:
            return {"name": "hub", "url": url, "token": token}
        return {"name": "hub", "in_process": True}

    with mesh.Hub() as hub, \
            mesh.Client("ann", "ann-laptop", hub=hub, remotes=[remote(token_a)],
                         sync={"auto": False}) as ann, \
            mesh.Client("bob", "bob-phone", hub=hub, remotes=[remote(token_b)],
                        sync={"auto": False}) as bob:
        delivered = []
        got_one = threading.Event()

        def on_event(e):
            delivered.append(e)
            got_one.set()

        with ann.subscribe(on_event):
            folder = ann.create_folder("Groceries", mesh.FolderKind.app("todo"))
            ann.create_feed(folder, "todos", "To do")
            ann.put(folder, "todos", "Buy milk", {"done": False}, id="milk")
            ann.invite(folder, "bob", "author")
            ann.sync_now()

            bob.sync_now()
            assert [i["folder"] for i in bob.invitations()] == [folder]
            bob.accept(folder)
            bob.sync_now()  # pushes the acceptance
            bob.sync_now()  # pulls the folder's feeds
            titles = [e["content"]["title"] for e in bob.query(folder, "todos")]
            print("bob sees:", titles)
            assert titles == ["Buy milk"], titles
            bob.put(folder, "todos", "Buy bread", {"done": False}, id="bread")
            try:
                bob.put(folder, "todos", "Buy milk", {"done": True}, id="milk")
                raise AssertionError("an author changed someone else's entry")
            except mesh.Forbidden as e:
                print("bob ticks ann's item:", e)
            bob.sync_now()

            ann.sync_now()
            print("ann gets:", ann.get(folder, "todos", "bread")["content"]["title"])
            try:
                ann.get(folder, "todos", "eggs")
                raise AssertionError("a missing entry was found")
            except mesh.NotFound:
                pass
            open_items = ann.query(folder, "todos",
                                   {"filter": {"eq": [{"content": ["done"]}, False]},
                                    "order": [["title", False]]})
            print("still to do:", [e["content"]["title"] for e in open_items])
            assert got_one.wait(5)

        polled = list(ann.events(timeout=0.1))
        print(f"ann: {len(polled)} events polled, {len(delivered)} delivered to the callback")
        assert polled and delivered
        print("status:", ann.status())
    try:
        ann.folders()
        raise AssertionError("a closed client answered")
    except mesh.Closed:
        pass
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

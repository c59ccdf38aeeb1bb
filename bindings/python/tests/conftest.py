import pytest

import mesh


@pytest.fixture
def hub():
    with mesh.Hub() as h:
        yield h


def open_client(hub, user, device, **kw):
    kw.setdefault("sync", {"auto": False})
    return mesh.Client(user, device, hub=hub, remotes=[{"name": "hub", "in_process": True}], **kw)


@pytest.fixture
def ann(hub):
    with open_client(hub, "ann", "laptop") as c:
        yield c

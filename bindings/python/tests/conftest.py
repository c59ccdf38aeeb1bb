import sys
from pathlib import Path

import pytest

try:
    import mesh
except ImportError:  # not installed: the package of this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
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

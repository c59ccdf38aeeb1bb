"""Peers through the Python package: two devices enrolled with a hub meet directly."""

import pytest

import mesh

from conftest import open_client


def test_two_devices_sync_as_peers_through_the_c_abi(hub, tmp_path):
    laptop = open_client(hub, "ann", "laptop", store_path=str(tmp_path / "laptop.db"))
    phone = open_client(hub, "ann", "phone", store_path=str(tmp_path / "phone.db"))
    with laptop, phone:
        # Not enrolled yet: nothing to meet peers with.
        with pytest.raises(mesh.NotFound):
            laptop.listen_peers()
        laptop.sync_now()
        phone.sync_now()
        addr = laptop.listen_peers("127.0.0.1:0")
        assert addr.startswith("127.0.0.1:")
        laptop.publish_peer_addresses([addr])
        laptop.sync_now()
        phone.sync_now()
        assert phone.peer_addresses() == [{"device": "laptop", "addr": addr}]

        phone.add_peer("laptop", addr)
        with pytest.raises(mesh.Conflict):
            phone.add_peer("laptop", addr)
        assert [s["remote"] for s in phone.status()] == ["hub", "laptop"]
        f = laptop.create_folder("Trip", "app/notes")
        laptop.create_feed(f, "notes", "Notes")
        laptop.put(f, "notes", "from the laptop", {})
        reports = {r["remote"]: r for r in phone.sync_now()}
        assert reports["laptop"]["received"] > 0
        assert [e["content"]["title"] for e in phone.query(f, "notes")] == ["from the laptop"]
        kinds = [e["type"] for e in laptop.events(timeout=0.2)]
        assert "peer_connected" in kinds

        phone.remove_peer("laptop")
        with pytest.raises(mesh.NotFound):
            phone.remove_peer("laptop")
        assert [s["remote"] for s in phone.status()] == ["hub"]
        with pytest.raises(mesh.InvalidInput):
            phone.add_peer("bad", "not an address")


def _free_udp_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_devices_find_each_other_by_mdns_on_loopback(hub, tmp_path):
    laptop = open_client(hub, "ann", "laptop", store_path=str(tmp_path / "laptop.db"))
    phone = open_client(hub, "ann", "phone", store_path=str(tmp_path / "phone.db"))
    with laptop, phone:
        laptop.sync_now()
        phone.sync_now()
        port = _free_udp_port()
        with pytest.raises(mesh.InvalidInput):
            phone.discover_peers([], port)
        with pytest.raises(mesh.InvalidInput):
            phone.discover_peers(["224.0.0.251"], port)
        phone.discover_peers(["127.0.0.1"], port, multicast_ttl=1)
        addr = laptop.listen_peers("127.0.0.1:0")
        laptop.discover_peers(["127.0.0.1"], port, addr, multicast_ttl=1)
        found = next(e for e in phone.events(timeout=10) if e["type"] == "peer_discovered")
        assert (found["device"], found["addr"]) == ("laptop", addr)
        assert [s["remote"] for s in phone.status()] == ["hub", "lan:laptop"]

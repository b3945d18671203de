"""FakeTransport behaves like a Transport for the code built on top of it."""

from __future__ import annotations

import stat

import pytest

from etcd_recovery.errors import HostUnreachable, RemoteCommandError, TransportError
from etcd_recovery.transport.base import Transport
from etcd_recovery.transport.fake import FakeCall, FakeTransport


def _as_transport(t: Transport) -> Transport:
    return t  # mypy checks that FakeTransport satisfies the protocol


def test_scripted_commands_in_order_then_repeating() -> None:
    fake = FakeTransport("etcd-1")
    t = _as_transport(fake)
    fake.expect(["systemctl", "is-active", "etcd"], "active\n")
    fake.expect(["systemctl", "is-active", "etcd"], "inactive\n", exit_status=3)
    assert t.run(["systemctl", "is-active", "etcd"]).stdout == b"active\n"
    result = t.run(["systemctl", "is-active", "etcd"], check=False)
    assert (result.stdout, result.exit_status) == (b"inactive\n", 3)
    with pytest.raises(RemoteCommandError) as info:
        t.run(["systemctl", "is-active", "etcd"], sudo=True)
    assert info.value.exit_status == 3 and info.value.host == "etcd-1"
    assert fake.commands == [("systemctl", "is-active", "etcd")] * 3
    assert fake.calls[-1].sudo is True


def test_unexpected_command_fails_loudly() -> None:
    fake = FakeTransport()
    with pytest.raises(AssertionError, match="unexpected command"):
        fake.run(["rm", "-rf", "/var/lib/etcd"])
    with pytest.raises(TypeError):
        fake.run("echo hi")


def test_scripted_error_and_going_down() -> None:
    fake = FakeTransport("etcd-2")
    fake.expect(["etcdctl", "endpoint", "status"], error=TransportError("etcd-2", "timed out"))
    with pytest.raises(TransportError, match="timed out"):
        fake.run(["etcdctl", "endpoint", "status"])
    fake.go_down("no route to host")
    with pytest.raises(HostUnreachable, match="no route"):
        fake.list_dir("/")


def test_files_read_list_write() -> None:
    fake = FakeTransport("etcd-3", files={"/var/lib/etcd/member/snap/db": b"0123456789",
                                          "/var/lib/etcd/member/wal/0.wal": b"w"})
    source = fake.open_file("/var/lib/etcd/member/snap/db", sudo=True)
    assert source.name == "etcd-3:/var/lib/etcd/member/snap/db"
    assert source.size() == 10 and source.read(3, 4) == b"3456"
    assert source.bytes_read == 4
    entries = fake.list_dir("/var/lib/etcd/member")
    assert [(e.name, e.is_dir) for e in entries] == [("snap", True), ("wal", True)]
    fake.write_file("/var/lib/etcd/member/snap/x", b"abc", mode=0o640)
    snap = {e.name: e for e in fake.list_dir("/var/lib/etcd/member/snap/")}
    assert snap["x"].size == 3 and stat.S_IMODE(snap["x"].mode) == 0o640
    with pytest.raises(TransportError, match="no such file"):
        fake.open_file("/nope")
    with pytest.raises(TransportError):
        fake.list_dir("/empty")
    fake.dirs.add("/empty")
    assert fake.list_dir("/empty") == []
    assert FakeCall("write_file", ("/var/lib/etcd/member/snap/x",), False, b"abc") in fake.calls


def test_tunnel_maps_to_configured_address() -> None:
    fake = FakeTransport(tunnels={("127.0.0.1", 2379): ("127.0.0.1", 40000)})
    with fake.tunnel("127.0.0.1", 2379) as address:
        assert address == ("127.0.0.1", 40000)
    with fake.tunnel("10.0.0.1", 2379) as address:
        assert address == ("10.0.0.1", 2379)
    fake.close()
    assert fake.closed

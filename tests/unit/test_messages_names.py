"""A member's name is said once: an error read from a host is stored without the name its
transport puts in front, and every rendering names the member itself."""

from __future__ import annotations

import io

from rich.console import Console

from etcd_recovery.inspect import inspect_cluster
from etcd_recovery.inventory import Member
from etcd_recovery.render import inspect_table
from etcd_recovery.session import reachable_members
from etcd_recovery.transport.fake import FakeTransport

from .test_plan_actions import inventory


def _down(m: Member) -> FakeTransport:
    t = FakeTransport(m.name)  # labelled like ssh_transport's: the member's name
    t.go_down(f"host {m.ssh.host}:1: connection refused")
    return t


def test_an_unreachable_member_is_named_once() -> None:
    inv = inventory("static-pod")
    report = inspect_cluster(inv, factory=_down)
    for m in report.members:
        assert m.error == f"host {m.host}:1: connection refused", m.error
    buf = io.StringIO()
    inspect_table(report, Console(file=buf, width=100))
    for m in report.members:
        assert f"  {m.name}: host {m.host}:1: connection refused\n" in buf.getvalue()
        assert f"{m.name}: {m.name}:" not in buf.getvalue()
        assert f"{m.name}: host {m.host}:1" in report.decision.reason  # "no member could be read"
        assert f"{m.name}: {m.name}:" not in report.decision.reason


def test_verify_names_an_unreachable_member_once() -> None:
    inv = inventory("systemd")
    ok, bad = reachable_members(inv, factory=_down)
    assert ok == [] and bad == {m.name: f"host {m.ssh.host}:1: connection refused"
                                for m in inv.members}

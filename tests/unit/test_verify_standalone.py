"""``etcd-recovery verify`` counts only what it checked: a member of the cluster's membership
that it could not check makes it fail (exit 1), a lost host outside the membership is named
with its rejoin command (with -i), and every check runs against fake hosts and a fake etcd."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from etcd_recovery import cli, session
from etcd_recovery.errors import EtcdApiError, TransportError
from etcd_recovery.inventory import Inventory, Member, SshTarget, TlsFiles
from etcd_recovery.live import KvHash, LiveStatus, MemberInfo
from etcd_recovery.session import Session
from etcd_recovery.transport.fake import FakeTransport
from etcd_recovery.verify import StandaloneReport, verify_standalone

NAMES = ("etcd-1", "etcd-2", "etcd-3")
ENV = "/etc/etcd.env"
IDS = {n: 0xA1 + i for i, n in enumerate(NAMES)}
DD = ("dd", "if=/var/lib/etcd/member/snap/db", "of=/dev/null", "bs=1M", "status=none")


def inv(path: str = "inv.yaml") -> Inventory:
    return Inventory(path=path, name="c", runtime="systemd", tls=TlsFiles(None, None, None),
                     members=tuple(Member(name=n, ssh=SshTarget(host=f"h-{n}"),
                                          peer_url=f"https://{n}:2380",
                                          client_url=f"https://{n}:2379",
                                          data_dir="/var/lib/etcd", env_file=ENV,
                                          unit="etcd.service") for n in NAMES))


class Etcd:
    """One member's etcd as verify sees it."""

    def __init__(self, world: World, name: str) -> None:
        self.world, self.name = world, name

    def _up(self, method: str) -> None:
        if self.name in self.world.silent:
            raise EtcdApiError("127.0.0.1:1", method, "connection refused")

    def member_list(self, serializable: bool = True) -> list[MemberInfo]:
        self._up("MemberList")
        return [MemberInfo(IDS.get(n, 0xEE), n, (f"https://{n}:2380",), (), False)
                for n in self.world.membership]

    def status(self) -> LiveStatus:
        self._up("Status")
        return LiveStatus(member_id=IDS[self.name], cluster_id=0xC, leader=IDS["etcd-1"],
                          raft_term=2, raft_index=10, raft_applied_index=10,
                          revision=self.world.revision.get(self.name, 5), db_size=1,
                          db_size_in_use=1, version="3.5.16", is_learner=False, errors=())

    def hash_kv(self, revision: int) -> KvHash:
        self.world.hashed_after[self.name] = [
            c.args for c in self.world.hosts[self.name].calls if c.op == "run"]
        return KvHash(hash=self.world.hashes.get(self.name, 0xABC), revision=revision,
                      compact_revision=0)

    def alarms(self) -> list[Any]:
        return []


class World:
    def __init__(self, membership: tuple[str, ...] = NAMES, force: tuple[str, ...] = (),
                 dd_fails: tuple[str, ...] = (), dd_hangs: tuple[str, ...] = ()) -> None:
        self.membership = membership
        self.silent: set[str] = set()
        self.revision: dict[str, int] = {}
        self.hashes: dict[str, int] = {}
        self.hashed_after: dict[str, list[tuple[str, ...]]] = {}  # commands run before HashKV
        self.hosts = {n: FakeTransport(n) for n in NAMES}
        for n, t in self.hosts.items():
            t.expect(DD, "", exit_status=1 if n in dd_fails else 0,
                     stderr="dd: failed to open: No such file or directory" if n in dd_fails
                     else "", error=TransportError(n, "command 'dd' timed out after 120 s")
                     if n in dd_hangs else None)
            flags = "ETCD_FORCE_NEW_CLUSTER=true\n" if n in force else ""
            t.expect(["cat", ENV], f"ETCD_NAME={n}\n{flags}")
            env = {"ETCD_FORCE_NEW_CLUSTER": "true"} if n in force else {}
            t.expect_etcd((123, ["etcd", "--name", n, "--data-dir", "/var/lib/etcd"], env))

    def factory(self, m: Member) -> FakeTransport:
        return self.hosts[m.name]

    @contextlib.contextmanager
    def client_factory(self, inv: Inventory, m: Member, t: Any) -> Iterator[Etcd]:
        yield Etcd(self, m.name)

    def verify(self, reachable: tuple[str, ...], unreachable: dict[str, str]
               ) -> StandaloneReport:
        with Session(inv(), factory=self.factory, client_factory=self.client_factory) as s:
            return verify_standalone(s, list(reachable), unreachable, timeout=0.2)


def test_all_members_checked_and_healthy() -> None:
    r = World().verify(NAMES, {})
    assert r.ok and r.checked == NAMES and not r.problems
    assert r.lines("inv.yaml") == [
        "cluster c: all 3 members of its membership (etcd-1, etcd-2, etcd-3) healthy and "
        "consistent"]


def test_each_member_s_db_is_read_in_order_on_its_host_before_its_hashkv() -> None:
    """bbolt maps the db for random access: HashKV on a cold page cache faulted it in 4 KiB
    at a time (12-35 s at 1 GB on the lab), so each host reads its member's db first."""
    w = World()
    assert w.verify(NAMES, {}).ok and sorted(w.hashed_after) == sorted(NAMES)
    for n in NAMES:
        assert DD in w.hashed_after[n], n
    # a host whose dd fails (no such file, no dd) still gets its HashKV: only the cache is
    # at stake, and HashKV shows any real problem
    w = World(dd_fails=("etcd-2",), dd_hangs=("etcd-3",))
    assert w.verify(NAMES, {}).ok
    assert DD in w.hashed_after["etcd-2"] and DD in w.hashed_after["etcd-3"]


def test_a_member_of_the_membership_not_checked_is_no_success() -> None:
    """The defect: it listed etcd-3 as not checked, then said 'all 3 members healthy'."""
    r = World().verify(NAMES[:2], {"etcd-3": "host h-etcd-3:22: connection refused"})
    assert not r.ok and not r.problems
    assert r.checked == ("etcd-1", "etcd-2") and dict(r.not_checked) == {
        "etcd-3": "host h-etcd-3:22: connection refused"}
    lines = r.lines("inv.yaml")
    assert lines[0].startswith("etcd-3: not checked: host h-etcd-3:22: connection refused; "
                               "it is a member of the cluster")
    assert lines[-1] == ("cluster c: NOT VERIFIED: the 2 of 3 members checked (etcd-1, "
                         "etcd-2) are healthy and consistent; etcd-3 not checked")
    assert not any("all 3" in line for line in lines)
    data = r.to_json("inv.yaml")
    assert data["ok"] is False and data["not_checked"] == {
        "etcd-3": "host h-etcd-3:22: connection refused"}


def test_a_lost_host_outside_the_membership_gets_rejoin_with_its_inventory() -> None:
    """After a recovery without etcd-3: the cluster is etcd-1 and etcd-2, both checked."""
    w = World(membership=NAMES[:2])
    r = w.verify(NAMES[:2], {"etcd-3": "timed out"})
    assert r.ok and r.checked == ("etcd-1", "etcd-2") and dict(r.outside) == {
        "etcd-3": "timed out"}
    lines = r.lines("/x/inventory.yaml")
    assert lines[0] == ("etcd-3: not checked: timed out; it is not in the cluster's "
                        "membership: once it is back, bring it in with `etcd-recovery rejoin "
                        "etcd-3 -i /x/inventory.yaml`")
    assert lines[-1] == ("cluster c: all 2 members of its membership (etcd-1, etcd-2) healthy "
                         "and consistent")
    assert r.to_json("/x/inventory.yaml")["rejoin"] == {
        "etcd-3": "etcd-recovery rejoin etcd-3 -i /x/inventory.yaml"}


def test_a_reachable_member_whose_etcd_is_down_is_a_problem_not_a_crash() -> None:
    w = World()
    w.silent.add("etcd-2")
    r = w.verify(NAMES, {})
    assert not r.ok and r.checked == ("etcd-1", "etcd-3")
    assert r.problems == ("etcd-2: etcd does not answer: 127.0.0.1:1: Status: connection "
                          "refused",)
    assert r.lines("inv.yaml")[-1] == ("cluster c: NOT VERIFIED: 1 problem(s) above; 2 of 3 "
                                       "members of its membership checked")


def test_the_membership_is_read_from_a_member_that_answers() -> None:
    w = World()
    w.silent.add("etcd-1")
    r = w.verify(NAMES, {})
    assert r.membership == NAMES and r.checked == ("etcd-2", "etcd-3")
    assert any(p.startswith("etcd-1: etcd does not answer") for p in r.problems)


def test_nobody_answers() -> None:
    w = World()
    w.silent.update(NAMES)
    r = w.verify(NAMES, {})
    assert not r.ok and r.checked == () and len(r.problems) == 1
    assert r.problems[0].startswith("no member's etcd answered a linearizable member list: "
                                    "etcd-1: 127.0.0.1:1: MemberList")
    assert World().verify((), {n: "down" for n in NAMES}).problems == (
        "no member is reachable over SSH",)


def test_members_outside_the_inventory_and_inventory_members_outside_the_cluster() -> None:
    w = World(membership=("etcd-1", "etcd-2", "stranger"))
    r = w.verify(NAMES, {})
    assert not r.ok
    assert ("etcd-3 is in the inventory but not in the cluster's membership: bring it in with "
            "`etcd-recovery rejoin etcd-3 -i inv.yaml`") in r.problems
    assert ("stranger is in the cluster's membership but not in the inventory inv.yaml: not "
            "checked") in r.problems
    assert r.checked == ("etcd-1", "etcd-2")
    assert not any(p.startswith("members are") for p in r.problems), r.problems


@pytest.mark.parametrize(("change", "problem"), [
    (lambda w: w.hashes.update({"etcd-2": 0xDEF}), "HashKV at revision 5 differs"),
    (lambda w: w.revision.update({"etcd-3": 9}), "timed out"),
])
def test_the_checks_themselves_still_fail(change: Any, problem: str) -> None:
    w = World()
    change(w)
    r = w.verify(NAMES, {})
    assert not r.ok and any(problem in p for p in r.problems), r.problems


def test_force_new_cluster_left_is_found() -> None:
    r = World(force=("etcd-1",)).verify(NAMES, {})
    assert "etcd-1: /etc/etcd.env still has --force-new-cluster" in r.problems
    assert "etcd-1: etcd is not running, or runs with --force-new-cluster" in r.problems


def test_the_command_exits_1_when_a_member_was_not_checked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    w = World()
    path = tmp_path / "inv.yaml"
    monkeypatch.setattr(cli, "load_inventory", lambda p, check_files: inv(str(p)))
    monkeypatch.setattr(session, "reachable_members",
                        lambda i: (list(NAMES[:2]), {"etcd-3": "connection refused"}))
    real = session.Session
    monkeypatch.setattr(session, "Session", lambda i: real(
        i, factory=w.factory, client_factory=w.client_factory))
    res = CliRunner().invoke(cli.app, ["verify", "-i", str(path)])
    assert res.exit_code == 1, res.output
    assert "NOT VERIFIED" in res.output and "all 3" not in res.output
    w2 = World(membership=NAMES[:2])
    monkeypatch.setattr(session, "Session", lambda i: real(
        i, factory=w2.factory, client_factory=w2.client_factory))
    res = CliRunner().invoke(cli.app, ["verify", "-i", str(path)])
    assert res.exit_code == 0, res.output
    assert f"etcd-recovery rejoin etcd-3 -i {path}" in res.output


"""One read of a host's file shared by a group's sends (fanout.py): every send that reads to
the end gets the whole file, the source is read once, and no schedule of joins, leaves,
sends that stop midway and read errors leaves a send or the reader waiting for ever.
Then the executor: a group of sends from one host reads it once."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.actions import CopyFile, receive_argv, sha256_argv
from etcd_recovery.errors import PreconditionError, StepFailed
from etcd_recovery.executor import Executor, identity_argv, verified_ref
from etcd_recovery.fanout import Fanout
from etcd_recovery.inventory import Inventory, Member, SshTarget, TlsFiles
from etcd_recovery.journal import Journal
from etcd_recovery.plan.scripts import probe_argv
from etcd_recovery.plan.steps import Plan, Step, StepKind
from etcd_recovery.transport.fake import FakeTransport

BLOCKS = [bytes([i]) * (i + 1) for i in range(12)]
WHOLE = b"".join(BLOCKS)


class Source:
    def __init__(self, fail_at: int | None = None) -> None:
        self.opened = 0
        self.fail_at = fail_at

    def blocks(self) -> Iterator[bytes]:
        self.opened += 1
        for i, b in enumerate(BLOCKS):
            if i == self.fail_at:
                raise OSError(5, "Input/output error")
            yield b


# What each send does: "leave" (the file was already there, or its step failed before the
# copy), "all" (reads to the end), or k >= 0 (reads k blocks, then its command stops).
Plan_ = st.one_of(st.just("leave"), st.just("all"), st.integers(0, len(BLOCKS)))


@settings(max_examples=150, deadline=None)
@given(plans=st.lists(Plan_, min_size=1, max_size=5), order=st.randoms(use_true_random=False),
       fail_at=st.one_of(st.none(), st.integers(0, len(BLOCKS) - 1)),
       depth=st.integers(1, 3))
def test_every_send_that_reads_on_gets_the_whole_file_read_once(
        plans: list[object], order: object, fail_at: int | None, depth: int) -> None:
    keys = [f"h{i}" for i in range(len(plans))]
    src = Source(fail_at)
    fan = Fanout(keys, src.blocks, depth=depth)
    got: dict[str, bytes] = {}
    raised: dict[str, BaseException] = {}

    def send(key: str, what: object) -> None:
        if what == "leave":
            fan.leave(key)
            return
        stream = fan.join(key)
        assert stream is not None
        out = []
        try:
            for i, block in enumerate(stream):
                if what != "all" and i == what:
                    break
                out.append(block)
        except OSError as exc:   # the read error, after the stream's last block
            raised[key] = exc
        fan.leave(key)   # the copy's finally
        got[key] = b"".join(out)

    jobs = list(zip(keys, plans, strict=True))
    order.shuffle(jobs)  # type: ignore[attr-defined]
    threads = [threading.Thread(target=send, args=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a send waits for ever"
    fan.wait(10)
    readers = [p for p in plans if p != "leave"]
    assert src.opened == (1 if readers else 0)
    for key, what in zip(keys, plans, strict=True):
        if what == "all":
            if fail_at is None:
                assert got[key] == WHOLE and key not in raised
            else:   # a stream cut short by the read error: the receiving end refuses it
                assert got[key] == b"".join(BLOCKS[:fail_at])
                assert isinstance(fan.error, OSError) and raised[key] is fan.error
        elif what != "leave":
            assert WHOLE.startswith(got[key])


def test_a_send_not_waited_for_reads_the_source_itself() -> None:
    fan = Fanout(["a"], Source().blocks)
    assert fan.join("b") is None
    stream = fan.join("a")
    assert stream is not None and b"".join(stream) == WHOLE


# ---------------------------------------------------------------- in the executor

RUN = "r1"
NAMES = ("a", "b", "c", "d")
SRC = "/var/lib/etcd-recovery/r1/snapshot.db"


def world(data: bytes) -> dict[str, FakeTransport]:
    hosts = {n: FakeTransport(n) for n in NAMES}
    hosts["a"].files[SRC] = data
    for t in hosts.values():
        t.expect(["true"])
        t.expect(sha256_argv(SRC), exit_status=1)   # not there yet
        t.expect(identity_argv(SRC), identity(t.host))
    return hosts


def identity(host: str, ctime: str = "1796581944.903642018") -> str:
    return f"65024:{len(host)}{ord(host[0])}:5120000:1796581944.899642018:{ctime}"


def run_sends(hosts: dict[str, FakeTransport], tmp: Path, sha: str) -> Executor:
    inv = Inventory(path="inv.yaml", name="c", runtime="systemd",
                    tls=TlsFiles(None, None, None),
                    members=tuple(Member(name=n, ssh=SshTarget(host=f"h-{n}"),
                                         peer_url=f"https://{n}:2380",
                                         client_url=f"https://{n}:2379",
                                         data_dir="/var/lib/etcd", env_file="/etc/etcd.env",
                                         unit="etcd.service") for n in NAMES))
    steps = tuple(Step(id=f"send:{n}", phase="restore", kind=StepKind.SNAPSHOT_SEND, host=n,
                       title="t", precondition="p", check="c", group="send",
                       actions=(CopyFile("a", SRC, n, SRC, 0o600, sha, 60.0),),
                       params={"snapshot": SRC}) for n in NAMES[1:])
    plan = Plan(cluster="c", runtime="systemd", run_id=RUN, chosen="a", reason="r",
                fingerprint="f", steps=steps, unreachable=(), rejoin_later=(),
                inventory="inv.yaml")
    return Executor(inv, plan, Journal.create(tmp, plan),
                    factory=lambda m: hosts[m.name])


def test_a_group_of_sends_from_one_host_reads_it_once(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20_000   # 5 MB: five blocks
    sha = hashlib.sha256(data).hexdigest()
    hosts = world(data)
    for n in NAMES[1:]:
        hosts[n].expect(receive_argv(SRC, 0o600, sha))
    summary = run_sends(hosts, tmp_path, sha).run()
    assert summary.ok, summary.message
    assert [c.op for c in hosts["a"].calls].count("stream") == 1   # cat of it, once
    for n in NAMES[1:]:
        sent = [c.stdin for c in hosts[n].calls if c.args == tuple(receive_argv(SRC, 0o600, sha))]
        assert sent == [data]


def test_a_send_journals_the_identity_of_the_file_it_checked(tmp_path: Path) -> None:
    data = b"y" * 1000
    sha = hashlib.sha256(data).hexdigest()
    hosts = world(data)
    for n in NAMES[1:]:
        hosts[n].expect(receive_argv(SRC, 0o600, sha))
    ex = run_sends(hosts, tmp_path, sha)
    assert ex.run().ok
    refs = {e.detail["name"]: e.detail["value"] for e in ex.journal.events()
            if e.event == "ref-resolved"}
    assert {n: refs[verified_ref(n, SRC)] for n in NAMES[1:]} == {
        n: {"sha256": sha, "identity": identity(n)} for n in NAMES[1:]}


def restore_check(tmp_path: Path, now: str) -> FakeTransport:
    """The restore's precondition on host b, whose snapshot was checked (and its identity
    journaled) by the send; ``now`` is its identity at the check. Returns b's transport."""
    from etcd_recovery.stepchecks.snapshot import check_snapshot_here

    sha = "a" * 64
    hosts = world(b"")
    b = hosts["b"]
    ex = run_sends(hosts, tmp_path, sha)
    ex.refs[verified_ref("b", SRC)] = {"sha256": sha, "identity": identity("b")}
    b.expect(["test", "-e", f"{ex.rdir}/restore.done"], exit_status=1)
    b._script.pop(tuple(identity_argv(SRC)))
    b._script.pop(tuple(sha256_argv(SRC)))
    b.expect(identity_argv(SRC), now)
    b.expect(["test", "-f", SRC])
    b.expect(sha256_argv(SRC), f"{'b' * 64}  {SRC}\n")    # someone wrote to it
    step = Step(id="restore:b", phase="restore", kind=StepKind.RESTORE, host="b",
                title="t", precondition="p", check="c",
                params={"snapshot": SRC, "sha256": sha, "ref": ""})
    check_snapshot_here(ex, step)
    return b


def test_a_restore_trusts_a_snapshot_unchanged_since_its_check_without_reading_it(
        tmp_path: Path) -> None:
    b = restore_check(tmp_path, identity("b"))
    assert tuple(sha256_argv(SRC)) not in b.commands


def test_a_restore_reads_again_a_snapshot_touched_since_its_check(tmp_path: Path) -> None:
    b_now = identity("b", ctime="1796581999.000000001")
    with pytest.raises(PreconditionError, match="not the snapshot's"):
        restore_check(tmp_path, b_now)


def test_a_read_that_fails_midway_is_named_as_the_sends_failure(tmp_path: Path) -> None:
    hosts = world(b"x" * 3_000_000)
    sha = "0" * 64

    def broken(argv: object, sudo: bool = False, timeout: float = 30.0) -> Iterator[bytes]:
        yield b"x" * 1_000_000
        raise OSError(5, "Input/output error")

    hosts["a"].stream = broken  # type: ignore[method-assign]
    for n in NAMES[1:]:   # the short copy fails its sha256 at the receiving end
        hosts[n].expect(receive_argv(SRC, 0o600, sha), exit_status=1,
                        stderr="sha256sum: WARNING: 1 computed checksum did NOT match")
    with pytest.raises(StepFailed, match=f"a:{SRC}: cannot read it: Input/output error"):
        run_sends(hosts, tmp_path, sha).run()


def received(t: FakeTransport) -> list[bytes | None]:
    """What the copy's receiving command on ``t`` was given."""
    return [c.stdin for c in t.calls if len(c.args) > 2 and "tee" in c.args[2]]


def resumed_sends(tmp_path: Path, b_now: str) -> tuple[dict[str, FakeTransport], Executor]:
    """The sends run again (a resume) with host b's copy journaled as checked before; ``b_now``
    is that file's identity now."""
    data = b"z" * 4000
    sha = hashlib.sha256(data).hexdigest()
    hosts = world(data)
    for n in NAMES[1:]:
        hosts[n].expect(receive_argv(SRC, 0o600, sha))
    b = hosts["b"]
    b._script.pop(tuple(identity_argv(SRC)))
    b.expect(identity_argv(SRC), b_now)
    ex = run_sends(hosts, tmp_path, sha)
    ex.resolve(verified_ref("b", SRC), {"sha256": sha, "identity": identity("b")})  # journaled
    for t in hosts.values():  # a resume first asks that no command of the run still holds on
        t.expect(probe_argv())
    assert ex.run().ok
    return hosts, ex


def test_a_resumed_send_trusts_a_copy_unchanged_since_its_check_without_reading_it(
        tmp_path: Path) -> None:
    hosts, _ = resumed_sends(tmp_path, identity("b"))
    b = hosts["b"]
    assert tuple(sha256_argv(SRC)) not in b.commands
    assert not received(b)                 # nothing sent to b
    assert received(hosts["c"])            # c got its copy


def test_a_resumed_send_checks_again_a_copy_touched_since(tmp_path: Path) -> None:
    hosts, _ = resumed_sends(tmp_path, identity("b", ctime="1796581999.000000001"))
    b = hosts["b"]
    assert tuple(sha256_argv(SRC)) in b.commands    # read again: not there (exit 1), so sent
    assert received(b)

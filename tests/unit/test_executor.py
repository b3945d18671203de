"""The executor's control flow, in milliseconds: fake hosts (scripted transports) and a fake
etcd behind the session's two seams. What runs is exactly the plan's actions, journaled."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etcd_recovery.actions import EtcdCall, Run, Wait
from etcd_recovery.errors import PreconditionError, RefusedError
from etcd_recovery.executor import Executor
from etcd_recovery.inventory import Inventory, Member, SshTarget, TlsFiles
from etcd_recovery.journal import Journal
from etcd_recovery.live import LiveStatus, MemberAddResult, MemberInfo
from etcd_recovery.plan.scripts import LOCK_PATH, lock_argv, probe_argv, unlock_argv
from etcd_recovery.plan.steps import Plan, Step, StepKind
from etcd_recovery.transport.fake import FakeTransport

RUN = "r1"
NAMES = ("a", "b")


def inv() -> Inventory:
    return Inventory(path="inv.yaml", name="c", runtime="systemd", tls=TlsFiles(None, None, None),
                     members=tuple(Member(name=n, ssh=SshTarget(host=f"h-{n}"),
                                          peer_url=f"https://{n}:2380",
                                          client_url=f"https://{n}:2379",
                                          data_dir="/var/lib/etcd", env_file="/etc/etcd.env",
                                          unit="etcd.service") for n in NAMES))


class FakeEtcd:
    """Just enough of EtcdClient: a member list with learners, add, promote, remove."""

    def __init__(self) -> None:
        self.members = [MemberInfo(0xA, "a", ("https://a:2380",), ("https://a:2379",), False)]
        self.calls: list[tuple[str, Any]] = []

    def member_list(self, serializable: bool = True) -> list[MemberInfo]:
        return list(self.members)

    def member_add(self, peer_urls: list[str], learner: bool = False) -> MemberAddResult:
        self.calls.append(("add", peer_urls))
        m = MemberInfo(0xB, "", tuple(peer_urls), (), learner)
        self.members.append(m)
        return MemberAddResult(m, list(self.members))

    def member_promote(self, member_id: int) -> list[MemberInfo]:
        self.calls.append(("promote", member_id))
        self.members = [MemberInfo(x.id, x.name, x.peer_urls, x.client_urls, False)
                        if x.id == member_id else x for x in self.members]
        return list(self.members)

    def status(self) -> LiveStatus:
        return LiveStatus(member_id=0xB, cluster_id=0xC, leader=0xA, raft_term=2,
                          raft_index=10, raft_applied_index=10, revision=5, db_size=1,
                          db_size_in_use=1, version="3.5.16", is_learner=False, errors=())

    def get(self, key: bytes, serializable: bool = False) -> None:
        return None


class World:
    def __init__(self) -> None:
        self.hosts = {n: FakeTransport(n) for n in NAMES}
        for t in self.hosts.values():
            t.expect(["true"])  # the precondition "answers over SSH" (any number of times)
        self.etcd = FakeEtcd()

    def factory(self, m: Member) -> FakeTransport:
        return self.hosts[m.name]

    @contextlib.contextmanager
    def client_factory(self, inv: Inventory, m: Member, t: Any) -> Iterator[FakeEtcd]:
        yield self.etcd


def executor(world: World, steps: tuple[Step, ...], tmp: Path) -> Executor:
    plan = Plan(cluster="c", runtime="systemd", run_id=RUN, chosen="a", reason="r",
                fingerprint="f", steps=steps, unreachable=(), rejoin_later=(),
                inventory="inv.yaml")
    journal = Journal.create(tmp, plan)
    return Executor(inv(), plan, journal, factory=world.factory,
                    client_factory=world.client_factory)


def events(tmp: Path) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e.event, e.step, e.detail) for e in Journal(tmp, RUN).events()]


def lock_step() -> Step:
    return Step(id="lock", phase="preflight", kind=StepKind.LOCK, host=None, title="t",
                precondition="p", check="c",
                actions=tuple(Run(n, tuple(lock_argv(RUN)), 30.0) for n in NAMES),
                params={"path": LOCK_PATH, "members": list(NAMES)})


def test_a_refused_lock_releases_what_it_took_and_closes_the_run(tmp_path: Path) -> None:
    w = World()
    w.hosts["a"].expect(lock_argv(RUN))
    w.hosts["a"].expect(unlock_argv(RUN))
    w.hosts["b"].expect(lock_argv(RUN), exit_status=1)
    w.hosts["b"].expect(["cat", LOCK_PATH], "other-run\n")
    with pytest.raises(RefusedError, match="another recovery holds the lock.*other-run"):
        executor(w, (lock_step(),), tmp_path).run()
    assert w.hosts["a"].commands == [tuple(lock_argv(RUN)), tuple(unlock_argv(RUN))]
    assert any(e == "action-rollback" and d["host"] == "a" for e, _, d in events(tmp_path))
    assert Journal.current(tmp_path) is None  # nothing changed: the run is closed


def test_our_own_lock_is_no_refusal(tmp_path: Path) -> None:
    w = World()
    w.hosts["a"].expect(lock_argv(RUN))
    w.hosts["b"].expect(lock_argv(RUN), exit_status=1)
    w.hosts["b"].expect(["cat", LOCK_PATH], f"{RUN}\n")
    executor(w, (lock_step(),), tmp_path).run()
    assert Journal.current(tmp_path) is None  # finished


def fence_step(host: str = "b") -> Step:
    return Step(id=f"fence:{host}", phase="fence", kind=StepKind.FENCE, host=host, title="t",
                precondition="p", check="c",
                actions=(Run(host, ("systemctl", "disable", "--now", "etcd.service"), 60.0),
                         Wait("etcd-stopped", host, "", 5.0),
                         Run(host, ("record", "done"), 10.0)))


def test_resume_in_the_middle_of_a_step_runs_only_what_is_left(tmp_path: Path) -> None:
    w = World()
    ex = executor(w, (fence_step(),), tmp_path)
    ex.journal.append("run-start")
    ex.journal.append("step-start", "fence:b")
    ex.journal.append("action-start", "fence:b", action=1)
    ex.journal.append("action-done", "fence:b", action=1)
    w.hosts["b"].expect_etcd((41, ["etcd", "--data-dir", "/var/lib/etcd"], {}))
    w.hosts["b"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    w.hosts["b"].expect(["record", "done"])
    w.hosts["b"].expect(probe_argv())  # no earlier command holds the host's command lock
    assert ex.run().ok
    # The fence itself is not run again; the wait polled until etcd had gone; before its
    # first command on the host, the resumed run made sure no earlier one still runs there.
    assert [c[0] for c in w.hosts["b"].commands] == ["true", "pgrep", "sh", "pgrep",
                                                     probe_argv()[0], "record"]
    started = [d["action"] for e, _, d in events(tmp_path) if e == "action-start"]
    assert started == [1, 2, 3]  # 1 from before the kill, then 2 and 3


def test_every_action_is_journaled_as_planned(tmp_path: Path) -> None:
    w = World()
    w.hosts["b"].expect(["systemctl", "disable", "--now", "etcd.service"])
    w.hosts["b"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    w.hosts["b"].expect(["record", "done"])
    assert executor(w, (fence_step(),), tmp_path).run().ok
    runs = [d for e, _, d in events(tmp_path) if e == "action-start" and d["kind"] == "run"]
    assert [r["argv"] for r in runs] == [["systemctl", "disable", "--now", "etcd.service"],
                                        ["record", "done"]]
    waits = [d for e, _, d in events(tmp_path) if e == "action-start" and d["kind"] == "wait"]
    assert waits[0]["condition"] == "etcd-stopped"


def test_a_precondition_that_fails_after_a_change_keeps_the_run_open(tmp_path: Path) -> None:
    w = World()
    backup = Step(id="backup:b", phase="backup", kind=StepKind.BACKUP, host="b", title="t",
                  precondition="p", check="c", actions=(Run("b", ("cp", "-a"), 60.0),))
    w.hosts["b"].expect(["systemctl", "disable", "--now", "etcd.service"])
    w.hosts["b"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    w.hosts["b"].expect(["record", "done"])
    # etcd is back before the backup
    w.hosts["b"].expect_etcd((77, ["etcd", "--data-dir", "/var/lib/etcd"], {}))
    with pytest.raises(PreconditionError, match="etcd runs again although fenced"):
        executor(w, (fence_step(), backup), tmp_path).run()
    assert ("cp", "-a") not in w.hosts["b"].commands
    assert Journal.current(tmp_path) is not None  # fenced already: resume or abandon


def test_a_refusal_before_any_change_closes_the_run(tmp_path: Path) -> None:
    w = World()
    backup = Step(id="backup:b", phase="backup", kind=StepKind.BACKUP, host="b", title="t",
                  precondition="p", check="c", actions=(Run("b", ("cp", "-a"), 60.0),))
    w.hosts["b"].expect_etcd((77, ["etcd", "--data-dir", "/var/lib/etcd"], {}))
    with pytest.raises(PreconditionError):
        executor(w, (backup,), tmp_path).run()
    assert Journal.current(tmp_path) is None


def learner_steps() -> tuple[Step, ...]:
    add = Step(id="learner-add:b", phase="rejoin", kind=StepKind.LEARNER_ADD, host="b",
               title="t", precondition="p", check="c",
               actions=(Wait("members-are", "a", "https://a:2379", 0.5,
                             ("a=https://a:2380",)),
                        EtcdCall("a", "member-add-learner", "https://a:2379", name="b",
                                 peer_url="https://b:2380", result="learner-id:b")))
    promote = Step(id="promote:b", phase="rejoin", kind=StepKind.PROMOTE, host="b", title="t",
                   precondition="p", check="c",
                   actions=(EtcdCall("a", "member-promote", "https://a:2379", name="b",
                                     peer_url="https://b:2380", member_ref="learner-id:b"),))
    return add, promote


def test_a_named_reference_is_resolved_journaled_and_used(tmp_path: Path) -> None:
    w = World()
    w.hosts["b"].expect_etcd((5, ["etcd", "--data-dir", "/var/lib/etcd"], {}))
    assert executor(w, learner_steps(), tmp_path).run().ok
    assert w.etcd.calls == [("add", ["https://b:2380"]), ("promote", 0xB)]
    assert ("ref-resolved", None, {"name": "learner-id:b", "value": "b"}) in events(tmp_path)


def test_resume_after_an_add_whose_result_was_never_journaled(tmp_path: Path) -> None:
    w = World()
    w.etcd.members.append(MemberInfo(0xB, "", ("https://b:2380",), (), True))
    w.hosts["b"].expect_etcd((5, ["etcd", "--data-dir", "/var/lib/etcd"], {}))
    ex = executor(w, learner_steps(), tmp_path)
    ex.journal.append("run-start")
    ex.journal.append("step-start", "learner-add:b")
    ex.journal.append("action-start", "learner-add:b", action=2)
    assert ex.run().ok
    # Not added twice; the reference is resolved from the member list instead.
    assert w.etcd.calls == [("promote", 0xB)]
    skipped = [d for e, _, d in events(tmp_path) if e == "action-skipped"]
    assert skipped and "already in the member list" in skipped[0]["why"]


def test_a_member_list_unlike_the_plan_stops_the_step(tmp_path: Path) -> None:
    w = World()
    w.etcd.members.append(MemberInfo(0xD, "d", ("https://d:2380",), (), False))
    with pytest.raises(Exception, match="timed out.*member list"):
        executor(w, learner_steps()[:1], tmp_path).run()
    assert w.etcd.calls == []


def test_steps_of_one_group_run_together_and_a_failure_names_its_step(tmp_path: Path) -> None:
    import dataclasses
    import threading

    w = World()
    inside = threading.Barrier(2, timeout=5)  # both fences must be running at once

    class Meeting(FakeTransport):
        def run(self, argv: Any, **kw: Any) -> Any:
            if tuple(argv)[:2] == ("systemctl", "disable"):
                inside.wait()
            return super().run(argv, **kw)

    w.hosts = {n: Meeting(n) for n in NAMES}
    for n in NAMES:
        w.hosts[n].expect(["true"])
        w.hosts[n].expect(["systemctl", "disable", "--now", "etcd.service"])
        w.hosts[n].expect(["pgrep", "-x", "etcd"], exit_status=1)
    w.hosts["a"].expect(["record", "done"])
    w.hosts["b"].expect(["record", "done"], exit_status=1, stderr="disk full")
    steps = tuple(dataclasses.replace(fence_step(n), group="fence") for n in NAMES)
    with pytest.raises(Exception, match="step fence:b failed.*disk full"):
        executor(w, steps, tmp_path).run()
    done = [s for e, s, _ in events(tmp_path) if e == "step-done"]
    assert done == ["fence:a"]  # a finished although b failed beside it
    assert Journal.current(tmp_path) is not None  # hosts were changed: resume, not closed


def record_step(sid: str, host: str, group: str | None = None) -> Step:
    return Step(id=sid, phase="restore", kind=StepKind.REMOVE_OLD, host=host, title="t",
                precondition="p", check="c", group=group,
                actions=(Run(host, ("record", sid), 30.0),))


def test_background_steps_run_while_the_plan_goes_on(tmp_path: Path) -> None:
    import threading

    w = World()
    release = threading.Event()   # the background step on b waits until a's step has run

    class Slow(FakeTransport):
        def run(self, argv: Any, **kw: Any) -> Any:
            if tuple(argv) == ("record", "bg:b"):
                assert release.wait(5), "the foreground step never ran"
            if tuple(argv) == ("record", "fg:a"):
                release.set()
            return super().run(argv, **kw)

    w.hosts = {n: Slow(n) for n in NAMES}
    for sid, host in (("bg:b", "b"), ("fg:a", "a"), ("after:b", "b")):
        w.hosts[host].expect(["record", sid])
        w.hosts[host].expect(["pgrep", "-x", "etcd"], exit_status=1)
    steps = (record_step("bg:b", "b", "background"), record_step("fg:a", "a"),
             record_step("after:b", "b"))
    summary = executor(w, steps, tmp_path).run()
    assert summary.ok
    ev = [(e, s) for e, s, _ in events(tmp_path) if e in ("step-start", "step-done")]
    # a's step started before the background step on b was done; b's next step waited for it
    assert ev.index(("step-start", "fg:a")) < ev.index(("step-done", "bg:b"))
    assert ev.index(("step-done", "bg:b")) < ev.index(("step-start", "after:b"))
    assert {t.id for t in summary.steps} == {"bg:b", "fg:a", "after:b"}


@pytest.mark.parametrize("in_turn", [True, False])
def test_background_backups_run_one_at_a_time_beside_the_rest(tmp_path: Path,
                                                              in_turn: bool) -> None:
    """Several big background backups (the other members', while the kept member is
    restored) ran all at once and slowed the restore on the same disk and CPU: those the plan
    marks in_turn run one after another, in the plan's order, while the other steps,
    background or not, go on. Small ones (not in_turn) run all at once."""
    import dataclasses
    import threading

    w = World()
    lock = threading.Lock()
    running: list[str] = []
    most = [0]
    in_backup, other_ran = threading.Event(), threading.Event()

    class Counting(FakeTransport):
        def run(self, argv: Any, **kw: Any) -> Any:
            sid = tuple(argv)[1] if tuple(argv)[:1] == ("record",) else ""
            if sid.startswith("backup:"):
                with lock:
                    running.append(sid)
                    most[0] = max(most[0], len(running))
                in_backup.set()
                assert other_ran.wait(5), "the other background step waited for a backup"
                time.sleep(0.2)
                with lock:
                    running.remove(sid)
            if sid == "up:a":
                assert in_backup.wait(5)
                other_ran.set()
            return super().run(argv, **kw)

    w.hosts = {n: Counting(n) for n in NAMES}
    backups = [dataclasses.replace(record_step(f"backup:{i}", "b", "background"),
                                   kind=StepKind.BACKUP, params={"in_turn": in_turn})
               for i in (1, 2, 3)]
    for st in backups:
        w.hosts["b"].expect(["record", st.id])
    for sid in ("up:a", "fg:a"):
        w.hosts["a"].expect(["record", sid])
    for n in NAMES:
        w.hosts[n].expect(["pgrep", "-x", "etcd"], exit_status=1)
    steps = (*backups, record_step("up:a", "a", "background"), record_step("fg:a", "a"))
    summary = executor(w, steps, tmp_path).run()
    assert summary.ok and most[0] == (1 if in_turn else 3)
    done = [s or "" for e, s, _ in events(tmp_path) if e == "step-done"]
    if in_turn:
        assert [s for s in done if s.startswith("backup:")] == [
            "backup:1", "backup:2", "backup:3"]
    assert done.index("fg:a") < done.index("backup:3")


def test_a_snapshot_send_goes_on_beside_its_host_s_backup_and_the_restore_waits(
        tmp_path: Path) -> None:
    """With the backups one at a time, a send waited for its host's backup to get its turn
    and end (5 members at 1 GB: the sends waited 4.4 s for the last one). A send writes only the
    snapshot file into the run's directory, so it no longer waits; the restore does."""
    import dataclasses
    import threading

    w = World()
    send_ran = threading.Event()

    class Ordered(FakeTransport):
        def run(self, argv: Any, **kw: Any) -> Any:
            sid = tuple(argv)[1] if tuple(argv)[:1] == ("record",) else ""
            if sid == "backup:b":
                assert send_ran.wait(5), "the send waited for the backup"
            if sid == "send:b":
                send_ran.set()
            return super().run(argv, **kw)

    w.hosts = {n: Ordered(n) for n in NAMES}
    backup = dataclasses.replace(record_step("backup:b", "b", "background"),
                                 kind=StepKind.BACKUP)
    send = dataclasses.replace(record_step("send:b", "b", "send"),
                               kind=StepKind.SNAPSHOT_SEND)
    restore = record_step("restore:b", "b")
    for sid in ("backup:b", "send:b", "restore:b"):
        w.hosts["b"].expect(["record", sid])
    for n in NAMES:
        w.hosts[n].expect(["pgrep", "-x", "etcd"], exit_status=1)
    summary = executor(w, (backup, send, restore), tmp_path).run()
    assert summary.ok, summary.message
    ev = [(e, s) for e, s, _ in events(tmp_path) if e in ("step-start", "step-done")]
    # (the backup's command ran only once the send's had: it cannot have waited for it)
    assert ev.index(("step-start", "send:b")) < ev.index(("step-done", "backup:b"))
    assert ev.index(("step-done", "backup:b")) < ev.index(("step-start", "restore:b"))


def test_a_background_failure_stops_the_run_before_its_host_is_touched(tmp_path: Path) -> None:
    w = World()
    w.hosts["b"].expect(["record", "bg:b"], exit_status=1, stderr="disk full")
    w.hosts["b"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    w.hosts["a"].expect(["record", "fg:a"])
    w.hosts["a"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    steps = (record_step("bg:b", "b", "background"), record_step("fg:a", "a"),
             record_step("after:b", "b"))
    with pytest.raises(Exception, match="step bg:b failed.*disk full"):
        executor(w, steps, tmp_path).run()
    assert not any(c.args == ("record", "after:b") for c in w.hosts["b"].calls)
    ev = events(tmp_path)
    assert ("step-failed", "bg:b") in [(e, s) for e, s, _ in ev]
    assert "after:b" not in {s for _, s, _ in ev}


def backup_step(timeout: float = 60.0) -> Step:
    return Step(id="backup:b", phase="backup", kind=StepKind.BACKUP, host="b", title="t",
                precondition="p", check="c",
                actions=(Run("b", ("guarded", "backup"), timeout), Run("b", ("record",), 0.1)))


def resumed_backup(w: World, tmp: Path, timeout: float = 60.0) -> tuple[Executor, list[str]]:
    plan = Plan(cluster="c", runtime="systemd", run_id=RUN, chosen="a", reason="r",
                fingerprint="f", steps=(backup_step(timeout),), unreachable=(),
                rejoin_later=(), inventory="inv.yaml")
    logged: list[str] = []
    ex = Executor(inv(), plan, Journal.create(tmp, plan), factory=w.factory,
                  client_factory=w.client_factory, log=logged.append)
    ex.journal.append("run-start")
    ex.journal.append("step-start", "backup:b")
    ex.journal.append("action-start", "backup:b", action=1)   # killed in the middle of it
    w.hosts["b"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    return ex, logged


def test_a_resumed_step_waits_for_the_command_an_earlier_run_left_running(
        tmp_path: Path) -> None:
    w = World()
    ex, logged = resumed_backup(w, tmp_path)
    b = w.hosts["b"]
    for out in (f"busy 4242 {RUN} backup:b\n", f"busy 4242 {RUN} backup:b\n", ""):
        b.expect(probe_argv(), out)   # still running, still running, then ended
    b.expect(["guarded", "backup"])
    b.expect(["record"])
    assert ex.run().ok
    # The step's command ran again only once the earlier one had ended, and only then.
    assert b.commands == [("pgrep", "-x", "etcd"), *[tuple(probe_argv())] * 3,
                          ("guarded", "backup"), ("record",)]
    assert "b: waiting for the backup started by an earlier run (pid 4242) to end" in logged
    assert any(line.startswith("b: the backup started by an earlier run ended after")
               for line in logged), logged
    got = [(e, d.get("pid"), d.get("earlier_step")) for e, _, d in events(tmp_path)
           if e in ("waiting-for-earlier", "earlier-ended")]
    assert got == [("waiting-for-earlier", "4242", "backup:b"), ("earlier-ended", "4242", None)]


def test_an_earlier_command_that_never_ends_stops_the_run_before_anything_runs(
        tmp_path: Path) -> None:
    w = World()
    ex, _ = resumed_backup(w, tmp_path, timeout=0.3)
    w.hosts["b"].expect(probe_argv(), "busy 4242 other-run backup:b\n")
    with pytest.raises(Exception, match=r"b: the backup started by run other-run \(pid 4242\) "
                                        r"still runs after 0 s.*kill -- -4242 on b"):
        ex.run()
    assert ("guarded", "backup") not in w.hosts["b"].commands


def test_a_fresh_run_does_not_probe_for_earlier_commands(tmp_path: Path) -> None:
    w = World()
    w.hosts["b"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    w.hosts["b"].expect(["guarded", "backup"])
    w.hosts["b"].expect(["record"])
    assert executor(w, (backup_step(),), tmp_path).run().ok
    # (its run id is new: no command of it can be running anywhere; a guarded command
    # still waits on the host for any other's, by itself)
    assert tuple(probe_argv()) not in w.hosts["b"].commands

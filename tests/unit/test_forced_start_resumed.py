"""The force-new-cluster step's precondition on a resumed run whose earlier run already made
the forced start: the kept member's supervisor may start etcd from the forced configuration at
any moment, so its disk is not read again; the others must still be fenced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from etcd_recovery.actions import Run, Wait, WriteFile
from etcd_recovery.errors import PreconditionError
from etcd_recovery.journal import Journal
from etcd_recovery.plan.steps import Plan, Step, StepKind
from etcd_recovery.stepchecks.force_new_cluster import prepare_force_new_cluster, start_made

SID = "force-new-cluster:a"


def fnc_step() -> Step:
    return Step(id=SID, phase="restore", kind=StepKind.FORCE_NEW_CLUSTER, host="a",
                title="t", precondition="", check="c",
                actions=(WriteFile("a", "/r/config.staged", "forced", 0o600, ""),
                         Run("a", ("start",), 60.0),
                         Wait("leads-alone", "a", "https://a:2379", 90.0),
                         Run("a", ("record",), 30.0)))


def plan() -> Plan:
    first = Step(id="preflight", phase="preflight", kind=StepKind.PREFLIGHT, host=None,
                 title="t", precondition="", check="c", actions=(),
                 params={"members": ["a", "b", "c"]})
    return Plan(cluster="c", runtime="systemd", run_id="r1", chosen="a", reason="r",
                fingerprint="f", steps=(first, fnc_step()), unreachable=(), rejoin_later=(),
                inventory="inv.yaml")


class DiskRead(Exception):
    """The kept member's disk was asked for."""


@dataclass
class Session:
    pids: dict[str, int | None]
    looked: list[str] = field(default_factory=list)

    def runs_without_force(self, name: str) -> bool | None:
        return None if self.pids.get(name) is None else True

    def etcd_pid(self, name: str) -> int | None:
        self.looked.append(name)
        return self.pids.get(name)

    def t(self, name: str) -> Any:
        raise DiskRead(name)

    def m(self, name: str) -> Any:
        raise DiskRead(name)


@dataclass
class Run_:
    plan: Plan
    journal: Journal
    session: Session


def runner(tmp: Path, done: tuple[int, ...], pids: dict[str, int | None]) -> Run_:
    p = plan()
    j = Journal.create(tmp, p)
    for n in done:
        j.append("action-start", SID, action=n)
        j.append("action-done", SID, action=n)
    j.append("step-failed", SID, error="etcd exited: read-only file system")
    return Run_(p, j, Session(pids))


def test_after_the_forced_start_the_kept_disk_is_not_read_again(tmp_path: Path) -> None:
    ex = runner(tmp_path, done=(1, 2), pids={})
    assert start_made(ex, fnc_step())  # type: ignore[arg-type]
    skipped = prepare_force_new_cluster(ex, fnc_step())  # type: ignore[arg-type]
    assert sorted(skipped) == [1, 2] and "supervisor starts it again" in skipped[2]
    assert sorted(ex.session.looked) == ["b", "c"]   # the others' fences, looked at


def test_after_the_forced_start_a_peer_running_again_still_stops_the_step(
        tmp_path: Path) -> None:
    ex = runner(tmp_path, done=(1, 2), pids={"c": 4242})
    with pytest.raises(PreconditionError, match="c: etcd is running although it was fenced"):
        prepare_force_new_cluster(ex, fnc_step())  # type: ignore[arg-type]


@pytest.mark.parametrize("done", [(), (1,)])
def test_before_the_forced_start_every_fenced_disk_is_read(tmp_path: Path,
                                                           done: tuple[int, ...]) -> None:
    ex = runner(tmp_path, done=done, pids={})
    assert not start_made(ex, fnc_step())  # type: ignore[arg-type]
    with pytest.raises(DiskRead):
        prepare_force_new_cluster(ex, fnc_step())  # type: ignore[arg-type]


def test_a_failed_forced_start_says_its_supervisor_keeps_trying(tmp_path: Path) -> None:
    from etcd_recovery.executor import Executor
    from etcd_recovery.plan.steps import StepKind as K

    from .test_executor import World, executor

    step = fnc_step()
    ex: Executor = executor(World(), (step,), tmp_path)
    assert ex._aftermath(step) == ""           # the start not made yet
    ex.journal.append("action-done", SID, action=2)
    said = ex._aftermath(step)
    assert "a's supervisor keeps trying to start etcd with --force-new-cluster" in said
    assert "fence a first" in said
    other = Step(id="remove-flag:a", phase="restore", kind=K.RESTART_PLAIN, host="a",
                 title="t", precondition="", check="c", actions=step.actions)
    assert ex._aftermath(other) == ""

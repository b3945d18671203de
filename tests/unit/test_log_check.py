"""The snapshot method's log check: a kept member that ran when the plan was made is read
once it is fenced, and the forced start (align-commit, force-new-cluster, the stop after it)
is skipped whole when its backend already holds its whole log.

The plan says so (the check's step, and the title of each step it may skip); the decision is
taken once, journaled as a named reference, and a resumed run takes it from the journal; a
skipped step runs nothing, not even its checks, and every action of it is journaled as
skipped with the figures; a backend behind its log, or one that cannot say, runs the steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etcd_recovery import conditions
from etcd_recovery.actions import Run, Wait
from etcd_recovery.model import MemberState
from etcd_recovery.plan.scripts import probe_argv
from etcd_recovery.plan.snapshot import make_snapshot_plan
from etcd_recovery.plan.steps import Plan, Step, StepKind
from etcd_recovery.runbook import plan_markdown
from etcd_recovery.stepchecks.snapshot import finish_log_check, skipped_by_log_check

from .test_executor import World, events, executor
from .test_method_snapshot import TOOLS, versioned
from .test_plan_actions import configs, inventory, report

FORCED = ["align-commit:etcd-1", "force-new-cluster:etcd-1", "stop:etcd-1"]


def live_plan(runtime: str = "systemd") -> Plan:
    return make_snapshot_plan(inventory(runtime), versioned(report(kept_live=True)),
                              configs(runtime), "r1", TOOLS)


@pytest.mark.parametrize("runtime", ["systemd", "static-pod"])
def test_a_kept_member_that_ran_gets_a_log_check_before_the_forced_start(runtime: str) -> None:
    plan = live_plan(runtime)
    ids = [s.id for s in plan.steps]
    at = ids.index("log-check:etcd-1")
    assert ids[at + 1:at + 5] == [*FORCED, "snapshot:etcd-1"]
    check = plan.steps[at]
    assert check.kind is StepKind.LOG_CHECK and not check.mutating and not check.actions
    assert check.params["skips"] == FORCED and check.params["ref"] == "log:etcd-1"
    assert set(check.params) == {"ref", "skips"}   # the disk is read from the inventory
    # its checks are the forced start's own: every member fenced, the choice taken again
    assert conditions.KIND_CONDITIONS["log_check"] == ("others-fenced", "kept-newest-fenced")
    assert check.precondition == conditions.render(check, plan.chosen)
    assert "still has the most up-to-date log" in check.precondition
    for s in plan.steps[at + 1:at + 4]:
        assert s.title.endswith("(skipped when log-check:etcd-1 finds the backend holding "
                                "the whole log)"), s.title
    snap = plan.steps[at + 4]
    assert "unless log-check:etcd-1 finds the backend holding the whole log" in snap.title
    # the saved plan reads back the same, the new kind and its params strictly checked
    back = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert back.steps == plan.steps


def test_a_disk_read_with_etcd_stopped_needs_no_check_at_run_time() -> None:
    # etcd-1 was read from its disk, stopped, its backend behind its log: the forced start is
    # certain when planned, and nothing at run time can change that
    plan = make_snapshot_plan(inventory("systemd"), versioned(report()), configs("systemd"),
                              "r1", TOOLS)
    ids = [s.id for s in plan.steps]
    assert not any(i.startswith("log-check:") for i in ids)
    assert all("skipped when" not in s.title for s in plan.steps)
    assert set(FORCED) <= set(ids)


def test_the_runbook_does_the_forced_start_by_hand_either_way() -> None:
    plan = live_plan()
    md = plan_markdown(plan, inventory("systemd"))
    assert ("By hand, do align-commit:etcd-1, force-new-cluster:etcd-1, stop:etcd-1 anyway"
            in md)
    # the forced start's commands are all there for a person to run
    fnc = next(s for s in plan.steps if s.id == "force-new-cluster:etcd-1")
    start = next(a for a in fnc.actions if isinstance(a, Run))
    assert start.show() in md
    # align-commit's record is known only once etcd-1 is fenced: no dd with made-up bytes, a
    # stop that says what to do
    assert "seek=-1" not in md
    align = md[md.index("## 10. "):md.index("## 11. ")]
    assert "{ echo 'align-commit: etcd ran on etcd-1 when this plan was made" in align
    assert "Make the runbook again from a plan made now" in align and "; false; }" in align


class Ex:
    """What finish_log_check and skipped_by_log_check use of a run."""

    def __init__(self, plan: Plan, state: MemberState | None) -> None:
        self.plan = plan
        self.notes: dict[str, Any] = {"log-check:etcd-1": state} if state else {}
        self.refs: dict[str, Any] = {}
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    def resolve(self, name: str, value: Any) -> None:
        self.refs[name] = value


def fenced(cindex: int | None, last: int) -> MemberState:
    return MemberState(name="etcd-1", host="h", reachable=True, source="disk",
                       consistent_index=cindex, last_index=last)


@pytest.mark.parametrize(("cindex", "last", "applied"), [
    (205, 205, True),     # stopped cleanly: etcd committed its backend as it stopped
    (206, 205, True),     # (the backend went past the WAL's last entry: still whole)
    (204, 205, False),    # one entry not applied: the forced start applies it
    (None, 205, False)])  # no consistent index read: not proven, so the start runs
def test_the_check_skips_only_a_backend_holding_the_whole_log(
        cindex: int | None, last: int, applied: bool) -> None:
    plan = live_plan()
    check = next(s for s in plan.steps if s.kind is StepKind.LOG_CHECK)
    ex = Ex(plan, fenced(cindex, last))
    finish_log_check(ex, check)  # type: ignore[arg-type]
    assert ex.refs["log:etcd-1"] == {"consistent_index": cindex, "last_index": last,
                                     "applied": applied}
    for s in plan.steps:
        why = skipped_by_log_check(ex, s)  # type: ignore[arg-type]
        if applied and s.id in FORCED:
            assert why == (f"etcd-1's backend holds its whole log (consistent index {cindex} "
                           f">= the WAL's last index {last}, read fenced by log-check:etcd-1): "
                           "no forced start needed")
        else:
            assert why == "", s.id
    assert ("skipping" if applied else "the forced start runs") in ex.lines[-1]


def test_before_the_check_is_journaled_nothing_is_skipped() -> None:
    plan = live_plan()
    ex = Ex(plan, None)
    assert all(skipped_by_log_check(ex, s) == "" for s in plan.steps)  # type: ignore[arg-type]


# ------------------------------------------------------------ the executor, with fake hosts

def check_step(skips: list[str]) -> Step:
    return Step(id="log-check:a", phase="restore", kind=StepKind.LOG_CHECK, host="a",
                title="t", precondition="p", check="c", mutating=False,
                params={"ref": "log:a", "skips": skips})


def stop_step(sid: str) -> Step:
    return Step(id=sid, phase="restore", kind=StepKind.STOP_KEPT, host="a", title="t",
                precondition="p", check="c",
                actions=(Run("a", ("stop", sid), 60.0), Wait("etcd-stopped", "a", "", 5.0),
                         Run("a", ("record", sid), 10.0)))


def resumed_after_the_check(tmp: Path, w: World, applied: bool) -> Any:
    """A run that did the log check (journaled) and was then cut: its resume."""
    ex = executor(w, (check_step(["one:a", "two:a"]), stop_step("one:a"), stop_step("two:a")),
                  tmp)
    ex.journal.append("run-start")
    ex.journal.append("step-start", "log-check:a")
    ex.journal.append("ref-resolved", name="log:a",
                      value={"consistent_index": 9, "last_index": 9 if applied else 10,
                             "applied": applied})
    ex.journal.append("step-done", "log-check:a")
    return ex


def test_a_resumed_run_skips_what_the_journaled_check_skips(tmp_path: Path) -> None:
    w = World()   # (a host command other than the probes would fail: none is expected)
    ex = resumed_after_the_check(tmp_path, w, applied=True)
    writes: list[list[str]] = []
    many = ex.journal.append_many

    def counted(records: Any) -> None:
        writes.append([str(r[1]) for r in records])
        many(records)

    ex.journal.append_many = counted
    assert ex.run().ok
    # each skipped step is one write (one fsync): its start, its actions, its end
    assert [w for w in writes if set(w) & {"one:a", "two:a"}] == [["one:a"] * 5, ["two:a"] * 5]
    assert {c[0] for c in w.hosts["a"].commands} <= {"true", probe_argv()[0]}
    skipped = [(s, d["action"], d["why"]) for e, s, d in events(tmp_path)
               if e == "action-skipped"]
    why = ("a's backend holds its whole log (consistent index 9 >= the WAL's last index 9, "
           "read fenced by log-check:a): no forced start needed")
    assert skipped == [(sid, n, why) for sid in ("one:a", "two:a") for n in (1, 2, 3)]
    assert not any(e == "action-start" for e, _, _ in events(tmp_path))
    done = [s for e, s, _ in events(tmp_path) if e == "step-done"]
    assert done == ["log-check:a", "one:a", "two:a"]


def test_a_backend_behind_its_log_runs_the_steps(tmp_path: Path) -> None:
    w = World()
    for sid in ("one:a", "two:a"):
        w.hosts["a"].expect(["stop", sid])
        w.hosts["a"].expect(["record", sid])
    w.hosts["a"].expect(["pgrep", "-x", "etcd"], exit_status=1)
    ex = resumed_after_the_check(tmp_path, w, applied=False)
    w.hosts["a"].expect(probe_argv())
    assert ex.run().ok
    ran = [c for c in w.hosts["a"].commands if c[0] in ("stop", "record")]
    assert ran == [("stop", "one:a"), ("record", "one:a"), ("stop", "two:a"),
                   ("record", "two:a")]
    assert not any(e == "action-skipped" for e, _, _ in events(tmp_path))


@pytest.mark.parametrize(("kept_live", "in_turn"), [(True, False), (False, True)])
def test_big_backups_go_one_at_a_time_only_beside_a_certain_forced_start(
        kept_live: bool, in_turn: bool) -> None:
    """1 GB dbs: the background backups take turns to spare the kept member's forced start;
    where it is likely skipped (etcd ran when planned), they all go at once."""
    from dataclasses import replace

    rep = versioned(report(kept_live=kept_live))
    rep = replace(rep, members=tuple(replace(m, db_size_bytes=1 << 30) for m in rep.members))
    plan = make_snapshot_plan(inventory("systemd"), rep, configs("systemd"), "r1", TOOLS)
    background = [s for s in plan.steps if s.kind is StepKind.BACKUP and s.group]
    assert background and all(s.params["in_turn"] is in_turn for s in background)
    assert all(("one backup at a time" in s.title) is in_turn for s in background)
    assert ("log-check:etcd-1" in [s.id for s in plan.steps]) is kept_live


def test_a_skipped_steps_actions_are_journaled_in_one_write_and_a_cut_one_reads_whole(
        tmp_path: Path) -> None:
    from etcd_recovery.journal import Journal, done_actions

    plan = live_plan()
    j = Journal.create(tmp_path, plan)
    j.append_many([("action-skipped", "stop:etcd-1", {"action": n, "why": "w"})
                   for n in (1, 2, 3)])
    assert done_actions(j.events()) == {("stop:etcd-1", n) for n in (1, 2, 3)}
    # a kill in the middle of such a write: the whole lines count, the torn one does not
    text = j.path.read_text()
    j.path.write_text(text[: text.rindex('"action": 3') + 5])
    assert done_actions(j.events()) == {("stop:etcd-1", 1), ("stop:etcd-1", 2)}

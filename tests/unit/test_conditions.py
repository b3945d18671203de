"""Shown = checked: every precondition a plan shows is what the executor checks before the
step, condition for condition, for every step kind; and the conditions that once were shown
but not checked (force-new-cluster's backup, fence, verify, unlock) now stop a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etcd_recovery import conditions
from etcd_recovery.actions import Run
from etcd_recovery.errors import PreconditionError
from etcd_recovery.journal import Journal
from etcd_recovery.plan.rejoin import make_rejoin_plan
from etcd_recovery.plan.steps import Plan, Step, StepKind

from .test_executor import RUN, World, executor
from .test_plan_actions import MEMBERSHIP, configs, inventory, plan_for


def plans() -> list[Plan]:
    inv = inventory("systemd")
    return [plan_for("static-pod"), plan_for("systemd"),
            make_rejoin_plan(inv, "etcd-2", "etcd-1", configs("systemd")["etcd-2"], "r",
                             MEMBERSHIP)]


def test_every_kind_has_conditions_and_every_condition_a_text_and_a_checker(
        tmp_path: Path) -> None:
    assert set(conditions.KIND_CONDITIONS) == {k.value for k in StepKind}
    used = {c for cs in conditions.KIND_CONDITIONS.values() for c in cs}
    assert used == set(conditions.TEXT)
    assert not any("; " in t for t in conditions.TEXT.values())  # "; " joins the clauses
    ex = executor(World(), (), tmp_path)
    assert set(ex._checks) == set(conditions.TEXT)


@pytest.mark.parametrize("plan", plans(), ids=["static-pod", "systemd", "rejoin"])
def test_every_step_shows_exactly_its_kinds_conditions(plan: Plan) -> None:
    kinds = set()
    for step in plan.steps:
        assert step.precondition == conditions.render(step, plan.chosen), step.id
        clauses = step.precondition.split("; ")
        assert len(clauses) == len(conditions.KIND_CONDITIONS[step.kind.value]), step.id
        assert "{" not in step.precondition, step.precondition
        kinds.add(step.kind)
    assert len(kinds) >= 8


def bare(kind: StepKind, host: str | None = "b", **params: Any) -> Step:
    return Step(id=f"{kind.value}:{host}", phase="p", kind=kind, host=host, title="t",
                precondition="", check="c", params=params)


@pytest.mark.parametrize("kind", list(StepKind))
def test_the_executor_checks_exactly_the_kinds_conditions_in_order(
        kind: StepKind, tmp_path: Path) -> None:
    ex = executor(World(), (), tmp_path)
    seen: list[str] = []

    def recorder(key: str) -> Any:
        def check(step: Step) -> dict[int, str]:
            seen.append(key)
            return {}
        return check

    for key in ex._checks:
        ex._checks[key] = recorder(key)
    ex.preconditions(bare(kind))
    assert seen == list(conditions.KIND_CONDITIONS[kind.value])


def test_force_new_cluster_without_a_verified_backup_is_stopped(tmp_path: Path) -> None:
    w = World()
    w.hosts["b"].expect(["test", "-f", f"/var/lib/etcd-recovery/{RUN}/backup/B2SUMS"],
                        exit_status=1)
    ex = executor(w, (), tmp_path)
    with pytest.raises(PreconditionError, match="b: no verified backup at"):
        ex._checks["backed-up"](bare(StepKind.FORCE_NEW_CLUSTER))


def test_a_fence_of_a_host_that_does_not_answer_runs_nothing(tmp_path: Path) -> None:
    w = World()
    w.hosts["b"] = type(w.hosts["b"])("b")  # nothing scripted: `true` is not expected
    w.hosts["b"].go_down("connection refused")
    step = Step(id="fence:b", phase="fence", kind=StepKind.FENCE, host="b", title="t",
                precondition="", check="c", actions=(Run("b", ("systemctl", "stop"), 5.0),))
    with pytest.raises(Exception, match="connection refused"):
        executor(w, (step,), tmp_path).run()
    assert ("systemctl", "stop") not in w.hosts["b"].commands


def test_verify_before_the_steps_before_it_is_stopped(tmp_path: Path) -> None:
    fence = bare(StepKind.FENCE)
    verify = bare(StepKind.VERIFY, None, members=["a"], keys_before=None)
    ex = executor(World(), (fence, verify), tmp_path)
    with pytest.raises(PreconditionError, match="steps not done before it: fence:b"):
        ex._checks["all-done"](verify)


def test_unlock_before_verify_passed_is_stopped(tmp_path: Path) -> None:
    verify = bare(StepKind.VERIFY, None, members=["a"], keys_before=None)
    unlock = bare(StepKind.UNLOCK, None)
    ex = executor(World(), (verify, unlock), tmp_path)
    with pytest.raises(PreconditionError, match="the verify step has not passed"):
        ex._checks["verified"](unlock)
    Journal(tmp_path, RUN).append("step-done", verify.id)
    assert ex._checks["verified"](unlock) == {}


def test_the_executor_core_names_no_method_step_kind() -> None:
    """Adding a method adds a planner (plan/) and its checks (stepchecks/), nothing in the
    executor: its core names no step kind but the lock, which every run takes."""
    import ast
    from pathlib import Path

    import etcd_recovery.executor as executor_mod

    tree = ast.parse(Path(executor_mod.__file__).read_text())
    named = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id == "StepKind"}
    assert named <= {"LOCK"}, named
    from etcd_recovery import stepchecks
    # every finisher and hook is registered by a method's module, none twice
    assert set(stepchecks.FINISH) <= set(StepKind)
    assert StepKind.SNAPSHOT_MAKE in stepchecks.AFTER_RUN

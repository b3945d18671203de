"""The plan file and the journal: round trips, and any bytes give a value or a clear error
naming the file (and, for the journal, the line), never a traceback or a hang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.actions import Run, Wait
from etcd_recovery.errors import FormatError
from etcd_recovery.journal import Journal, done_steps, parse_events
from etcd_recovery.plan.steps import Plan, Step, StepKind


def sample_plan() -> Plan:
    steps = (Step(id="preflight", phase="preflight", kind=StepKind.PREFLIGHT, host=None,
                  title="t", precondition="p", check="c", mutating=False,
                  params={"members": ["a"], "fingerprint": "f", "allow_quorum": False,
                          "exclude": []}),
             Step(id="fence:a", phase="fence", kind=StepKind.FENCE, host="a", title="t",
                  precondition="p", check="c",
                  actions=(Run("a", ("sh", "-c", "x"), 60.0),
                           Wait("etcd-stopped", "a", "https://a:2379", 60.0))))
    return Plan(cluster="c", runtime="systemd", run_id="r1", chosen="a", reason="why",
                fingerprint="f", steps=steps, unreachable=("b",), rejoin_later=("b",),
                inventory="inv.yaml")


def test_plan_round_trip() -> None:
    plan = sample_plan()
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan


def test_journal_resume_state(tmp_path: Path) -> None:
    j = Journal.create(tmp_path, sample_plan())
    assert Journal.current(tmp_path) is not None
    j.append("step-start", "preflight")
    j.append("step-done", "preflight", seconds=0.1)
    j.append("step-start", "fence:a")
    with open(j.path, "a") as fh:
        fh.write('{"ts": 1, "event": "step-do')  # torn by a kill mid-write
    events = Journal.current(tmp_path).events()  # type: ignore[union-attr]
    assert done_steps(events) == {"preflight"}
    assert Journal.current(tmp_path).load_plan() == sample_plan()  # type: ignore[union-attr]
    j.finish()
    assert Journal.current(tmp_path) is None
    assert oct(j.path.stat().st_mode & 0o777) == "0o600"


def test_journal_garbage_in_the_middle_names_the_line() -> None:
    text = '{"event": "step-done", "step": "a"}\nnot json\n{"event": "x"}\n'
    with pytest.raises(FormatError, match="line 2"):
        parse_events(text, "j.jsonl")


@settings(max_examples=300, deadline=1000)
@given(st.text(max_size=600))
def test_any_journal_text(text: str) -> None:
    try:
        parse_events(text, "j.jsonl")
    except FormatError as exc:
        assert str(exc).startswith("j.jsonl")


@settings(max_examples=300, deadline=1000)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                       c, max_size=6),
                    max_leaves=25))
def test_any_plan_json(data: object) -> None:
    try:
        Plan.from_json(data, "plan.json")
    except FormatError as exc:
        assert str(exc).startswith("plan.json")


@settings(max_examples=100, deadline=1000)
@given(st.sampled_from(["version", "steps", "run_id", "chosen"]), st.integers() | st.text())
def test_damaged_real_plan(field: str, value: object) -> None:
    data = sample_plan().to_json()
    data[field] = value
    try:
        Plan.from_json(data, "plan.json")
    except FormatError as exc:
        assert "plan.json" in str(exc)


def test_cli_abandon_closes_an_unfinished_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({
        "cluster": {"name": "c", "runtime": "systemd"},
        "members": [{"name": "a", "ssh": {"host": "127.0.0.1"},
                     "peer_url": "https://127.0.0.1:2380",
                     "client_url": "https://127.0.0.1:2379"}]}))
    jdir = tmp_path / ".etcd-recovery"
    Journal.create(jdir, sample_plan()).append("step-done", "preflight")
    cli = str(Path(sys.executable).parent / "etcd-recovery")
    res = subprocess.run([cli, "execute", "-i", str(inv), "--abandon"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert Journal.current(jdir) is None
    assert any(e.event == "run-abandoned" for e in Journal(jdir, "r1").events())
    again = subprocess.run([cli, "execute", "-i", str(inv), "--abandon"], capture_output=True,
                           text=True)
    assert again.returncode == 2 and "nothing to abandon" in again.stderr

"""What the operator reviewed is what runs, on a real lab: `plan` prints a plan ID; the state
drifts and `execute --confirm ID` is refused, naming the member whose state changed, with
nothing changed; the state comes back and the same ID runs, journaled as bound to it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from .conftest import LabHandle, cli
from .recovery_scenario import (
    assert_journal_matches_plan,
    check_recovered,
    inventory,
    journal_events,
    lose_quorum,
)


def test_plan_then_execute_confirm_plan_id(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.5-old", keys=200)
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    shown = cli("plan", "-i", inventory(lab)).stdout
    found = re.search(r"plan ID: ([0-9a-f]{12})", shown)
    assert found, shown
    pid = found[1]
    assert f"etcd-recovery execute -i {inventory(lab)} --confirm {pid}" in shown
    # The same state gives the same ID (another run id, another inspection).
    again = json.loads(cli("plan", "-i", inventory(lab), "-o", "json").stdout)
    assert again["plan_id"] == pid, again["plan_id"]
    # etcd-3 stops between the review and the run: its disk is read now, not its live figures.
    cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))
    drift = cli("execute", "-i", inventory(lab), "--confirm", pid, check=False)
    assert drift.returncode == 3, drift.stderr
    assert f"plan {pid} is not what" in drift.stderr and "state changed: etcd-3" in \
        drift.stderr, drift.stderr
    assert not (lab.dir / ".etcd-recovery" / "current").exists()  # no run was started
    cli("lab", "start-etcd", "etcd-3", "--dir", str(lab.dir))
    res = cli("execute", "-i", inventory(lab), "--confirm", pid, "-o", "json", timeout=600)
    summary = json.loads(res.stdout)
    assert summary["ok"], summary
    start = next(e for e in journal_events(lab)
                 if e["event"] == "run-start" and e["run"] == summary["run_id"])
    assert start["detail"]["bound"] is True and start["detail"]["plan_id"] == pid, start
    assert_journal_matches_plan(lab, summary["run_id"])
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=200, writes=100)

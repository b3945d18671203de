"""Recovery on a 3-member static-pod lab, the newest etcd 3.6, with the CLI killed twice and
resumed."""

from __future__ import annotations

import json
from collections.abc import Callable

from .conftest import LabHandle, cli
from .recovery_scenario import (
    check_recovered,
    execute,
    execute_until,
    inventory,
    journal_events,
    lose_quorum,
)


def test_recovery_survives_kills_between_steps_and_mid_learner_add(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="static-pod", version="3.6-newest", keys=1000)
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=150)
    # A saved plan is refused once the state it was made from has changed.
    saved = lab.dir / "plan.json"
    cli("plan", "-i", inventory(lab), "--save", str(saved), "-o", "json")
    cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))
    drift = cli("execute", "-i", inventory(lab), "--confirm", "--plan", str(saved), check=False)
    assert drift.returncode == 3 and "differs from the one the plan was made from" in \
        drift.stderr, drift.stderr
    # Refused before anything changed: the run is closed, not left for --resume.
    assert not (lab.dir / ".etcd-recovery" / "current").exists()
    cli("lab", "start-etcd", "etcd-3", "--dir", str(lab.dir))
    # Killed right after a step finished (between steps)...
    execute_until(lab, "step-done", "fence:etcd-1")
    # ...a second run is refused while the first is unfinished...
    again = cli("execute", "-i", inventory(lab), "--confirm", check=False)
    assert again.returncode == 3 and "--resume" in again.stderr
    # ...then killed again with the learner added but not yet started (half-added).
    execute_until(lab, "step-start", "start-learner:etcd-3", "--resume")
    assert any(e["event"] == "step-done" and e["step"] == "learner-add:etcd-3"
               for e in journal_events(lab))
    res = execute(lab, "--resume")
    summary = json.loads(res.stdout)
    assert summary["ok"], summary
    skipped = {s["id"] for s in summary["steps"] if s["skipped"]}
    assert {"preflight", "fence:etcd-1", "learner-add:etcd-3"} <= skipped
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=1000, writes=150)
    # The old data of the re-added member was moved aside, not deleted, and backups verify.
    from .conftest import ssh

    out = ssh(lab.dir, lab.ip("etcd-3"),
              "ls -d /var/lib/etcd-recovery/*/member.moved/wal && "
              "cd /var/lib/etcd-recovery/*/backup && b2sum --quiet -c B2SUMS && "
              "stat -c %a /var/lib/etcd-recovery/*/backup/data")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("700")

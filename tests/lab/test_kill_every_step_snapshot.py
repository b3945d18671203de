"""The snapshot method, SIGKILLed in the middle of every step in turn (static pod, etcd 3.5,
etcdutl copied from this machine; systemd, etcd 3.6, each host's own etcdutl); each `execute
--resume` takes over and the last completes with every acknowledged write on both restored
members. A kill mid-copy leaves only a ``.partial`` (redone), a kill mid-restore leaves the
started mark (this run's own restore is cleared and redone), and a start or the cluster's
first election is waited for again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from etcd_recovery.lab import builds

from .conftest import LabHandle
from .recovery_scenario import journal_events
from .test_kill_every_step import kill_at_every_step


@pytest.mark.parametrize(("runtime", "version"), [("static-pod", "3.5-newest"),
                                                 ("systemd", "3.6-newest")])
def test_kill_in_every_snapshot_step_then_resume(make_lab: Callable[..., LabHandle],
                                                 runtime: str, version: str) -> None:
    """On static pods the kept member still runs when planned: its log check is killed in
    too, and so are the steps it skips (each resume takes the decision from the journal)."""
    lab = make_lab(members=3, runtime=runtime, version=version, keys=500)
    flags: tuple[str, ...] = ("--method", "snapshot")
    running = runtime == "static-pod"
    if running:
        flags += ("--etcdutl", f"/opt/etcd-{builds.version_of(version)}/etcdutl")
    ids = kill_at_every_step(lab, "step-start", *flags, kept_running=running)
    assert {"snapshot:etcd-1", "send:etcd-3", "restore:etcd-1", "restore:etcd-3",
            "start:etcd-1", "cluster-up", "restore-check"} <= set(ids)
    forced = {"align-commit:etcd-1", "force-new-cluster:etcd-1", "stop:etcd-1"}
    events = journal_events(lab)
    if running:
        assert "log-check:etcd-1" in ids and forced <= set(ids)
        # every resume skipped them: none of their actions ever started
        assert not any(e["event"] == "action-start" and e["step"] in forced for e in events)
        assert {e["step"] for e in events if e["event"] == "action-skipped"} >= forced

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
from .test_kill_every_step import kill_at_every_step


@pytest.mark.parametrize(("runtime", "version"), [("static-pod", "3.5-newest"),
                                                 ("systemd", "3.6-newest")])
def test_kill_in_every_snapshot_step_then_resume(make_lab: Callable[..., LabHandle],
                                                 runtime: str, version: str) -> None:
    lab = make_lab(members=3, runtime=runtime, version=version, keys=500)
    flags: tuple[str, ...] = ("--method", "snapshot")
    if runtime == "static-pod":
        flags += ("--etcdutl", f"/opt/etcd-{builds.version_of(version)}/etcdutl")
    ids = kill_at_every_step(lab, "step-start", *flags)
    assert {"snapshot:etcd-1", "send:etcd-3", "restore:etcd-1", "restore:etcd-3",
            "start:etcd-1", "cluster-up", "restore-check"} <= set(ids)

"""A peer whose data dir is on a read-only disk cannot come back.

Read-only when the recovery is planned: the plan is refused before anything is done (exit 3),
naming the host, the mount and the fix; nothing is fenced. Read-only only after the run has
begun (the disk fails mid-run): the recovery stops at that member with a message naming the
host and the cause; the kept member serves alone, and once the disk is fixed --resume
finishes."""

from __future__ import annotations

import json
from collections.abc import Callable

from etcd_recovery.errors import EXIT_FAILED, EXIT_REFUSED

from .conftest import LabHandle, cli, ssh
from .recovery_scenario import (
    check_recovered,
    execute,
    execute_until,
    inventory,
    journal_events,
    lose_quorum,
)
from .verbs import healthy

RO = "mount --bind /var/lib/etcd /var/lib/etcd && mount -o remount,ro,bind /var/lib/etcd"


def test_peer_on_read_only_disk(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="static-pod", version="3.5-old", keys=300)
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    assert ssh(lab.dir, lab.ip("etcd-3"), RO).returncode == 0
    before = len(journal_events(lab))
    res = cli("execute", "-i", inventory(lab), "--confirm", check=False, timeout=600)
    assert res.returncode == EXIT_REFUSED, res.stderr
    said = " ".join(res.stderr.split())
    assert "etcd-3's data dir /var/lib/etcd" in said and "mounted read-only" in said, said
    assert "mount -o remount,rw /var/lib/etcd" in said, said
    assert journal_events(lab)[before:] == []        # nothing was done: not even the lock
    for name in ("etcd-1", "etcd-3"):                 # no host was locked
        assert ssh(lab.dir, lab.ip(name), "test ! -e /var/lib/etcd-recovery/lock"
                   ).returncode == 0, name
    assert ssh(lab.dir, lab.ip("etcd-3"), "umount /var/lib/etcd").returncode == 0

    # The disk fails after the run has fenced etcd-3: the run stops at etcd-3's first write.
    execute_until(lab, "step-done", "fence:etcd-3")
    assert ssh(lab.dir, lab.ip("etcd-3"), RO).returncode == 0
    res = cli("execute", "-i", inventory(lab), "--confirm", "--resume", check=False,
              timeout=600)
    assert res.returncode == EXIT_FAILED, res.stderr
    assert "etcd-3" in res.stderr and "Read-only file system" in res.stderr
    assert "--resume" in res.stderr
    assert healthy(lab, "etcd-1")  # the kept member serves, alone
    # The disk is fixed; the run goes on from where it stopped.
    assert ssh(lab.dir, lab.ip("etcd-3"), "umount /var/lib/etcd").returncode == 0
    summary = json.loads(execute(lab, "--resume").stdout)
    assert summary["ok"], summary
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=300, writes=100)

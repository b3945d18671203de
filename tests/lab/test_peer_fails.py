"""A peer whose data dir is on a read-only disk cannot come back: the recovery stops at that
member with a message naming the host and the cause; the rest of the cluster stays healthy,
and once the disk is fixed --resume finishes."""

from __future__ import annotations

import json
from collections.abc import Callable

from .conftest import LabHandle, cli, ssh
from .recovery_scenario import check_recovered, execute, inventory, lose_quorum
from .verbs import healthy


def test_peer_on_read_only_disk(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="static-pod", version="3.5-old", keys=300)
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    ro = "mount --bind /var/lib/etcd /var/lib/etcd && mount -o remount,ro,bind /var/lib/etcd"
    assert ssh(lab.dir, lab.ip("etcd-3"), ro).returncode == 0
    res = cli("execute", "-i", inventory(lab), "--confirm", check=False, timeout=600)
    assert res.returncode == 1, res.stderr
    assert "etcd-3" in res.stderr and "Read-only file system" in res.stderr
    assert "--resume" in res.stderr
    assert healthy(lab, "etcd-1")  # the kept member serves, alone
    # The disk is fixed; the run goes on from where it stopped.
    assert ssh(lab.dir, lab.ip("etcd-3"), "umount /var/lib/etcd").returncode == 0
    summary = json.loads(execute(lab, "--resume").stdout)
    assert summary["ok"], summary
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=300, writes=100)

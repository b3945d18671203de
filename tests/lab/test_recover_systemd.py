"""Recovery on a 3-member systemd lab: etcd 3.4 (a hand-made etcd.service), and the newest
3.7 (laid out as kubespray writes it; it carries the force-new-cluster commit fix,
etcd-io/etcd#20055)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from etcd_recovery.errors import EXIT_DRY_RUN

from .conftest import LabHandle, cli, etcdctl
from .recovery_scenario import check_recovered, inventory, run_recovery
from .verbs import healthy


@pytest.mark.parametrize("version", ["3.4", "3.7-newest"])
def test_recovery_three_members_two_lost_then_rejoin(
        make_lab: Callable[..., LabHandle], version: str) -> None:
    lab = make_lab(members=3, runtime="systemd", version=version, keys=1000)
    summary = run_recovery(lab, members=3, keys=1000)
    assert summary["total_s"] < 120

    # The lost host comes back with its old data and its old --initial-cluster, and its
    # etcd.service starts by itself: it must not split the cluster.
    cli("lab", "revive-host", "etcd-2", "--dir", str(lab.dir))
    time.sleep(3)
    members = json.loads(etcdctl(lab.dir, "member list -w json",
                                 lab.client_url("etcd-1")).stdout)["members"]
    assert sorted(m["name"] for m in members) == ["etcd-1", "etcd-3"]
    assert healthy(lab, "etcd-1") and healthy(lab, "etcd-3")
    assert not healthy(lab, "etcd-2")
    # Without --confirm, rejoin only shows its plan.
    dry = cli("rejoin", "etcd-2", "-i", inventory(lab), check=False)
    assert dry.returncode == EXIT_DRY_RUN and "move-aside:etcd-2" in dry.stderr
    res = cli("rejoin", "etcd-2", "-i", inventory(lab), "--confirm", "-o", "json")
    assert json.loads(res.stdout)["ok"]
    check_recovered(lab, ["etcd-1", "etcd-2", "etcd-3"], keys=1000, writes=150)

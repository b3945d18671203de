"""--allow-quorum: a cluster that still has quorum is rebuilt from its most up-to-date member
(every member fenced, backed up, re-added) only when the operator says so."""

from __future__ import annotations

import json
from collections.abc import Callable

from .conftest import LabHandle, cli
from .recovery_scenario import check_recovered, inventory


def test_rebuild_a_healthy_cluster_only_when_asked(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="static-pod", version="3.5-old", keys=400)
    refused = cli("plan", "-i", inventory(lab), check=False)
    assert refused.returncode == 3 and "--allow-quorum" in refused.stderr
    plan = json.loads(cli("plan", "-i", inventory(lab), "--allow-quorum", "-o", "json").stdout)
    assert plan["unreachable"] == [] and len([s for s in plan["steps"]
                                               if s["kind"] == "promote"]) == 2
    res = cli("execute", "-i", inventory(lab), "--confirm", "--allow-quorum", "-o", "json",
              timeout=600)
    summary = json.loads(res.stdout)
    assert summary["ok"], summary
    check_recovered(lab, ["etcd-1", "etcd-2", "etcd-3"], keys=400, writes=0)

"""Five-member labs, the other runtime/version pairs, labs side by side, and `lab down`."""

from __future__ import annotations

import json
from collections.abc import Callable

import docker

from etcd_recovery.lab.lab import LABEL

from .conftest import LabHandle, cli, etcdctl, ssh


def test_five_members_both_runtimes_side_by_side(make_lab: Callable[..., LabHandle]) -> None:
    a = make_lab(members=5, runtime="static-pod", version="3.4", keys=200)
    b = make_lab(members=5, runtime="systemd", version="3.5-old", keys=200)
    for lab, version in ((a, "3.4."), (b, "3.5.")):
        status = json.loads(cli("lab", "status", "--dir", str(lab.dir), "-o", "json").stdout)
        assert status["healthy"] and status["members"] == 5
        assert status["etcd_version"].startswith(version)
        res = etcdctl(lab.dir, "endpoint status -w json")
        assert res.returncode == 0, res.stderr
        assert all(e["Status"]["version"].startswith(version) for e in json.loads(res.stdout))
        assert ssh(lab.dir, lab.ip("etcd-5"), "hostname").stdout.strip() == "etcd-5"
    assert a.state.mgmt_subnet != b.state.mgmt_subnet
    # Each host has its own host key.
    keys = (a.dir / "known_hosts").read_text().split("\n")
    assert len({line.split()[-1] for line in keys if line}) == 5

    # One inventory naming members of both clusters: inspect refuses (exit 3) and says why,
    # even though each cluster has quorum.
    import yaml

    inv_a = yaml.safe_load((a.dir / "inventory.yaml").read_text())
    inv_b = yaml.safe_load((b.dir / "inventory.yaml").read_text())
    mixed = dict(inv_a)
    from_b = [{k: v for k, v in m.items() if k not in ("env_file", "unit")}
              for m in inv_b["members"][3:]]  # runtime files play no part in inspect
    mixed["members"] = inv_a["members"][:3] + from_b
    path = a.dir / "mixed.yaml"
    path.write_text(yaml.safe_dump(mixed))
    res = cli("inspect", "-i", str(path), "-o", "json", check=False)
    assert res.returncode == 3, res.stderr
    report = json.loads(res.stdout)
    assert report["refused"] == "cluster-id" and report["chosen"] is None
    assert len({m["cluster_id"] for m in report["members"]}) == 2

    # `lab down` removes this lab's containers and networks and nothing of the other lab.
    client = docker.from_env(version="auto")
    ids = (a.state.id, b.state.id)
    cli("lab", "down", "--dir", str(a.dir))
    assert not client.containers.list(all=True, filters={"label": f"{LABEL}={ids[0]}"})
    assert not client.networks.list(filters={"label": f"{LABEL}={ids[0]}"})
    assert not (a.dir / "inventory.yaml").exists()
    assert len(client.containers.list(filters={"label": f"{LABEL}={ids[1]}"})) == 5
    assert etcdctl(b.dir, "endpoint health").returncode == 0

"""etcd with --auth (user/password) on top of client-cert TLS: inspect, recovery and verify
work with the inventory's auth.user and auth.password_file; the password is never shown."""

from __future__ import annotations

import json
from collections.abc import Callable

from .conftest import LabHandle, cli, etcdctl
from .recovery_scenario import check_recovered, inventory, lose_quorum


def test_recovery_with_etcd_auth(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.4", keys=200, auth=True)
    password = (lab.dir / "etcd-root-password").read_text().strip()
    assert (lab.dir / "etcd-root-password").stat().st_mode & 0o077 == 0
    # The client certificate alone grants nothing: etcd wants the password.
    denied = etcdctl(lab.dir, "get /lab/keys/000001", lab.client_url("etcd-1"),
                     unset=("ETCDCTL_USER", "ETCDCTL_PASSWORD"))
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    outputs = [cli("inspect", "-i", inventory(lab), "-o", "json").stdout]
    for fmt in ("json", "markdown"):
        outputs.append(cli("plan", "-i", inventory(lab), "-o", fmt).stdout)
    res = cli("execute", "-i", inventory(lab), "--confirm", "-o", "json", timeout=600)
    assert json.loads(res.stdout)["ok"]
    outputs += [res.stdout, res.stderr]
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=200, writes=100)
    for path in (lab.dir / ".etcd-recovery").rglob("*"):  # journals, plans shown by ID
        if path.is_file():
            outputs.append(path.read_text())
    assert not any(password in text for text in outputs)

"""A writer keeps putting keys until quorum is lost; after recovery every put etcd
acknowledged is there with its value (etcd 3.5, systemd)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from etcd_recovery.errors import EtcdApiError
from etcd_recovery.live import EtcdClient

from .conftest import LabHandle, cli, etcdctl
from .recovery_scenario import inventory


def test_every_acknowledged_write_survives(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.5", keys=100)
    pki = lab.dir / "pki"
    acked: dict[str, str] = {}
    stop = threading.Event()

    def writer() -> None:
        host = lab.state.host("etcd-1")
        with EtcdClient(f"{host.mgmt_ip}:2379", ca_file=str(pki / "ca.crt"),
                        cert_file=str(pki / "client.crt"), key_file=str(pki / "client.key"),
                        timeout=1.0) as client:
            i = 0
            while not stop.is_set():
                key, value = f"/acked/{i:06d}", f"value-{i}"
                try:
                    client.put(key, value)
                    acked[key] = value
                except EtcdApiError:
                    time.sleep(0.05)
                i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        time.sleep(2.0)
        cli("lab", "kill-host", "etcd-2", "--dir", str(lab.dir))   # quorum kept: 2 of 3
        time.sleep(1.5)
        n_before = len(acked)
        cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))   # quorum lost
        time.sleep(1.0)
        cli("lab", "stop-etcd", "etcd-1", "--dir", str(lab.dir))   # the writer's member crashes
    finally:
        stop.set()
        t.join(10)
    assert len(acked) > n_before > 20, (n_before, len(acked))

    res = cli("execute", "-i", inventory(lab), "--confirm", "-o", "json", timeout=600)
    assert json.loads(res.stdout)["ok"]
    for name in ("etcd-1", "etcd-3"):
        out = etcdctl(lab.dir, "get /acked/ --prefix -w json", lab.client_url(name))
        assert out.returncode == 0, out.stderr
        import base64

        kvs = json.loads(out.stdout).get("kvs", [])
        got = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
               for kv in kvs}
        missing = [k for k in acked if got.get(k) != acked[k]]
        assert not missing, f"{name}: {len(missing)} acknowledged writes lost: {missing[:5]}"

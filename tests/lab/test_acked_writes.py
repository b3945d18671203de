"""A writer keeps putting keys until quorum is lost; after recovery every put etcd
acknowledged is there with its value (etcd 3.6, systemd). The run is interrupted (SIGINT)
while the kept member's backup runs on its host: the test waits for that state (the backup's
command holding the host's command lock, with a DB large enough for a backup of seconds)
rather than for a journal line the run may have left behind by the time the signal lands."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from etcd_recovery.errors import EtcdApiError
from etcd_recovery.live import EtcdClient

from .conftest import CLI, LabHandle, cli, etcdctl
from .recovery_scenario import inventory, journal_events, load_values, wait_host_command


def test_every_acknowledged_write_survives(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.6-newest", keys=100)
    load_values(lab, "etcd-1", 256)   # a backup that lasts seconds, to interrupt it in
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
        n_kill = len(acked)
        deadline = time.monotonic() + 20   # a new leader, if etcd-2 led (slower under load)
        while len(acked) < n_kill + 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        n_before = len(acked)
        assert n_before >= n_kill + 20, ("no writes acknowledged by 2 of 3", n_kill, n_before)
        cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))   # quorum lost
        time.sleep(1.0)
        cli("lab", "stop-etcd", "etcd-1", "--dir", str(lab.dir))   # the writer's member crashes
    finally:
        stop.set()
        t.join(10)
    assert len(acked) >= n_before > 20, (n_before, len(acked))

    # Ctrl-C in the middle of the run: the journal says where it stopped; --resume finishes.
    proc = subprocess.Popen([CLI, "execute", "-i", inventory(lab), "--confirm"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(e["event"] == "run-start" for e in journal_events(lab)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    kept = next(e for e in journal_events(lab) if e["event"] == "run-start")["detail"]["chosen"]
    wait_host_command(lab, kept, f"backup:{kept}", proc)   # the backup runs there now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stops = [e for e in journal_events(lab) if e["event"] == "interrupted"]
    assert stops and stops[-1]["step"] == f"backup:{kept}", stops
    res = cli("execute", "-i", inventory(lab), "--confirm", "--resume", "-o", "json",
              timeout=600)
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

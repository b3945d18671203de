"""Lab verb tests shared by the per-runtime modules (each defines a module-scoped `lab`).

Every test leaves the lab healthy again, so they can run in any order.
"""

from __future__ import annotations

import json
import time

from etcd_recovery.lab.lab import KEY_PREFIX

from .conftest import LabHandle, cli, etcdctl, ssh


def wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def healthy(lab: LabHandle, name: str) -> bool:
    return etcdctl(lab.dir, "endpoint health", lab.client_url(name)).returncode == 0


def test_up_is_healthy_with_tls_and_keys(lab: LabHandle) -> None:
    status = json.loads(cli("lab", "status", "--dir", str(lab.dir), "-o", "json").stdout)
    assert status["healthy"] and status["quorum"]
    assert all(h["host_up"] and h["etcd_running"] and h["etcd_healthy"]
               for h in status["hosts"])
    # Plain etcdctl, configured by `lab env`, sees every member and the keys.
    res = etcdctl(lab.dir, "endpoint health")
    assert res.returncode == 0, res.stderr
    res = etcdctl(lab.dir, f"get {KEY_PREFIX} --prefix --keys-only -w json")
    assert json.loads(res.stdout)["count"] == 1000
    # TLS everywhere: client and peer URLs are https, and a client without a cert is refused.
    members = json.loads(etcdctl(lab.dir, "member list -w json").stdout)["members"]
    assert len(members) == len(lab.state.hosts)
    assert all(u.startswith("https://") for m in members for u in m["peerURLs"])
    assert all(u.startswith("https://") for m in members for u in m["clientURLs"])
    no_cert = etcdctl(lab.dir, "endpoint health", lab.client_url("etcd-1"),
                      unset=("ETCDCTL_CERT", "ETCDCTL_KEY"))
    assert no_cert.returncode != 0
    assert "fatal" not in no_cert.stderr  # refused by the server, not by etcdctl's flag checks
    with_cert = etcdctl(lab.dir, "endpoint health", lab.client_url("etcd-1"))
    assert with_cert.returncode == 0, with_cert.stderr


def test_up_again_changes_nothing(lab: LabHandle) -> None:
    before = {h.name: lab.lab.container(h).attrs["State"]["StartedAt"] for h in lab.state.hosts}
    inventory = (lab.dir / "inventory.yaml").read_text()
    state = lab.state
    t0 = time.monotonic()
    res = cli("lab", "up", "--dir", str(lab.dir), "--members", str(len(state.hosts)),
              "--runtime", state.runtime, "--etcd-version", state.etcd_version[:3])
    assert "nothing changed" in res.stderr
    assert time.monotonic() - t0 < 20
    after = {h.name: lab.lab.container(h).attrs["State"]["StartedAt"] for h in lab.state.hosts}
    assert before == after
    assert (lab.dir / "inventory.yaml").read_text() == inventory


def test_stop_etcd_on_two_loses_quorum(lab: LabHandle) -> None:
    cli("lab", "stop-etcd", "etcd-1", "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-2", "--dir", str(lab.dir))
    try:
        # Right away etcd-3 may still believe in a leader; inspect does not wait out a
        # linearizable read (3 s) once two of three voters are seen stopped.
        report = json.loads(cli("inspect", "-i", str(lab.dir / "inventory.yaml"), "-o", "json",
                                check=False).stdout)
        assert report["quorum"] is False and report["elapsed_s"] < 2.5, report
        m3 = next(m for m in report["members"] if m["name"] == "etcd-3")
        assert not any("linearizable read failed" in n for n in m3["notes"]), m3["notes"]
        assert not healthy(lab, "etcd-3"), "etcd-3 alone must have no quorum"
        # Kept down, as after a crash loop; the data dir is untouched.
        time.sleep(2.5)
        for name in ("etcd-1", "etcd-2"):
            res = ssh(lab.dir, lab.ip(name), "pgrep -x etcd; ls /var/lib/etcd/member/wal")
            assert res.returncode == 0, res.stderr
            assert res.stdout.strip().endswith(".wal"), res.stdout  # no pid printed, WAL kept
        status = json.loads(cli("lab", "status", "--dir", str(lab.dir), "-o", "json",
                                check=False).stdout)
        assert not status["quorum"]
        assert [h["etcd_running"] for h in status["hosts"]] == [False, False, True]
    finally:
        cli("lab", "start-etcd", "etcd-1", "--dir", str(lab.dir))
        cli("lab", "start-etcd", "etcd-2", "--dir", str(lab.dir))
    wait_for(lambda: all(healthy(lab, n) for n in ("etcd-1", "etcd-2", "etcd-3")), 30,
             "the cluster to be healthy after start-etcd")


def test_kill_host_then_revive(lab: LabHandle) -> None:
    cli("lab", "kill-host", "etcd-2", "--dir", str(lab.dir))
    try:
        res = ssh(lab.dir, lab.ip("etcd-2"), "true")
        assert res.returncode == 255, "SSH to a killed host must fail"
        assert not healthy(lab, "etcd-2")
        # Two of three keep quorum (after a new election, if etcd-2 led).
        wait_for(lambda: healthy(lab, "etcd-1"), 15, "etcd-1 healthy without etcd-2")
    finally:
        cli("lab", "revive-host", "etcd-2", "--dir", str(lab.dir))
    assert ssh(lab.dir, lab.ip("etcd-2"), "true").returncode == 0
    wait_for(lambda: healthy(lab, "etcd-2"), 30, "etcd-2 to be healthy after revive")


def test_partition_keeps_ssh_but_cuts_peers(lab: LabHandle) -> None:
    cli("lab", "partition", "etcd-3", "--dir", str(lab.dir))
    try:
        res = ssh(lab.dir, lab.ip("etcd-3"), "pgrep -x etcd")
        assert res.returncode == 0, "host and its etcd stay up and reachable over SSH"
        # Its etcd cannot reach its peers: it loses its leader and reports unhealthy.
        wait_for(lambda: not healthy(lab, "etcd-3"), 15, "etcd-3 to lose its peers")
        peer = lab.state.host("etcd-1").peer_ip
        res = ssh(lab.dir, lab.ip("etcd-3"),
                  f"timeout 2 bash -c 'echo > /dev/tcp/{peer}/2380' && echo reached")
        assert "reached" not in res.stdout
        wait_for(lambda: healthy(lab, "etcd-1"), 15, "the majority side to stay healthy")
    finally:
        cli("lab", "heal", "etcd-3", "--dir", str(lab.dir))
    wait_for(lambda: healthy(lab, "etcd-3"), 30, "etcd-3 to be healthy after heal")

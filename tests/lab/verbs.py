"""Lab verb tests shared by the per-runtime modules (each defines a module-scoped `lab`).

Every test leaves the lab healthy again, so they can run in any order.
"""

from __future__ import annotations

import json
import time

from etcd_recovery.lab.lab import KEY_PREFIX

from .conftest import LabHandle, cli, etcdctl, etcdctl_txn, ssh


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


# ------------------------------------------------------------------ faults that hold

def etcd_starts(lab: LabHandle, name: str) -> int:
    """How often the host's supervisor has started etcd: kubelet-lite's lines in the pod log,
    or systemd's in the journal. Counts a start however short the run."""
    if lab.state.runtime == "static-pod":
        cmd = "grep -c '^--- kubelet-lite: .*starting etcd' /var/log/pods/etcd.log"
    else:
        cmd = "journalctl -u etcd.service -o cat --no-pager | grep -c '^Starting etcd'"
    res = ssh(lab.dir, lab.ip(name), cmd)
    assert res.stdout.strip().isdigit(), (res.stdout, res.stderr)
    return int(res.stdout)


def etcd_pids_seen(lab: LabHandle, name: str, seconds: float) -> str:
    """The pids of any etcd process on the host, polled every 50 ms for ``seconds``."""
    res = ssh(lab.dir, lab.ip(name),
              f"end=$(( $(date +%s%N) + {int(seconds * 1e9)} )); "
              "while [ $(date +%s%N) -lt $end ]; do pgrep -x etcd; sleep 0.05; done; true",
              timeout=seconds + 20)
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())


# Longer than kubelet-lite's first back-offs (0.5, 1, 2 s) and systemd's RestartSec (2 s).
WATCH_S = 4.0


def test_stopped_etcd_stays_down(lab: LabHandle, name: str = "etcd-1") -> None:
    """After stop-etcd returns, etcd does not run again on that host, not for a moment, until
    start-etcd: neither from the supervisor's restart after the kill, nor when etcd had
    crashed on its own and stop-etcd came during the restart's back-off."""
    h = lab.state.host(name)
    try:
        before = etcd_starts(lab, name)
        cli("lab", "stop-etcd", name, "--dir", str(lab.dir))
        seen = etcd_pids_seen(lab, name, WATCH_S)
        assert seen == "", f"etcd ran again after stop-etcd returned: pid {seen}"
        assert etcd_starts(lab, name) == before, "etcd was started again after stop-etcd"
        cli("lab", "start-etcd", name, "--dir", str(lab.dir))
        # (the count sees a start: the journal may lag it a little)
        wait_for(lambda: etcd_starts(lab, name) == before + 1, 5, "start-etcd counted")

        # etcd crashes by itself (no fault: the supervisor will restart it after its
        # back-off); stop-etcd, through the API for timing, lands within that back-off.
        before = etcd_starts(lab, name)
        lab.lab.exec(h, ["pkill", "-KILL", "-x", "etcd"])
        lab.lab.stop_etcd(name)
        returned = etcd_starts(lab, name)
        assert returned <= before + 1  # a restart may come before stop-etcd has taken hold
        seen = etcd_pids_seen(lab, name, WATCH_S)
        assert seen == "", f"etcd ran again after stop-etcd returned: pid {seen}"
        assert etcd_starts(lab, name) == returned, "etcd was started again after stop-etcd"
    finally:
        cli("lab", "start-etcd", name, "--dir", str(lab.dir))
    wait_for(lambda: all(healthy(lab, n) for n in ("etcd-1", "etcd-2", "etcd-3")), 30,
             "the cluster to be healthy after start-etcd")


def nothing_across(lab: LabHandle, name: str) -> None:
    state = lab.state
    left = {n: lines for n, lines in lab.lab.across(state, state.host(name)).items() if lines}
    assert not left, f"TCP connections across the partition of {name}: {left}"


def test_partition_lets_nothing_through(lab: LabHandle) -> None:
    """A partition holds until heal, also for what was under way when it began or was sent
    into it: etcd-3 is cut off, etcd-1 takes writes and is stopped with etcd-2; once healed,
    etcd-3 (alone) must still lack the writes. (It used to get them a second or three after
    heal: the stopped etcd's kernel kept its connections to etcd-3 and sent what they held
    once the way was open.)"""
    cli("lab", "partition", "etcd-3", "--dir", str(lab.dir))
    stopped: list[str] = []
    try:
        nothing_across(lab, "etcd-3")
        wait_for(lambda: healthy(lab, "etcd-1"), 20, "etcd-1 healthy without etcd-3")
        res = etcdctl_txn(lab.dir, [(f"/partition/{i:03d}", f"v{i}") for i in range(100)],
                          endpoint=lab.client_url("etcd-1"))
        assert "SUCCESS" in res.stdout, res.stderr
        for name in ("etcd-1", "etcd-2"):
            cli("lab", "stop-etcd", name, "--dir", str(lab.dir))
            stopped.append(name)
        nothing_across(lab, "etcd-3")
    finally:
        cli("lab", "heal", "etcd-3", "--dir", str(lab.dir))
    try:
        # The kernel's retransmissions back off to seconds: give a leak its time.
        time.sleep(6)
        report = json.loads(cli("inspect", "-i", str(lab.dir / "inventory.yaml"), "-o", "json",
                                check=False).stdout)
        m = {x["name"]: x for x in report["members"]}
        assert m["etcd-1"]["source"] == "disk" and m["etcd-3"]["etcd_running"], report
        assert m["etcd-3"]["last_index"] < m["etcd-1"]["last_index"], (m["etcd-1"], m["etcd-3"])
        assert m["etcd-3"]["revision"] < m["etcd-1"]["revision"], (m["etcd-1"], m["etcd-3"])
        assert report["chosen"] in ("etcd-1", "etcd-2"), report["reason"]
    finally:
        for name in stopped:
            cli("lab", "start-etcd", name, "--dir", str(lab.dir))
    wait_for(lambda: all(healthy(lab, n) for n in ("etcd-1", "etcd-2", "etcd-3")), 30,
             "the cluster to be healthy after heal and start-etcd")


def test_partition_holds_through_a_reboot(lab: LabHandle) -> None:
    """A partitioned host that is killed and booted again stays cut off: its new network
    namespace gets the partition's rules back, so it cannot reach its peers through this
    machine (the gateway of both lab networks) from its management address."""
    peer = lab.state.host("etcd-1").peer_ip
    cli("lab", "partition", "etcd-3", "--dir", str(lab.dir))
    try:
        cli("lab", "kill-host", "etcd-3", "--dir", str(lab.dir))
        cli("lab", "revive-host", "etcd-3", "--dir", str(lab.dir))
        res = ssh(lab.dir, lab.ip("etcd-3"),
                  f"timeout 2 bash -c 'echo > /dev/tcp/{peer}/2380' && echo reached")
        assert "reached" not in res.stdout, "the rebooted host reached a peer"
        wait_for(lambda: lab.lab.etcd_running(lab.state.host("etcd-3")), 90,
                 "etcd to start on the rebooted host")
        time.sleep(3)  # etcd dials its peers at once, and again every 100 ms
        nothing_across(lab, "etcd-3")
        assert not healthy(lab, "etcd-3"), "a cut-off member alone has no quorum"
    finally:
        cli("lab", "heal", "etcd-3", "--dir", str(lab.dir))
    wait_for(lambda: healthy(lab, "etcd-3"), 30, "etcd-3 to be healthy after heal")

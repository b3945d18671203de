"""doctor on a real lab (TLS and user/password auth; static pods with etcd 3.6, systemd with an
old 3.5): the healthy lab, then each condition made for real, reported with its check and
exit code; no secret in any output; a host that is gone costs about a second."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from etcd_recovery.lab import pki
from etcd_recovery.live import EtcdClient
from etcd_recovery.proto import etcdserver_pb2 as pb

from .conftest import LabHandle, cli, etcdctl, ssh


def doctor(lab: LabHandle, *args: str, inventory: str | None = None
           ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = cli("doctor", "-i", inventory or str(lab.lab.inventory_path), "-o", "json", *args,
               check=False, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return proc, report


# Latencies (etcd's own, and the reads doctor times): on a machine running other lab tests at
# once they can pass a threshold for real (a warning, never a failure here); every other check
# must be exact.
LOAD = {"metric-wal-fsync", "metric-backend-commit", "metric-apply", "metric-peer-rtt",
        "read-serializable", "read-linearizable"}


def bad(report: dict[str, Any]) -> dict[tuple[str, str | None], str]:
    found = {(c["check"], c["member"]): c["status"] for c in report["checks"]
             if c["status"] != "ok"}
    return {k: v for k, v in found.items() if not (k[0] in LOAD and v == "warn")}


def load_warned(report: dict[str, Any]) -> bool:
    return any(c["check"] in LOAD and c["status"] == "warn" for c in report["checks"])


def row(report: dict[str, Any], check: str, member: str | None = None) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["checks"]
                                   if c["check"] == check and c["member"] == member]
    assert len(found) == 1, (check, member, report["checks"])
    return found[0]


def wait_leader(lab: LabHandle, via: str, timeout: float = 30) -> None:
    """Wait until ``via`` knows a leader (after a member or host that may have led went)."""
    deadline = time.monotonic() + timeout
    while True:
        st = etcdctl(lab.dir, "endpoint status -w json", lab.client_url(via))
        if st.returncode == 0 and json.loads(st.stdout)[0]["Status"].get("leader"):
            return
        assert time.monotonic() < deadline, f"{via} knows no leader after {timeout} s"
        time.sleep(0.1)


def alarm(lab: LabHandle, action: Any, member_id: int) -> None:
    """Raise or clear NOSPACE through the Maintenance Alarm API (etcdctl can only list and
    disarm)."""
    inv = lab.lab.inventory()
    user, password = inv.credentials()
    endpoint = lab.client_url("etcd-1").removeprefix("https://")
    with EtcdClient(endpoint, ca_file=inv.tls.ca, cert_file=inv.tls.cert, key_file=inv.tls.key,
                    username=user, password=password) as client:
        client._call("Maintenance.Alarm", client._maintenance.Alarm,
                     pb.AlarmRequest(action=action, memberID=member_id, alarm=pb.NOSPACE))


@pytest.mark.parametrize(("runtime", "build", "data_disk"),
                         [("static-pod", "3.6-newest", True), ("systemd", "3.5-old", False)])
def test_doctor_on_the_lab(make_lab: Callable[..., LabHandle], runtime: str,
                           build: str, data_disk: bool) -> None:
    lab = make_lab(members=3, runtime=runtime, version=build, keys=200, auth=True,
                   data_disk=data_disk)
    secrets = [(lab.dir / "etcd-root-password").read_text().strip()]
    for key in (lab.dir / "pki" / "client.key", lab.dir / "ssh" / "id_ed25519"):
        secrets += [x for x in key.read_text().splitlines() if x and "-----" not in x]

    # -- healthy. With the data dir on a disk of its own (as on a production host): all ok,
    # exit 0. On the root filesystem (the lab's default layout): a warning. On etcd 3.5.16:
    # the patch release that fixes the bugs a recovery meets.
    proc, rep = doctor(lab)
    expected = {} if data_disk else {("data-dir-fs", f"etcd-{i}"): "warn" for i in (1, 2, 3)}
    if build == "3.5-old":
        expected |= {("versions", f"etcd-{i}"): "warn" for i in (1, 2, 3)}
        assert row(rep, "versions", "etcd-1")["figure"].endswith("move to 3.5.25")
        assert row(rep, "metric-range", "etcd-1")["figure"] == "not exported"
    assert bad(rep) == expected, rep
    if expected or load_warned(rep):
        assert proc.returncode == 1 and rep["exit_code"] == 1
    else:
        assert proc.returncode == 0 and rep["exit_code"] == 0 and rep["status"] == "ok"
    if data_disk:
        assert row(rep, "data-dir-fs", "etcd-1")["figure"] == "/var/lib/etcd"
    assert rep["elapsed_s"] < 15
    assert row(rep, "rehearse-plan")["status"] == "ok"
    assert row(rep, "membership")["figure"] == "3 members, same on all"
    assert row(rep, "metric-wal-fsync", "etcd-1")["details"]["count"] > 0
    assert row(rep, "inventory-config", "etcd-2")["status"] == "ok"
    others = sorted({c["check"] for c in rep["checks"]} - {"data-dir-fs", "versions"})
    proc, sub = doctor(lab, *[a for n in others for a in ("--check", n)])
    assert bad(sub) == {}, sub
    assert (proc.returncode, sub["status"]) == ((1, "warn") if load_warned(sub) else (0, "ok"))
    # no secret in any output: the etcd password, the client key, the SSH key
    outputs = [proc.stdout, proc.stderr]
    for fmt in ("table", "prometheus"):
        p = cli("doctor", "-i", str(lab.lab.inventory_path), "-o", fmt, check=False,
                timeout=120)
        assert "Traceback" not in p.stderr
        if fmt == "table":   # its last line: "N ok, W warning(s), F failed in S s; exit X"
            found = re.search(r"(\d+) ok, (\d+) warning\(s\), (\d+) failed in .*; exit (\d)",
                              p.stdout)
            assert found, p.stdout
            _, warned, failed, code = (int(x) for x in found.groups())
        else:
            gauges = [ln for ln in p.stdout.splitlines()
                      if ln.startswith("etcd_recovery_doctor_check_status{")]
            warned = sum(ln.endswith(" 1") for ln in gauges)
            failed = sum(ln.endswith(" 2") for ln in gauges)
            code = int(re.search(r"^etcd_recovery_doctor_exit_code\{.*\} (\d+)$", p.stdout,
                                 re.M).group(1))  # type: ignore[union-attr]
        assert (failed, p.returncode, code) == (0, 1 if warned else 0, p.returncode), p.stdout
        assert warned or not expected, p.stdout   # the warnings the JSON run found, at least
        outputs += [p.stdout, p.stderr]
    assert "data-dir-fs" in outputs[2] and 'check="alarms",member=""} 0' in outputs[4]
    for text in outputs:
        for s in secrets:
            assert s not in text

    # -- a certificate that expires soon: a CA bundle whose first certificate has 20 days
    ca = next(p for p in row(rep, "certificates", "etcd-2")["details"]["files"]
              if p.endswith("/ca.crt"))
    soon = pki.make_ca("doctor-soon", validity=dt.timedelta(days=20))
    b64 = base64.b64encode(soon.cert_pem).decode()
    ip2 = lab.ip("etcd-2")
    res = ssh(lab.dir, ip2, f"cp {ca} /root/ca.orig && echo {b64} | base64 -d > /root/soon "
                            f"&& cat /root/soon /root/ca.orig > {ca}.new && mv {ca}.new {ca}")
    assert res.returncode == 0, res.stderr
    proc, rep = doctor(lab, "--check", "certificates")
    c = row(rep, "certificates", "etcd-2")
    assert (c["status"], proc.returncode) == ("warn", 1), c
    assert c["figure"].startswith(("19 days", "20 days")) and "ca.crt" in c["figure"]
    assert row(rep, "certificates", "etcd-1")["status"] == "ok"
    assert ssh(lab.dir, ip2, f"cp /root/ca.orig {ca}").returncode == 0

    # -- an alarm raised (NOSPACE, through the Maintenance API)
    st = json.loads(etcdctl(lab.dir, "endpoint status -w json",
                            endpoint=lab.client_url("etcd-3")).stdout)
    member_id = int(st[0]["Status"]["header"]["member_id"])
    alarm(lab, pb.AlarmRequest.ACTIVATE, member_id)
    try:
        proc, rep = doctor(lab, "--check", "alarms", "--check", "endpoint-status")
        c = row(rep, "alarms")
        assert (c["status"], c["figure"], proc.returncode) == ("fail", "NOSPACE", 3), c
        assert "NOSPACE on etcd-3" in c["message"]
    finally:
        alarm(lab, pb.AlarmRequest.DEACTIVATE, member_id)
    proc, rep = doctor(lab, "--check", "alarms")
    assert proc.returncode == 0, rep

    # -- a learner left unpromoted (added, never started)
    res = etcdctl(lab.dir, "member add doctor-learner --learner "
                           "--peer-urls=https://172.31.16.99:2380")
    assert res.returncode == 0, res.stderr
    learner_id = re.search(r"Member +([0-9a-f]+) added", res.stdout)  # (%16x: padded)
    assert learner_id is not None, res.stdout
    try:
        proc, rep = doctor(lab, "--check", "learners")
        c = row(rep, "learners")
        assert (c["status"], proc.returncode) == ("warn", 1), c
        assert learner_id.group(1) in c["message"]
        proc, rep = doctor(lab, "--check", "learners", "--check", "inventory")
        assert proc.returncode == 3 and row(rep, "inventory")["status"] == "fail"
        assert "172.31.16.99" in row(rep, "inventory")["message"]
    finally:
        res = etcdctl(lab.dir, f"member remove {learner_id.group(1)}")
        assert res.returncode == 0, res.stderr

    # -- an inventory that drifted: a member renamed
    data = yaml.safe_load(lab.lab.inventory_path.read_text())
    for m in data["members"]:
        if m["name"] == "etcd-3":
            m["name"] = "etcd-9"
    drifted = lab.dir / "drifted.yaml"
    drifted.write_text(yaml.safe_dump(data))
    proc, rep = doctor(lab, "--check", "inventory", inventory=str(drifted))
    c = row(rep, "inventory")
    assert (c["status"], proc.returncode) == ("fail", 3), c
    assert "renamed" in c["message"] and "etcd-9" in c["message"]

    # -- an inventory that drifted: a member moved (its data dir elsewhere in the inventory)
    data = yaml.safe_load(lab.lab.inventory_path.read_text())
    for m in data["members"]:
        if m["name"] == "etcd-2":
            m["data_dir"] = "/var/lib/etcd-moved"
    moved = lab.dir / "moved.yaml"
    moved.write_text(yaml.safe_dump(data))
    proc, rep = doctor(lab, "--check", "inventory-config", inventory=str(moved))
    c = row(rep, "inventory-config", "etcd-2")
    assert (c["status"], proc.returncode) == ("fail", 3), c
    assert "data_dir is '/var/lib/etcd-moved' in the inventory but '/var/lib/etcd'" \
        in c["message"], c
    assert row(rep, "inventory-config", "etcd-1")["status"] == "ok"

    # -- a host clock moved. The lab's hosts share this machine's kernel clock, which a test
    # must not move, so etcd-3's clock is moved as its commands see it: a `date` 5 s ahead,
    # first in the PATH of SSH commands (the clock doctor reads is `date` run there).
    ip3 = lab.ip("etcd-3")
    shim = "/usr/local/bin/date"
    res = ssh(lab.dir, ip3, f"printf '%s\\n' '#!/bin/sh' 'exec /bin/date -d "
                            f"@$(( $(/bin/date +%s) + 5 )) \"$@\"' > {shim} && chmod +x {shim}")
    assert res.returncode == 0, res.stderr
    try:
        proc, rep = doctor(lab, "--check", "clock-skew")
        c = row(rep, "clock-skew")
        assert (c["status"], proc.returncode) == ("warn", 1), c
        assert "etcd-3" in c["message"], c
    finally:
        assert ssh(lab.dir, ip3, f"rm -f {shim}").returncode == 0
    proc, rep = doctor(lab, "--check", "clock-skew")
    assert row(rep, "clock-skew")["status"] == "ok", rep

    # -- a full disk where a recovery keeps its backups: a small file system of its own
    # (tmpfs, 4 MiB) on etcd-1's /var/lib/etcd-recovery, filled
    ip1 = lab.ip("etcd-1")
    fill = ("mkdir -p /var/lib/etcd-recovery && mount -t tmpfs -o size=4m tmpfs "
            "/var/lib/etcd-recovery && (dd if=/dev/zero of=/var/lib/etcd-recovery/fill bs=1M "
            "count=8 2>/dev/null; true)")
    assert ssh(lab.dir, ip1, fill).returncode == 0
    try:
        proc, rep = doctor(lab, "--check", "disk-space")
        c = row(rep, "disk-space", "etcd-1")
        assert (c["status"], proc.returncode) == ("fail", 3), c
        assert c["details"]["path"] == "/var/lib/etcd-recovery" and c["value"] < 1 << 20, c
        assert row(rep, "disk-space", "etcd-2")["status"] == "ok", rep
    finally:
        assert ssh(lab.dir, ip1, "umount /var/lib/etcd-recovery").returncode == 0

    # -- a member down (etcd stopped, the host up)
    lab.lab.stop_etcd("etcd-3")
    # etcd-3 may have led: the others' status says "no leader" until they elect one, which
    # is not what this asks about. Wait for a leader first (a full run saw etcd-1 fail here).
    wait_leader(lab, "etcd-1")
    proc, rep = doctor(lab)
    assert proc.returncode == 3
    assert row(rep, "endpoint-status", "etcd-3")["status"] == "fail"
    assert "not running" in row(rep, "endpoint-status", "etcd-3")["message"]
    assert row(rep, "ssh", "etcd-3")["status"] == "ok", rep
    assert row(rep, "rehearse-disk-reader", "etcd-3")["status"] == "ok", rep
    assert row(rep, "endpoint-status", "etcd-1")["status"] == "ok", rep
    lab.lab.start_etcd("etcd-3")
    lab.lab.wait_healthy(lab.state, timeout=90)

    # -- a host gone: about a second, once
    lab.lab.kill_host("etcd-2")
    wait_leader(lab, "etcd-1")   # (etcd-2 may have led: as above)
    t0 = time.monotonic()
    proc, rep = doctor(lab)
    took = time.monotonic() - t0
    assert proc.returncode == 3
    assert row(rep, "ssh", "etcd-2")["status"] == "fail"
    assert "timed out after 1 s" in row(rep, "ssh", "etcd-2")["message"]
    assert row(rep, "endpoint-status", "etcd-1")["status"] == "ok", rep
    assert rep["elapsed_s"] < 8 and took < 15, (rep["elapsed_s"], took)

"""What would keep etcd from starting is refused before anything changes, on both runtimes:
the member to keep has lost its peer address, another process holds its peer port, its peer
certificate has expired, its data dir is mounted read-only. Each case: `plan` is refused
(`refused: host`, exit 3) with the member, the check and the finding; `execute --confirm` is
refused the same way and every host is exactly as before; with the cause undone, the
recovery runs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from etcd_recovery.errors import EXIT_REFUSED

from .conftest import LabHandle, cli, ssh
from .recovery_scenario import check_recovered, inventory

STATE = ("md5sum {config}; ls -la --time-style=full-iso /var/lib/etcd-recovery 2>&1 | "
         "grep -v total; pgrep -x etcd | wc -l; find /var/lib/etcd -printf '%p %s %T@\\n' | "
         "sort")


def expired_cert() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd-1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now - dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(("runtime", "version"), [("static-pod", "3.5-old"),
                                                  ("systemd", "3.6-newest")])
def test_what_would_keep_etcd_from_starting_is_refused_first(
        make_lab: Callable[..., LabHandle], runtime: str, version: str) -> None:
    lab = make_lab(members=3, runtime=runtime, version=version, keys=100)
    inv = inventory(lab)
    kept = lab.state.host("etcd-1")
    for gone in ("etcd-2", "etcd-3"):
        cli("lab", "kill-host", gone, "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-1", "--dir", str(lab.dir))
    ok = json.loads(cli("inspect", "-i", inv, "-o", "json").stdout)
    assert ok["chosen"] == "etcd-1", ok["reason"]
    checks = ok["members"][0]["host_checks"]
    assert checks and all(c["ok"] for c in checks), checks
    config = "/etc/kubernetes/manifests/etcd.yaml" if runtime == "static-pod" else \
        "/etc/etcd.env" if version.startswith("3.6") else "/etc/etcd/etcd.env"
    peer_cert = next(c["subject"].split()[1] for c in checks
                     if c["subject"].startswith("--peer-cert-file "))
    data = "/var/lib/etcd"

    def on_kept(command: str) -> None:
        res = ssh(lab.dir, kept.mgmt_ip, command)
        assert res.returncode == 0, (command, res.stderr)

    def state() -> str:
        return ssh(lab.dir, kept.mgmt_ip, STATE.format(config=config)).stdout

    # SO_REUSEADDR (SOL_SOCKET 1, 2): etcd's sockets just closed may be in TIME_WAIT
    hog = ("import socket, time; s = socket.socket(); s.setsockopt(1, 2, 1); "
           f"s.bind(('{kept.peer_ip}', 2380)); s.listen(); time.sleep(3600)")
    cases: list[tuple[str, Callable[[], object], Callable[[], object], str]] = [
        ("peer address gone",
         lambda: cli("lab", "partition", "etcd-1", "--dir", str(lab.dir)),
         lambda: cli("lab", "heal", "etcd-1", "--dir", str(lab.dir)),
         f"etcd-1's peer listen URL https://{kept.peer_ip}:2380: {kept.peer_ip} is not an "
         "address of the host"),
        ("peer port taken",
         lambda: on_kept(f'systemd-run --unit=er-porthog python3 -c "{hog}" && '
                         f"for i in $(seq 50); do ss -Htln | grep -q '{kept.peer_ip}:2380 ' "
                         "&& exit 0; sleep 0.1; done; exit 1"),
         lambda: on_kept("systemctl stop er-porthog"),
         f"port 2380 on {kept.peer_ip} is held by python3 (pid "),
        ("peer certificate expired",
         lambda: on_kept(f"cp -p {peer_cert} /root/peer.orig && printf '%s' "
                         f"'{expired_cert().decode()}' > {peer_cert}"),
         lambda: on_kept(f"cp -p /root/peer.orig {peer_cert}"),
         # kubespray's layout names one file for --cert-file and --peer-cert-file
         f" {peer_cert}: expired "),
        ("data dir read-only",
         lambda: on_kept(f"mount --bind {data} {data} && mount -o remount,ro,bind {data}"),
         lambda: on_kept(f"umount {data}"),
         f"etcd-1's data dir {data}: {data} is mounted read-only"),
    ]
    problems = []
    for what, make, undo, words in cases:
        make()
        try:
            before = state()
            seen = cli("inspect", "-i", inv, "-o", "json", check=False)
            got = json.loads(seen.stdout) if seen.stdout.strip().startswith("{") else {}
            if seen.returncode != EXIT_REFUSED or got.get("refused") != "host" or \
                    words not in (got.get("reason") or ""):
                problems.append(f"{what}: inspect exit {seen.returncode}, "
                                f"{got.get('refused')}: {got.get('reason')}")
            plan = cli("plan", "-i", inv, check=False)
            if plan.returncode != EXIT_REFUSED or words not in plan.stdout + plan.stderr:
                problems.append(f"{what}: plan exit {plan.returncode}: {plan.stderr[-500:]}")
            run = cli("execute", "-i", inv, "--confirm", check=False, timeout=120)
            said = run.stdout + run.stderr
            if run.returncode != EXIT_REFUSED or words not in said or "Traceback" in said:
                problems.append(f"{what}: execute exit {run.returncode}: {said[-500:]}")
            if state() != before:
                problems.append(f"{what}: the kept member's host changed")
        finally:
            undo()
    assert not problems, "\n".join(problems)
    # The cause undone, nothing stands in the way.
    res = cli("execute", "-i", inv, "--confirm", "-o", "json", check=False, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    check_recovered(lab, ["etcd-1"], keys=100, writes=0)

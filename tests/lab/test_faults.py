"""Faults and refusals on a real lab: quorum still there, not enough disk, a stale lock from
a dead run, no secret in any output, nothing world-readable left on the hosts. The lab's own
faults hold until undone (the checks here run on each runtime's lab from test_lab_*.py), and
`lab down` removes only what a lab wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from etcd_recovery.errors import EXIT_REFUSED
from etcd_recovery.lab.builds import version_of

from .conftest import LabHandle, cli, ssh
from .recovery_scenario import check_recovered, inventory, lose_quorum

SECRET_MARKERS = ("PRIVATE KEY", "BEGIN OPENSSH", "BEGIN EC")


def no_secrets(lab: LabHandle, text: str) -> None:
    for marker in SECRET_MARKERS:
        assert marker not in text
    key_body = (lab.dir / "pki" / "client.key").read_text().splitlines()[1]
    assert key_body not in text
    ssh_body = (lab.dir / "ssh" / "id_ed25519").read_text().splitlines()[1]
    assert ssh_body not in text


def unchanged(lab: LabHandle, names: list[str]) -> None:
    for name in names:
        res = ssh(lab.dir, lab.ip(name), "test -f /etc/kubernetes/manifests/etcd.yaml && "
                                         "test -d /var/lib/etcd/member/wal")
        assert res.returncode == 0, f"{name} was changed"


def test_refusals_then_recovery(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="static-pod", version="3.4", keys=300)
    inv = inventory(lab)
    # Quorum still there: refused, and the message names the override.
    res = cli("execute", "-i", inv, "--confirm", check=False)
    assert res.returncode == 3 and "--allow-quorum" in res.stderr
    no_secrets(lab, res.stdout + res.stderr)
    unchanged(lab, ["etcd-1", "etcd-2", "etcd-3"])

    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    for fmt in ("json", "markdown", "table"):
        no_secrets(lab, cli("plan", "-i", inv, "-o", fmt).stdout)

    # Not enough disk for the backup on etcd-3: refused before anything changes.
    small = ("mkdir -p /var/lib/etcd-recovery && "
             "mount -t tmpfs -o size=64k,mode=0700 tmpfs /var/lib/etcd-recovery")
    assert ssh(lab.dir, lab.ip("etcd-3"), small).returncode == 0
    res = cli("execute", "-i", inv, "--confirm", check=False)
    assert res.returncode == 3, res.stderr
    assert "etcd-3: not enough free disk" in res.stderr
    unchanged(lab, ["etcd-1", "etcd-3"])
    assert not (lab.dir / ".etcd-recovery" / "current").exists()
    assert ssh(lab.dir, lab.ip("etcd-3"), "umount /var/lib/etcd-recovery").returncode == 0

    # A lock left by a run that died: refused, with the way out named; then taken over.
    stale = ("mkdir -p /var/lib/etcd-recovery && echo dead-run-0000 > "
             "/var/lib/etcd-recovery/lock")
    assert ssh(lab.dir, lab.ip("etcd-3"), stale).returncode == 0
    res = cli("execute", "-i", inv, "--confirm", check=False)
    assert res.returncode == 3 and "--take-over-lock" in res.stderr and "dead-run-0000" in \
        res.stderr
    unchanged(lab, ["etcd-1", "etcd-3"])
    # The lock on etcd-1, taken before etcd-3 refused, was released again.
    assert ssh(lab.dir, lab.ip("etcd-1"), "test ! -e /var/lib/etcd-recovery/lock"
               ).returncode == 0
    res = cli("execute", "-i", inv, "--confirm", "--take-over-lock", "-o", "json",
              timeout=600)
    assert json.loads(res.stdout)["ok"]
    no_secrets(lab, res.stdout + res.stderr)
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=300, writes=100)

    # Nothing the tool wrote on a host is readable by others; no secret in the journal.
    for name in ("etcd-1", "etcd-3"):
        res = ssh(lab.dir, lab.ip(name), "find /var/lib/etcd-recovery -perm /o+rwx | head -5; "
                                         "stat -c %a /var/lib/etcd-recovery")
        assert res.returncode == 0 and res.stdout.split() == ["700"], res.stdout
    for path in (lab.dir / ".etcd-recovery").rglob("*"):  # journals, plans shown by ID
        assert path.stat().st_mode & 0o077 == 0, path
        if path.is_file():
            no_secrets(lab, path.read_text())


# ------------------------------------------------------------------ lab down owns its files

USER_FILES = {"inventory.yaml": "# the user's own cluster\n",
              "known_hosts": "h1 ssh-ed25519 AAAA\n", "pki/ca.crt": "the user's CA\n",
              "ssh/id_ed25519": "the user's key\n"}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_down_and_up_refuse_a_directory_that_holds_no_lab(tmp_path: Path) -> None:
    """A directory laid out like a real cluster's (inventory.yaml, known_hosts, pki/, ssh/)
    but without lab.json is no lab's: `lab down` removes nothing and says so, and `lab up`
    will not write over those files."""
    for rel, text in USER_FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    before = snapshot(tmp_path)
    res = cli("lab", "down", "--dir", str(tmp_path), check=False)
    assert res.returncode == EXIT_REFUSED, res.stdout + res.stderr
    assert str(tmp_path) in res.stderr and "lab.json" in res.stderr, res.stderr
    assert snapshot(tmp_path) == before
    res = cli("lab", "up", "--dir", str(tmp_path), "--members", "1", "--etcd-version",
              version_of("demo"), "--keys", "0", check=False)
    assert res.returncode == EXIT_REFUSED, res.stdout + res.stderr
    assert str(tmp_path) in res.stderr and "inventory.yaml" in res.stderr, res.stderr
    assert snapshot(tmp_path) == before


def test_down_removes_what_the_lab_wrote_and_nothing_else(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=1, runtime="static-pod", version="demo", keys=0)
    state = lab.state
    wrote = set(snapshot(lab.dir))
    assert {"lab.json", "inventory.yaml", "known_hosts", "pki/ca.crt", "pki/client.key",
            "ssh/id_ed25519"} <= wrote, wrote
    # The user keeps notes and a certificate of their own in the lab's directory.
    (lab.dir / "notes.txt").write_text("mine\n")
    (lab.dir / "pki" / "mine.crt").write_text("mine too\n")
    (lab.dir / ".etcd-recovery").mkdir()
    (lab.dir / ".etcd-recovery" / "run.journal.jsonl").write_text("{}\n")
    res = cli("lab", "down", "--dir", str(lab.dir))
    assert f"container {state.hosts[0].container}" in res.stdout, res.stdout
    assert snapshot(lab.dir) == {"notes.txt": "mine\n", "pki/mine.crt": "mine too\n",
                                 ".etcd-recovery/run.journal.jsonl": "{}\n"}
    assert not (lab.dir / "ssh").exists(), "the lab's own directory, now empty, goes too"
    assert lab.lab.container(state.hosts[0]) is None
    # Taken down once, the directory holds no lab any more: a second down is refused.
    assert cli("lab", "down", "--dir", str(lab.dir), check=False).returncode == EXIT_REFUSED

"""Labs on more than one etcd: a mixed 3.5.16 / 3.5.30 cluster, inspected and recovered, and a
lab running whatever etcd build a directory holds (``--etcd-binary``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import LabHandle, cli, ssh
from .recovery_scenario import check_recovered, inventory, lose_quorum, run_recovery


def test_mixed_versions_are_shown_then_recovered(make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.5.16,3.5.16,3.5.30", keys=200)
    status = json.loads(cli("lab", "status", "--dir", str(lab.dir), "-o", "json").stdout)
    assert [h["etcd_version"] for h in status["hosts"]] == ["3.5.16", "3.5.16", "3.5.30"]
    # All running: the live Status of each member says its version.
    res = cli("inspect", "-i", inventory(lab), "-o", "json", check=False)
    report = json.loads(res.stdout)
    got = {m["name"]: (m["etcd_version"], m["version_source"]) for m in report["members"]}
    assert got == {"etcd-1": ("3.5.16", "live Status"), "etcd-2": ("3.5.16", "live Status"),
                   "etcd-3": ("3.5.30", "live Status")}
    table = cli("inspect", "-i", inventory(lab), check=False)
    assert "members run different etcd versions: 3.5.16, 3.5.30" in table.stdout + table.stderr
    # With etcd stopped on etcd-3, its version comes from the binary etcd.service runs.
    cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))
    report = json.loads(cli("inspect", "-i", inventory(lab), "-o", "json",
                            check=False).stdout)
    m3 = next(m for m in report["members"] if m["name"] == "etcd-3")
    assert m3["etcd_version"] == "3.5.30" and m3["etcd_running"] is False, m3
    assert m3["version_source"].endswith("/etcd --version"), m3
    cli("lab", "start-etcd", "etcd-3", "--dir", str(lab.dir))
    # Quorum lost and recovered across the two versions: the newest member runs 3.5.16, the
    # stale one 3.5.30 and comes back as a learner.
    summary = run_recovery(lab, members=3, keys=200)
    assert summary["ok"]


def test_any_etcd_build_from_a_directory(tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree("/opt/etcd-3.5.30", build)
    lab_dir = tmp_path / "lab"
    try:
        up = cli("lab", "up", "--dir", str(lab_dir), "--members", "1", "--runtime", "static-pod",
                 "--etcd-binary", str(build), "--keys", "10")
        assert "etcd 3.5.30" in up.stdout
        state = LabHandle(lab_dir).state
        assert state.etcd_dirs == {"3.5.30": str(build)}
        report = json.loads(cli("inspect", "-i", str(lab_dir / "inventory.yaml"), "-o", "json",
                                check=False).stdout)
        assert report["members"][0]["etcd_version"] == "3.5.30", report
    finally:
        cli("lab", "down", "--dir", str(lab_dir), check=False)
    bad = cli("lab", "up", "--dir", str(tmp_path / "bad"), "--etcd-binary", str(tmp_path),
              check=False)
    assert bad.returncode == 2 and "no executable etcd" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


RESTORE_WITH = {
    # static pod: the image tag picks the build (kubelet-lite), as a registry holds every image;
    # run through a saved plan, which carries the image.
    "static-pod": ("--etcd-image", "registry.k8s.io/etcd:3.5.30-0", "etcd_image"),
    # systemd: the build on the host is installed where etcd.service runs etcd.
    "systemd": ("--etcd-binary", "/opt/etcd-3.5.30/etcd", "etcd_binary"),
}


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_the_kept_member_is_restored_from_another_build(make_lab: Callable[..., LabHandle],
                                                        runtime: str) -> None:
    # etcd-1 runs 3.5.16 and is restored with the 3.5.30 build: every lab build is on every
    # host under /opt/etcd-<version>.
    lab = make_lab(members=3, runtime=runtime, version="3.5.16,3.5.16,3.5.30", keys=200)
    lose_quorum(lab, newest="etcd-1", stale="etcd-2", gone=["etcd-3"], writes=100)
    option, value, param = RESTORE_WITH[runtime]
    plan = json.loads(cli("plan", "-i", inventory(lab), "-o", "json", option, value).stdout)
    if plan["chosen"] != "etcd-1":  # a partition leak: etcd-2 took the writes too (a tie)
        assert plan["reason"].startswith("tie:"), plan["reason"]
    kept = plan["chosen"]
    force = next(s for s in plan["steps"] if s["kind"] == "force_new_cluster")
    assert force["params"][param] == value, force["params"]
    # The advisory follows the new build's version: 3.5.30 carries etcd's own commit fix.
    assert any("itself raises the commit" in a for a in plan["advisories"]
               if a.startswith(f"{kept} (etcd 3.5.30)")), plan["advisories"]
    if runtime == "static-pod":
        saved = lab.dir / "plan.json"
        saved.write_text(json.dumps(plan))
        res = cli("execute", "-i", inventory(lab), "--plan", str(saved), "--confirm", "-o",
                  "json")
    else:
        res = cli("execute", "-i", inventory(lab), "--confirm", option, value, "-o", "json")
    summary = json.loads(res.stdout)
    assert summary["ok"]
    check_recovered(lab, ["etcd-1", "etcd-2"], keys=200, writes=100)
    report = json.loads(cli("inspect", "-i", inventory(lab), "-o", "json",
                            check=False).stdout)
    versions = {m["name"]: m["etcd_version"] for m in report["members"] if m["reachable"]}
    other = "etcd-2" if kept == "etcd-1" else "etcd-1"
    assert versions == {kept: "3.5.30", other: "3.5.16"}, versions
    if runtime == "systemd":
        # The binary it replaced (the lab's symlink to 3.5.16) is kept in the run's directory.
        orig = ssh(lab.dir, lab.ip(kept), f"readlink /var/lib/etcd-recovery/"
                                          f"{summary['run_id']}/etcd.binary.orig")
        assert orig.stdout.strip() == "/opt/etcd-3.5.16/etcd", orig
        # A build that is not there is a usage error naming it, before anything changes.
        bad = cli("plan", "-i", inventory(lab), "--allow-quorum", option, "/nowhere/etcd",
                  check=False)
        assert bad.returncode == 2 and "/nowhere/etcd" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr

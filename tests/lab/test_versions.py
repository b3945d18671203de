"""Labs on more than one etcd, all real builds (etcd_recovery/lab/builds.txt): a cluster in the
middle of a 3.5 -> 3.6 upgrade recovered with the kept member on each side; real 3.6.0 and its
force-new-cluster bug (etcd-io/etcd#20009), refused, then restored with a fixed build; the
learner that force-new-cluster leaves behind below 3.6.6 (etcd-io/etcd#20893), removed by the
plan's read-back; and a lab running whatever etcd build a directory holds (``--etcd-binary``)."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from etcd_recovery.lab.builds import version_of

from .conftest import LabHandle, cli, etcdctl, ssh
from .recovery_scenario import (
    check_recovered,
    execute,
    inventory,
    journal_events,
    lose_quorum,
)
from .verbs import wait_for

OLD, NEW = version_of("3.5-newest"), version_of("3.6-newest")


@pytest.mark.parametrize("kept", ["etcd-1", "etcd-3"])
def test_mixed_35_36_cluster_recovered_with_the_kept_member_on_each_side(
        make_lab: Callable[..., LabHandle], kept: str) -> None:
    # kubeadm upgrades one control-plane host at a time: etcd-3 already runs 3.6, the others
    # 3.5, and the cluster (so every 3.6 member's storage) stays at 3.5 until all are 3.6.
    lab = make_lab(members=3, runtime="static-pod",
                   version="3.5-newest,3.5-newest,3.6-newest", keys=200)
    status = json.loads(cli("lab", "status", "--dir", str(lab.dir), "-o", "json").stdout)
    assert [h["etcd_version"] for h in status["hosts"]] == [OLD, OLD, NEW]
    report = json.loads(cli("inspect", "-i", inventory(lab), "-o", "json", check=False).stdout)
    got = {m["name"]: (m["etcd_version"], m["storage_version"]) for m in report["members"]}
    assert got["etcd-3"] == (NEW, "3.5.0"), got
    assert got["etcd-1"][0] == OLD and got["etcd-2"][0] == OLD, got
    table = cli("inspect", "-i", inventory(lab), check=False)
    assert f"members run different etcd versions: {OLD}, {NEW}" in table.stdout + table.stderr
    stale = "etcd-3" if kept == "etcd-1" else "etcd-1"
    lose_quorum(lab, newest=kept, stale=stale, gone=["etcd-2"], writes=100)
    if kept == "etcd-3":
        # Restarted alone, the 3.6 member would make the cluster 3.6, which etcd-1's 3.5 refuses
        # to join (seen: "incompatible with current running cluster", then a promote that never
        # succeeds): refused before anything changes, with the way out.
        refused = cli("plan", "-i", inventory(lab), check=False)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "etcd-1" in refused.stderr and "cannot rejoin etcd-3" in refused.stderr and \
            "upgrade etcd-1 to etcd 3.6" in refused.stderr, refused.stderr
        return
    kept_version = OLD
    plan = json.loads(cli("plan", "-i", inventory(lab), "-o", "json").stdout)
    assert plan["chosen"] == kept, plan["reason"]
    assert any(a.startswith(f"{kept} (etcd {kept_version})") for a in plan["advisories"]), \
        plan["advisories"]
    summary = json.loads(execute(lab).stdout)
    assert summary["ok"], summary
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=200, writes=100)
    report = json.loads(cli("inspect", "-i", inventory(lab), "-o", "json", check=False).stdout)
    after = {m["name"]: m["etcd_version"] for m in report["members"] if m["reachable"]}
    # etcd-3 keeps its 3.6 build as a learner re-added; its storage stays at the cluster's 3.5.
    assert after == {"etcd-1": OLD, "etcd-3": NEW}, after
    assert all(m["storage_version"] in (None, "3.5.0") for m in report["members"]), report


def test_any_etcd_build_from_a_directory(tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(f"/opt/etcd-{OLD}", build)
    lab_dir = tmp_path / "lab"
    try:
        up = cli("lab", "up", "--dir", str(lab_dir), "--members", "1", "--runtime", "static-pod",
                 "--etcd-binary", str(build), "--keys", "10")
        assert f"etcd {OLD}" in up.stdout
        state = LabHandle(lab_dir).state
        assert state.etcd_dirs == {OLD: str(build)}
        report = json.loads(cli("inspect", "-i", str(lab_dir / "inventory.yaml"), "-o", "json",
                                check=False).stdout)
        assert report["members"][0]["etcd_version"] == OLD, report
    finally:
        cli("lab", "down", "--dir", str(lab_dir), check=False)
    bad = cli("lab", "up", "--dir", str(tmp_path / "bad"), "--etcd-binary", str(tmp_path),
              check=False)
    assert bad.returncode == 2 and "no executable etcd" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def force_new_cluster_by_hand_on_a_copy(lab: LabHandle, name: str) -> tuple[list[str], str]:
    """Run the host's own etcd with the static pod's flags and --force-new-cluster on a copy of
    its data dir (etcd itself is fenced by the lab's stop-etcd), list the members, remove every
    other one as a recovery must, and return (members listed, etcd's log). The copy and the
    process are the test's own; the member's data dir is not touched."""
    ip = lab.ip(name)
    manifest = yaml.safe_load(ssh(lab.dir, ip, "cat /etc/kubernetes/manifests/etcd.yaml").stdout)
    container = manifest["spec"]["containers"][0]
    version = container["image"].rsplit(":", 1)[1].removesuffix("-0")
    argv = [f"/opt/etcd-{version}/etcd",
            *[a for a in container["command"][1:] if not a.startswith("--data-dir=")],
            "--data-dir=/var/lib/etcd-copy", "--force-new-cluster=true"]
    start = ("rm -rf /var/lib/etcd-copy && cp -a /var/lib/etcd /var/lib/etcd-copy && "
             f"(setsid {shlex.join(argv)} >/root/fnc.log 2>&1 & echo $! >/root/fnc.pid)")
    assert ssh(lab.dir, ip, start).returncode == 0
    url = lab.client_url(name)
    try:
        wait_for(lambda: etcdctl(lab.dir, "endpoint health", url).returncode == 0, 30,
                 f"{name}: etcd {version} with --force-new-cluster healthy")
        listed = json.loads(etcdctl(lab.dir, "member list -w json", url).stdout)["members"]
        names = [m.get("name", "") for m in listed]
        for m in listed:
            if m.get("name") != name:
                etcdctl(lab.dir, f"member remove {m['ID']:x}", url, timeout=15)
        wait_for(lambda: "panic" in ssh(lab.dir, ip, "cat /root/fnc.log").stdout
                 or etcdctl(lab.dir, "endpoint health", url).returncode == 0, 15,
                 "etcd panicked or stayed healthy")
        return names, ssh(lab.dir, ip, "cat /root/fnc.log").stdout
    finally:
        ssh(lab.dir, ip, 'kill -9 "$(cat /root/fnc.pid)"; rm -rf /var/lib/etcd-copy')


RESTORE_WITH = {
    # static pod: the image tag picks the build (kubelet-lite), as a registry holds every image;
    # run through a saved plan, which carries the image.
    "static-pod": ("--etcd-image", f"registry.k8s.io/etcd:{NEW}-0", "etcd_image"),
    # systemd: the build on the host is installed where etcd.service runs etcd.
    "systemd": ("--etcd-binary", f"/opt/etcd-{NEW}/etcd", "etcd_binary"),
}


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_360_is_refused_then_restored_with_a_fixed_build(
        make_lab: Callable[..., LabHandle], runtime: str) -> None:
    # Every member runs real 3.6.0; every lab build is on every host under /opt/etcd-<version>.
    lab = make_lab(members=3, runtime=runtime, version="3.6.0", keys=200)
    lose_quorum(lab, newest="etcd-1", stale="etcd-2", gone=["etcd-3"], writes=100)
    refused = cli("plan", "-i", inventory(lab), check=False)
    assert refused.returncode == 3 and "etcd-io/etcd#20009" in refused.stderr, refused.stderr
    if runtime == "static-pod":
        # What 3.6.0 really does with the plan's force-new-cluster, on a copy: it starts, but
        # keeps a removed member in its membership, and removing it (remove-stale-members)
        # panics, for good: the entry is committed, so etcd panics again at every restart.
        # etcd-2 is stopped meanwhile: the copy, believing etcd-2 a member, would replicate to
        # it.
        cli("lab", "stop-etcd", "etcd-2", "--dir", str(lab.dir))
        listed, log = force_new_cluster_by_hand_on_a_copy(lab, "etcd-1")
        cli("lab", "start-etcd", "etcd-2", "--dir", str(lab.dir))
        assert "etcd-1" in listed and len(listed) > 1, listed
        assert "failed to delete member from store" in log, log[-3000:]
    option, value, param = RESTORE_WITH[runtime]
    plan = json.loads(cli("plan", "-i", inventory(lab), "-o", "json", option, value).stdout)
    assert plan["chosen"] == "etcd-1", plan["reason"]
    force = next(s for s in plan["steps"] if s["kind"] == "force_new_cluster")
    assert force["params"][param] == value, force["params"]
    # The advisories follow the new build's version: no refusal, etcd's own commit fix.
    assert not any("#20009" in a for a in plan["advisories"]), plan["advisories"]
    assert any("itself raises the commit" in a for a in plan["advisories"]
               if a.startswith(f"etcd-1 (etcd {NEW})")), plan["advisories"]
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
    assert versions == {"etcd-1": NEW, "etcd-2": "3.6.0"}, versions
    if runtime == "systemd":
        # The binary it replaced (the lab's symlink to 3.6.0) is kept in the run's directory.
        orig = ssh(lab.dir, lab.ip("etcd-1"), f"readlink /var/lib/etcd-recovery/"
                                              f"{summary['run_id']}/etcd.binary.orig")
        assert orig.stdout.strip() == "/opt/etcd-3.6.0/etcd", orig
        # A build that is not there is a usage error naming it, before anything changes.
        bad = cli("plan", "-i", inventory(lab), "--allow-quorum", option, "/nowhere/etcd",
                  check=False)
        assert bad.returncode == 2 and "/nowhere/etcd" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def with_snapshot_count(lab: LabHandle, count: int) -> None:
    """Restart each member, one at a time, with --snapshot-count=COUNT (a manifest change)."""
    for h in lab.state.hosts:
        res = ssh(lab.dir, h.mgmt_ip, "sed -i 's/--snapshot-count=[0-9]*/--snapshot-count="
                                      f"{count}/' /etc/kubernetes/manifests/etcd.yaml")
        assert res.returncode == 0, res.stderr
        wait_for(lambda h=h: etcdctl(lab.dir, "endpoint status -w json", h.client_url)
                 .returncode == 0 and f"--snapshot-count={count}" in
                 ssh(lab.dir, h.mgmt_ip, "ps -o args= -C etcd").stdout, 30,
                 f"{h.name} restarted with --snapshot-count={count}")
        wait_for(lambda: etcdctl(lab.dir, "endpoint health").returncode == 0, 30,
                 "every member healthy")


@pytest.mark.parametrize("role", ["3.6-pre-learner-fix", "3.6-newest"])
def test_learner_left_by_force_new_cluster_is_removed(make_lab: Callable[..., LabHandle],
                                                      role: str) -> None:
    # etcd-io/etcd#20893: a learner added before the last v2 snapshot stays in membership after
    # --force-new-cluster (fixed in 3.6.6); a small snapshot count makes that snapshot.
    lab = make_lab(members=3, runtime="static-pod", version=role, keys=100)
    with_snapshot_count(lab, 5)
    learner_url = f"https://{lab.state.peer_subnet.rsplit('.', 1)[0]}.99:2380"
    wait_for(lambda: etcdctl(lab.dir, f"member add etcd-9 --learner --peer-urls={learner_url}")
             .returncode == 0, 30, "learner added")
    for i in range(12):  # past the snapshot count, after the learner joined membership
        assert etcdctl(lab.dir, f"put /snap/{i} v").returncode == 0
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    plan = json.loads(cli("plan", "-i", inventory(lab), "-o", "json").stdout)
    stale = next(s for s in plan["steps"] if s["id"] == "remove-stale-members")
    learner = [a for a in stale["actions"] if a.get("peer_url") == learner_url]
    assert len(learner) == 1, stale["actions"]
    summary = json.loads(execute(lab).stdout)
    assert summary["ok"], summary
    done = [e for e in journal_events(lab) if e["event"] == "action-done"
            and e["step"] == "remove-stale-members"
            and e["detail"]["action"] == stale["actions"].index(learner[0]) + 1]
    assert len(done) == 1, done
    # Below 3.6.6 etcd itself leaves the learner, and the plan removes it; from 3.6.6 on etcd
    # has removed it already ("not listed").
    left_by_etcd = role == "3.6-pre-learner-fix"
    assert (done[0]["detail"]["result"] != "not listed") is left_by_etcd, done[0]
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=100, writes=100)


"""The snapshot method on real etcd 3.6 hosts: from the survivors' data (--method snapshot),
and from a snapshot file when every member's data is gone (--from-snapshot).

Each run is planned, then carried out by its plan ID; afterwards every acknowledged write of
the kept member is on every restored member, the revision is bumped past the snapshot's by
the default billion and a watch from before the bump is refused as compacted (what etcd's
3.6 recovery procedure asks for, so that Kubernetes' informers relist), and the journal holds
exactly the plan's actions."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etcd_recovery.lab import builds
from etcd_recovery.lab.lab import KEY_PREFIX

from .conftest import LabHandle, cli, etcdctl, etcdctl_txn, ssh
from .recovery_scenario import (
    AFTER,
    assert_journal_matches_plan,
    check_recovered,
    inventory,
    journal_events,
    key_count,
    lose_quorum,
)
from .verbs import healthy

BUMP = 1_000_000_000


def revision(lab: LabHandle, name: str) -> int:
    res = etcdctl(lab.dir, "endpoint status -w json", lab.client_url(name))
    assert res.returncode == 0, res.stderr
    return int(json.loads(res.stdout)[0]["Status"]["header"]["revision"])


def plan_and_execute(lab: LabHandle, *flags: str) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads(
        cli("plan", "-i", inventory(lab), *flags, "-o", "json").stdout)
    t0 = time.monotonic()
    res = cli("execute", "-i", inventory(lab), "--confirm", plan["plan_id"], *flags, "-o",
              "json", timeout=600)
    took = time.monotonic() - t0
    summary = json.loads(res.stdout)
    assert summary["ok"], summary
    assert_journal_matches_plan(lab, summary["run_id"])
    print(f"{' '.join(flags)}: {took:.1f} s; steps "
          + ", ".join(f"{s['id']} {s['seconds']:.2f}" for s in summary["steps"]
                      if isinstance(s.get("seconds"), float) and s["seconds"] > 0.5))
    return plan


def test_snapshot_method_restores_every_survivor_from_the_kept_members_log(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.6-newest", keys=500)
    before = revision(lab, "etcd-1")
    # etcd-3 misses the last 100 writes; etcd-2 is gone; etcd-1, the newest, has crashed.
    lose_quorum(lab, newest="etcd-1", stale="etcd-3", gone=["etcd-2"], writes=100)
    # etcd 3.6 with a member not reached: the snapshot method is what inspect advises.
    seen = json.loads(cli("inspect", "-i", inventory(lab), "-o", "json").stdout)
    assert seen["method"]["recommended"] == "snapshot", seen["method"]
    assert any("etcd-2 not reached" in r for r in seen["method"]["reasons"]), seen["method"]
    plan = plan_and_execute(lab, "--method", "snapshot")
    assert plan["advisories"][-1].startswith("method: snapshot suits this cluster")
    ids = [s["id"] for s in plan["steps"]]
    assert plan["chosen"] == "etcd-1"
    assert {"snapshot:etcd-1", "send:etcd-3", "restore:etcd-1", "restore:etcd-3",
            "restore-check"} <= set(ids)
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=500, writes=100)
    for name in ("etcd-1", "etcd-3"):   # (the 100 writes were one transaction: one revision)
        assert revision(lab, name) >= before + 1 + BUMP
    watch = etcdctl(lab.dir, "watch --rev=2 /etcd-recovery/probe", lab.client_url("etcd-3"),
                    timeout=30)
    assert "compacted" in watch.stdout + watch.stderr, watch

    # The lost host comes back with its old data and its old cluster: the restored members
    # are a new cluster (a new token, so a new cluster ID) and refuse it; rejoin brings it in.
    cli("lab", "revive-host", "etcd-2", "--dir", str(lab.dir))
    time.sleep(3)
    assert not healthy(lab, "etcd-2") or revision(lab, "etcd-2") < BUMP
    members = json.loads(etcdctl(lab.dir, "member list -w json",
                                 lab.client_url("etcd-1")).stdout)["members"]
    assert sorted(m["name"] for m in members) == ["etcd-1", "etcd-3"]
    res = cli("rejoin", "etcd-2", "-i", inventory(lab), "--confirm", "-o", "json")
    assert json.loads(res.stdout)["ok"]
    check_recovered(lab, ["etcd-1", "etcd-2", "etcd-3"], keys=500, writes=100)


def test_snapshot_method_restores_five_members_three_lost(
        make_lab: Callable[..., LabHandle]) -> None:
    """5 members on static pods, etcd 3.5, etcdutl taken from the etcd image each pod names
    (no --etcdutl; the lab's ctr-lite stands in for containerd's ctr): two hosts gone, etcd-5
    stale; the three left are restored at once from the kept member's log."""
    lab = make_lab(members=5, runtime="static-pod", version="3.5-newest", keys=500)
    before = revision(lab, "etcd-1")
    lose_quorum(lab, newest="etcd-1", stale="etcd-5", gone=["etcd-2", "etcd-3"], writes=150)
    plan = plan_and_execute(lab, "--method", "snapshot")
    image = f"registry.k8s.io/etcd:{builds.version_of('3.5-newest')}-0"
    assert f"etcdutl: on etcd-1, etcd-4, etcd-5 taken from the etcd image {image} (ctr " \
           "images mount)" in plan["advisories"], plan["advisories"]
    # etcd-4 took the writes too (their quorum was etcd-1 to etcd-4): either may be kept.
    assert plan["chosen"] in ("etcd-1", "etcd-4"), plan["reason"]
    assert plan["unreachable"] == ["etcd-2", "etcd-3"]
    survivors = ["etcd-1", "etcd-4", "etcd-5"]
    ids = {s["id"] for s in plan["steps"]}
    assert {f"restore:{n}" for n in survivors} | {"cluster-up", "restore-check"} <= ids
    assert {f"send:{n}" for n in survivors if n != plan["chosen"]} <= ids
    assert {f"etcdutl:{n}" for n in survivors} <= ids
    check_recovered(lab, survivors, keys=500, writes=150)
    for name in survivors:   # (the 150 writes were two transactions: two revisions)
        assert revision(lab, name) >= before + 2 + BUMP
    watch = etcdctl(lab.dir, "watch --rev=2 /etcd-recovery/probe", lab.client_url("etcd-5"),
                    timeout=30)
    assert "compacted" in watch.stdout + watch.stderr, watch


def test_a_kept_member_still_running_is_read_once_fenced_and_needs_no_forced_start(
        make_lab: Callable[..., LabHandle]) -> None:
    """etcd 3.6 on systemd: etcd-2's host is gone and etcd on etcd-3 has stopped; etcd-1 still
    runs, alone, when the plan is made, so whether its backend holds its whole log is known
    only once it is fenced. Fenced (stopped cleanly), it does: the log check journals its
    figures and the forced start is skipped whole, every action journaled as skipped."""
    lab = make_lab(members=3, runtime="systemd", version="3.6-newest", keys=300)
    res = etcdctl_txn(lab.dir, [(f"{AFTER}{i:05d}", f"v{i}") for i in range(50)],
                      endpoint=lab.client_url("etcd-1"))
    assert "SUCCESS" in res.stdout, res.stderr
    cli("lab", "kill-host", "etcd-2", "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-3", "--dir", str(lab.dir))
    plan = plan_and_execute(lab, "--method", "snapshot")
    ids = [s["id"] for s in plan["steps"]]
    forced = ["align-commit:etcd-1", "force-new-cluster:etcd-1", "stop:etcd-1"]
    at = ids.index("log-check:etcd-1")
    assert ids[at + 1:at + 4] == forced
    events = journal_events(lab)
    ref = next(e["detail"]["value"] for e in events if e["event"] == "ref-resolved"
               and e["detail"]["name"] == "log:etcd-1")
    assert ref["applied"] is True and ref["consistent_index"] >= ref["last_index"] > 0, ref
    skipped = {e["step"] for e in events if e["event"] == "action-skipped"
               and "no forced start needed" in e["detail"]["why"]}
    assert skipped == set(forced)
    assert not any(e["event"] == "action-start" and e["step"] in forced for e in events)
    check_recovered(lab, ["etcd-1", "etcd-3"], keys=300, writes=50)
    assert revision(lab, "etcd-3") >= BUMP


# Cells: the file on this machine or on a host (static pod, 3.6, etcdutl copied from this
# machine); and systemd, 3.5, with the etcdutl found beside each host's etcd.
@pytest.mark.parametrize(("runtime", "version", "where"), [
    ("static-pod", "3.6-newest", "this machine"),
    ("static-pod", "3.6-newest", "a host"),
    ("systemd", "3.5-newest", "this machine")])
def test_from_snapshot_restores_a_cluster_whose_every_disk_is_gone(
        make_lab: Callable[..., LabHandle], tmp_path: Path, runtime: str, version: str,
        where: str) -> None:
    lab = make_lab(members=3, runtime=runtime, version=version, keys=300)
    snap = tmp_path / "etcd-backup.db"
    saved = etcdctl(lab.dir, f"snapshot save {snap}", lab.client_url("etcd-1"), timeout=60)
    assert saved.returncode == 0, saved.stderr
    given = str(snap)
    if where == "a host":   # a backup kept on etcd-2's host, outside its data dir
        put = subprocess.run(["scp", "-q", "-i", str(lab.dir / "ssh" / "id_ed25519"), "-o",
                              f"UserKnownHostsFile={lab.dir / 'known_hosts'}", "-o",
                              "StrictHostKeyChecking=yes", "-F", "/dev/null", str(snap),
                              f"root@{lab.ip('etcd-2')}:/root/etcd-backup.db"],
                             capture_output=True, text=True, timeout=60)
        assert put.returncode == 0, put.stderr
        snap.unlink()   # not on this machine any more: only the host's copy can serve
        given = "etcd-2:/root/etcd-backup.db"
    # Written after the backup: a restore from the file cannot have these.
    later = etcdctl(lab.dir, f"put {AFTER}late v", lab.client_url("etcd-1"))
    assert later.returncode == 0, later.stderr
    for h in lab.state.hosts:
        cli("lab", "stop-etcd", h.name, "--dir", str(lab.dir))
        gone = ssh(lab.dir, h.mgmt_ip, "rm -rf /var/lib/etcd/member")
        assert gone.returncode == 0, gone.stderr
    flags: tuple[str, ...] = ("--from-snapshot", given)
    if runtime == "static-pod":
        flags += ("--etcdutl", f"/opt/etcd-{builds.version_of(version)}/etcdutl")
    plan = plan_and_execute(lab, *flags)
    if runtime == "systemd":   # no --etcdutl: each host's own, beside the etcd its unit runs
        assert not [s["id"] for s in plan["steps"] if s["id"].startswith("etcdutl:")]
        assert any(a.startswith("etcdutl: on ") and "the host's own" in a
                   for a in plan["advisories"]), plan["advisories"]
    names = [h.name for h in lab.state.hosts]
    assert {f"send:{n}" for n in names} | {f"restore:{n}" for n in names} <= {
        s["id"] for s in plan["steps"]}
    sources = {a["src_host"] for s in plan["steps"] if s["id"].startswith("send:")
               for a in s["actions"]}
    assert sources == ({"etcd-2"} if where == "a host" else {""}), sources
    check_recovered(lab, names, keys=300, writes=0)
    for n in names:
        assert key_count(lab, KEY_PREFIX, lab.client_url(n)) == 300
        assert revision(lab, n) >= BUMP

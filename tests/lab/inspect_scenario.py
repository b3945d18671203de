"""inspect on a real lab: keep the member with the newest data, not the running one."""

from __future__ import annotations

import json
from typing import Any

from etcd_recovery.errors import EXIT_REFUSED

from .conftest import LabHandle, cli, etcdctl_txn
from .verbs import healthy, wait_for


def inspect_json(lab: LabHandle, expect_rc: int = 0) -> dict[str, Any]:
    res = cli("inspect", "-i", str(lab.dir / "inventory.yaml"), "-o", "json", check=False)
    assert res.returncode == expect_rc, res.stdout + res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in report["members"]}


def run_scenario(lab: LabHandle) -> None:
    # Healthy cluster: nothing to recover, refused with exit 3, leader named.
    before = inspect_json(lab, EXIT_REFUSED)
    assert before["quorum"] is True and before["chosen"] is None
    assert before["leader"] in ("etcd-1", "etcd-2", "etcd-3")
    assert all(m["source"] == "live" for m in before["members"])

    # etcd-1 falls behind: cut from its peers (still running, still answering) while the
    # others take 200 more writes.
    cli("lab", "partition", "etcd-1", "--dir", str(lab.dir))
    # If etcd-1 led, the other two elect a new leader first.
    wait_for(lambda: healthy(lab, "etcd-2"), 20, "etcd-2 healthy without etcd-1")
    for n in range(0, 200, 100):
        res = etcdctl_txn(lab.dir, [(f"/after/{i:04d}", f"v{i}") for i in range(n, n + 100)],
                          endpoint=lab.client_url("etcd-2"))
        assert "SUCCESS" in res.stdout, res.stderr
    # Then the newest member's etcd goes down and etcd-3's host disappears; etcd-1 is healed,
    # but two of three are gone: no quorum.
    cli("lab", "kill-host", "etcd-3", "--dir", str(lab.dir))
    cli("lab", "stop-etcd", "etcd-2", "--dir", str(lab.dir))
    cli("lab", "heal", "etcd-1", "--dir", str(lab.dir))
    report = inspect_json(lab)
    m = by_name(report)
    assert report["quorum"] is False
    # Each reachable member's etcd version: live from Status, or (etcd stopped) the image tag
    # of a static pod, or the binary etcd.service runs.
    for name in ("etcd-1", "etcd-2"):
        assert m[name]["etcd_version"] == lab.state.etcd_version, m[name]
    assert m["etcd-1"]["version_source"] == "live Status"
    assert m["etcd-2"]["version_source"].startswith(
        "image" if lab.state.runtime == "static-pod" else "/"), m["etcd-2"]
    assert m["etcd-3"]["etcd_version"] is None
    assert m["etcd-1"]["source"] == "live", m["etcd-1"]
    assert m["etcd-1"]["etcd_running"] is True
    assert m["etcd-2"]["source"] == "disk" and m["etcd-2"]["etcd_running"] is False
    assert m["etcd-3"]["reachable"] is False and m["etcd-3"]["error"]
    # The cut-off member never got the writes (the lab's partition lets nothing through, not
    # even what was under way, until heal): etcd-2 is newer, strictly, and no tie.
    assert report["chosen"] == "etcd-2" and not report["tie"], report["reason"]
    assert m["etcd-2"]["last_index"] > m["etcd-1"]["last_index"], (m["etcd-1"], m["etcd-2"])
    assert m["etcd-2"]["commit_index"] > m["etcd-1"]["commit_index"] + 1, \
        (m["etcd-1"], m["etcd-2"])
    assert m["etcd-2"]["revision"] >= m["etcd-1"]["revision"] + 2
    # Raft's rule, from etcd-1's WAL read in place while it runs: provisional, since a
    # running member's log is taken again from its disk once it is fenced.
    assert "etcd-2 has the newest log" in report["reason"], report["reason"]
    assert report["provisional"] and "provisional: etcd-1 runs" in report["reason"]
    assert m["etcd-1"]["last_term"] and m["etcd-1"]["last_index"], m["etcd-1"]
    assert len({x["cluster_id"] for x in report["members"] if x["cluster_id"]}) == 1
    # In place, never whole: a disk reading costs a few pages and the WAL tail.
    assert 0 < m["etcd-2"]["bytes_read"] < 2 * 1024 * 1024

    # Live and on-disk readings of the same member agree.
    live = m["etcd-1"]
    cli("lab", "stop-etcd", "etcd-1", "--dir", str(lab.dir))
    on_disk = by_name(inspect_json(lab))["etcd-1"]
    assert on_disk["source"] == "disk" and on_disk["etcd_running"] is False
    for key in ("member_id", "cluster_id"):
        assert live[key] == on_disk[key], (key, live[key], on_disk[key])
    # Once in ~10 runs the disk showed a revision a little past the live reading taken just
    # before the SIGKILL (never behind it); the disk is what a restart would serve.
    assert on_disk["revision"] >= live["revision"], (live, on_disk)
    # etcd writes a commit-only HardState change to the WAL without flushing it (only new
    # entries or a term/vote change force a sync), so after SIGKILL the WAL's commit can trail
    # what the live member reported by the last heartbeat's worth; the entries themselves are
    # on disk.
    assert on_disk["commit_index"] >= live["commit_index"] - 2, (live, on_disk)
    assert on_disk["last_index"] >= live["commit_index"]

    # Restarted without quorum, etcd never serves clients (it waits to publish itself through
    # raft): inspect says it runs, reads its disk instead, and says why.
    cli("lab", "start-etcd", "etcd-1", "--dir", str(lab.dir))
    again = by_name(inspect_json(lab))
    assert again["etcd-1"]["etcd_running"] is True and again["etcd-1"]["source"] == "disk"
    assert any("did not answer over gRPC" in n for n in again["etcd-1"]["notes"])
    assert again["etcd-1"]["commit_index"] >= on_disk["commit_index"]


def inspect_as_ops_with_sudo(lab: LabHandle) -> None:
    """A non-root SSH user reads the root-only (0700) data dir in place through `sudo -n`."""
    import yaml

    inv = yaml.safe_load((lab.dir / "inventory.yaml").read_text())
    for m in inv["members"]:
        m["ssh"]["user"] = "ops"
        m["ssh"]["sudo"] = True
    path = lab.dir / "inventory-ops.yaml"
    path.write_text(yaml.safe_dump(inv))
    res = cli("inspect", "-i", str(path), "-o", "json", check=False)
    report = json.loads(res.stdout)
    disk = [m for m in report["members"] if m["source"] == "disk"]
    assert disk, report
    for m in disk:
        assert m["commit_index"] and m["member_id"] and not m["error"], m
    # Without sudo the same user cannot read the data dir, and says so.
    for m in inv["members"]:
        m["ssh"]["sudo"] = False
    path.write_text(yaml.safe_dump(inv))
    report = json.loads(cli("inspect", "-i", str(path), "-o", "json", check=False).stdout)
    failed = [m for m in report["members"] if m["etcd_running"] is False]
    assert failed and all(m["source"] is None and m["error"] for m in failed), report

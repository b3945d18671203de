"""A cluster whose members keep their WAL apart (etcd's --wal-dir, on a disk of its own) is
recovered end to end: discover finds the WAL dir, inspect reads the WAL there, the backup and
the move-aside take it along, align-commit writes its record into the WAL dir, every key
survives.

systemd, etcd 3.6 (kubespray's layout, ETCD_WAL_DIR in /etc/etcd.env). The WAL dir is a
directory on a Docker volume of its own per host, a mount other than the recovery's state
dir's: the move-aside of the WAL is a verified copy, not a rename.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import yaml

from etcd_recovery.inventory import load_inventory
from etcd_recovery.lab.lab import KEY_PREFIX

from .conftest import LabHandle, cli, etcdctl, etcdctl_txn, ssh
from .recovery_scenario import (
    AFTER,
    assert_journal_matches_plan,
    check_recovered,
    execute,
    inventory,
    key_count,
)
from .verbs import healthy, wait_for

WAL = "/var/lib/etcd-wal/wal"
KEYS = 500
WRITES = 150
UNACKED = "/unacked/only-in-the-leaders-log"


def sh(lab: LabHandle, name: str, command: str) -> str:
    res = ssh(lab.dir, lab.ip(name), command)
    assert res.returncode == 0, (name, command, res.stdout, res.stderr)
    return res.stdout


def leader_of(lab: LabHandle, name: str) -> tuple[int, int]:
    """(its member ID, the leader it knows), from `endpoint status`."""
    res = etcdctl(lab.dir, "endpoint status -w json", lab.client_url(name))
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)[0]["Status"]
    return int(st["header"]["member_id"]), int(st["leader"])


def test_recovery_of_members_with_a_wal_dir_of_their_own(
        make_lab: Callable[..., LabHandle]) -> None:
    lab = make_lab(members=3, runtime="systemd", version="3.6-newest", keys=KEYS, wal_dir=WAL)

    # The lab's members keep their WAL in WAL, on a file system of its own, and none in the
    # data dir.
    for name in ("etcd-1", "etcd-2", "etcd-3"):
        assert sh(lab, name, f"ls {WAL}").split()[-1].endswith(".wal")
        assert sh(lab, name, "test -e /var/lib/etcd/member/wal && echo yes || echo no"
                  ).strip() == "no"
        # its own disk: a mount of its own (the WAL dir's parent), unlike the data dir's
        mounts = [sh(lab, name, f"findmnt -n -o TARGET -T {p}").strip()
                  for p in (WAL, "/var/lib/etcd", "/var/lib")]
        assert mounts[0] == "/var/lib/etcd-wal" and mounts[1] == mounts[2] != mounts[0], mounts
    inv = load_inventory(inventory(lab))
    assert {m.wal_dir for m in inv.members} == {WAL}

    # discover reads the WAL dir from the hosts' configuration.
    out = lab.dir / "discovered.yaml"
    cli("inventory", "discover", *(lab.ip(n) for n in ("etcd-1", "etcd-2", "etcd-3")),
        "--user", "root", "--identity-file", str(lab.dir / "ssh" / "id_ed25519"),
        "--known-hosts", str(lab.dir / "known_hosts"),
        "--fetch-client-cert", str(lab.dir / "fetched"), "-o", str(out))
    found = yaml.safe_load(out.read_text())
    assert [m.get("wal_dir") for m in found["members"]] == [WAL] * 3

    # Quorum lost, so that the member kept holds an entry it never committed: etcd-3 cut off,
    # writes, then the leader's only peer gone, a write the leader appends but cannot commit,
    # then etcd on the leader crashes.
    cli("lab", "partition", "etcd-3", "--dir", str(lab.dir))
    leader: list[str] = []

    def a_leader() -> bool:
        leader.clear()
        try:
            views = {n: leader_of(lab, n) for n in ("etcd-1", "etcd-2")}
        except AssertionError:
            return False
        leader.extend(n for n, (mine, lead) in views.items() if mine == lead)
        return len(leader) == 1 and healthy(lab, leader[0])

    wait_for(a_leader, 30, "a leader among etcd-1 and etcd-2")
    newest = leader[0]
    gone = "etcd-2" if newest == "etcd-1" else "etcd-1"
    for n in range(0, WRITES, 50):
        res = etcdctl_txn(lab.dir, [(f"{AFTER}{i:05d}", f"v{i}") for i in range(n, n + 50)],
                          endpoint=lab.client_url(newest))
        assert "SUCCESS" in res.stdout, res.stderr
    cli("lab", "kill-host", gone, "--dir", str(lab.dir))
    # kubespray's election timeout is 5 s: the leader still leads, appends, cannot commit.
    unacked = etcdctl(lab.dir, f"put {UNACKED} x", lab.client_url(newest))
    assert unacked.returncode != 0, unacked.stdout   # never acknowledged
    cli("lab", "stop-etcd", newest, "--dir", str(lab.dir))
    cli("lab", "heal", "etcd-3", "--dir", str(lab.dir))

    # inspect read the kept member's WAL in the WAL dir.
    rep = json.loads(cli("inspect", "-i", inventory(lab), "-o", "json").stdout)
    kept = next(m for m in rep["members"] if m["name"] == newest)
    assert rep["chosen"] == newest, rep["reason"]
    assert kept["source"] == "disk" and kept["last_index"] > kept["commit_index"], kept

    plan = json.loads(cli("plan", "-i", inventory(lab), "-o", "json").stdout)
    steps = {s["id"]: s for s in plan["steps"]}
    for name in (newest, "etcd-3"):
        assert WAL in steps[f"backup:{name}"]["actions"][0]["argv"]
    move = steps["move-aside:etcd-3"]
    assert [a["kind"] for a in move["actions"]] == ["run", "run", "run"]
    assert WAL in move["actions"][1]["argv"] and "wal.moved" in move["title"]
    align = steps[f"align-commit:{newest}"]
    assert align["params"]["wal_dir"] == WAL
    record = align["actions"][0]
    assert record["kind"] == "append-wal" and record["file"].startswith(WAL + "/"), align
    md = cli("plan", "-i", inventory(lab), "-o", "markdown").stdout
    assert f"{WAL} " in md or f"'{WAL}'" in md   # the runbook's commands name the WAL dir

    summary = json.loads(execute(lab).stdout)
    assert summary["ok"], summary
    run = summary["run_id"]
    assert_journal_matches_plan(lab, run)
    check_recovered(lab, [newest, "etcd-3"], keys=KEYS, writes=WRITES)
    # The entry only the kept log held is there too: its whole log counted as committed.
    for name in (newest, "etcd-3"):
        assert key_count(lab, UNACKED, lab.client_url(name)) == 1, name
        assert key_count(lab, KEY_PREFIX, lab.client_url(name)) == KEYS

    # The kept member's WAL, in the WAL dir, holds the align-commit record at its offset.
    n = len(record["record_hex"]) // 2
    got = sh(lab, newest, f"tail -c +{record['offset'] + 1} {record['file']} | head -c {n} | "
                          "od -An -v -tx1 | tr -d ' \\n'")
    assert got == record["record_hex"]

    rdir = f"/var/lib/etcd-recovery/{run}"
    for name in (newest, "etcd-3"):
        # The backup holds the WAL dir beside the data dir, under the same B2SUMS, and it
        # checks.
        sums = sh(lab, name, f"cat {rdir}/backup/B2SUMS")
        assert any(line.split(None, 1)[1].startswith("wal/") for line in sums.splitlines())
        sh(lab, name, f"cd {rdir}/backup && b2sum --quiet -c B2SUMS")
        assert sh(lab, name, f"ls {rdir}/backup").split() == ["B2SUMS", "data", "etcd.env",
                                                              "wal"]
    # etcd-3's old WAL was moved aside whole; it came back as a learner with a new WAL there.
    moved = sh(lab, "etcd-3", f"ls {rdir}/wal.moved").split()
    assert moved and all(f.endswith(".wal") or f.endswith(".tmp") for f in moved), moved
    backed = sh(lab, "etcd-3", f"ls {rdir}/backup/wal").split()
    assert moved == backed
    assert sh(lab, "etcd-3", f"ls {WAL}").split()
    assert sh(lab, "etcd-3", f"ls {WAL}.leaving 2>/dev/null | wc -l").strip() == "0"

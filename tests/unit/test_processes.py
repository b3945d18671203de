"""The member's own etcd among a host's etcd processes: DUMP run by a real shell on this
machine's /proc, and the choice by data dir through the session (kops runs two etcds)."""

from __future__ import annotations

import os
import subprocess

from etcd_recovery import processes
from etcd_recovery.inventory import Inventory, parse_inventory
from etcd_recovery.session import Session
from etcd_recovery.transport.fake import FakeTransport


def test_dump_of_a_real_process() -> None:
    out = subprocess.run(["sh", "-c", processes.DUMP, "etcd-recovery", str(os.getpid())],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "ETCD_DATA_DIR": "/x"}).stdout
    got = processes.parse_dump(out)
    argv, env = got[os.getpid()]
    assert argv and argv[0].endswith("python") or "python" in " ".join(argv), argv
    assert env.get("PATH") == os.environ.get("PATH")


def test_a_gone_process_and_garbage_are_no_crash() -> None:
    assert processes.parse_dump("12\n\n\n") == {12: ([], {})}
    assert processes.parse_dump("x\ny\nz\n12\n!!\n??\n") == {12: ([], {})}


def inv() -> Inventory:
    return parse_inventory({
        "cluster": {"name": "c", "runtime": "systemd"},
        "members": [{"name": "main", "ssh": {"host": "10.0.0.1"}, "data_dir": "/var/lib/etcd",
                     "peer_url": "https://10.0.0.1:2380",
                     "client_url": "https://10.0.0.1:2379"}]}, "inv.yaml")


def test_kops_two_etcds_on_one_host() -> None:
    t = FakeTransport("main")
    Proc = tuple[int, list[str], dict[str, str]]
    events: Proc = (101, ["etcd", "--data-dir=/var/lib/etcd-events", "--force-new-cluster"], {})
    main: Proc = (202, ["/usr/local/bin/etcd"], {"ETCD_DATA_DIR": "/var/lib/etcd"})
    t.expect_etcd(events, main)
    with Session(inv(), factory=lambda m: t) as s:
        assert s.etcd_pid("main") == 202
        # the events cluster's --force-new-cluster is not the member's
        assert s.runs_without_force("main") is True
    t2 = FakeTransport("main")
    t2.expect_etcd(events)   # only the events cluster runs: the member's etcd does not
    with Session(inv(), factory=lambda m: t2) as s:
        assert s.etcd_pid("main") is None and s.runs_without_force("main") is None

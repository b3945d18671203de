"""A member with a WAL dir of its own (etcd's --wal-dir): the inventory field, discover, the
cross-check against the host, and the plan (inspect's reading, the backup, the move-aside, the
learner's empty WAL dir, align-commit) all use it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_recovery.actions import AppendWal, Run
from etcd_recovery.conditions import render
from etcd_recovery.crosscheck import check_member, mismatches
from etcd_recovery.discover import Finding, inventory_from
from etcd_recovery.errors import InventoryError, PreconditionError
from etcd_recovery.inspect import read_wal_tail
from etcd_recovery.inventory import (
    Inventory,
    Member,
    SshTarget,
    dump_inventory,
    load_inventory,
    parse_inventory,
)
from etcd_recovery.lab.configs import (
    etcd_flags,
    kubespray_env,
    static_pod_manifest,
    systemd_env,
    wal_dir_problem,
)
from etcd_recovery.plan.force_new_cluster import make_plan
from etcd_recovery.plan.scripts import backup_argv, guarded, move_aside_argv
from etcd_recovery.plan.steps import StepKind
from etcd_recovery.runtimes import config as rconf
from etcd_recovery.transport.base import FileInfo

from .test_plan_actions import HOSTS, TAIL, configs, report
from .test_plan_actions import inventory as plain_inventory

WAL = "/srv/etcd-wal/wal"
RUN_ID = "20261128-000000-beef"
ENV = "/etc/etcd/etcd.env"


def good(**member: Any) -> dict[str, Any]:
    return {"cluster": {"name": "c", "runtime": "systemd"},
            "members": [{"name": "etcd-1", "ssh": {"host": "10.0.0.1"},
                         "peer_url": "https://10.0.0.1:2380",
                         "client_url": "https://10.0.0.1:2379", **member}]}


# --------------------------------------------------------------------------- inventory

def test_wal_dir_defaults_to_the_member_dirs_wal_and_round_trips(tmp_path: Path) -> None:
    plain = parse_inventory(good()).members[0]
    assert plain.wal_dir is None and plain.wal == "/var/lib/etcd/member/wal"
    assert not plain.wal_apart and not plain.wal_outside_data_dir
    assert "wal_dir" not in dump_inventory(parse_inventory(good()))
    # etcd's default spelled out is the default
    same = parse_inventory(good(data_dir="/data/etcd", wal_dir="/data/etcd/member/wal/"))
    assert same.members[0].wal_dir is None
    inv = parse_inventory(good(wal_dir=WAL), "inv.yaml")
    m = inv.members[0]
    assert m.wal_dir == WAL and m.wal == WAL and m.wal_apart and m.wal_outside_data_dir
    text = dump_inventory(inv)
    assert f"wal_dir: {WAL}" in text
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    assert load_inventory(path).members == inv.members
    # Inside the data dir but outside the member dir: moved on its own, copied with the data.
    inner = parse_inventory(good(wal_dir="/var/lib/etcd/wal")).members[0]
    assert inner.wal_apart and not inner.wal_outside_data_dir


@pytest.mark.parametrize(("wal_dir", "words"), [
    ("/srv/$(reboot)", "absolute path"),
    ("wal", "absolute path"),
    ("/", "a directory of its own"),
    ("/srv/../var/lib/etcd", "a directory of its own"),
    ("/var/lib/etcd", "the data dir"),
    ("/var/lib", "the data dir"),
    ("/var/lib/etcd/member", "the member directory"),
    ("/var/lib/etcd/member/snap", "the snap directory"),
    ("/var/lib/etcd/member/snap/wal", "inside the snap directory"),
])
def test_a_bad_wal_dir_is_named(wal_dir: str, words: str) -> None:
    with pytest.raises(InventoryError) as err:
        parse_inventory(good(wal_dir=wal_dir), "inv.yaml")
    msg = str(err.value)
    assert "wal_dir" in msg and "etcd-1" in msg and words in msg, msg


# --------------------------------------------------------------------------- discover

def test_discover_writes_the_hosts_wal_dir_and_the_inventory_loads() -> None:
    def flags(i: int, wal: str | None) -> dict[str, str]:
        h = HOSTS[i]
        f = {"name": h.name, "initial-advertise-peer-urls": h.peer_url,
             "advertise-client-urls": h.client_url, "data-dir": "/var/lib/etcd",
             "initial-cluster-token": "tok",
             "initial-cluster": ",".join(f"{x.name}={x.peer_url}" for x in HOSTS)}
        return {**f, **({"wal-dir": wal} if wal else {})}

    found = [Finding(HOSTS[0].mgmt_ip, "systemd", flags(0, WAL), ENV, "etcd.service"),
             Finding(HOSTS[1].mgmt_ip, "systemd", flags(1, None), ENV, "etcd.service"),
             Finding(HOSTS[2].mgmt_ip, unreachable=True, error="timed out")]
    d = inventory_from(found, "c", {}, None)
    by = {m["name"]: m for m in d.inventory["members"]}
    assert by["etcd-1"]["wal_dir"] == WAL
    assert "wal_dir" not in by["etcd-2"]
    # not reached: taken from the first host's flags, as its data dir is
    assert by["etcd-3"]["wal_dir"] == WAL and d.unreached == ["etcd-3"]
    inv = parse_inventory(d.inventory)
    assert [m.wal for m in inv.members] == [WAL, "/var/lib/etcd/member/wal", WAL]


# --------------------------------------------------------------------------- crosscheck

def member(**kw: Any) -> Member:
    h = HOSTS[0]
    return Member(name=h.name, ssh=SshTarget(host=h.mgmt_ip), peer_url=h.peer_url,
                  client_url=h.client_url, data_dir="/var/lib/etcd", env_file=ENV,
                  unit="etcd.service", **kw)


def env(wal: str = "") -> str:
    return systemd_env(etcd_flags(HOSTS[0], HOSTS, "/pki", "tok", wal_dir=wal))


def test_crosscheck_compares_the_inventorys_wal_dir_with_the_hosts_flag() -> None:
    ok = check_member(member(wal_dir=WAL), "systemd", ENV, env(WAL), None, None, None)
    assert not mismatches(ok) and "wal_dir" in {c.field for c in ok}
    # the host has --wal-dir, the inventory does not say: fix wal_dir, not data_dir
    bad = mismatches(check_member(member(), "systemd", ENV, env(WAL), None, None, None))
    assert [c.field for c in bad] == ["wal_dir"]
    msg = bad[0].message("inv.yaml")
    assert "fix 'wal_dir' of etcd-1" in msg and WAL in msg and "/var/lib/etcd/member/wal" in msg
    # the inventory names a WAL dir the host does not have
    bad = mismatches(check_member(member(wal_dir=WAL), "systemd", ENV, env(), None, None,
                                  None))
    assert [c.field for c in bad] == ["wal_dir"]
    assert "no --wal-dir" in str(bad[0].host) and "fix 'wal_dir'" in bad[0].message("i")
    # another WAL dir than the host's, in its running process too
    running = rconf.env_flags(env("/other/wal"), ENV)
    bad = mismatches(check_member(member(wal_dir=WAL), "systemd", ENV, env(WAL), None,
                                  running, None))
    assert [(c.field, c.host) for c in bad] == [("wal_dir", "/other/wal")]


# --------------------------------------------------------------------------- inspect

class Listing:
    """A transport that lists one directory and records what it was asked for."""

    def __init__(self) -> None:
        self.listed: list[str] = []

    def list_dir(self, path: str, sudo: bool = False) -> list[FileInfo]:
        self.listed.append(path)
        return []


def test_inspect_reads_the_wal_from_the_wal_dir() -> None:
    t = Listing()
    with pytest.raises(Exception) as err:
        read_wal_tail(t, member(wal_dir=WAL))  # type: ignore[arg-type]
    assert t.listed == [WAL] and f"no WAL files in {WAL}" in str(err.value)


# --------------------------------------------------------------------------- the plan

def wal_inventory(runtime: str) -> Inventory:
    inv = plain_inventory(runtime)
    return replace(inv, members=tuple(replace(m, wal_dir=WAL) for m in inv.members))


def wal_configs(runtime: str) -> dict[str, str]:
    out = {}
    for h in HOSTS:
        flags = etcd_flags(h, HOSTS, "/pki", "tok", wal_dir=WAL)
        out[h.name] = (static_pod_manifest(flags, "3.5.16") if runtime == "static-pod"
                       else systemd_env(flags))
    return out


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_golden_shape_with_a_wal_dir(runtime: str) -> None:
    rep = report()
    last = f"{WAL}/{TAIL.file.rsplit('/')[-1]}"   # inspect read the WAL in the WAL dir
    kept = replace(rep.members[0], wal_tail=replace(TAIL, file=last))
    rep = replace(rep, members=(kept, *rep.members[1:]))
    plan = make_plan(wal_inventory(runtime), rep, wal_configs(runtime), RUN_ID)
    plain = make_plan(plain_inventory(runtime), report(), configs(runtime), RUN_ID)
    shape = [(s.id, [a.kind for a in s.actions]) for s in plan.steps]
    plain_shape = [(s.id, [a.kind for a in s.actions]) for s in plain.steps]
    # One more action: the WAL dir's own move-aside; every other step the same shape.
    assert [x for x in shape if x[0] != "move-aside:etcd-3"] == \
        [x for x in plain_shape if x[0] != "move-aside:etcd-3"]
    assert dict(shape)["move-aside:etcd-3"] == ["run", "run", "run"]
    assert dict(plain_shape)["move-aside:etcd-3"] == ["run", "run"]
    by = {s.id: s for s in plan.steps}
    rdir = f"/var/lib/etcd-recovery/{RUN_ID}"
    cfg = {"static-pod": f"{rdir}/etcd.yaml.fenced", "systemd": ENV}[runtime]
    # the preflight's space check counts the WAL dir, the backup copies it
    pre = by["preflight"].actions[0]
    assert isinstance(pre, Run) and pre.argv[-2:] == ("/var/lib/etcd", WAL)
    for name in ("etcd-1", "etcd-3"):
        a = by[f"backup:{name}"].actions[0]
        assert isinstance(a, Run) and WAL in a.argv
        inner = backup_argv("/var/lib/etcd", cfg, f"{rdir}/backup", WAL)
        want = inner if name == "etcd-1" else ["nice", "-n", "10", *inner]
        assert a.argv == tuple(guarded(RUN_ID, f"backup:{name}", want, 1800))
        assert WAL in by[f"backup:{name}"].title
    # move-aside: the member dir, then the WAL dir, each by the converging script
    move = by["move-aside:etcd-3"]
    wal_move = move.actions[1]
    assert isinstance(wal_move, Run)
    assert wal_move.argv == tuple(guarded(RUN_ID, "move-aside:etcd-3", move_aside_argv(
        WAL, f"{rdir}/wal.moved", "/srv/etcd-wal"), 600))
    assert f"{rdir}/wal.moved" in move.title and WAL in move.check
    # the learner's start checks its WAL dir is empty too, and says so
    start = by["start-learner:etcd-3"]
    assert start.kind is StepKind.START_LEARNER and "WAL dir" in render(start, "etcd-1")
    # align-commit reads and writes the WAL in the WAL dir
    align = by["align-commit:etcd-1"]
    assert align.params["wal_dir"] == WAL
    rec = align.actions[0]
    assert isinstance(rec, AppendWal) and rec.file.startswith(WAL + "/")
    # the runbook shows the same commands
    from etcd_recovery.runbook import plan_markdown

    md = plan_markdown(plan, wal_inventory(runtime))
    assert f"{rdir}/wal.moved" in md and f"of={WAL}/" in md.replace("'", "")


def test_a_wal_dir_inside_the_data_dir_is_copied_with_it_and_moved_on_its_own() -> None:
    inv = plain_inventory("systemd")
    inv = replace(inv, members=tuple(replace(m, wal_dir="/var/lib/etcd/wal")
                                     for m in inv.members))
    plan = make_plan(inv, report(), configs("systemd"), RUN_ID)
    by = {s.id: s for s in plan.steps}
    backup = by["backup:etcd-1"].actions[0]
    assert isinstance(backup, Run) and "/var/lib/etcd/wal" not in backup.argv
    move = by["move-aside:etcd-3"].actions[1]
    assert isinstance(move, Run) and "/var/lib/etcd/wal" in move.argv


class Session:
    """What prepare_start_learner asks of the session: the member, its etcd, a command."""

    def __init__(self, m: Member, wal_files: bool) -> None:
        self.member, self.wal_files = m, wal_files
        self.ran: list[list[str]] = []

    def m(self, name: str) -> Member:
        return self.member

    def etcd_pid(self, name: str) -> int | None:
        return None

    def run(self, name: str, argv: list[str], check: bool = True) -> Any:
        self.ran.append(argv)
        status = 1
        if argv[0] == "sh" and WAL in argv and self.wal_files:
            status = 0

        class R:
            exit_status = status
        return R()


@pytest.mark.parametrize("wal_files", [False, True])
def test_a_learner_starts_only_with_no_wal_file_in_its_wal_dir(wal_files: bool) -> None:
    from etcd_recovery.executor import Executor
    from etcd_recovery.stepchecks.rejoin import prepare_start_learner

    plan = make_plan(wal_inventory("systemd"), report(), wal_configs("systemd"), RUN_ID)
    step = next(s for s in plan.steps if s.id == "start-learner:etcd-3")
    ex = Executor.__new__(Executor)
    ex.session = Session(member(wal_dir=WAL), wal_files)  # type: ignore[assignment]
    if wal_files:
        with pytest.raises(PreconditionError, match=f"{WAL} holds WAL files"):
            prepare_start_learner(ex, step)
    else:
        assert prepare_start_learner(ex, step) == {}
    assert any(WAL in a for a in ex.session.ran)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the lab

def test_lab_configs_give_etcd_the_wal_dir() -> None:
    h = HOSTS[0]
    lab_wal = "/var/lib/etcd-wal/wal"
    flags = etcd_flags(h, HOSTS, "/pki", "tok", "3.6.16", lab_wal)
    assert rconf.env_flags(systemd_env(flags), ENV)["wal-dir"] == lab_wal
    assert rconf.env_flags(kubespray_env(h, HOSTS, "3.6.16", lab_wal), "/etc/etcd.env"
                           )["wal-dir"] == lab_wal
    manifest = static_pod_manifest(flags, "3.6.16")
    assert rconf.manifest_flags(manifest, "m")["wal-dir"] == lab_wal
    assert yaml.safe_load(manifest)["spec"]["volumes"][-1]["hostPath"]["path"] == \
        "/var/lib/etcd-wal"
    assert "wal-dir" not in etcd_flags(h, HOSTS, "/pki", "tok", "3.6.16")
    assert "WAL_DIR" not in kubespray_env(h, HOSTS, "3.6.16")
    assert wal_dir_problem(lab_wal) is None and wal_dir_problem("") is None
    for bad in ("/var/lib/etcd-wal", "/srv/wal", "/var/lib/etcd/x/wal", "/a/../b/c", "rel/x"):
        assert wal_dir_problem(bad), bad

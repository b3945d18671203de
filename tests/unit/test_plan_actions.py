"""Planning is pure: an inspect report plus configurations in, typed actions out.

Golden shapes for both runtimes, with an unreachable member, a live (stale) member and a
stopped newest member; no rendering holds a placeholder or a comment in place of an action;
a saved plan is data, loaded strictly, and an edited action is named as a difference.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from rich.console import Console

from etcd_recovery.actions import AppendWal, EtcdCall, Run, Wait, WriteFile
from etcd_recovery.choose import decide
from etcd_recovery.errors import FormatError
from etcd_recovery.inventory import Inventory, Member, SshTarget, TlsFiles
from etcd_recovery.lab.configs import etcd_flags, static_pod_manifest, systemd_env
from etcd_recovery.lab.state import LabHost
from etcd_recovery.model import InspectReport, MemberState, PeerView, Quorum, WalTail
from etcd_recovery.plan.force_new_cluster import make_plan
from etcd_recovery.plan.rejoin import make_rejoin_plan
from etcd_recovery.plan.steps import Plan
from etcd_recovery.proto.raft_pb2 import HardState
from etcd_recovery.proto.wal_pb2 import Record
from etcd_recovery.render import plan_table
from etcd_recovery.runbook import plan_markdown

HOSTS = [LabHost(name=f"etcd-{i}", container=f"c{i}", mgmt_ip=f"10.9.0.{i}",
                 peer_ip=f"10.9.1.{i}") for i in (1, 2, 3)]
IDS = {"etcd-1": 0xA1, "etcd-2": 0xA2, "etcd-3": 0xA3}


def inventory(runtime: str) -> Inventory:
    members = tuple(Member(
        name=h.name, ssh=SshTarget(host=h.mgmt_ip, user="root", identity_file="/k/id",
                                   known_hosts="/k/known_hosts"),
        peer_url=h.peer_url, client_url=h.client_url, data_dir="/var/lib/etcd",
        manifest="/etc/kubernetes/manifests/etcd.yaml" if runtime == "static-pod" else None,
        env_file="/etc/etcd/etcd.env" if runtime == "systemd" else None,
        unit="etcd.service" if runtime == "systemd" else None) for h in HOSTS)
    return Inventory(path="inv.yaml", name="lab", runtime=runtime,
                     tls=TlsFiles("/pki/ca.crt", "/pki/client.crt", "/pki/client.key"),
                     members=members)


def configs(runtime: str) -> dict[str, str]:
    out = {}
    for h in HOSTS:
        flags = etcd_flags(h, HOSTS, "/pki", "tok")
        out[h.name] = (static_pod_manifest(flags, "3.5.16") if runtime == "static-pod"
                       else systemd_env(flags))
    return out


MEMBERSHIP = tuple(PeerView(IDS[h.name], h.name, (h.peer_url,), False) for h in HOSTS)
TAIL = WalTail(file="/var/lib/etcd/member/wal/0000000000000000-0000000000000000.wal",
               offset=4096, crc=0x1234ABCD, room=60_000_000, term=7, vote=0xA1)


def report(kept_live: bool = False, quorum: bool = False) -> InspectReport:
    newest = MemberState(
        name="etcd-1", host="10.9.0.1", reachable=True, etcd_running=kept_live,
        source="live" if kept_live else "disk", member_id=IDS["etcd-1"], cluster_id=0xC1,
        term=7, commit_index=200, consistent_index=200, last_index=205, last_term=7,
        revision=150, hardstate_commit=198, membership=MEMBERSHIP,
        wal_tail=None if kept_live else TAIL)
    gone = MemberState(name="etcd-2", host="10.9.0.2", reachable=False, error="timed out")
    stale = MemberState(
        name="etcd-3", host="10.9.0.3", reachable=True, etcd_running=True, source="live",
        member_id=IDS["etcd-3"], cluster_id=0xC1, term=9, commit_index=150,
        consistent_index=150, last_index=150, last_term=6, revision=120,
        membership=MEMBERSHIP)
    states = (newest, gone, stale)
    q = Quorum(True, via="etcd-3", leader_id=IDS["etcd-3"]) if quorum else Quorum(False)
    return InspectReport("lab", states, q, decide(states, q, allow_quorum=quorum))


def plan_for(runtime: str, **kw: Any) -> Plan:
    rep = report(kept_live=kw.pop("kept_live", False), quorum=kw.get("allow_quorum", False))
    return make_plan(inventory(runtime), rep, configs(runtime), "20261128-000000-beef", **kw)


def shape(plan: Plan) -> list[tuple[str, list[str]]]:
    return [(s.id, [a.kind for a in s.actions]) for s in plan.steps]


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_golden_shape_of_a_recovery(runtime: str) -> None:
    plan = plan_for(runtime)
    assert plan.chosen == "etcd-1" and plan.rejoin_later == ("etcd-2",)
    assert shape(plan) == [
        ("preflight", ["run", "run"]),
        ("lock", ["run", "run"]),
        ("fence:etcd-3", ["run", "wait", "run"]),
        ("fence:etcd-1", ["run", "wait", "run"]),
        ("backup:etcd-1", ["run", "run"]),
        ("backup:etcd-3", ["run", "run"]),
        ("align-commit:etcd-1", ["append-wal", "run"]),
        ("force-new-cluster:etcd-1", ["write-file", "run", "wait", "run"]),
        ("remove-flag:etcd-1", ["write-file", "run", "wait", "run"]),
        ("remove-stale-members", ["etcd", "etcd", "wait"]),
        ("move-aside:etcd-3", ["run", "run"]),
        ("learner-add:etcd-3", ["wait", "etcd"]),
        ("start-learner:etcd-3", ["wait", "write-file", "run", "wait", "run"]),
        ("promote:etcd-3", ["etcd", "wait"]),
        ("verify", []),
        ("unlock", ["run", "run"]),
    ]
    # Fences of the other members run together; the member to keep is fenced alone, last,
    # since etcd-3 still runs and could send it entries; its backup runs alone, the others'
    # in the background. A peer's move-aside runs alone, just before its learner is added.
    assert [(s.id, s.group) for s in plan.steps if s.group or s.kind.value == "fence"] == [
        ("fence:etcd-3", "fence"), ("fence:etcd-1", None), ("backup:etcd-3", "background")]
    # With no other member running etcd, all are fenced at once.
    quiet = make_plan(inventory(runtime), replace(report(), members=(
        *report().members[:2], replace(report().members[2], etcd_running=False,
                                       source="disk"))), configs(runtime), "r")
    assert [(s.id, s.group) for s in quiet.steps if s.kind.value == "fence"] == [
        ("fence:etcd-3", "fence"), ("fence:etcd-1", "fence")]
    by_id = {s.id: s for s in plan.steps}
    # The learner's configuration is computed: the members after its add, state existing.
    write = by_id["start-learner:etcd-3"].actions[1]
    assert isinstance(write, WriteFile)
    assert (f"initial-cluster=etcd-1={HOSTS[0].peer_url},etcd-3={HOSTS[2].peer_url}"
            in write.content.replace("ETCD_INITIAL_CLUSTER=", "initial-cluster="))
    assert "existing" in write.content and "+" in write.diff
    check = by_id["start-learner:etcd-3"].actions[0]
    assert isinstance(check, Wait) and check.condition == "members-are"
    assert check.members == (f"etcd-1={HOSTS[0].peer_url}", f"etcd-3={HOSTS[2].peer_url}")
    # The stale members are removed by the IDs the kept member's membership holds.
    removes = [a for a in by_id["remove-stale-members"].actions if isinstance(a, EtcdCall)]
    assert [(a.call, a.member_id, a.if_listed) for a in removes] == [
        ("member-remove", "a2", True), ("member-remove", "a3", True)]
    # The learner's ID exists only at run time: a named reference, produced then used.
    add = by_id["learner-add:etcd-3"].actions[1]
    promote = by_id["promote:etcd-3"].actions[0]
    assert isinstance(add, EtcdCall) and isinstance(promote, EtcdCall)
    assert add.result == promote.member_ref == "learner-id:etcd-3"


@pytest.mark.parametrize(("db", "in_turn"), [(16 << 20, False), (1 << 30, True),
                                            (None, True)])
def test_background_backups_run_one_at_a_time_only_where_a_db_is_big(
        db: int | None, in_turn: bool) -> None:
    """Big dbs (or a size not read): the other members' backups one at a time, as the title
    says; small ones beside each other. The kept member's own backup is never in a turn."""
    rep = report()
    members = tuple(replace(m, db_size_bytes=db) if m.reachable else m for m in rep.members)
    plan = make_plan(inventory("systemd"), replace(rep, members=members), configs("systemd"),
                     "r")
    by_id = {s.id: s for s in plan.steps}
    assert by_id["backup:etcd-1"].params == {"in_turn": False}
    other = by_id["backup:etcd-3"]
    assert other.group == "background" and other.params == {"in_turn": in_turn}
    assert ("one backup at a time" in other.title) is in_turn
    assert ("beside the other backups" in other.title) is not in_turn
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))).steps == plan.steps


def test_the_hardstate_record_is_computed_when_planning() -> None:
    plan = plan_for("systemd")
    step = next(s for s in plan.steps if s.id == "align-commit:etcd-1")
    a = step.actions[0]
    assert isinstance(a, AppendWal)
    assert (a.file, a.offset, a.crc_before, a.commit) == (TAIL.file, 4096, 0x1234ABCD, 205)
    data = bytes.fromhex(a.record_hex)
    assert len(data) % 8 == 0
    length = int.from_bytes(data[:8], "little") & ((1 << 56) - 1)
    record = Record.FromString(data[8:8 + length])
    hs = HardState.FromString(record.data)
    assert (record.type, hs.term, hs.vote, hs.commit) == (3, 7, 0xA1, 205)
    assert "commit 205" in step.title and "offset 4096" in a.summary()
    # etcd running on the kept member: a named reference resolved after fencing.
    live = plan_for("systemd", kept_live=True)
    a = next(s for s in live.steps if s.id == "align-commit:etcd-1").actions[0]
    assert isinstance(a, AppendWal) and a.offset == -1
    # Nothing to write: no action at all, and the step says why.
    quiet = make_plan(inventory("systemd"), replace(report(), members=(
        replace(report().members[0], hardstate_commit=205), *report().members[1:])),
        configs("systemd"), "r")
    step = next(s for s in quiet.steps if s.id == "align-commit:etcd-1")
    assert step.actions == () and "Nothing to write" in step.title and not step.mutating


PLACEHOLDER = re.compile(r"<[a-zA-Z][a-zA-Z _-]*>|\bINVENTORY\b|<id|<current|<old")


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_no_rendering_holds_a_placeholder_or_a_comment_for_an_action(runtime: str) -> None:
    plan = plan_for(runtime)
    buf = io.StringIO()
    plan_table(plan, Console(file=buf, width=400))
    table, text_json = buf.getvalue(), json.dumps(plan.to_json())
    md = plan_markdown(plan, inventory(runtime))
    for text in (table, text_json, md):
        assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)
    blocks = re.findall(r"```sh\n(.*?)```", md, re.S)
    assert len(blocks) == 1 + len([s for s in plan.steps if s.actions or s.id == "verify"])
    for block in blocks[1:]:
        # (a file's content, written through a here-document, may hold its own comments)
        block = re.sub(r"<<'ETCD_RECOVERY_EOF'\n.*?\nETCD_RECOVERY_EOF", "", block, flags=re.S)
        for line in block.splitlines():
            assert not line.lstrip().startswith("#"), line
    # Every action appears in the runbook exactly as it shows itself.
    for s in plan.steps:
        for a in s.actions:
            assert a.show() in md
    assert md.index("export KEPT=https://10.9.0.1:2379") < \
        md.index("## 1.")
    assert "on() {" in md and "feed() {" in md and "quorum_lost https://" in md


def test_saved_plans_are_data_loaded_strictly() -> None:
    plan = plan_for("static-pod")
    data = json.loads(json.dumps(plan.to_json()))
    assert Plan.from_json(data) == plan
    assert plan.first_difference(Plan.from_json(data)) is None

    tampered = json.loads(json.dumps(data))
    fence = next(s for s in tampered["steps"] if s["id"] == "fence:etcd-3")
    fence["actions"][0]["argv"] = ["sh", "-c", "rm -rf /var/lib/etcd"]
    loaded = Plan.from_json(tampered)     # well-formed, so it loads ...
    diff = loaded.first_difference(plan)  # ... but it is not what the plan derives
    assert diff is not None and "fence:etcd-3" in diff and "argv" in diff

    def refused(mutate: Any, match: str) -> None:
        bad = json.loads(json.dumps(data))
        mutate(bad)
        with pytest.raises(FormatError, match=match):
            Plan.from_json(bad, "plan.json")

    refused(lambda d: d["steps"][2].__setitem__("kind", "rm_rf"), "unknown step kind")
    refused(lambda d: d["steps"][2]["actions"][0].__setitem__("kind", "shell"),
            "unknown action kind")
    refused(lambda d: d["steps"][2]["actions"][0].__setitem__("shown", "echo harmless"),
            "unexpected field")
    refused(lambda d: d["steps"][2]["actions"][0].__setitem__("argv", "rm -rf /"),
            "wrong type")
    refused(lambda d: d["steps"][2].__setitem__("commands", ["echo"]), "unexpected commands")
    refused(lambda d: d.__setitem__("extra", 1), "unexpected extra")
    refused(lambda d: d["steps"][1]["params"].__setitem__("members", "a"), "wrong type")

    def edit_content(d: Any) -> None:
        step = next(s for s in d["steps"] if s["id"].startswith("force-new-cluster"))
        step["actions"][0]["content"] += "\n--evil"

    refused(edit_content, "digest does not match")


def test_take_over_lock_is_in_the_plan() -> None:
    plain, taken = plan_for("systemd"), plan_for("systemd", take_over_lock=True)
    lock = next(s for s in taken.steps if s.id == "lock")
    assert "--take-over-lock" in lock.title
    run = lock.actions[0]
    assert isinstance(run, Run) and "set -C" not in run.argv[2]
    assert "set -C" in next(s for s in plain.steps if s.id == "lock").actions[0].argv[2]  # type: ignore[union-attr]


def test_allow_quorum_plan_skips_the_quorum_check_in_the_runbook() -> None:
    plan = plan_for("systemd", allow_quorum=True)
    assert plan.steps[0].params["allow_quorum"] is True
    assert "quorum_lost" not in plan_markdown(plan, inventory("systemd")).split(
        "## 1.")[1].split("## 2.")[0]


def test_rejoin_plan_removes_the_old_entry_and_expects_the_voters_plus_itself() -> None:
    inv = inventory("systemd")
    plan = make_rejoin_plan(inv, "etcd-2", "etcd-1", configs("systemd")["etcd-2"], "r",
                            MEMBERSHIP)
    by_id = {s.id: s for s in plan.steps}
    remove = by_id["remove-old:etcd-2"].actions
    assert [(a.call, a.member_id) for a in remove  # type: ignore[union-attr]
            ] == [("member-remove", "a2")]
    start = by_id["start-learner:etcd-2"].actions[0]
    assert isinstance(start, Wait)
    assert sorted(start.members) == sorted(f"{h.name}={h.peer_url}" for h in HOSTS)
    assert by_id["verify"].params["members"] == ["etcd-1", "etcd-2", "etcd-3"]

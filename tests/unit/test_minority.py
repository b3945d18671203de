"""Too few voting members read for raft's guarantee: computed by choose, carried by the
decision, the inspect report and the plan, shown in one line by every rendering."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console

from etcd_recovery.choose import decide, minority_read
from etcd_recovery.errors import FormatError
from etcd_recovery.model import InspectReport, MemberState, MinorityRead, PeerView, Quorum
from etcd_recovery.plan.force_new_cluster import make_plan
from etcd_recovery.plan.steps import Plan
from etcd_recovery.render import inspect_table, plan_table

from .test_plan_actions import MEMBERSHIP, configs, inventory, report

NOQ = Quorum(False)


def voters(*names: str, learners: tuple[str, ...] = ()) -> tuple[PeerView, ...]:
    return tuple(PeerView(0x100 + i, n, (f"https://{n}:2380",), n in learners)
                 for i, n in enumerate((*names, *learners)))


def read(name: str, view: tuple[PeerView, ...], last: int = 100) -> MemberState:
    mid = next((p.id for p in view if p.name == name), None)
    return MemberState(name=name, host=f"h-{name}", reachable=True, etcd_running=False,
                       source="disk", member_id=mid, cluster_id=0xC1, term=5,
                       commit_index=last, last_term=5, last_index=last, revision=50,
                       membership=view)


def gone(name: str) -> MemberState:
    return MemberState(name=name, host=f"h-{name}", reachable=False, error="timed out")


def test_one_of_three_read_names_what_may_be_lost() -> None:
    view = voters("etcd-1", "etcd-2", "etcd-3")
    d = decide([read("etcd-1", view), gone("etcd-2"), gone("etcd-3")], NOQ)
    assert d.chosen == "etcd-1" and d.minority is not None
    assert d.minority.line() == (
        "only 1 of 3 voting members read (etcd-1): writes acknowledged by etcd-2 and etcd-3 "
        "alone may be lost; if either host can come back, waiting for it is safer")
    assert d.minority.not_read == ("etcd-2", "etcd-3") and d.minority.quorum == 2


def test_two_of_three_read_is_no_minority() -> None:
    view = voters("etcd-1", "etcd-2", "etcd-3")
    d = decide([read("etcd-1", view), read("etcd-2", view, last=90), gone("etcd-3")], NOQ)
    assert d.chosen == "etcd-1" and d.minority is None


@pytest.mark.parametrize(("n_read", "expected"), [
    (2, "only 2 of 5 voting members read (e1 and e2): writes acknowledged by e3, e4 and e5 "
        "alone may be lost; if any one of those hosts can come back, waiting for it is safer"),
    (1, "only 1 of 5 voting members read (e1): writes acknowledged by any 3 of e2, e3, e4 and "
        "e5 alone may be lost; if 2 of those hosts can come back, waiting for them is safer"),
    (3, None),
])
def test_five_voters(n_read: int, expected: str | None) -> None:
    names = [f"e{i}" for i in range(1, 6)]
    view = voters(*names)
    states = [read(n, view) if i < n_read else gone(n) for i, n in enumerate(names)]
    m = decide(states, NOQ).minority
    assert (m.line() if m else None) == expected


def test_even_cluster_half_read_intersects_every_quorum() -> None:
    """Of 4 voters a quorum is 3: any quorum holds one of 2 members read, so no warning; with
    1 read, 3 members not read make a quorum by themselves."""
    view = voters("a", "b", "c", "d")
    two = [read("a", view), read("b", view), gone("c"), gone("d")]
    assert decide(two, NOQ).minority is None
    one = [read("a", view), gone("b"), gone("c"), gone("d")]
    m = decide(one, NOQ).minority
    assert m is not None and m.not_read == ("b", "c", "d") and m.quorum == 3


def test_learners_do_not_vote_and_excluded_or_unlisted_members_are_not_read() -> None:
    # Voters: a, b, c (c not in the inventory at all); d is a learner.
    view = voters("a", "b", "c", learners=("d",))
    states = [read("a", view), replace(read("b", view), excluded=True), read("d", view)]
    m = minority_read(states, ("a", "d"))
    assert m is not None
    assert m.voters == ("a", "b", "c") and m.read == ("a",) and m.not_read == ("b", "c")


def test_a_corrupt_member_is_not_read() -> None:
    view = voters("a", "b", "c")
    bad = replace(read("b", view), corrupt=True, error="bad crc")
    assert minority_read([read("a", view), bad, gone("c")], ("a",)) is not None


def test_without_a_membership_view_the_members_given_are_the_voters() -> None:
    a = replace(read("a", ()), membership=())
    m = minority_read([a, gone("b"), gone("c")], ("a",))
    assert m is not None and m.voters == ("a", "b", "c")
    assert minority_read([a, replace(a, name="b"), gone("c")], ("a", "b")) is None


def test_nothing_read_is_a_refusal_not_a_minority_line() -> None:
    d = decide([gone("a"), gone("b"), gone("c")], NOQ)
    assert d.refused == "unreadable" and d.minority is None


def minority_report() -> InspectReport:
    """test_plan_actions' report with etcd-3 unreachable too: only etcd-1 is read."""
    base = report()
    states = tuple(s if s.name != "etcd-3" else MemberState(
        name="etcd-3", host=s.host, reachable=False, error="no route to host")
        for s in base.members)
    return InspectReport("lab", states, NOQ, decide(states, NOQ))


def test_inspect_json_and_table_carry_it() -> None:
    rep = minority_report()
    got = rep.to_json()["minority_read"]
    assert got == {"voters": ["etcd-1", "etcd-2", "etcd-3"], "read": ["etcd-1"],
                   "not_read": ["etcd-2", "etcd-3"], "quorum": 2,
                   "message": rep.decision.minority.line()}  # type: ignore[union-attr]
    assert report().to_json()["minority_read"] is None
    buf = io.StringIO()
    inspect_table(rep, Console(file=buf, width=400))
    assert ("WARNING: only 1 of 3 voting members read (etcd-1): writes acknowledged by etcd-2 "
            "and etcd-3 alone may be lost") in buf.getvalue()


def test_the_plan_carries_it_in_json_and_table_and_reads_it_back() -> None:
    rep = minority_report()
    assert {s.name for s in rep.members if s.membership} == {"etcd-1"}
    assert MEMBERSHIP == rep.members[0].membership
    inv = inventory("static-pod")
    plan = make_plan(inv, rep, {"etcd-1": configs("static-pod")["etcd-1"]}, "r-1")
    assert plan.minority_read == rep.decision.minority
    data = plan.to_json()
    assert data["minority_read"]["not_read"] == ["etcd-2", "etcd-3"]
    again = Plan.from_json(json.loads(json.dumps(data)))
    assert again.minority_read == plan.minority_read
    buf = io.StringIO()
    plan_table(plan, Console(file=buf, width=400))
    assert "WARNING: only 1 of 3 voting members read (etcd-1)" in buf.getvalue()
    # Without a minority: null in JSON, no line.
    full = make_plan(inv, report(), configs("static-pod"), "r-1")
    assert full.to_json()["minority_read"] is None
    buf = io.StringIO()
    plan_table(full, Console(file=buf, width=400))
    assert "voting members read" not in buf.getvalue()
    # The runbook says it too, in its header.
    from etcd_recovery.runbook import plan_markdown
    assert "- **WARNING:** only 1 of 3 voting members read (etcd-1)" in plan_markdown(plan, inv)
    assert "WARNING" not in plan_markdown(full, inv)


@pytest.mark.parametrize("edit", [
    lambda m: {**m, "message": "all is well"},
    lambda m: {**m, "quorum": "2"},
    lambda m: {**m, "read": []},
    lambda m: {k: v for k, v in m.items() if k != "quorum"},
    lambda m: ["etcd-1"],
])
def test_a_saved_plan_with_a_wrong_minority_object_is_refused(edit: object) -> None:
    rep = minority_report()
    plan = make_plan(inventory("static-pod"), rep,
                     {"etcd-1": configs("static-pod")["etcd-1"]}, "r-1")
    data = plan.to_json()
    data["minority_read"] = edit(data["minority_read"])  # type: ignore[operator]
    with pytest.raises(FormatError, match="minority_read"):
        Plan.from_json(data)


def test_from_json_takes_back_exactly_what_to_json_wrote() -> None:
    m = MinorityRead(("a", "b", "c"), ("a",), ("b", "c"), 2)
    assert MinorityRead.from_json(m.to_json()) == m
    assert MinorityRead.from_json(None) is None

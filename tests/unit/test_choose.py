"""The choice of member: a table of states in, a decision out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from etcd_recovery.choose import decide
from etcd_recovery.model import MemberState, Quorum

NOQ = Quorum(False)


def st(name: str, commit: int | None = 100, term: int = 5, last: int = 100, rev: int = 50,
       running: bool = False, cluster: int = 0xC1, **kw: object) -> MemberState:
    return MemberState(name=name, host=f"h-{name}", reachable=True, etcd_running=running,
                       source="live" if running else "disk", member_id=hash(name) & 0xFFFF,
                       cluster_id=cluster, term=term, commit_index=commit, last_term=term,
                       last_index=last, revision=rev, **kw)  # type: ignore[arg-type]


def test_highest_commit_wins_even_when_stopped() -> None:
    d = decide([st("a", commit=90, running=True), st("b", commit=120), st("c", commit=100)], NOQ)
    assert d.chosen == "b" and not d.refused and not d.tie
    assert "highest commit index (120 vs 100 on c)" in d.reason
    assert d.ranking == ("b", "c", "a")


@pytest.mark.parametrize(("field", "rule"), [("last_term", "last log term"),
                                             ("last_index", "last index"),
                                             ("revision", "revision")])
def test_ties_broken_in_rule_order(field: str, rule: str) -> None:
    a = st("a")
    b = replace(st("b"), **{field: getattr(a, field) + 1})
    d = decide([a, b], NOQ)
    assert d.chosen == "b"
    assert f"b has the highest {rule}" in d.reason
    assert "tied with a on commit index 100" in d.reason


def test_full_tie_is_reported_with_the_rule_that_broke_it() -> None:
    d = decide([st("etcd-2"), st("etcd-10"), st("etcd-1")], NOQ)
    assert d.tie and d.chosen == "etcd-1"
    assert "tie:" in d.reason and "by member name" in d.reason


def test_unreachable_and_unreadable_members_are_not_candidates() -> None:
    gone = MemberState(name="x", host="hx", reachable=False, error="no route to host")
    empty = MemberState(name="y", host="hy", reachable=True, etcd_running=False,
                        error="no WAL files")
    d = decide([gone, empty, st("z", commit=3)], NOQ)
    assert d.chosen == "z" and "only member that could be read" in d.reason


def test_refusals() -> None:
    gone = MemberState(name="x", host="hx", reachable=False, error="timed out")
    d = decide([gone], NOQ)
    assert d.refused == "unreadable" and d.chosen is None and "timed out" in d.reason
    d = decide([st("a"), st("b", cluster=0xC2)], NOQ)
    assert d.refused == "cluster-id" and "a=c1" in d.reason and "b=c2" in d.reason
    bad = MemberState(name="c", host="hc", reachable=True, corrupt=True,
                      error="wal/0.wal at offset 4096: crc mismatch")
    d = decide([st("a"), bad], NOQ)
    assert d.refused == "corrupt" and "offset 4096" in d.reason
    d = decide([st("a"), st("b")], Quorum(True, via="a", leader_id=7, leader_name="b"))
    assert d.refused == "quorum" and "leader b" in d.reason and d.chosen is None


def test_quorum_override_and_refusal_order() -> None:
    q = Quorum(True, via="a", leader_id=7, leader_name="a")
    d = decide([st("a", commit=5), st("b", commit=9)], q)
    assert d.refused == "quorum" and "--allow-quorum" in d.reason
    d = decide([st("a", commit=5), st("b", commit=9)], q, allow_quorum=True)
    assert d.chosen == "b" and not d.refused
    # Members of two clusters are refused as such, even when one of them has quorum.
    d = decide([st("a"), st("b", cluster=0xC2)], q)
    assert d.refused == "cluster-id"

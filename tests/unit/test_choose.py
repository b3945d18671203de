"""The choice of member: a table of states in, a decision out (raft's up-to-date rule)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from etcd_recovery.choose import decide
from etcd_recovery.errors import PreconditionError
from etcd_recovery.model import MemberState, Quorum
from etcd_recovery.stepchecks.force_new_cluster import require_kept

NOQ = Quorum(False)


def st(name: str, commit: int | None = 100, term: int = 5, last: int = 100, rev: int = 50,
       running: bool = False, cluster: int = 0xC1, **kw: object) -> MemberState:
    return MemberState(name=name, host=f"h-{name}", reachable=True, etcd_running=running,
                       source="live" if running else "disk", member_id=hash(name) & 0xFFFF,
                       cluster_id=cluster, term=term, commit_index=commit, last_term=term,
                       last_index=last, revision=rev, **kw)  # type: ignore[arg-type]


def test_newest_log_wins_over_a_higher_commit_index() -> None:
    # The history of the issue: etcd-1 learned commit 100 in term 2; etcd-2's log holds the
    # entries 101..105 that term 3's leader committed with it and acknowledged.
    one = st("etcd-1", commit=100, term=2, last=100)
    two = st("etcd-2", commit=98, term=3, last=105, consistent_index=98)
    d = decide([one, two], NOQ)
    assert d.chosen == "etcd-2" and not d.refused and not d.tie and not d.provisional
    assert d.reason == ("etcd-2 has the newest log (term 3, index 105); etcd-1 knows commit "
                        "100 but its log ends in term 2")
    assert d.ranking == ("etcd-2", "etcd-1")


def test_same_last_term_higher_index_wins() -> None:
    d = decide([st("a", last=120, commit=90), st("b", last=110, commit=110)], NOQ)
    assert d.chosen == "a" and not d.tie
    assert "b knows commit 110 but its log ends at index 110" in d.reason


@pytest.mark.parametrize(("field", "rule"), [("commit_index", "by commit index"),
                                             ("revision", "by revision")])
def test_equal_logs_are_a_tie_broken_by_commit_then_revision(field: str, rule: str) -> None:
    a = st("a", commit=90)
    b = replace(st("b", commit=90), **{field: getattr(a, field) + 1})
    d = decide([a, b], NOQ)
    assert d.chosen == "b" and d.tie
    assert "tie: b, a have equally up-to-date logs (term 5, index 100)" in d.reason
    assert rule in d.reason


def test_full_tie_is_broken_by_name() -> None:
    d = decide([st("etcd-2"), st("etcd-10"), st("etcd-1")], NOQ)
    assert d.tie and d.chosen == "etcd-1"
    assert "by member name (etcd-1)" in d.reason


def test_prefer_breaks_a_tie_first_but_never_beats_a_newer_log() -> None:
    a, b = st("a", commit=99), st("b", commit=100)
    assert decide([a, b], NOQ).chosen == "b"
    d = decide([a, b], NOQ, prefer="a")
    assert d.chosen == "a" and d.tie and "kept as planned (a)" in d.reason
    newer = st("c", term=6, last=101, commit=3)
    assert decide([a, b, newer], NOQ, prefer="a").chosen == "c"


def test_a_running_member_makes_the_choice_provisional() -> None:
    d = decide([st("a", running=True, term=4, last=200, commit=200), st("b")], NOQ)
    assert d.chosen == "b" and d.provisional
    assert "provisional: a runs" in d.reason and "once every member is fenced" in d.reason
    # A running member whose WAL could not be read ranks after every known log, and says so.
    unknown = replace(st("c", running=True, commit=500), last_term=None, last_index=None)
    d = decide([unknown, st("b")], NOQ)
    assert d.chosen == "b" and d.provisional and d.ranking == ("b", "c")
    assert "c's log could not be read" in d.reason
    # Only one readable member: nothing to compare, so nothing provisional.
    assert not decide([st("a", running=True)], NOQ).provisional


def test_a_newer_log_that_lacks_a_known_commit_is_passed_over() -> None:
    # Only a minority survives: b learned commit 300 from a leader whose log nobody else
    # kept; a's log ends in a later term but at index 100, so it lacks entries b knows are
    # committed. b holds them all.
    a = st("a", term=5, last=100, commit=50, term_starts=((1, 4), (90, 5)))
    b = st("b", term=4, last=300, commit=300, term_starts=((1, 4),))
    d = decide([a, b], NOQ)
    assert d.chosen == "b" and not d.refused and d.ranking == ("b", "a")
    assert "b's log holds every entry a member knows committed" in d.reason
    assert "not a, although its log is newer (term 5, index 100)" in d.reason
    # The same with a's log long enough, but holding another term's entry at b's commit.
    a2 = st("a", term=5, last=400, commit=100, term_starts=((1, 4), (250, 5)))
    d = decide([a2, b], NOQ)
    assert d.chosen == "b" and "a's entry 300 is from term 5" in d.reason


def test_figures_no_raft_history_produces_are_refused() -> None:
    a = st("a", term=5, last=100, commit=100, term_starts=((1, 5),))
    b = st("b", term=4, last=120, commit=120, term_starts=((1, 4),))
    d = decide([a, b], NOQ)
    assert d.refused == "inconsistent" and d.chosen is None
    assert "b knows index 120 committed, but a's log ends at index 100" in d.reason


def test_unreachable_and_unreadable_members_are_not_candidates() -> None:
    gone = MemberState(name="x", host="hx", reachable=False, error="no route to host")
    empty = MemberState(name="y", host="hy", reachable=True, etcd_running=False,
                        error="no WAL files")
    d = decide([gone, empty, st("z", commit=3, last=3)], NOQ)
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
    d = decide([st("a", last=5, commit=5), st("b", last=9, commit=9)], q)
    assert d.refused == "quorum" and "--allow-quorum" in d.reason
    d = decide([st("a", last=5, commit=5), st("b", last=9, commit=9)], q, allow_quorum=True)
    assert d.chosen == "b" and not d.refused
    # Members of two clusters are refused as such, even when one of them has quorum.
    d = decide([st("a"), st("b", cluster=0xC2)], q)
    assert d.refused == "cluster-id"


def test_force_new_cluster_precondition_uses_the_same_choice() -> None:
    one = st("etcd-1", commit=100, term=2, last=100)
    two = st("etcd-2", commit=98, term=3, last=105)
    assert require_kept([one, two], "etcd-2", "inv.yaml") is two
    with pytest.raises(PreconditionError) as err:
        require_kept([one, two], "etcd-1", "inv.yaml")
    msg = str(err.value)
    assert "the member to keep is now etcd-2, not etcd-1 as planned" in msg
    assert "execute -i inv.yaml --abandon" in msg and "plan -i inv.yaml" in msg
    # An equally up-to-date log is no reason to stop: the planned member is kept.
    assert require_kept([st("a", commit=99), st("b")], "a", "inv.yaml").name == "a"
    with pytest.raises(PreconditionError, match="cluster ID"):
        require_kept([st("a"), st("b", cluster=0xC2)], "a", "inv.yaml")


def test_quorum_is_impossible_only_when_too_few_voters_can_run() -> None:
    from etcd_recovery.inspect import StoppedSeen

    seen = StoppedSeen()
    voters = ["a", "b", "c"]
    assert seen.why_impossible(voters) is None
    seen.add("a")
    assert seen.why_impossible(voters) is None          # b and c may still make a quorum
    seen.add("x")                                        # not a voter: changes nothing
    assert seen.why_impossible(voters) is None
    seen.add("b")
    why = seen.why_impossible(voters)
    assert why is not None and "a, b" in why and "at most 1 of 3" in why
    # Five voters, one of them unnamed (never started) or unreachable: it counts as running.
    assert seen.why_impossible(["a", "b", "c", "d", "9f3"]) is None
    seen.add("c")
    assert seen.why_impossible(["a", "b", "c", "d", "9f3"]) is not None

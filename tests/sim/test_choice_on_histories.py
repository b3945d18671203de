"""The choice of member, checked on simulated raft histories (see raft_history.py).

Hypothesis draws histories (3 or 5 members, 10..80 actions), stops every member, and reads a
set of survivors' disks: a majority, or any non-empty set. On every history the simulator
asserts raft's own invariants after each step. Then, on what the survivors' disks show:
- a majority survives: decide keeps the most up-to-date log, which holds every acknowledged
  entry and every entry any survivor knows committed; it never refuses;
- any survivors: decide never refuses, and keeps a log holding every entry any survivor knows
  committed, the most up-to-date of those that do (with a minority, the newest log of all can
  lack one: see the minority histories below);
- ties are reported, broken by commit index, revision, name; ``prefer`` wins a tie and
  nothing else.
Fixed histories: the one that made the rule change (commit index first loses acknowledged
writes), two minority ones, raft's figure 8, and a stale leader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, event, find, given, settings
from hypothesis import strategies as st

from etcd_recovery.choose import decide
from etcd_recovery.model import MemberState, Quorum

from .raft_history import (
    Action,
    Apply,
    Cluster,
    Crash,
    Disk,
    Elect,
    Flush,
    Heartbeat,
    LeaderCommit,
    Partition,
    Propose,
    Replicate,
    Restart,
    check_invariants,
    has_all,
    known_committed_entries,
    leaders,
    new_cluster,
    run,
    step,
    stop_all,
)

NOQ = Quorum(False)
SETTINGS = settings(max_examples=700, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- drawing histories ----------------------------------------------------------------------

# How often each kind of action is drawn: weighted towards what moves a history forward.
WEIGHTS: dict[str, int] = {"elect": 2, "propose": 3, "replicate": 4, "heartbeat": 2,
                           "commit": 4, "apply": 3, "flush": 2, "crash": 1, "restart": 1,
                           "partition": 1}
KINDS = [kind for kind, w in WEIGHTS.items() for _ in range(w)]
# Half the histories have no lasting partitions (swarm testing): they make fewer stale leaders
# but more of the progress that other interesting cases need.
KINDS_NO_PARTITION = [kind for kind in KINDS if kind != "partition"]


def decode(n: int, x: int, kinds: Sequence[str] = KINDS) -> Action:
    """One action from one integer: drawing one integer per action keeps generation fast.
    Mixed radix, least significant first: the kind, the member it targets, the k-th member that
    believes it leads, how far short of the end it sends, applies or loses (0 five times in
    eight), then two bits per member, both set (one time in four) for a member its messages
    miss (for a partition: the members cut off from the rest)."""
    x, kind = divmod(x, len(kinds))
    x, member = divmod(x, n)
    x, leader = divmod(x, 4)
    x, short = divmod(x, 8)
    short = max(0, short - 4)
    unreached = frozenset(i for i in range(n) if (x >> (2 * i)) & 3 == 3)
    actions: dict[str, Action] = {
        "elect": Elect(member, unreached), "propose": Propose(leader),
        "replicate": Replicate(leader, unreached, short), "heartbeat": Heartbeat(leader, unreached),
        "commit": LeaderCommit(leader), "apply": Apply(member, short), "flush": Flush(member),
        "crash": Crash(member, short), "restart": Restart(member),
        "partition": Partition(unreached)}
    return actions[kinds[kind]]


def radix(n: int, kinds: Sequence[str]) -> int:
    return len(kinds) * n * 4 * 8 * (1 << (2 * n))


@dataclass(frozen=True)
class History:
    n: int
    actions: tuple[Action, ...]


@st.composite
def histories(draw: st.DrawFn) -> History:
    n = draw(st.sampled_from((3, 5)))
    kinds = KINDS if draw(st.booleans()) else KINDS_NO_PARTITION
    steps = draw(st.integers(10, 80))
    xs = draw(st.lists(st.integers(0, radix(n, kinds) - 1), min_size=steps, max_size=steps))
    return History(n, tuple(decode(n, x, kinds) for x in xs))


@dataclass(frozen=True)
class Scenario:
    history: History
    cluster: Cluster
    survivors: tuple[Disk, ...]

    def states(self) -> list[MemberState]:
        return [d.state() for d in self.survivors]

    def disk(self, name: str | None) -> Disk:
        return next(d for d in self.survivors if d.name == name)


@st.composite
def scenarios(draw: st.DrawFn, majority: bool) -> Scenario:
    """A history, then every member stopped (a live one loses some of its unsynced commit
    progress), then the survivors: a majority, or any non-empty set of members."""
    h = draw(histories())
    cluster = run(h.n, h.actions)  # asserting raft's invariants after every step
    disks = stop_all(cluster, draw(st.lists(st.integers(0, 3), min_size=h.n, max_size=h.n)))
    order = draw(st.permutations(range(h.n)))
    keep = order[:draw(st.integers(cluster.majority if majority else 1, h.n))]
    return Scenario(h, cluster, tuple(disks[i] for i in sorted(keep)))


def acked_entries(c: Cluster) -> list[tuple[int, int]]:
    return [(a.index, a.eid) for a in c.acked]


def old_rule(m: MemberState) -> tuple[int, int, int, int]:
    """The rule before this one: commit index first."""
    return (m.commit_index or 0, m.last_term or 0, m.last_index or 0, m.revision or 0)


# --- the simulator itself ------------------------------------------------------------------


@SETTINGS
@given(histories())
def test_simulator_keeps_raft_safety(h: History) -> None:
    """Election safety, log matching, leader completeness, state machine safety, and committed
    entries staying on a majority: checked after every step (run(check=True))."""
    c = run(h.n, h.actions)
    # A crash never loses a log entry or a committed index it fsynced.
    for nd, disk in zip(c.nodes, stop_all(c, [3] * h.n), strict=True):
        assert disk.log == nd.log and nd.synced_commit <= disk.hardstate_commit <= nd.commit
        assert disk.consistent_index == nd.persisted_ci


def _rules_disagree(s: Scenario) -> bool:
    """The newest log knows a lower commit than another survivor: commit-first would differ."""
    newest = max(s.survivors, key=lambda d: (d.last_term, d.last_index))
    return any(d.known_committed > newest.known_committed for d in s.survivors)


def _stale_leader(s: Scenario) -> bool:
    """A leader proposed while a newer term existed (replaying the history)."""
    c = new_cluster(s.history.n)
    for a in s.history.actions:
        if isinstance(a, Propose) and leaders(c):
            ld = c.nodes[leaders(c)[a.leader % len(leaders(c))]]
            if ld.term < max(nd.term for nd in c.nodes):
                return True
        c = step(c, a)
    return False


def _lost_commit(s: Scenario) -> bool:
    return any(d.hardstate_commit < s.cluster.nodes[d.member_id - 1].commit for d in s.survivors)


@pytest.mark.parametrize("case", [_rules_disagree, _stale_leader, _lost_commit],
                         ids=["rules disagree", "stale leader", "lost commit HardState"])
def test_generated_histories_reach_the_cases_that_matter(case: Callable[[Scenario], bool]) -> None:
    """A guard against a generator that drifts into trivial histories."""
    find(scenarios(majority=True), case, settings=settings(
        max_examples=1000, derandomize=True, database=None, phases=[Phase.generate]))


# --- the choice ----------------------------------------------------------------------------


def holds_what_survivors_know(s: Scenario, d: Disk) -> bool:
    """Does ``d``'s log hold every entry any survivor knows committed (same index, same id)?"""
    return all(has_all(d, known_committed_entries(x)) for x in s.survivors)


def eligible(s: Scenario) -> list[Disk]:
    """The survivors whose logs hold every entry any survivor knows committed. Never empty: the
    survivor that knows the highest commit holds them all (state machine safety)."""
    return [d for d in s.survivors if holds_what_survivors_know(s, d)]


def newest(disks: Sequence[Disk]) -> tuple[int, int]:
    return max((d.last_term, d.last_index) for d in disks)


@SETTINGS
@given(scenarios(majority=True))
def test_majority_of_survivors_keeps_every_acknowledged_write(s: Scenario) -> None:
    """With a majority surviving, every acknowledged entry is on some survivor; the most
    up-to-date log holds all of them, and everything any survivor knows committed."""
    d = decide(s.states(), NOQ)
    assert d.refused is None, d.reason
    assert not d.provisional
    kept = s.disk(d.chosen)
    assert has_all(kept, acked_entries(s.cluster)), d.reason
    assert holds_what_survivors_know(s, kept), d.reason
    assert (kept.last_term, kept.last_index) == newest(s.survivors), d.reason
    event(f"acknowledged entries: {'some' if s.cluster.acked else 'none'}")
    if _rules_disagree(s):
        event("commit index first would choose another member")
    if not has_all(s.disk(max(s.states(), key=old_rule).name), acked_entries(s.cluster)):
        event("commit index first loses acknowledged entries")


@SETTINGS
@given(scenarios(majority=False))
def test_any_survivors_keep_everything_a_survivor_knows_committed(s: Scenario) -> None:
    """With any survivors (a minority too): never a refusal, and the kept log holds every entry
    any survivor knows committed; it is the most up-to-date of the logs that do. (The newest
    log of all can lack one: test_minority_newest_log_... below.)"""
    d = decide(s.states(), NOQ)
    assert d.refused is None, d.reason
    kept = s.disk(d.chosen)
    assert holds_what_survivors_know(s, kept), d.reason
    assert (kept.last_term, kept.last_index) == newest(eligible(s)), d.reason
    if newest(eligible(s)) != newest(s.survivors):
        event("the newest log lacks an entry a survivor knows committed")


@SETTINGS
@given(scenarios(majority=False))
def test_a_write_is_lost_only_where_the_plan_says_a_minority_was_read(s: Scenario) -> None:
    """With every member given (those that did not survive as unreachable), the decision
    names a minority read exactly when the members not read could make a quorum alone; and
    whenever the kept log lacks an acknowledged entry, it names one."""
    survived = {d.name for d in s.survivors}
    states = s.states() + [MemberState(name=nd.name, host=f"h-{nd.name}", reachable=False)
                           for nd in s.cluster.nodes if nd.name not in survived]
    d = decide(states, NOQ)
    assert d.chosen == decide(s.states(), NOQ).chosen, d.reason
    unread = s.history.n - len(s.survivors)
    assert (d.minority is not None) == (unread >= s.cluster.majority)
    if not has_all(s.disk(d.chosen), acked_entries(s.cluster)):
        assert d.minority is not None, d.reason
        event("the kept log lacks an acknowledged entry (minority read)")


@SETTINGS
@given(scenarios(majority=False))
def test_ties_are_reported_and_prefer_breaks_them_only(s: Scenario) -> None:
    d = decide(s.states(), NOQ)
    best = newest(eligible(s))
    tied = [x.name for x in eligible(s) if (x.last_term, x.last_index) == best]
    assert d.tie == (len(tied) > 1), d.reason
    if d.tie:
        assert "tie" in d.reason
        event("tie")
        # Broken by commit index, then revision, then name.
        states = [x for x in s.states() if x.name in tied]
        first = max(states, key=lambda m: (m.commit_index or 0, m.revision or 0,
                                           [-ord(ch) for ch in m.name]))
        assert d.chosen == first.name, d.reason
    for x in s.survivors:
        again = decide(s.states(), NOQ, prefer=x.name)
        assert again.chosen == (x.name if x.name in tied else d.chosen), again.reason


# --- the history that made the rule change ---------------------------------------------------

A, B, C = 0, 1, 2
LEADER = 0  # the only member that believes it leads, whenever an action needs a leader


def counterexample() -> Cluster:
    """Term 2: c leads, a and b hold 1..10; a learns commit 10 by heartbeat, b's fsynced
    commit stays 8. c restarts (its own commit-only HardState lost: commit 8), wins term 3
    with b's vote while a is cut off, writes 11..15 to b and commits them: acknowledged.
    c dies before b learns commit 15."""
    to_a_only, to_b_only = frozenset({B}), frozenset({A})    # unreached sets
    return run(3, [
        Elect(C, frozenset({A, B})),                   # term 1: c alone, loses
        Elect(C),                                      # term 2: c wins; empty entry 1
        *[Propose(LEADER)] * 7,                        # 2..8
        Replicate(LEADER),                             # a, b: 1..8
        LeaderCommit(LEADER),                          # commit 8
        Propose(LEADER), Propose(LEADER),              # 9, 10: c fsyncs commit 8 with them
        Replicate(LEADER),                             # a, b: 1..10, commit 8 fsynced
        LeaderCommit(LEADER),                          # commit 10, not fsynced
        Heartbeat(LEADER, to_a_only),                  # a learns 10; b never does
        Apply(B, 0), Flush(B),                         # b's consistent index 8
        Crash(C, 2), Restart(C),                       # c comes back with commit 8
        Elect(C, to_b_only),                           # term 3: c wins with b's vote
        *[Propose(LEADER)] * 4,                        # 12..15 (11 is c's empty entry)
        Replicate(LEADER, to_b_only),                  # b: 11..15, leader commit 8
        LeaderCommit(LEADER),                          # commit 15: 11..15 acknowledged
        Crash(C, 3),                                   # c is gone
    ])


def test_counterexample_history_picks_the_newest_log() -> None:
    c = counterexample()
    check_invariants(c)
    a, b, _ = stop_all(c, [0, 0, 0])
    assert (a.hardstate_commit, a.last_term, a.last_index) == (10, 2, 10)
    assert (b.hardstate_commit, b.consistent_index, b.last_term, b.last_index) == (8, 8, 3, 15)
    assert max(e.index for e in c.acked) == 15

    d = decide([a.state(), b.state()], NOQ)
    assert d.chosen == "b" and not d.refused and not d.tie
    assert "term" in d.reason
    assert has_all(b, acked_entries(c))

    # The old rule, commit index first, keeps a and loses the acknowledged writes 11..15.
    assert max([a.state(), b.state()], key=old_rule).name == "a"
    assert not has_all(a, acked_entries(c))


# --- minority survivors: the newest log can lack what another knows committed ---------------

D, E = 3, 4


def minority_history(e_puts: int) -> Cluster:
    """5 members. Term 1: a writes 1..2, on its own disk only. Term 2: e wins with c and d,
    writes its empty entry at 1 (and ``e_puts`` puts) on its own disk only. Term 3: a wins with
    c and d, commits 1..3 with them; b, lagging, gets 1..2 in a message that stops before a's
    term-3 entry, so it knows commit 2 with a log that ends in term 1. Only b and e survive."""
    return run(5, [
        Elect(A, frozenset({B, E})),                   # term 1: a wins with c, d
        Propose(0),                                    # a: 2, term 1
        Elect(E, frozenset({A, B, C, D})),             # e alone: term 1, loses
        Elect(E, frozenset({A, B})),                   # term 2: e wins with c, d; empty 1
        *[Propose(1)] * e_puts,                        # e (the 2nd who thinks it leads)
        Elect(A, frozenset({B, C, D, E})),             # a alone: term 2, loses
        Elect(A, frozenset({B, E})),                   # term 3: a wins with c, d; empty 3
        Replicate(0, frozenset({B, E})),               # c, d: 1..3
        LeaderCommit(0),                               # commit 3: 1..3 acknowledged
        Replicate(0, frozenset({C, D, E}), 1),         # b: 1..2, commit min(3, 2) = 2
    ])


@pytest.mark.parametrize("e_puts", [0, 1])
def test_minority_newest_log_that_lacks_a_known_commit_is_passed_over(e_puts: int) -> None:
    c = minority_history(e_puts)
    disks = stop_all(c, [0] * 5)
    b, e = disks[B], disks[E]
    assert (b.known_committed, b.last_term, b.last_index) == (2, 1, 2)
    assert (e.last_term, e.last_index) == (2, 1 + e_puts)
    assert {a.by_term for a in c.acked} == {3}          # committed after e's log ends

    # Raft's order alone keeps e, which lacks entries 1..2 that b knows committed (and that
    # were acknowledged): with e_puts=1, e's last index is not even below b's commit.
    by_log = max([b, e], key=lambda x: (x.last_term, x.last_index))
    assert by_log is e and not has_all(e, known_committed_entries(b))
    d = decide([b.state(), e.state()], NOQ)
    assert d.chosen == "b" and not d.refused, d.reason
    assert "not e" in d.reason


# --- the simulator against raft's classic trap (raft paper, figure 8) -------------------------


def test_figure_8_an_old_term_entry_is_not_committed_by_counting_replicas() -> None:
    """a, leading term 4, has its term-2 entry (index 2) on a majority (a, b, c) yet must not
    commit it: e, whose index 2 is from term 3, can still win term 5 and overwrite it."""
    to_only = {m: frozenset({A, B, C, D, E} - {m}) for m in (A, B, C, D, E)}
    history: list[Action] = [
        Elect(A), Replicate(0), LeaderCommit(0),        # term 1: 1 committed everywhere
        Elect(A, frozenset({D, E})),                    # term 2: a wins with b, c; empty 2
        Replicate(0, to_only[B]),                       # b: 1..2
        Crash(A, 0),
        Elect(E, frozenset({A, B})),                    # e: term 2, c already voted: loses
        Elect(E, frozenset({A, B})),                    # term 3: e wins with c, d; empty 2
        Crash(E, 0), Restart(A),
        Elect(A, frozenset({E})),                       # a: term 3, c and d voted: loses
        Elect(A, frozenset({E})),                       # term 4: a wins; empty 3
        Replicate(0, frozenset({D, E}), 1),             # b, c: 1..2 (index 2: a, b, c)
        LeaderCommit(0),                                # not allowed: index 2 is of term 2
    ]
    c = run(5, history)
    assert [a.index for a in c.acked] == [1]
    old = c.nodes[A].log[1]
    assert [nd.name for nd in c.nodes if nd.log[1:2] == (old,)] == ["a", "b", "c"]
    history += [
        Crash(A, 0), Restart(E),
        Elect(E, frozenset({A})),                       # e: term 4, b, c, d voted: loses
        Elect(E, frozenset({A})),                       # term 5: e wins (its last term 3 > 2)
        Replicate(0, frozenset({A})),                   # b, c, d: a's index 2 overwritten
    ]
    c = run(5, history)                                 # still safe: it was never committed
    assert all(nd.log[1].term == 3 for nd in c.nodes[B:])


def test_a_stale_leader_is_rejected_by_members_that_know_a_newer_term() -> None:
    """a leads term 1 and never hears of term 2; b wins term 2 with c and commits with it. a's
    MsgApp still reaches c, which rejects it: c's log keeps b's committed entries."""
    c = run(3, [
        Elect(A), Propose(0),                           # term 1: a leads, writes 1..2 alone
        Elect(B, frozenset({A})),                       # term 2: b wins with c; a unaware
        Propose(1), Replicate(1, frozenset({A})), LeaderCommit(1),  # b, c: 1..2, committed
    ])
    assert leaders(c) == [A, B] and c.nodes[A].term == 1
    stale = step(step(c, Propose(0)), Replicate(0))      # a writes 3, sends 1..3 to b and c
    check_invariants(stale)
    assert stale.nodes[C].log == c.nodes[C].log and stale.nodes[B].log == c.nodes[B].log
    assert stale.nodes[A].log[-1].term == 1             # a's own log grew; nobody took it

"""A small, pure model of etcd/raft histories, to test the choice of the member to keep.

A history is a sequence of actions (elections, proposals, AppendEntries, heartbeats, commits,
applies, backend flushes, crashes, restarts, network partitions) applied to a cluster of 3 or 5
members. Any message may miss any member: one that is not delivered simply never happens. So
an old leader that has not heard of a newer term can still propose, and replicate to members
that have not heard of it either (they reject it once they have).

What is modelled after etcd (raft at v3.5), and why it matters to the choice:
- term, vote and log entries are always fsynced (``MustSync``), and whenever they are, the
  whole HardState, commit included, is fsynced with them;
- a HardState whose only change is the commit (a heartbeat, or the leader's own commit
  advance) is written but *not* fsynced: after a crash the commit on disk is anywhere between
  the last synced commit and the one in memory;
- the backend's consistent index (what the bolt db has applied) is persisted in batches, so it
  lags the applied index and falls back to the last flush on a crash;
- a new leader appends an empty entry in its term; every other entry is a put, and a
  member's revision is 1 + the puts applied up to its persisted consistent index.

Everything here is a frozen dataclass or a pure function; ``step`` returns the new cluster, or
the same one when the action is not possible in that state (it is then skipped).
``check_invariants`` asserts raft's own safety properties, so the simulator is tested too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from etcd_recovery.model import MemberState

CLUSTER_ID = 0xC1
NAMES = ("a", "b", "c", "d", "e")


@dataclass(frozen=True)
class Entry:
    term: int
    eid: int     # unique over the whole history: two entries are the same entry iff same eid
    put: bool    # a client put; False for the empty entry a new leader appends


@dataclass(frozen=True)
class Ack:
    """An entry a leader saw committed (and would acknowledge to the client)."""

    index: int
    term: int
    eid: int
    by_term: int  # the term of the leader that committed it


@dataclass(frozen=True)
class Node:
    name: str
    term: int = 0
    vote: str | None = None
    log: tuple[Entry, ...] = ()
    commit: int = 0           # in memory
    synced_commit: int = 0    # the commit of the last fsynced HardState: surely on disk
    applied: int = 0
    persisted_ci: int = 0     # the backend's consistent index as of its last flush
    alive: bool = True
    leader: bool = False      # believes it leads in its current term
    match: tuple[int, ...] = ()  # as leader: the match index of each member, by position

    @property
    def last_index(self) -> int:
        return len(self.log)

    @property
    def last_term(self) -> int:
        return self.log[-1].term if self.log else 0

    def up_to_date(self) -> tuple[int, int]:
        """Raft's order of logs (``raftLog.isUpToDate``): last term, then last index."""
        return (self.last_term, self.last_index)

    def synced(self) -> Node:
        """The HardState (term, vote, commit) is fsynced, with any entries just written."""
        return replace(self, synced_commit=self.commit)


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    acked: tuple[Ack, ...] = ()
    next_eid: int = 1
    elections: tuple[tuple[int, str], ...] = ()  # (term, winner) of every election won
    cut_off: frozenset[int] = frozenset()  # the network: these members and the rest can't talk

    @property
    def n(self) -> int:
        return len(self.nodes)

    @property
    def majority(self) -> int:
        return self.n // 2 + 1

    def with_node(self, i: int, node: Node) -> Cluster:
        return replace(self, nodes=(*self.nodes[:i], node, *self.nodes[i + 1:]))


def new_cluster(n: int) -> Cluster:
    assert n in (3, 5)
    return Cluster(nodes=tuple(Node(name) for name in NAMES[:n]))


# --- actions ------------------------------------------------------------------------------
# Members are positions in ``Cluster.nodes``. ``leader`` picks among the members that believe
# they lead (the k-th of them, modulo how many there are), so that most drawn actions apply.


@dataclass(frozen=True)
class Elect:
    candidate: int
    unreached: frozenset[int] = frozenset()  # members its MsgVote does not reach


@dataclass(frozen=True)
class Propose:
    leader: int


@dataclass(frozen=True)
class Replicate:
    leader: int
    unreached: frozenset[int] = frozenset()  # members its MsgApp does not reach
    short: int = 0           # send the leader's log up to its last index minus this


@dataclass(frozen=True)
class Heartbeat:
    leader: int
    unreached: frozenset[int] = frozenset()


@dataclass(frozen=True)
class LeaderCommit:
    leader: int


@dataclass(frozen=True)
class Apply:
    member: int
    short: int               # apply up to the commit index minus this


@dataclass(frozen=True)
class Flush:
    member: int


@dataclass(frozen=True)
class Crash:
    member: int
    lost: int                # how much unsynced commit progress the crash loses (clamped)


@dataclass(frozen=True)
class Restart:
    member: int


@dataclass(frozen=True)
class Partition:
    """From now on these members and the others cannot talk (empty: the network heals). Lasting
    partitions are what leave an old leader working on, unaware of a newer term."""

    cut_off: frozenset[int] = frozenset()


Action = (Elect | Propose | Replicate | Heartbeat | LeaderCommit | Apply | Flush | Crash | Restart
          | Partition)


def leaders(c: Cluster) -> list[int]:
    return [i for i, nd in enumerate(c.nodes) if nd.alive and nd.leader]


def _pick_leader(c: Cluster, k: int) -> int | None:
    ls = leaders(c)
    return ls[k % len(ls)] if ls else None


def _adopt_term(nd: Node, term: int) -> tuple[Node, bool]:
    """A member that hears of a higher term becomes its follower (with no vote in it)."""
    if term > nd.term:
        return replace(nd, term=term, vote=None, leader=False, match=()), True
    return nd, False


def elect(c: Cluster, candidate: int, voters: Iterable[int]) -> Cluster:
    cand = c.nodes[candidate]
    if not cand.alive:
        return c
    term = cand.term + 1
    cand = replace(cand, term=term, vote=cand.name, leader=False, match=()).synced()
    votes = 1
    for v in sorted(set(voters) - {candidate}):
        nd = c.nodes[v]
        if not nd.alive or nd.term > term:
            continue                              # rejected: the voter knows a newer term
        nd, changed = _adopt_term(nd, term)
        if nd.vote in (None, cand.name) and cand.up_to_date() >= nd.up_to_date():
            nd, changed = replace(nd, vote=cand.name), True
            votes += 1
        c = c.with_node(v, nd.synced() if changed else nd)
    if votes >= c.majority:
        empty = Entry(term, c.next_eid, put=False)
        log = (*cand.log, empty)
        match = tuple(len(log) if i == candidate else 0 for i in range(c.n))
        cand = replace(cand, leader=True, log=log, match=match).synced()
        c = replace(c, next_eid=c.next_eid + 1, elections=(*c.elections, (term, cand.name)))
    return c.with_node(candidate, cand)


def propose(c: Cluster, leader: int) -> Cluster:
    ld = c.nodes[leader]
    log = (*ld.log, Entry(ld.term, c.next_eid, put=True))
    match = tuple(len(log) if i == leader else m for i, m in enumerate(ld.match))
    c = replace(c, next_eid=c.next_eid + 1)
    return c.with_node(leader, replace(ld, log=log, match=match).synced())


def replicate(c: Cluster, leader: int, follower: int, upto: int) -> Cluster:
    """MsgApp carrying the leader's log up to ``upto`` (from index 1: prevIndex 0 always
    matches) and its commit index."""
    ld, fo = c.nodes[leader], c.nodes[follower]
    if follower == leader or not fo.alive or fo.term > ld.term:
        return c                                  # rejected, or not delivered
    fo, term_changed = _adopt_term(fo, ld.term)
    log = list(fo.log)
    written = False
    for i in range(upto):
        if i < len(log) and log[i].term == ld.log[i].term:
            continue                              # already there (log matching: same entry)
        assert i >= fo.commit, f"{fo.name}: truncating committed entry {i + 1}"
        assert i >= fo.applied, f"{fo.name}: truncating applied entry {i + 1}"
        log[i:] = ld.log[i:upto]
        written = True
        break
    commit = max(fo.commit, min(ld.commit, upto))
    fo = replace(fo, log=tuple(log), commit=commit)
    if written or term_changed:
        fo = fo.synced()
    match = tuple(max(m, upto) if i == follower else m for i, m in enumerate(ld.match))
    c = c.with_node(follower, fo)
    return c.with_node(leader, replace(ld, match=match))


def heartbeat(c: Cluster, leader: int, follower: int) -> Cluster:
    """MsgHeartbeat: commit = min(leader's commit, its record of the follower's match)."""
    ld, fo = c.nodes[leader], c.nodes[follower]
    if follower == leader or not fo.alive or fo.term > ld.term:
        return c
    fo, term_changed = _adopt_term(fo, ld.term)
    fo = replace(fo, commit=max(fo.commit, min(ld.commit, ld.match[follower])))
    return c.with_node(follower, fo.synced() if term_changed else fo)  # commit-only: no fsync


def leader_commit(c: Cluster, leader: int) -> Cluster:
    """raft's maybeCommit: the index a majority has, if its entry is of the leader's term."""
    ld = c.nodes[leader]
    n = sorted(ld.match, reverse=True)[c.majority - 1]
    if n <= ld.commit or ld.log[n - 1].term != ld.term:
        return c
    known = {a.eid for a in c.acked}
    new = tuple(Ack(i + 1, e.term, e.eid, ld.term) for i, e in enumerate(ld.log[:n])
                if e.eid not in known)
    c = replace(c, acked=c.acked + new)
    return c.with_node(leader, replace(ld, commit=n))   # commit-only: not fsynced


def crash(nd: Node, lost: int) -> Node:
    """What a member's disk holds after it dies; on restart it comes back from exactly this."""
    disk_commit = max(nd.synced_commit, nd.commit - lost)
    return replace(nd, alive=False, leader=False, match=(), commit=disk_commit,
                   synced_commit=disk_commit, applied=nd.persisted_ci)


def _reached(c: Cluster, sender: int, unreached: frozenset[int]) -> list[int]:
    """Who a message from ``sender`` reaches: its side of the partition, less ``unreached``."""
    side = (sender in c.cut_off)
    return [i for i in range(c.n) if (i in c.cut_off) == side and i not in unreached]


def step(c: Cluster, a: Action) -> Cluster:
    """Apply one action; an action that is not possible in this state leaves ``c`` as it is."""
    if isinstance(a, Elect):
        return elect(c, a.candidate % c.n, _reached(c, a.candidate % c.n, a.unreached))
    if isinstance(a, Partition):
        return replace(c, cut_off=frozenset(i % c.n for i in a.cut_off))
    if isinstance(a, Propose | Replicate | Heartbeat | LeaderCommit):
        ld = _pick_leader(c, a.leader)
        if ld is None:
            return c
        if isinstance(a, Propose):
            return propose(c, ld)
        if isinstance(a, Replicate):
            upto = max(0, c.nodes[ld].last_index - a.short)
            for f in _reached(c, ld, a.unreached):
                c = replicate(c, ld, f, upto)
            return c
        if isinstance(a, Heartbeat):
            for f in _reached(c, ld, a.unreached):
                c = heartbeat(c, ld, f)
            return c
        return leader_commit(c, ld)
    i = a.member % c.n
    nd = c.nodes[i]
    if isinstance(a, Restart):
        return c if nd.alive else c.with_node(i, replace(nd, alive=True))
    if not nd.alive:
        return c
    if isinstance(a, Apply):
        return c.with_node(i, replace(nd, applied=max(nd.applied, nd.commit - a.short)))
    if isinstance(a, Flush):
        return c.with_node(i, replace(nd, persisted_ci=nd.applied))
    return c.with_node(i, crash(nd, a.lost))


def run(n: int, actions: Iterable[Action], check: bool = True) -> Cluster:
    c = new_cluster(n)
    for a in actions:
        c = step(c, a)
        if check:
            check_invariants(c)
    return c


# --- raft's safety properties, asserted on the simulator itself ------------------------------


def holds(nd: Node, index: int, eid: int) -> bool:
    return 0 < index <= len(nd.log) and nd.log[index - 1].eid == eid


def check_invariants(c: Cluster) -> None:
    # Election safety: at most one leader per term.
    terms = [t for t, _ in c.elections]
    assert len(terms) == len(set(terms)), f"two leaders in one term: {c.elections}"
    by_index: dict[int, int] = {}
    for a in c.acked:
        # State machine safety: one committed entry per index.
        assert by_index.setdefault(a.index, a.eid) == a.eid, f"index {a.index} committed twice"
        # Committed entries stay on a majority of logs.
        on = sum(holds(nd, a.index, a.eid) for nd in c.nodes)
        assert on >= c.majority, f"committed entry {a} is on {on} logs only"
    acked = {(a.index, a.eid) for a in c.acked}
    for nd in c.nodes:
        assert all(x.term <= y.term for x, y in zip(nd.log, nd.log[1:], strict=False)), nd
        assert nd.last_term <= nd.term, nd
        assert nd.synced_commit <= nd.commit <= nd.last_index, nd
        assert nd.persisted_ci <= nd.applied <= max(nd.commit, nd.persisted_ci), nd
        # What a member knows committed (or has applied) was committed.
        known = max(nd.commit, nd.applied)
        assert all((i + 1, e.eid) in acked for i, e in enumerate(nd.log[:known])), nd
        if nd.leader:
            # Leader completeness: a leader holds every entry committed in earlier terms.
            missing = [a for a in c.acked if a.by_term < nd.term and not holds(nd, a.index, a.eid)]
            assert not missing, f"leader {nd.name} of term {nd.term} lacks {missing}"
            assert (nd.term, nd.name) in c.elections
    # Log matching: the same (index, term) means the same entry and the same prefix.
    for j, x in enumerate(c.nodes):
        for y in c.nodes[j + 1:]:
            top = next((i + 1 for i in reversed(range(min(len(x.log), len(y.log))))
                        if x.log[i].term == y.log[i].term), 0)
            assert x.log[:top] == y.log[:top], f"log matching: {x.name} vs {y.name}"


# --- reading the survivors' disks ---------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """One member's data dir, read with etcd stopped."""

    name: str
    member_id: int
    term: int
    log: tuple[Entry, ...]
    hardstate_commit: int
    consistent_index: int

    @property
    def last_index(self) -> int:
        return len(self.log)

    @property
    def last_term(self) -> int:
        return self.log[-1].term if self.log else 0

    @property
    def known_committed(self) -> int:
        """What inspect reports as the commit index."""
        return max(self.hardstate_commit, self.consistent_index)

    @property
    def revision(self) -> int:
        return 1 + sum(e.put for e in self.log[:self.consistent_index])

    @property
    def term_starts(self) -> tuple[tuple[int, int], ...]:
        """(first index of a term, the term) for each term in the log, as inspect reads them
        from the WAL."""
        return tuple((i + 1, e.term) for i, e in enumerate(self.log)
                     if i == 0 or e.term != self.log[i - 1].term)

    def state(self) -> MemberState:
        return MemberState(name=self.name, host=f"h-{self.name}", reachable=True,
                           etcd_running=False, source="disk", member_id=self.member_id,
                           cluster_id=CLUSTER_ID, term=self.term,
                           commit_index=self.known_committed,
                           consistent_index=self.consistent_index, last_index=self.last_index,
                           last_term=self.last_term, revision=self.revision,
                           hardstate_commit=self.hardstate_commit, term_starts=self.term_starts)


def stop_all(c: Cluster, lost: Sequence[int]) -> tuple[Disk, ...]:
    """Every member's disk once etcd is stopped everywhere (a live member as if it crashed now,
    losing ``lost[i]`` of its unsynced commit progress)."""
    disks = []
    for i, nd in enumerate(c.nodes):
        if nd.alive:
            nd = crash(nd, lost[i] if i < len(lost) else 0)
        disks.append(Disk(nd.name, i + 1, nd.term, nd.log, nd.commit, nd.persisted_ci))
    return tuple(disks)


def has_all(d: Disk, entries: Iterable[tuple[int, int]]) -> bool:
    """Does ``d``'s log hold every (index, eid)?"""
    return all(0 < i <= len(d.log) and d.log[i - 1].eid == eid for i, eid in entries)


def known_committed_entries(d: Disk) -> list[tuple[int, int]]:
    """The (index, eid) of every entry ``d`` knows committed (by its own disk)."""
    return [(i + 1, e.eid) for i, e in enumerate(d.log[:d.known_committed])]

"""Choosing the member to keep: one pure function over the states inspect read.

The rule is raft's own "up-to-date" rule, the one a voter applies before granting its vote
(etcd raft ``raftLog.isUpToDate`` in raft/log.go at v3.5.16): the member whose log ends in the
newest term wins, then the one whose log ends at the highest index. Commit index, then
revision, then member name only break ties, and every tie is reported as one.

Why that member holds every entry any surviving member knows to be committed:
- Leader completeness: an entry committed in term t is in the log of the leader of every
  term after t.
- Let the chosen log end at index L in term T. That entry was written by the leader of term T;
  by log matching the chosen log equals that leader's log up to L, and that leader held every
  entry committed before T, at indexes below the first entry it appended itself, so below L.
- A survivor that knows index i committed holds entry i and its log ends in a term <= T. If
  it ends in T too, its index is <= L and log matching again gives the same entry i.
So with align-commit (which makes the kept member's whole log committed) every entry of its
log survives ``--force-new-cluster``, and with it every acknowledged write that any survivor
holds. Ranking by commit index instead is wrong: a commit index is only what a member has
*learned*, and learning is lazy (etcd does not fsync a commit-only HardState), so a member can
know a higher commit while its log ends in an older term and lacks acknowledged writes of a
later leader. ``tests/sim`` checks all of this on simulated raft histories.

Live readings: etcd's Status reports neither the last log term nor the last index (raftTerm
is the current term, raftIndex the commit index). inspect reads a running member's last term
and index from its WAL in place; a decision that rests on a running member is *provisional*
and the executor takes it again, with this same function, from the disks once every member
is fenced. ``prefer`` (the member already planned) breaks a tie first, so a re-check never
swaps one equally up-to-date log for another.

The guarantee has a condition: an acknowledged write is on a quorum of voters' disks, so it is
on some log read only when the members *not* read could not have made a quorum on their own
(with an odd number of voters: a majority read). When they could, no rule can see what they
alone hold; ``minority_read`` says so, and the plan and inspect show it in one line.

Refusals (the caller exits 3): no member readable; members disagree on the cluster ID; a data
dir is corrupt beyond a torn tail; the cluster still has quorum (nothing to recover); figures
read from disk that no single raft history can produce (a member knows an index committed
beyond the most up-to-date log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .formats.wal import term_at
from .model import Decision, MemberState, MinorityRead, Quorum, id_hex

OVERRIDE_QUORUM_FLAG = "--allow-quorum"


def log_key(m: MemberState) -> tuple[int, int]:
    """Raft's up-to-date order: last log term, then last index. Unknown logs rank lowest."""
    return (m.last_term if m.last_term is not None else -1,
            m.last_index if m.last_index is not None else -1)


def _log_known(m: MemberState) -> bool:
    return m.last_term is not None and m.last_index is not None


def _sort_key(m: MemberState, prefer: str | None) -> tuple[object, ...]:
    return (*log_key(m), m.name == prefer, m.commit_index or 0, m.revision or 0,
            _name_order(m.name))


def decide(members: Sequence[MemberState], quorum: Quorum, allow_quorum: bool = False,
           prefer: str | None = None) -> Decision:
    """The member to keep, and why; or a refusal. See the module docstring for the rule.
    ``members``: every inventory member, those that could not be read too (the minority
    check counts them)."""
    d = _decide(members, quorum, allow_quorum, prefer)
    return replace(d, minority=minority_read(members, d.ranking))


def minority_read(members: Sequence[MemberState], ranking: Sequence[str] = ()
                  ) -> MinorityRead | None:
    """Were too few voting members read for raft's guarantee? Not None when the voters whose
    data was not read (unreachable, unreadable, corrupt, excluded, or not in the inventory)
    could have made a quorum by themselves: a write acknowledged by them alone may be on none
    of the logs read. The voters are the membership as the best-ranked member with a
    membership view sees it (learners do not vote); without any view, the members given."""
    by_name = {m.name: m for m in members}
    by_id = {m.member_id: m for m in members if m.member_id is not None}
    order = [by_name[n] for n in ranking if n in by_name] + \
        [m for m in members if m.name not in ranking]
    view = next((m.membership for m in order if m.membership), ())
    voters: list[tuple[str, MemberState | None]] = []
    if view:
        for p in view:
            if p.is_learner:
                continue
            state = by_id.get(p.id) or (by_name.get(p.name) if p.name else None)
            voters.append((state.name if state else (p.name or format(p.id, "x")), state))
    else:
        voters = [(m.name, m) for m in members if not m.is_learner]
    read = tuple(n for n, s in voters if s is not None and s.readable and not s.corrupt)
    not_read = tuple(n for n, _ in voters if n not in read)
    need = len(voters) // 2 + 1
    if not read or len(not_read) < need:
        return None
    return MinorityRead(voters=tuple(n for n, _ in voters), read=read, not_read=not_read,
                        quorum=need)


def _decide(members: Sequence[MemberState], quorum: Quorum, allow_quorum: bool,
            prefer: str | None) -> Decision:
    readable = [m for m in members if m.readable and not m.corrupt]
    ranked = sorted(readable, key=lambda m: _sort_key(m, prefer), reverse=True)
    ranking = tuple(m.name for m in ranked)

    corrupt = [m for m in members if m.corrupt]
    if corrupt:
        detail = "; ".join(f"{m.name}: {m.error}" for m in corrupt)
        return Decision(None, f"corrupt data dir (beyond a torn tail): {detail}",
                        refused="corrupt", ranking=ranking)
    cluster_ids = {m.cluster_id for m in readable if m.cluster_id is not None}
    if len(cluster_ids) > 1:
        detail = ", ".join(f"{m.name}={id_hex(m.cluster_id)}" for m in readable
                           if m.cluster_id is not None)
        return Decision(None, f"members disagree on the cluster ID ({detail}): they are not "
                              "one cluster", refused="cluster-id", ranking=ranking)
    if quorum.has_quorum and not allow_quorum:
        leader = quorum.leader_name or id_hex(quorum.leader_id) or "unknown"
        return Decision(None, f"the cluster still has quorum (a linearizable read through "
                              f"{quorum.via} succeeded; leader {leader}): nothing to recover "
                              f"(to rebuild it anyway from its most up-to-date member, pass "
                              f"{OVERRIDE_QUORUM_FLAG})", refused="quorum", ranking=ranking)
    if not ranked:
        detail = "; ".join(f"{m.name}: {m.error or 'no data'}" for m in members)
        return Decision(None, f"no member could be read ({detail})", refused="unreadable")

    live = [m for m in ranked if m.source == "live"]
    passed_over: list[tuple[MemberState, str]] = []
    if not live:
        gaps = {m.name: _gap(m, ranked) for m in ranked}
        complete = [m for m in ranked if gaps[m.name] is None]
        if not complete:
            best = ranked[0]
            return Decision(None, f"inconsistent data dirs: {gaps[best.name]}, and no other "
                                  "member's log holds every entry a member knows committed; no "
                                  "single raft history leaves that behind (a data dir restored "
                                  "from an old copy?)", refused="inconsistent", ranking=ranking)
        passed_over = [(m, gaps[m.name] or "") for m in ranked[:ranked.index(complete[0])]]
        ranked = complete + [m for m in ranked if gaps[m.name] is not None]
        ranking = tuple(m.name for m in ranked)
    best = ranked[0]
    if passed_over:
        twins = [m.name for m in ranked[1:] if log_key(m) == log_key(best)
                 and m.name not in {p.name for p, _ in passed_over}]
        tie = bool(twins)
        reason = (f"{best.name}'s log holds every entry a member knows committed (it ends in "
                  f"term {best.last_term} at index {best.last_index})")
        if twins:
            reason = (f"tie: {reason}, and so does {', '.join(twins)}'s, equally up to date; "
                      f"broken by the member already planned, then commit index, revision "
                      f"and name ({best.name})")
        for m, gap in passed_over:
            reason += (f"; not {m.name}, although its log is newer (term {m.last_term}, index "
                       f"{m.last_index}): {gap}")
    else:
        reason, tie = _reason(ranked, prefer)
    provisional = len(ranked) > 1 and bool(live)
    if provisional:
        reason += (f"; provisional: {', '.join(m.name for m in live)} "
                   f"{'runs' if len(live) == 1 else 'run'} and etcd does not report the last "
                   "log term live (read from the WAL in place where possible), so the choice "
                   "is taken again from the disks once every member is fenced")
    return Decision(best.name, reason, tie=tie, ranking=ranking, provisional=provisional)


def _gap(cand: MemberState, members: Sequence[MemberState]) -> str | None:
    """Why ``cand``'s log lacks an entry that some member knows committed (read from disk),
    or None when the figures show it holds them all. Raft's rule alone cannot see one case:
    a member that learned a commit from a leader whose log no other survivor holds (only a
    minority survives) while the most up-to-date survivor's log ends in an earlier term and
    holds another entry at that index."""
    for s in members:
        c = s.commit_index or 0
        if c == 0 or cand.last_index is None:
            continue
        if cand.last_index < c:
            return (f"{s.name} knows index {c} committed, but {cand.name}'s log ends at index "
                    f"{cand.last_index}")
        mine = term_at(cand.term_starts, cand.last_index, c)
        theirs = term_at(s.term_starts, s.last_index or 0, c)
        if mine is not None and theirs is not None and mine != theirs:
            return (f"{s.name} knows index {c} committed (term {theirs}), but {cand.name}'s "
                    f"entry {c} is from term {mine}")
    return None


def _describe(m: MemberState) -> str:
    if not _log_known(m):
        return f"{m.name}'s log could not be read (etcd runs; its WAL was not readable)"
    return f"{m.name}'s log ends in term {m.last_term} at index {m.last_index}"


def _reason(ranked: Sequence[MemberState], prefer: str | None) -> tuple[str, bool]:
    best = ranked[0]
    newest = f"(term {best.last_term}, index {best.last_index})"
    if len(ranked) == 1:
        return (f"{best.name} is the only member that could be read; its log ends in term "
                f"{best.last_term} at index {best.last_index}", False)
    tied = [m for m in ranked if log_key(m) == log_key(best)]
    if len(tied) == 1:
        parts = [f"{best.name} has the newest log {newest}"]
        for m in ranked[1:]:
            if not _log_known(m):
                parts.append(_describe(m))
            elif (m.commit_index or 0) > (best.commit_index or 0):
                where = (f"in term {m.last_term}" if m.last_term != best.last_term
                         else f"at index {m.last_index}")
                parts.append(f"{m.name} knows commit {m.commit_index} but its log ends {where}")
            else:
                parts.append(_describe(m))
        return "; ".join(parts), False
    names = ", ".join(m.name for m in tied)
    second = tied[1]
    if prefer == best.name:
        rule = f"kept as planned ({best.name})"
    elif (best.commit_index or 0) != (second.commit_index or 0):
        rule = (f"by commit index ({best.commit_index} on {best.name} vs "
                f"{second.commit_index} on {second.name})")
    elif (best.revision or 0) != (second.revision or 0):
        rule = f"by revision ({best.revision} on {best.name} vs {second.revision} on {second.name})"
    else:
        rule = f"by member name ({best.name})"
    return (f"tie: {names} have equally up-to-date logs {newest}, so they hold the same "
            f"entries; broken {rule}", True)


def _name_order(name: str) -> tuple[int, ...]:
    """Sort key that makes the alphabetically first name win among equals (with reverse=True)."""
    return (*(-ord(c) for c in name), 1)

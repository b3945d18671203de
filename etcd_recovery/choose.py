"""Choosing the member to keep: pure, over the states inspect read.

The member to keep is the one whose data is furthest ahead, whether or not its etcd runs:
highest commit index (the larger of the WAL HardState commit and the backend's consistent
index), then last log term, then last index, then revision. ``--force-new-cluster`` discards
WAL entries past the member's commit index ("discarding uncommitted WAL entries"), so the
commit index bounds what survives; the other figures only break ties.

Refusals (the caller exits 3): no member readable; members disagree on the cluster ID; a data
dir is corrupt beyond a torn tail; the cluster still has quorum (nothing to recover).
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import Decision, MemberState, Quorum, id_hex

RULES = ("commit index", "last log term", "last index", "revision")


def rank_key(m: MemberState) -> tuple[int, int, int, int]:
    return (m.commit_index or 0, m.last_term or 0, m.last_index or 0, m.revision or 0)


OVERRIDE_QUORUM_FLAG = "--allow-quorum"


def decide(members: Sequence[MemberState], quorum: Quorum,
           allow_quorum: bool = False) -> Decision:
    readable = [m for m in members if m.readable and not m.corrupt]
    ranked = sorted(readable, key=lambda m: (rank_key(m), _name_order(m.name)), reverse=True)
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

    best = ranked[0]
    if len(ranked) == 1:
        return Decision(best.name, f"{best.name} is the only member that could be read "
                                   f"(commit index {best.commit_index})", ranking=ranking)
    second = ranked[1]
    kb, ks = rank_key(best), rank_key(second)
    for i, rule in enumerate(RULES):
        if kb[i] != ks[i]:
            prefix = ""
            if i > 0:
                tied = ", ".join(f"{r} {kb[j]}" for j, r in enumerate(RULES[:i]))
                prefix = f"tied with {second.name} on {tied}; "
            return Decision(best.name, f"{prefix}{best.name} has the highest {rule} "
                                       f"({kb[i]} vs {ks[i]} on {second.name})",
                            ranking=ranking)
    tied_names = [m.name for m in ranked if rank_key(m) == kb]
    return Decision(best.name,
                    f"tie: {', '.join(tied_names)} have equal commit index {kb[0]}, last log "
                    f"term {kb[1]}, last index {kb[2]} and revision {kb[3]}; the rule that "
                    f"broke it: first by member name ({best.name})",
                    tie=True, ranking=ranking)


def _name_order(name: str) -> tuple[int, ...]:
    """Sort key that makes the alphabetically first name win among equals (with reverse=True)."""
    return (*(-ord(c) for c in name), 1)

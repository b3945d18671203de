"""Plain values shared by inspect, the choice of member, and (later) the planner.

Everything here is a frozen dataclass built from data; nothing does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .hostchecks import HostCheck


def id_hex(value: int | None) -> str | None:
    """etcd shows member and cluster IDs as unpadded lower-case hex; so do we."""
    return None if value is None else format(value, "x")


@dataclass(frozen=True)
class PeerView:
    """One entry of the membership as a member sees it."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class Check:
    member: str
    field: str                  # a key of FIELDS, or "membership name"
    inventory: str
    host: str | None            # None: the host does not say
    source: str                 # where the host's value was read
    ok: bool

    def message(self, inventory_path: str) -> str:
        fix = {"data_dir": "data_dir", "wal_dir": "wal_dir", "peer_url": "peer_url",
               "client_url": "client_url", "runtime": "cluster.runtime"}.get(self.field, "name")
        return (f"{self.member}: {self.field} is {self.inventory!r} in the inventory but "
                f"{self.host!r} in {self.source}; fix {fix!r} of {self.member} in "
                f"{inventory_path} (or the host, if the inventory is right)")

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "inventory": self.inventory, "host": self.host,
                "source": self.source, "ok": self.ok}


@dataclass(frozen=True)
class WalTail:
    """Where a stopped member's WAL ends: what appending a record after it needs."""

    file: str        # path of the last WAL file
    offset: int      # where its last valid record ends
    crc: int         # the running CRC-32C after that record
    room: int        # bytes left in the (preallocated) file after it
    term: int        # the last HardState's term and vote
    vote: int


@dataclass(frozen=True)
class NewBinary:
    """systemd: an etcd build on the kept member's host to restore with (``--etcd-binary``),
    as read there when planning."""

    path: str                # the build on the host
    version: str | None      # what its ``--version`` says
    replaces: str            # the binary etcd.service runs, which it replaces


@dataclass(frozen=True)
class MemberState:
    """Everything inspect learned about one inventory member.

    ``source`` says where the figures come from: ``live`` (etcd answered over gRPC) or
    ``disk`` (WAL, snap and backend files read in place). On disk, ``commit_index`` is the
    larger of the WAL HardState commit and the backend's consistent index; live, it is the
    raft index etcd reports (its committed index). ``last_term`` and ``last_index`` are the
    term and index of the last WAL entry on disk; etcd reports neither live, so for a running
    member they are read from its WAL in place too (None when that read failed).
    """

    name: str
    host: str
    reachable: bool
    etcd_running: bool | None = None
    source: str | None = None
    member_id: int | None = None
    cluster_id: int | None = None
    term: int | None = None
    commit_index: int | None = None
    consistent_index: int | None = None
    last_index: int | None = None
    last_term: int | None = None
    revision: int | None = None
    db_size_bytes: int | None = None
    leader_id: int | None = None
    is_learner: bool | None = None
    alarms: tuple[str, ...] = ()
    membership: tuple[PeerView, ...] = ()
    removed_ids: tuple[int, ...] = ()
    hardstate_commit: int | None = None
    snapshot_index: int | None = None
    torn_tail: bool | None = None
    wal_tail: WalTail | None = None
    # the log's terms over the WAL entries read: (first index of a term, the term), ascending
    term_starts: tuple[tuple[int, int], ...] = ()
    checks: tuple[Check, ...] = ()        # the inventory against the host (crosscheck.py)
    host_checks: tuple[HostCheck, ...] = ()  # can etcd start there as configured (hostchecks)
    config_text: str | None = None        # its manifest / env file (not in JSON)
    excluded: bool = False                # named with --exclude: never kept
    ssh_refused: bool = False             # SSH answered but refused us (keys, user, host key)
    etcd_version: str | None = None       # e.g. "3.5.16": live Status, image tag or binary
    version_source: str | None = None     # where etcd_version was read
    storage_version: str | None = None    # etcd 3.6+: the data dir's schema (meta bucket)
    corrupt: bool = False
    error: str | None = None
    notes: tuple[str, ...] = ()
    bytes_read: int = 0
    elapsed_s: float = 0.0

    @property
    def readable(self) -> bool:
        return self.source is not None and self.commit_index is not None and not self.excluded

    @property
    def in_own_membership(self) -> bool | None:
        """Is this member still a member in its own view? (False: it was removed.)"""
        if self.member_id is None or not self.membership:
            return None
        if self.member_id in self.removed_ids:
            return False
        return any(p.id == self.member_id for p in self.membership)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape documented in README (IDs as hex strings)."""
        return {
            "name": self.name,
            "host": self.host,
            "reachable": self.reachable,
            "etcd_running": self.etcd_running,
            "source": self.source,
            "member_id": id_hex(self.member_id),
            "cluster_id": id_hex(self.cluster_id),
            "term": self.term,
            "commit_index": self.commit_index,
            "consistent_index": self.consistent_index,
            "last_index": self.last_index,
            "last_term": self.last_term,
            "revision": self.revision,
            "db_size_bytes": self.db_size_bytes,
            "leader_id": id_hex(self.leader_id) if self.leader_id else None,
            "is_learner": self.is_learner,
            "alarms": list(self.alarms),
            "membership": [{"id": id_hex(p.id), "name": p.name, "peer_urls": list(p.peer_urls),
                            "is_learner": p.is_learner} for p in self.membership],
            "in_own_membership": self.in_own_membership,
            "torn_tail": self.torn_tail,
            "checks": [c.to_json() for c in self.checks],
            "host_checks": [c.to_json() for c in self.host_checks],
            "excluded": self.excluded,
            "ssh_refused": self.ssh_refused,
            "etcd_version": self.etcd_version,
            "version_source": self.version_source,
            "storage_version": self.storage_version,
            "corrupt": self.corrupt,
            "error": self.error,
            "notes": list(self.notes),
            "bytes_read": self.bytes_read,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class Quorum:
    """Whether the cluster still has quorum, as proven by a linearizable read."""

    has_quorum: bool
    via: str | None = None          # member whose linearizable read succeeded
    leader_id: int | None = None
    leader_name: str | None = None


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True)
class MinorityRead:
    """Too few voting members were read for raft's guarantee: the members not read could
    have made a quorum on their own, so a write they alone acknowledged may be on none of the
    logs read (with an odd number of voters: fewer than a majority read)."""

    voters: tuple[str, ...]      # the voting members (membership as the best log sees it)
    read: tuple[str, ...]        # those whose data was read
    not_read: tuple[str, ...]    # the others: unreachable, unreadable, corrupt or excluded
    quorum: int                  # how many voters make a quorum

    def line(self) -> str:
        """One line naming what is at stake, for the plan and inspect."""
        need, rest = self.quorum, self.not_read
        who = _and(rest) if len(rest) == need else f"any {need} of {_and(rest)}"
        back = len(rest) - need + 1   # hosts that must come back for the guarantee to hold
        if back == 1:
            which = "either host" if len(rest) == 2 else "any one of those hosts"
        else:
            which = f"{back} of those hosts"
        return (f"only {len(self.read)} of {len(self.voters)} voting members read "
                f"({_and(self.read)}): writes acknowledged by {who} alone may be lost; if "
                f"{which} can come back, waiting for {'it' if back == 1 else 'them'} is safer")

    def to_json(self) -> dict[str, Any]:
        return {"voters": list(self.voters), "read": list(self.read),
                "not_read": list(self.not_read), "quorum": self.quorum,
                "message": self.line()}

    @classmethod
    def from_json(cls, d: Any) -> MinorityRead | None:
        """The object ``to_json`` wrote (a saved plan's), or None when ``d`` is not one."""
        if not isinstance(d, dict) or set(d) != {"voters", "read", "not_read", "quorum",
                                                 "message"}:
            return None
        lists = [d["voters"], d["read"], d["not_read"]]
        if not all(isinstance(x, list) and all(isinstance(y, str) for y in x) for x in lists) \
                or not isinstance(d["quorum"], int) or isinstance(d["quorum"], bool) \
                or not d["read"] or not d["not_read"] or d["quorum"] < 1:
            return None
        found = cls(tuple(d["voters"]), tuple(d["read"]), tuple(d["not_read"]), d["quorum"])
        return found if d["message"] == found.line() else None


@dataclass(frozen=True)
class Decision:
    chosen: str | None
    reason: str
    tie: bool = False
    refused: str | None = None      # why the tool refuses to go on (exit 3), if it does
    ranking: tuple[str, ...] = ()   # readable members, best first
    provisional: bool = False       # rests on a running member: taken again after fencing
    minority: MinorityRead | None = None   # too few voters read for raft's guarantee


@dataclass(frozen=True)
class InspectReport:
    cluster: str
    members: tuple[MemberState, ...]
    quorum: Quorum
    decision: Decision
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "cluster_id": id_hex(next((m.cluster_id for m in self.members
                                       if m.cluster_id is not None), None)),
            "members": [m.to_json() for m in self.members],
            "quorum": self.quorum.has_quorum,
            "leader": self.quorum.leader_name or id_hex(self.quorum.leader_id),
            "chosen": self.decision.chosen,
            "reason": self.decision.reason,
            "tie": self.decision.tie,
            "refused": self.decision.refused,
            "ranking": list(self.decision.ranking),
            "provisional": self.decision.provisional,
            "minority_read": (self.decision.minority.to_json()
                              if self.decision.minority else None),
            "elapsed_s": round(self.elapsed_s, 3),
        }

"""Each step kind's preconditions, in one place: what the plan shows before a step, and what
the executor checks before it, are the same list by construction.

A step's precondition text is rendered here from its kind's conditions (``KIND_CONDITIONS``),
one clause per condition, joined by "; "; the executor checks a step by calling, for each of
its kind's conditions in turn, the checker registered under that condition's key. A test
asserts that every kind has conditions, every condition a text and a checker, and every step
of every plan the text rendered from them. Pure: steps in, text out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .actions import Action, Wait


class StepLike(Protocol):
    """What rendering needs of a plan.Step (kept apart so that the plan package can use this
    module)."""

    @property
    def kind(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def actions(self) -> Sequence[Action]: ...

# key -> the clause the plan shows; {host}, {chosen}, {via}, {name}, {lock}, {members} are the
# step's values (see ``values``).
TEXT: Mapping[str, str] = {
    "as-planned": "the cluster is as the plan found it: quorum lost (unless --allow-quorum), "
                  "the same state fingerprint and member to keep, and every member then "
                  "reachable answers over SSH",
    "rejoin-needed": "{via} has a leader and serves a linearizable read, and {name} is not "
                     "already a healthy voting member",
    "lock-free": "no other run holds {lock} on these hosts (a stale lock is taken over only "
                 "with --take-over-lock), checked by the lock commands themselves, which take "
                 "it only where it is free, and on a refusal the locks this step took are "
                 "released again (the unlock step's command)",
    "reachable": "{host} answers over SSH",
    "etcd-stopped": "etcd is not running on {host}",
    "backed-up": "{host}'s backup is written and verified (its B2SUMS exists)",
    "wal-as-planned": "the WAL still ends where the plan read it, with no torn tail (or "
                      "already ends with this record: resumed)",
    "others-fenced": "etcd runs on no other reachable member",
    "kept-newest": "{host} is fenced and, read from every member's disk, still has the most "
                   "up-to-date log (or already runs with --force-new-cluster: resumed, only the "
                   "wait runs)",
    "kept-newest-fenced": "{host} is fenced and, read from every member's disk, still has the "
                          "most up-to-date log",
    "kept-healthy-or-plain": "{host} leads as a one-member cluster and serves a linearizable "
                             "read (or already runs without --force-new-cluster: resumed)",
    "kept-healthy": "{host} leads and serves a linearizable read",
    "no-unknown-members": "the member list holds no member the plan does not know",
    "members-before": "the member list is exactly {members} (or already holds {host}: "
                      "resumed), checked by the step's first action, a wait",
    "members-after": "the member list is exactly {members}, {host} a learner not started yet, "
                     "checked by the step's first action, a wait",
    "data-empty": "{host}'s data dir holds no member directory, and a WAL dir of its own "
                  "(--wal-dir) no WAL file (or etcd already runs there: resumed)",
    "etcd-running": "etcd runs on {host}",
    "all-done": "every step before it is done",
    "as-planned-file": "the cluster is as the plan found it: quorum lost, the same state "
                       "fingerprint, every member then reachable answers over SSH, and the "
                       "snapshot file has the sha256 the plan names",
    "snapshot-made": "the snapshot this step copies is made and its sha256 journaled (or is "
                     "the file the plan names)",
    "snapshot-here": "{host} holds the snapshot with its journaled sha256 (or the plan's): "
                     "the file this run checked, unchanged since (inode, size, mtime, ctime), "
                     "else hashed again",
    "restored": "{host}'s restore finished (its run directory's restore.done exists)",
    "verified": "the verify step passed",
}

# step kind (plan.StepKind's value) -> its conditions, in the order they are checked
KIND_CONDITIONS: Mapping[str, tuple[str, ...]] = {
    "preflight": ("as-planned",),
    "preflight_rejoin": ("rejoin-needed",),
    "lock": ("lock-free",),
    "fence": ("reachable",),
    "backup": ("etcd-stopped",),
    "align_commit": ("etcd-stopped", "backed-up", "wal-as-planned"),
    "force_new_cluster": ("others-fenced", "kept-newest", "backed-up"),
    "restart_plain": ("kept-healthy-or-plain",),
    "remove_stale": ("kept-healthy", "no-unknown-members"),
    "remove_old": ("etcd-stopped",),
    "move_aside": ("etcd-stopped", "backed-up"),
    "learner_add": ("members-before",),
    "start_learner": ("members-after", "data-empty"),
    "promote": ("etcd-running",),
    "verify": ("all-done",),
    "unlock": ("verified",),
    "preflight_snapshot": ("as-planned-file",),
    "stop_kept": ("reachable",),
    "log_check": ("others-fenced", "kept-newest-fenced"),
    "snapshot_make": ("etcd-stopped", "backed-up"),
    "snapshot_send": ("snapshot-made",),
    "restore": ("etcd-stopped", "backed-up", "snapshot-here"),
    "start_restored": ("restored",),
    "cluster_up": ("all-done",),
    "restore_check": ("all-done",),
}


def first_wait_members(step: StepLike) -> list[str]:
    """The member names of the step's first wait for the member list (members-are)."""
    for a in step.actions:
        if isinstance(a, Wait) and a.condition == "members-are":
            return [x.split("=", 1)[0] for x in a.members]
    return []


def values(step: StepLike, chosen: str | None) -> dict[str, Any]:
    params = step.params
    return {"host": step.host or "every reachable member", "chosen": chosen or "",
            "via": params.get("via", ""), "name": params.get("name", ""),
            "lock": params.get("path", ""),
            "members": ", ".join(first_wait_members(step)) or "(none)"}


def render(step: StepLike, chosen: str | None) -> str:
    """The precondition text the plan shows for ``step``."""
    v = values(step, chosen)
    return "; ".join(TEXT[key].format(**v) for key in KIND_CONDITIONS[str(step.kind)])

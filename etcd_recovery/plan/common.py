"""Steps every recovery method shares: the preflight's space reads, the lock and its
release, fencing, the backup, and the final verification."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

from ..actions import (
    Run,
    Wait,
)
from ..inventory import Member
from ..model import MemberState
from ..runtimes.base import Runtime
from .scripts import (
    LOCK_PATH,
    backup_argv,
    guarded,
    host_record,
    lock_argv,
    space_argv,
    unlock_argv,
)
from .steps import BACKGROUND, Step, StepKind, run_dir


def space_checks(reachable: Sequence[Member]) -> tuple[Run, ...]:
    """The preflight's free-space reads, one per reachable member."""
    return tuple(Run(m.name, tuple(space_argv(m.data_dir, *wal_apart_from_data(m))), 60.0)
                 for m in reachable)


def wal_apart_from_data(m: Member) -> list[str]:
    """The member's WAL dir when a copy of its data dir does not hold it (``--wal-dir``
    outside the data dir), else nothing."""
    return [m.wal] if m.wal_outside_data_dir else []



def members_arg(pairs: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(f"{name}={url}" for name, url in pairs)



def lock_step(run_id: str, members: Sequence[Member], take_over: bool) -> Step:
    argv = tuple(lock_argv(run_id, take_over=take_over))
    where = "every reachable host" if len(members) > 1 else members[0].name
    return Step(id="lock", phase="preflight", kind=StepKind.LOCK, host=None,
                title=(f"Take the recovery lock over on {where} (--take-over-lock)" if take_over
                       else f"Take the recovery lock on {where}"),
                precondition="",
                check=f"{LOCK_PATH} holds this run id ({run_id}) on every host",
                actions=tuple(Run(m.name, argv, 30.0) for m in members),
                params={"path": LOCK_PATH, "members": [m.name for m in members]})


def unlock_step(run_id: str, members: Sequence[Member]) -> Step:
    return Step(id="unlock", phase="verify", kind=StepKind.UNLOCK, host=None,
                title="Release the recovery lock", precondition="",
                check=f"{LOCK_PATH} is gone on every host",
                actions=tuple(Run(m.name, tuple(unlock_argv(run_id)), 30.0) for m in members))


def verify_step(expected: Sequence[str], keys_before: int | None) -> Step:
    return Step(id="verify", phase="verify", kind=StepKind.VERIFY, host=None, mutating=False,
                title="Verify: expected voting members only, all healthy, same revision, "
                      "equal HashKV (each host reads its member's db in order first), no "
                      "alarms, no --force-new-cluster left, keys all there",
                precondition="", check="all of the above hold",
                params={"members": list(expected), "keys_before": keys_before})


def fence_step(rt: Runtime, m: Member, run_id: str) -> Step:
    sid = f"fence:{m.name}"
    return Step(id=sid, phase="fence", kind=StepKind.FENCE, host=m.name,
                title=f"Fence {m.name}: {rt.fence_how(m)}",
                precondition="",
                check="no etcd process on the host, and its supervisor will not start one",
                actions=(Run(m.name, tuple(guarded(run_id, sid, rt.fence_argv(m, run_dir(run_id)),
                                                   120.0)), 120.0),
                         Wait("etcd-stopped", m.name, m.client_url, 60.0),
                         host_record(m.name, run_id, sid)))



# Background backups run one at a time (the executor holds one turn for them) when a member's
# db is this size or more, or its size was not read: several at once slowed the kept member's
# forced start and snapshot on the same disk and cores (5 members, 1 GB, snapshot method:
# forced start 11.7-14.0 s -> 6.8 s). Smaller ones run all at once: one after another, three
# backups of 16 MiB dbs (each with its 64 MiB WAL segment) outlasted the kept member's
# snapshot, and the sends, which wait for their host's backup, waited for the last one.
# (The snapshot method's backups go all at once where no forced start is certain:
# plan/snapshot.py, make_snapshot_plan.)
IN_TURN_BYTES = 256 << 20


def backups_in_turn(states: Iterable[MemberState]) -> bool:
    """Whether the background backups of these members run one at a time (pure)."""
    return any(s.db_size_bytes is None or s.db_size_bytes >= IN_TURN_BYTES for s in states)


def backup_step(rt: Runtime, m: Member, run_id: str, background: bool = False,
                in_turn: bool = True) -> Step:
    """Copy the member's data dir and (fenced) configuration, with a verified B2SUMS. In the
    background it runs at a lower CPU priority (``nice``), and, ``in_turn``, one background
    backup at a time (``backups_in_turn``), so as not to slow the kept member's restore,
    which runs meanwhile."""
    rdir = run_dir(run_id)
    bdir = posixpath.join(rdir, "backup")
    argv = backup_argv(m.data_dir, rt.fenced_config_path(m, rdir), bdir,
                        *wal_apart_from_data(m))
    if background:
        argv = ["nice", "-n", "10", *argv]
    argv = guarded(run_id, f"backup:{m.name}", argv, 1800.0)
    in_turn = background and in_turn
    how = ""
    if background:
        turn = "one backup at a time" if in_turn else "beside the other backups"
        how = f" (in the background, {turn}, at a lower CPU priority)"
    return Step(id=f"backup:{m.name}", phase="backup", kind=StepKind.BACKUP, host=m.name,
                group=BACKGROUND if background else None, params={"in_turn": in_turn},
                title=f"Back up {m.name}'s data dir"
                      + (f", WAL dir {m.wal}" if m.wal_outside_data_dir else "")
                      + f" and configuration to {bdir}" + how,
                precondition="",
                check="the copy is byte for byte the source (diff -r), and its B2SUMS is "
                      "written (checked with b2sum -c when a run resumes)",
                actions=(Run(m.name, tuple(argv), 1800.0),
                         host_record(m.name, run_id, f"backup:{m.name}")))



"""The force-new-cluster method's checks: the WAL as planned before align-commit, the
kept member still the newest on every fenced disk, the restart without the flag, and the
member list before stale members are removed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .. import choose
from ..actions import AppendWal, EtcdCall, Run, Wait
from ..errors import (
    PreconditionError,
)
from ..inspect import read_disk
from ..journal import done_actions
from ..model import MemberState, Quorum
from ..plan import Step, StepKind
from .base import Aftermath, Checker, Finisher, Runner
from .common import check_kept_healthy, check_others_fenced


def prepare_align_commit(ex: Runner, step: Step) -> dict[int, str]:
    name = step.host or ""
    if not step.actions:
        return {}
    a = step.actions[0]
    if not isinstance(a, AppendWal) or a.offset < 0:
        return {}
    wal = ex.read_wal(step)
    if wal.hardstate_commit == a.commit and wal.end_offset == a.offset + len(
            bytes.fromhex(a.record_hex)):
        return {1: "the WAL already ends with this record (resumed)"}
    if wal.torn_tail or wal.end_offset != a.offset or wal.last_crc != a.crc_before:
        raise PreconditionError(
            f"{name}: the WAL changed since the plan was made (it ends at offset "
            f"{wal.end_offset} with CRC {wal.last_crc:x}; the plan read offset {a.offset}, "
            f"CRC {a.crc_before:x}); nothing was written: make a new plan")
    return {}


RUNS_FORCED = "etcd already runs with --force-new-cluster (resumed)"


def _wait_at(step: Step) -> int:
    """The number of the step's first Wait (its start's actions come before it); 0: none."""
    return next((i for i, a in enumerate(step.actions, 1) if isinstance(a, Wait)), 0)


def start_made(ex: Runner, step: Step) -> bool:
    """Has an earlier run of this step started etcd (its last Run before the wait, journaled
    done, or skipped as already in effect)? Then the kept member's supervisor holds the
    forced configuration: a failed start is retried by it (the kubelet without end, systemd
    up to its start limit), and once the cause is fixed it starts etcd by itself, at any
    moment."""
    runs = [i for i, a in enumerate(step.actions[:max(0, _wait_at(step) - 1)], 1)
            if isinstance(a, Run)]
    return bool(runs) and (step.id, runs[-1]) in done_actions(ex.journal.events())


def prepare_force_new_cluster(ex: Runner, step: Step) -> dict[int, str]:
    name = step.host or ""

    def resumed(why: str) -> dict[int, str]:
        # Resumed after the start: the restore is under way; only wait for it.
        check_others_fenced(ex, step)
        return {i: why for i in range(1, _wait_at(step))}

    if ex.session.runs_without_force(name) is False:
        return resumed(RUNS_FORCED)
    if start_made(ex, step):
        # The choice was checked on the fenced disks before that start, and it holds: the
        # others are still fenced (checked) and the kept member's disk is the restore's own
        # from then on. Not read again: etcd may start on it between a look for its process
        # and the read (a CI run read a WAL that ended at index 12 beside a db etcd had
        # already moved to 14, and refused the resume).
        return resumed("an earlier run started etcd with --force-new-cluster; its "
                       "supervisor starts it again (resumed)")
    if fenced_states(ex, name, forced_kept=True) is None:
        return resumed(RUNS_FORCED)
    return {}


def fenced_states(ex: Runner, name: str, forced_kept: bool = False) -> list[MemberState] | None:
    """Every member must be stopped, and then its disk is authoritative: the member to keep
    (``name``) is decided again, by the same function that chose it for the plan
    (``require_kept``). Each host is checked and read at the same time. ``forced_kept``: the
    forced start's own check, where etcd on ``name`` running with --force-new-cluster is the
    step under way (None is returned), not a member that escaped its fence."""
    names = ex.plan.steps[0].params["members"]

    def fenced_disk(n: str) -> MemberState | None:
        if ex.session.etcd_pid(n) is not None:
            # After a failed start, the kept member's supervisor restarts etcd with the
            # step's --force-new-cluster (a crash loop); a start between the first look
            # and this one is the step under way, not a member that escaped its fence.
            if forced_kept and n == name and ex.session.runs_without_force(n) is False:
                return None
            raise PreconditionError(f"{n}: etcd is running although it was fenced")
        return read_disk(ex.session.t(n), ex.session.m(n))

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        read = list(pool.map(fenced_disk, names))
    states = [s for s in read if s is not None]
    if len(states) < len(read):
        return None
    require_kept(states, name, ex.plan.inventory)
    return states


def after_failed_start(ex: Runner, step: Step) -> str:
    """A failed forced start's supervisor keeps the forced configuration and starts etcd from
    it by itself once the cause is fixed."""
    if not start_made(ex, step):
        return ""
    return (f"Meanwhile {step.host}'s supervisor keeps trying to start etcd with "
            "--force-new-cluster from this step's configuration and will succeed once the "
            "cause is fixed; --resume then waits for it. Do not plan again from another "
            f"member while it may: fence {step.host} first")


def finish_force_new_cluster(ex: Runner, step: Step) -> None:
    keys = ex.session.client(step.host or "").count_keys()
    ex.log(f"      {step.host} holds {keys} keys after the restore")
    ex.journal.append("keys-counted", step.id, keys=keys)


def prepare_restart_plain(ex: Runner, step: Step) -> dict[int, str]:
    if ex.session.runs_without_force(step.host or ""):
        why = "etcd already runs without --force-new-cluster (resumed)"
        return {1: why, 2: why}
    return check_kept_healthy(ex, step)


def prepare_remove_stale(ex: Runner, step: Step) -> dict[int, str]:
    planned = {int(a.member_id, 16) for a in step.actions
               if isinstance(a, EtcdCall) and a.member_id}
    kept_url = ex.session.m(step.host or "").peer_url
    for x in ex.session.client(step.host or "").member_list(serializable=False):
        if x.id not in planned and kept_url not in x.peer_urls:
            raise PreconditionError(
                f"the member list holds {x.name or '(unstarted)'} {x.id:x} "
                f"({', '.join(x.peer_urls)}), which the plan does not know; nothing was "
                "removed: make a new plan")
    return {}


def require_kept(states: list[MemberState], planned: str, inventory: str) -> MemberState:
    """The force-new-cluster precondition: the disks of the fenced members, decided by
    ``choose.decide`` (the function that made the plan's choice), must keep ``planned``.
    Otherwise the step names the member that is now right and how to go on (exit 3)."""
    decision = choose.decide(states, Quorum(False), prefer=planned)
    if decision.refused:
        raise PreconditionError(f"{planned}: {decision.reason}")
    if decision.chosen != planned:
        raise PreconditionError(
            f"the member to keep is now {decision.chosen}, not {planned} as planned: "
            f"{decision.reason}. Nothing was restored. Close this run with `etcd-recovery "
            f"execute -i {inventory} --abandon`, then make a new plan (`etcd-recovery plan "
            f"-i {inventory}`): it will keep {decision.chosen}")
    return next(s for s in states if s.name == planned)


K = StepKind
CHECKS: dict[str, Checker] = {
    "wal-as-planned": prepare_align_commit, "kept-newest": prepare_force_new_cluster,
    "kept-healthy-or-plain": prepare_restart_plain, "no-unknown-members": prepare_remove_stale}
FINISH: dict[StepKind, Finisher] = {K.FORCE_NEW_CLUSTER: finish_force_new_cluster}
AFTERMATH: dict[StepKind, Aftermath] = {K.FORCE_NEW_CLUSTER: after_failed_start}

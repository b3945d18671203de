"""The checks every method's steps share: the preflight (the cluster as planned, free
disk), the lock, fencing, the backup, and the final verification."""

from __future__ import annotations

import contextlib
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor

from ..actions import Run, Wait, shell_join
from ..errors import (
    EtcdRecoveryError,
    PreconditionError,
    RefusedError,
    StepFailed,
    TransportError,
)
from ..inspect import inspect_cluster
from ..journal import done_steps
from ..plan import Step, StepKind, fingerprint
from ..plan.scripts import unlock_argv
from ..transport.base import CommandResult
from ..verify import verify_cluster
from .base import FRESH_S, AfterRun, Checker, Finisher, Runner


# ------------------------------------------------------------------ preconditions
def prepare_preflight(ex: Runner, step: Step) -> dict[int, str]:
    allow = bool(step.params["allow_quorum"])
    earlier = ex.planned_from
    if earlier is not None and time.monotonic() - ex.fresh_at < FRESH_S:
        report = earlier
        ex.log("      the plan's inspection, moments old, is the preflight's reading")
    else:
        report = inspect_cluster(
            ex.inv, factory=ex.factory, allow_quorum=allow, prefer=ex.plan.chosen,
            exclude=step.params["exclude"],
            known_unreachable=[s for s in earlier.members if not s.reachable]
            if earlier else ())
    if report.quorum.has_quorum and not allow:
        raise PreconditionError(f"the cluster has quorum again ({report.decision.reason})")
    if report.decision.refused:
        raise PreconditionError(report.decision.reason)
    if ex.check_fingerprint and fingerprint(report) != ex.plan.fingerprint:
        raise PreconditionError(
            "the cluster's state differs from the one the plan was made from (fingerprint "
            f"{fingerprint(report)} != {ex.plan.fingerprint}); make a new plan")
    if report.decision.chosen != ex.plan.chosen and not allow:
        # (With --allow-quorum every member runs and the leader's log moves ahead of the
        # others' with every write: the choice is taken again from the disks once all are
        # fenced, before force-new-cluster.)
        raise PreconditionError(f"the member to keep is now {report.decision.chosen}, "
                                f"not {ex.plan.chosen}: {report.decision.reason}; "
                                "make a new plan")
    for name in step.params["members"]:
        st = next(s for s in report.members if s.name == name)
        if not st.reachable:
            raise PreconditionError(f"{name} is no longer reachable: {st.error}")
    return {}


def check_space(ex: Runner, name: str, res: CommandResult) -> None:
    words = res.stdout.decode(errors="replace").split()
    try:
        avail, used = int(words[0]), int(words[1])
    except (IndexError, ValueError) as exc:
        raise PreconditionError(f"{name}: cannot tell free disk and data size from "
                                f"{shell_join(res.argv[-2:])}: got {words!r}") from exc
    need = int(used * 1.1) + 16 * 1024 * 1024
    if avail < need:
        m = ex.session.m(name)
        what = (f"{m.data_dir} and {m.wal} hold" if m.wal_outside_data_dir
                else f"{m.data_dir} holds")
        raise RefusedError(f"{name}: not enough free disk for the backup: "
                           f"{avail} bytes free under /var/lib/etcd-recovery, "
                           f"{need} needed ({what} {used} bytes); nothing was changed")


def lock_refused(ex: Runner, step: Step, n: int, a: Run, res: CommandResult) -> None:
    path = step.params["path"]
    read = ex.session.run(a.host, ["cat", path], check=False)
    holder = read.stdout.decode(errors="replace").strip() if read.exit_status == 0 else ""
    if holder == ex.plan.run_id:
        return
    # Release the locks this step took before this host (the unlock step's command).
    for done in step.actions[:n - 1]:
        assert isinstance(done, Run)
        unlock = unlock_argv(ex.plan.run_id)
        ex.journal.append("action-rollback", step.id, host=done.host,
                            argv=list(unlock))
        with contextlib.suppress(TransportError):
            ex.session.run(done.host, unlock, check=False)
    if holder:
        raise RefusedError(f"{a.host}: another recovery holds the lock {path} (run "
                           f"{holder!r}); if that run is dead, take the lock over with "
                           "--take-over-lock")
    raise lock_failure(a.host, path, res, read)


def check_reachable(ex: Runner, step: Step) -> dict[int, str]:
    ex.session.run(step.host or "", ["true"], timeout=30)
    return {}


def check_etcd_stopped(ex: Runner, step: Step) -> dict[int, str]:
    if ex.session.etcd_pid(step.host or "") is not None:
        raise PreconditionError(f"{step.host}: etcd runs again although fenced; stopping, "
                                "nothing done to it")
    return {}


def check_backed_up(ex: Runner, step: Step) -> dict[int, str]:
    name = step.host or ""
    sums = posixpath.join(ex.rdir, "backup", "B2SUMS")
    if ex.session.run(name, ["test", "-f", sums], check=False).exit_status != 0:
        raise PreconditionError(f"{name}: no verified backup at {sums}")
    return {}


def check_others_fenced(ex: Runner, step: Step) -> dict[int, str]:
    names = [n for n in ex.plan.steps[0].params["members"] if n != step.host]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        pids = list(pool.map(ex.session.etcd_pid, names))
    for name, pid in zip(names, pids, strict=True):
        if pid is not None:
            raise PreconditionError(f"{name}: etcd is running although it was fenced")
    return {}


def check_kept_healthy(ex: Runner, step: Step) -> dict[int, str]:
    c = ex.session.client(step.host or "")
    st = c.status()
    if st.leader != st.member_id:
        raise PreconditionError(f"{step.host} does not lead (leader {st.leader:x})")
    c.get(b"/etcd-recovery/probe", serializable=False)
    return {}


def check_first_wait(ex: Runner, step: Step) -> dict[int, str]:
    """members-after: checked by the step's first action, a wait for the member list."""
    first = step.actions[0] if step.actions else None
    if not (isinstance(first, Wait) and first.condition == "members-are"):
        raise PreconditionError(f"{step.id}: its first action is not the wait for the "
                                "member list that checks its precondition")
    return {}


def check_all_done(ex: Runner, step: Step) -> dict[int, str]:
    done = done_steps(ex.journal.events())
    before = [s.id for s in ex.plan.steps[:ex.plan.steps.index(step)]]
    missing = [sid for sid in before if sid not in done]
    if missing:
        raise PreconditionError(f"{step.id}: steps not done before it: "
                                + ", ".join(missing))
    return {}


def check_verified(ex: Runner, step: Step) -> dict[int, str]:
    done = done_steps(ex.journal.events())
    verify = [s.id for s in ex.plan.steps if s.kind is StepKind.VERIFY]
    if not verify or any(v not in done for v in verify):
        raise PreconditionError(f"{step.id}: the verify step has not passed")
    return {}


def check_lock_free(ex: Runner, step: Step) -> dict[int, str]:
    """lock-free: checked by the step's own actions, which take the lock only where it
    is free (a race-free test on the host); a refusal names the run that holds it."""
    if not step.actions or not all(isinstance(a, Run) for a in step.actions):
        raise PreconditionError(f"{step.id}: its actions are not the lock commands that "
                                "check its precondition")
    return {}


def keys_counted(ex: Runner) -> int | None:
    counts = [e.detail.get("keys") for e in ex.journal.events()
              if e.event == "keys-counted"]
    return int(counts[-1]) if counts and counts[-1] is not None else None


def finish_verify(ex: Runner, step: Step) -> None:
    keys = step.params["keys_before"]
    if keys is None:
        keys = keys_counted(ex)
    problems = verify_cluster(ex.session, step.params["members"], keys)
    if problems:
        raise StepFailed("verification failed: " + "; ".join(problems))


def lock_failure(host: str, path: str, take: CommandResult, read: CommandResult
                 ) -> EtcdRecoveryError:
    """Why taking the lock failed when no other run's ID is in the lock file: the lock
    command's own error (sudo refused, a read-only or full disk, ...), said as it is. A lock
    file that exists but names no run is refused as a stale lock."""
    lines = take.stderr_text().strip().splitlines()
    why = (f"{lines[-1]} (exit {take.exit_status})" if lines
           else f"exit {take.exit_status}, no error output")
    if read.exit_status == 0:
        return RefusedError(f"{host}: the lock file {path} exists but names no run (a run "
                            f"that stopped while taking it?); taking it said: {why}. If no "
                            "recovery is running, take it over with --take-over-lock")
    return StepFailed(f"{host}: could not take the recovery lock {path}: {why}; no other run "
                      "holds it")


K = StepKind


def space_read(ex: Runner, step: Step, n: int, a: Run, res: CommandResult) -> None:
    check_space(ex, a.host, res)


def lock_result(ex: Runner, step: Step, n: int, a: Run, res: CommandResult) -> None:
    if res.exit_status != 0:
        lock_refused(ex, step, n, a, res)


CHECKS: dict[str, Checker] = {
    "as-planned": prepare_preflight, "lock-free": check_lock_free,
    "reachable": check_reachable, "etcd-stopped": check_etcd_stopped,
    "backed-up": check_backed_up, "others-fenced": check_others_fenced,
    "kept-healthy": check_kept_healthy, "members-after": check_first_wait,
    "all-done": check_all_done, "verified": check_verified}
FINISH: dict[StepKind, Finisher] = {K.VERIFY: finish_verify}
AFTER_RUN: dict[StepKind, AfterRun] = {K.PREFLIGHT: space_read, K.PREFLIGHT_REJOIN: space_read,
                                       K.LOCK: lock_result}

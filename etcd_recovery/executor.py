"""execute: the interpreter of a plan's actions.

The executor runs exactly the steps of the plan it was given (the one shown to the operator),
and within each step exactly its typed actions (:mod:`.actions`), never anything worked out
again. Before every step it re-reads what that step depends on from the live system (its
kind's precondition) and stops, having changed nothing more, when it no longer holds. The
precondition may also find that an action is already in effect (a resumed run: etcd already
runs with the staged configuration, the learner is already added); that action is then
skipped, and the journal says so. Every action is journaled before and after it runs, with
what it did (argv, file digests, API calls and their results, resolved references, timings),
so ``--resume`` continues from the first action not done and the journal proves afterwards
that nothing ran that the plan did not show.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

from . import choose
from .actions import (
    Action,
    AppendWal,
    CopyFile,
    EtcdCall,
    Run,
    Wait,
    WriteFile,
    peer_probe_argv,
    receive_argv,
    shell_join,
)
from .conditions import KIND_CONDITIONS
from .errors import (
    EtcdApiError,
    EtcdRecoveryError,
    PreconditionError,
    RefusedError,
    StepFailed,
    TransportError,
)
from .formats.backend import read_backend
from .formats.wal import read_wal, wal_file_names
from .inspect import inspect_cluster, read_disk
from .inventory import Inventory
from .journal import Event, Journal, done_steps
from .live import ERR_LEARNER_NOT_READY, ERR_TOO_MANY_LEARNERS, ERR_UNHEALTHY, MemberInfo
from .model import InspectReport, MemberState, Quorum, WalTail
from .plan.force_new_cluster import align_decision
from .plan.scripts import is_guarded, lock_argv, unlock_argv, wal_files_argv
from .plan.steps import BACKGROUND, Plan, Step, StepKind, fingerprint, run_dir
from .results import StepTiming, Summary
from .runtimes.base import runtime_for
from .session import ClientFactory, Session, tunnel_client
from .transport.base import CommandResult
from .transport.factory import TransportFactory, ssh_transport
from .verify import poll, verify_cluster
from .watch import LOG_LINES, WATCHED, wait_watching

T = TypeVar("T")
Log = Callable[[str], None]
FRESH_S = 10.0
CHUNK = 1024 * 1024  # a copy streams in blocks of this size (each stream holds one or two)
EARLIER_MAX_S = 1800.0   # waiting for an earlier run's command of unknown step, at most

__all__ = ["Executor", "StepFailed", "poll", "require_kept"]


class _InStep(Exception):
    """A failure inside one of several steps run together: which step, and what."""

    def __init__(self, step: Step | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.step = step
        self.error = error


def done_actions(events: list[Event]) -> set[tuple[str, int]]:
    return {(e.step, int(e.detail["action"])) for e in events
            if e.event in ("action-done", "action-skipped") and e.step
            and isinstance(e.detail.get("action"), int)}


def resolved_refs(events: list[Event]) -> dict[str, Any]:
    return {str(e.detail["name"]): e.detail["value"] for e in events
            if e.event == "ref-resolved" and "name" in e.detail}


class Executor:
    def __init__(self, inv: Inventory, plan: Plan, journal: Journal, *,
                 factory: TransportFactory = ssh_transport,
                 client_factory: ClientFactory = tunnel_client, log: Log = lambda _: None,
                 verbose: bool = False, check_fingerprint: bool = True,
                 stop_after: str | None = None,
                 planned_from: InspectReport | None = None,
                 on_step: Callable[[str, Step], None] | None = None) -> None:
        self.inv = inv
        self.plan = plan
        self.journal = journal
        self.session = Session(inv, factory, client_factory)
        self.factory = factory
        self.log = log
        self.verbose = verbose
        self.check_fingerprint = check_fingerprint
        self.stop_after = stop_after   # for tests and rehearsals: stop after this step id
        self.rdir = run_dir(plan.run_id)
        self.refs: dict[str, Any] = {}
        # The inspection this invocation planned from, moments ago: it is the preflight's
        # reading while younger than FRESH_S; after that the preflight reads again, but does
        # not wait a second time on the hosts it found unreachable. (None: a resumed run.)
        self.planned_from = planned_from
        self.fresh_at = time.monotonic()
        self.on_step = on_step or (lambda _event, _step: None)  # a live status line's feed
        # Steps of the "background" group run while the plan goes on; each is waited for
        # before the next step on its host (or on every host) and before the run ends.
        self._bg_pool: ThreadPoolExecutor | None = None
        self._bg: list[tuple[Step, Future[StepTiming]]] = []
        self._bg_lock = threading.Lock()
        self._bg_timings: list[StepTiming] = []
        # A resumed run (or one that took the lock over) first waits, on each host, for the
        # guarded commands an earlier run left running there (plan.COMMANDS_LOCK).
        self._probe_hosts = False
        self._settled: set[str] = set()
        self._settle_lock = threading.Lock()
        # Each precondition's checker (conditions.py lists each step kind's; a checker may
        # find actions already in effect), and each kind's check after its actions.
        k = StepKind
        self._checks: dict[str, Callable[[Step], dict[int, str]]] = {
            "as-planned": self.prepare_preflight, "rejoin-needed": self.prepare_preflight_rejoin,
            "lock-free": self.check_lock_free, "reachable": self.check_reachable,
            "etcd-stopped": self.check_etcd_stopped,
            "backed-up": self.check_backed_up, "wal-as-planned": self.prepare_align_commit,
            "others-fenced": self.check_others_fenced,
            "kept-newest": self.prepare_force_new_cluster,
            "kept-healthy-or-plain": self.prepare_restart_plain,
            "kept-healthy": self.check_kept_healthy,
            "no-unknown-members": self.prepare_remove_stale,
            "members-before": self.prepare_learner_add,
            "members-after": self.check_first_wait, "data-empty": self.prepare_start_learner,
            "etcd-running": self.prepare_promote, "all-done": self.check_all_done,
            "verified": self.check_verified, "as-planned-file": self.prepare_preflight_file,
            "snapshot-made": self.check_snapshot_made, "snapshot-here": self.check_snapshot_here,
            "restored": self.check_restored}
        self._finish: dict[StepKind, Callable[[Step], None]] = {
            k.FORCE_NEW_CLUSTER: self.finish_force_new_cluster, k.VERIFY: self.finish_verify,
            k.SNAPSHOT_MAKE: self.finish_snapshot_make,
            k.RESTORE_CHECK: self.finish_restore_check}
        self._snapshot_status: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the run
    def run(self) -> Summary:
        t0 = time.monotonic()
        summary = Summary(run_id=self.plan.run_id, ok=False)
        events = self.journal.events()
        done = done_steps(events)
        self.refs = resolved_refs(events)
        acts_done = done_actions(events)
        if not done and not acts_done:
            self.journal.append("run-start", chosen=self.plan.chosen)
        else:
            self.journal.append("resume", done=sorted(done))
        takeover = tuple(lock_argv(self.plan.run_id, take_over=True))
        self._probe_hosts = bool(events) or any(
            isinstance(a, Run) and a.argv == takeover for s in self.plan.steps
            if s.kind is StepKind.LOCK for a in s.actions)
        total = len(self.plan.steps)
        current: Step | None = None
        steps = self.plan.steps
        try:
            # every host the plan acts on, connected at once rather than one after another
            known = {m.name for m in self.inv.members}
            self.session.connect_all(sorted(
                {h for s in steps for h in (s.host, *(getattr(a, "host", None)
                                                      for a in s.actions)) if h in known}))
            i = 0
            while i < len(steps):
                batch = [steps[i]]
                while steps[i].group and i + len(batch) < len(steps) and \
                        steps[i + len(batch)].group == steps[i].group:
                    batch.append(steps[i + len(batch)])
                todo: list[tuple[int, Step]] = []
                for n, step in enumerate(batch, i + 1):
                    if step.id in done:
                        summary.steps.append(StepTiming(step.id, 0.0, skipped=True))
                        self.log(f"[{n}/{total}] {step.id}: done before (journal)")
                    else:
                        todo.append((n, step))
                i += len(batch)
                if batch[0].group == BACKGROUND:
                    for n, step in todo:
                        current = step
                        self._start_background(n, total, step, acts_done, t0)
                    if self.stop_after in {s.id for s in batch}:
                        for step in batch:
                            self._join_background(step.host)
                        summary.steps.extend(self._take_bg_timings())
                elif len(todo) == 1:
                    current = todo[0][1]
                    summary.steps.append(self.one_step(todo[0][0], total, current, acts_done,
                                                       t0))
                elif todo:
                    current = todo[0][1]
                    summary.steps.extend(self.together(todo, total, acts_done, t0))
                if self.stop_after in {s.id for s in batch}:
                    summary.stopped_at = self.stop_after
                    summary.message = f"stopped after {self.stop_after} as asked"
                    summary.total_s = time.monotonic() - t0
                    return summary
            self._join_background(None)
            summary.steps.extend(self._take_bg_timings())
            self.journal.finish()
            summary.ok = True
            summary.message = "recovered and verified"
        except BaseException as exc:
            if isinstance(exc, _InStep):
                current, exc = exc.step, exc.error
            self._settle_background()
            summary.steps.extend(self._take_bg_timings())
            self._stopped(exc, current, summary, t0)
        finally:
            self._settle_background()
            self.session.close()
        summary.total_s = time.monotonic() - t0
        return summary

    def _stopped(self, exc: BaseException, current: Step | None, summary: Summary,
                 t0: float) -> NoReturn:
        """Journal why the run stopped, close it when nothing was changed, and raise."""
        sid = current.id if current else None
        summary.stopped_at = sid
        summary.total_s = time.monotonic() - t0
        if isinstance(exc, KeyboardInterrupt):
            self.journal.append("interrupted", sid)
            summary.message = (f"interrupted during {sid}; the journal says where; "
                               "run again with --resume")
            raise exc
        if isinstance(exc, RefusedError):
            self.journal.append("step-refused", sid, error=str(exc))
            if not self._changed_anything():
                self.journal.abandon()  # nothing was touched: close the run
            summary.message = str(exc)
            raise exc
        if isinstance(exc, EtcdRecoveryError):
            self.journal.append("step-failed", sid, error=str(exc))
            summary.message = str(exc)
            if not self._changed_anything():
                self.journal.abandon()
                raise StepFailed(f"step {sid} failed: {exc}. Nothing had been changed; the "
                                 "run is closed, so the next execute starts afresh") from exc
            raise StepFailed(f"step {sid} failed: {exc}. Nothing after it was done; fix the "
                             "cause and run again with --resume") from exc
        if not isinstance(exc, Exception):  # SystemExit and the like pass through
            raise exc
        # a bug must not leave a traceback and an open run behind
        self.journal.append("step-failed", sid, error=f"internal error: {exc!r}")
        raise StepFailed(f"step {sid} failed with an internal error ({exc!r}); the journal "
                         "says where; run again with --resume once the cause is fixed") from exc

    # ------------------------------------------------------------------ background steps
    def _start_background(self, n: int, total: int, step: Step,
                          acts_done: set[tuple[str, int]], t0: float) -> None:
        if self._bg_pool is None:
            self._bg_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="background")
        self.log(f"[{n}/{total}] {step.id}: runs in the background from here")
        future = self._bg_pool.submit(self.one_step, n, total, step, acts_done, t0)
        with self._bg_lock:
            self._bg.append((step, future))

    def _join_background(self, host: str | None) -> None:
        """Wait for the background steps on ``host`` (None: on every host); a failure there
        stops the run as that step's own failure."""
        with self._bg_lock:
            mine = [(s, f) for s, f in self._bg if host is None or s.host in (host, None)]
            self._bg = [(s, f) for s, f in self._bg if (s, f) not in mine]
        for step, future in mine:
            try:
                timing = future.result()
            except BaseException as exc:  # noqa: BLE001 - raised as the step's own failure
                raise _InStep(step, exc) from exc
            with self._bg_lock:
                self._bg_timings.append(timing)

    def _settle_background(self) -> None:
        """On the way out: let background steps finish what they started (each journals its
        own end), so no host work outlives the run."""
        with self._bg_lock:
            pending, self._bg = self._bg, []
        for _, future in pending:
            try:
                self._bg_timings.append(future.result())
            except BaseException:  # noqa: BLE001, S110 - journaled by the step itself
                pass
        if self._bg_pool is not None:
            self._bg_pool.shutdown(wait=True)
            self._bg_pool = None

    def _take_bg_timings(self) -> list[StepTiming]:
        with self._bg_lock:
            out, self._bg_timings = self._bg_timings, []
        return out

    def one_step(self, n: int, total: int, step: Step, acts_done: set[tuple[str, int]],
                 t0: float) -> StepTiming:
        if step.group != BACKGROUND:
            self._join_background(step.host)
        s0 = time.monotonic()
        self.log(f"[{n}/{total}] {step.id}: {step.title}")
        self.on_step("start", step)
        self.journal.append("step-start", step.id)
        try:
            self.run_step(step, acts_done)
        finally:
            self.on_step("end", step)
        elapsed = time.monotonic() - s0
        self.journal.append("step-done", step.id, seconds=round(elapsed, 3))
        self.log(f"[{n}/{total}] {step.id}: done in {elapsed:.2f} s "
                 f"(at {time.monotonic() - t0:.1f} s)")
        return StepTiming(step.id, elapsed)

    def together(self, todo: list[tuple[int, Step]], total: int,
                 acts_done: set[tuple[str, int]], t0: float) -> list[StepTiming]:
        """Run steps of one group (each on its own host) at the same time; when one fails,
        the others still finish what they started, then the first failure is raised."""
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = [pool.submit(self.one_step, n, total, step, acts_done, t0)
                       for n, step in todo]
            results: list[StepTiming] = []
            failure: BaseException | None = None
            failed: Step | None = None
            for (_, step), f in zip(todo, futures, strict=True):
                try:
                    results.append(f.result())
                except BaseException as exc:  # noqa: BLE001 - re-raised below, in plan order
                    if failure is None:
                        failure, failed = ((exc.error, exc.step) if isinstance(exc, _InStep)
                                           else (exc, step))
        if failure is not None:
            raise _InStep(failed, failure)
        return results

    def _changed_anything(self) -> bool:
        """Has any mutating action of this run been started (as the journal says)? A lock step
        that was refused released what it took, so it counts only once it is done."""
        by_id = {s.id: s for s in self.plan.steps}
        events = self.journal.events()
        done = done_steps(events)
        for e in events:
            step = by_id.get(e.step or "")
            if e.event == "action-start" and step is not None and step.mutating and (
                    step.kind is not StepKind.LOCK or step.id in done):
                return True
        return False

    # ------------------------------------------------------------------ one step
    def preconditions(self, step: Step) -> dict[int, str]:
        """Check the step's preconditions, its kind's conditions in order (conditions.py, the
        list the plan shows); returns the actions found already in effect (resumed)."""
        in_effect: dict[int, str] = {}
        for key in KIND_CONDITIONS[step.kind.value]:
            in_effect |= self._checks[key](step)
        return in_effect

    def run_step(self, step: Step, acts_done: set[tuple[str, int]]) -> None:
        in_effect = self.preconditions(step)
        for n, action in enumerate(step.actions, 1):
            if (step.id, n) in acts_done:
                continue
            if n in in_effect:
                self.journal.append("action-skipped", step.id, action=n, why=in_effect[n])
                self.log(f"      {n}. skipped: {in_effect[n]}")
                continue
            host = getattr(action, "host", None)
            if isinstance(action, (Run, WriteFile, AppendWal, CopyFile)) and host:
                self.await_earlier(step, host)
            a0 = time.monotonic()
            if self.verbose:
                first, *rest = action.summary().splitlines()
                self.log(f"      {n}. {first}")
                for line in rest:
                    self.log(f"         {line}")
            self.journal.append("action-start", step.id, action=n, kind=action.kind,
                                **_journal_form(action))
            detail = self.perform(step, n, action)
            self.journal.append("action-done", step.id, action=n,
                                seconds=round(time.monotonic() - a0, 3), **detail)
        finish = self._finish.get(step.kind)
        if finish:
            finish(step)

    def perform(self, step: Step, n: int, a: Action) -> dict[str, Any]:
        if isinstance(a, Run):
            res = self.session.run(a.host, a.argv, timeout=a.timeout_s,
                                   check=step.kind is not StepKind.LOCK)
            self.after_run(step, n, a, res)
            if step.kind in (StepKind.FORCE_NEW_CLUSTER, StepKind.RESTART_PLAIN,
                             StepKind.START_LEARNER, StepKind.START_RESTORED,
                             StepKind.STOP_KEPT):
                self.session.drop_client(a.host)  # etcd restarts behind the tunnel
            return {"exit": res.exit_status}
        if isinstance(a, WriteFile):
            self.session.t(a.host).write_file(a.path, a.content.encode(), mode=a.mode, sudo=True)
            return {}
        if isinstance(a, EtcdCall):
            return self.etcd_call(a)
        if isinstance(a, CopyFile):
            return self.copy_file(a)
        if isinstance(a, Wait):
            if a.condition in WATCHED:
                self.wait_watching(a)
            else:
                poll(lambda: True if self.condition(a) else None, a.timeout_s,
                     f"{a.summary()}")
            return {}
        return self.append_wal(step, a)

    def wait_watching(self, a: Wait) -> None:
        """Wait for etcd while watching it: when it exits, fail with its own fatal line within
        seconds (watch.py), not with a gRPC error at the timeout."""
        m = self.inv.member(a.host)
        argv = runtime_for(self.inv.runtime).log_argv(m, LOG_LINES)

        def log() -> list[str]:
            res = self.session.run(a.host, argv, check=False, timeout=10)
            return res.stdout.decode(errors="replace").splitlines()

        wait_watching(lambda: self.condition(a), a.timeout_s, a.summary(),
                      pid=lambda: self.session.etcd_pid(a.host), log=log, host=a.host)

    def await_earlier(self, step: Step, host: str) -> None:
        """Before this run's first action on ``host`` (resumed, or the lock taken over): wait
        until no guarded command of an earlier run is alive there, saying so. It polls the
        host's command lock with a backoff, as long as that command's own timeout."""
        with self._settle_lock:
            if not self._probe_hosts or host in self._settled:
                return
        holder = self.session.command_holder(host)
        if holder is not None:
            pid, run, sid = holder
            what = f"the {sid.split(':', 1)[0]}" if sid != "?" else "a command"
            by = "an earlier run" if run == self.plan.run_id else f"run {run}"
            self.log(f"{host}: waiting for {what} started by {by} (pid {pid}) to end")
            self.journal.append("waiting-for-earlier", step.id, host=host, pid=pid, run=run,
                                earlier_step=sid)
            runs = [a for s in self.plan.steps if s.id == sid for a in s.actions
                    if isinstance(a, Run)]
            limit = max((a.timeout_s for a in runs if is_guarded(a.argv)),
                        default=max((a.timeout_s for a in runs), default=EARLIER_MAX_S))
            w0 = time.monotonic()
            delay = 0.05
            while self.session.command_holder(host) is not None:
                if time.monotonic() - w0 >= limit:
                    raise StepFailed(
                        f"{host}: {what} started by {by} (pid {pid}) still runs after "
                        f"{limit:.0f} s; nothing more was done on {host}. Let it end (or "
                        f"stop it: kill -- -{pid} on {host})")
                time.sleep(delay)
                delay = min(1.0, delay * 1.5)
            waited = time.monotonic() - w0
            self.log(f"{host}: {what} started by {by} ended after {waited:.1f} s more; going on")
            self.journal.append("earlier-ended", step.id, host=host, pid=pid,
                                seconds=round(waited, 3))
        with self._settle_lock:
            self._settled.add(host)

    # ------------------------------------------------------------------ action kinds
    def after_run(self, step: Step, n: int, a: Run, res: CommandResult) -> None:
        if step.kind in (StepKind.PREFLIGHT, StepKind.PREFLIGHT_REJOIN,
                         StepKind.PREFLIGHT_SNAPSHOT):
            self._check_space(a.host, res)
        elif step.kind is StepKind.SNAPSHOT_MAKE and a.argv[1:3] == ("snapshot", "status"):
            self._snapshot_status = _snapshot_status(a.host, res)
        elif step.kind is StepKind.LOCK and res.exit_status != 0:
            self._lock_refused(step, n, a, res)

    def etcd_call(self, a: EtcdCall) -> dict[str, Any]:
        c = self.session.client(a.via)
        members = c.member_list(serializable=False)
        if a.call == "member-add-learner":
            assert a.peer_url and a.result
            existing = _find(members, a.peer_url)
            if existing is not None:
                self.log(f"      {a.name} is already listed ({existing.id:x}); not adding again")
                value = existing.id
            else:
                res = self.retry_api(lambda: c.member_add([a.peer_url], learner=True),
                                     a.timeout_s, f"adding {a.name} as a learner",
                                     retry_on=(ERR_UNHEALTHY, ERR_TOO_MANY_LEARNERS))
                value = res.member.id
            self.resolve(a.result, f"{value:x}")
            return {"result": f"{value:x}"}
        if a.call == "member-promote":
            assert a.peer_url and a.member_ref
            me = _find(members, a.peer_url)
            if me is None:
                raise PreconditionError(f"{a.name} ({a.peer_url}) is not in the member list")
            ref = self.refs.get(a.member_ref)
            if ref is None:  # resumed after the add, before its result was journaled
                self.resolve(a.member_ref, f"{me.id:x}")
            elif int(str(ref), 16) != me.id:
                raise PreconditionError(f"{a.member_ref} resolved to {ref}, but the member "
                                        f"with {a.peer_url} is {me.id:x}")
            if not me.is_learner:
                return {"result": "already a voting member"}
            mid = me.id
            self.retry_api(lambda: c.member_promote(mid), a.timeout_s, f"promoting {a.name}",
                           retry_on=(ERR_LEARNER_NOT_READY, ERR_UNHEALTHY))
            return {"result": f"{mid:x} promoted"}
        assert a.member_id
        mid = int(a.member_id, 16)
        if a.if_listed and all(x.id != mid for x in members):
            return {"result": "not listed"}
        self.retry_api(lambda: c.member_remove(mid), a.timeout_s, f"removing {a.member_id}")
        return {"result": f"{a.member_id} removed"}

    def copy_file(self, a: CopyFile) -> dict[str, Any]:
        """Stream the file from its source (a host, or this machine) to ``a.host``, where it
        is written to ``.partial``, checked against the sha256 and renamed into place. The
        sha256 is the action's (a file the plan knows), else the snapshot's journaled one,
        else the source's own, read now. A destination that already has it is left alone."""
        want = a.sha256 or str((self.refs.get(f"snapshot:{a.src_host}") or {}).get("sha256", ""))
        if not want:
            want = self._sha256(a.src_host, a.src_path)
        have = self.session.run(a.host, ["sha256sum", a.path], check=False, timeout=600)
        if have.exit_status == 0 and have.stdout.decode(errors="replace")[:64] == want:
            return {"result": "already there", "sha256": want}
        sent = [0]

        def chunks() -> Iterator[bytes]:
            if not a.src_host:
                with open(a.src_path, "rb") as f:
                    while block := f.read(CHUNK):
                        sent[0] += len(block)
                        yield block
                return
            src = self.session.t(a.src_host).open_file(a.src_path, sudo=True)
            size, off = src.size(), 0
            while off < size:
                block = src.read(off, min(CHUNK, size - off))
                if not block:
                    break
                off += len(block)
                sent[0] = off
                yield block

        try:
            self.session.run(a.host, receive_argv(a.path, a.mode, want), stdin=chunks(),
                             timeout=a.timeout_s)
        except OSError as exc:
            raise StepFailed(f"{a.src_path}: cannot read it: {exc.strerror or exc}") from exc
        return {"sha256": want, "bytes": sent[0]}

    def _sha256(self, host: str, path: str) -> str:
        if not host:
            h = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    while block := f.read(CHUNK):
                        h.update(block)
            except OSError as exc:
                raise PreconditionError(f"{path}: cannot read it: {exc.strerror or exc}") \
                    from exc
            return h.hexdigest()
        res = self.session.run(host, ["sha256sum", path], timeout=600)
        return res.stdout.decode(errors="replace")[:64]

    def resolve(self, name: str, value: Any) -> None:
        self.refs[name] = value
        self.journal.append("ref-resolved", name=name, value=value)

    def retry_api(self, fn: Callable[[], T], timeout: float, what: str,
                  retry_on: tuple[str, ...] = (ERR_UNHEALTHY,)) -> T:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                return fn()
            except EtcdApiError as exc:
                details = getattr(exc, "details", str(exc))
                transient = getattr(exc, "retryable", False) or any(
                    r in details for r in retry_on)
                if not transient or time.monotonic() >= deadline:
                    raise StepFailed(f"{what}: {exc}") from exc
                time.sleep(delay)
                delay = min(0.15, delay * 1.5)

    def condition(self, w: Wait) -> bool:
        s = self.session
        if w.condition == "etcd-stopped":
            return s.etcd_pid(w.host) is None
        if w.condition == "etcd-running":
            return s.etcd_pid(w.host) is not None
        if w.condition == "members-are":
            return self.members_are(w) is None
        if w.condition == "serves-peers":
            return s.run(w.host, peer_probe_argv(w.endpoint), check=False,
                         timeout=10).exit_status == 0
        if w.condition == "healthy-without-force" and not s.runs_without_force(w.host):
            return False
        st = s.client(w.host).status()
        if w.condition == "leads-alone":
            # The only voter: a learner etcd itself left in membership (etcd-io/etcd#20893,
            # below 3.5.25 / 3.6.6) does not vote, and remove-stale-members removes it next.
            voters = [m for m in s.client(w.host).member_list(False) if not m.is_learner]
            if st.leader != st.member_id or [m.id for m in voters] != [st.member_id]:
                return False
        elif w.condition == "healthy-without-force":
            if st.leader != st.member_id:
                return False
        elif st.is_learner or not st.leader:  # voting-healthy
            return False
        s.client(w.host).get(b"/etcd-recovery/probe", serializable=False)
        return True

    def members_are(self, w: Wait) -> str | None:
        """None when the member list is exactly the planned one; else what differs."""
        listed = self.session.client(w.host).member_list(serializable=False)
        want = {}  # peer URL -> name
        for x in w.members:
            name, url = x.split("=", 1)
            want[url] = name
        got = {u: x.name for x in listed for u in x.peer_urls[:1]}
        if set(got) != set(want):
            return (f"the member list holds {sorted(got)}, the plan expects "
                    f"{sorted(want)}")
        for url, name in got.items():
            if name and name != want[url]:
                return f"{url} is named {name!r} in the member list, {want[url]!r} in the plan"
        return None

    def append_wal(self, step: Step, a: AppendWal) -> dict[str, Any]:
        if a.offset < 0:   # a named reference: resolved from the WAL now that it is fenced
            resolved = self._wal_record(step, a.host)
            if resolved is None:
                return {"result": "nothing to write"}
            a = resolved
            self.resolve(f"wal-record:{a.host}", {"file": a.file, "offset": a.offset,
                                                 "record_hex": a.record_hex,
                                                 "commit": a.commit})
        data = bytes.fromhex(a.record_hex)
        self.session.run(a.host, ["dd", f"of={a.file}", "bs=1M", f"seek={a.offset}",
                                  "oflag=seek_bytes", "conv=notrunc,fsync", "status=none"],
                         stdin=data, timeout=60)
        wal = self._read_wal(step)
        if wal.hardstate_commit != a.commit:
            raise StepFailed(f"{a.host}: after the write the WAL reads commit "
                             f"{wal.hardstate_commit}, expected {a.commit}")
        return {"file": a.file, "offset": a.offset, "record_hex": a.record_hex,
                "commit": a.commit}

    def _read_wal(self, step: Step) -> Any:
        t = self.session.t(step.host or "")
        wal_dir = step.params["wal_dir"]
        names = wal_file_names(f.name for f in t.list_dir(wal_dir, sudo=True))
        if not names:
            raise PreconditionError(f"{step.host}: no WAL files in {wal_dir}")
        return read_wal([t.open_file(posixpath.join(wal_dir, n), sudo=True)
                         for n in names[-2:]])

    def _wal_record(self, step: Step, host: str) -> AppendWal | None:
        """The plan's align-commit decision (plan.align_decision), taken now from the fenced
        member's WAL; None when there is nothing to write (said in the run's log)."""
        t = self.session.t(host)
        wal = self._read_wal(step)
        cindex = read_backend(t.open_file(step.params["db"], sudo=True)).consistent_index or 0
        wal_dir = step.params["wal_dir"]
        last = posixpath.join(wal_dir, wal_file_names(
            f.name for f in t.list_dir(wal_dir, sudo=True))[-1])
        tail = WalTail(file=last, offset=wal.end_offset, crc=wal.last_crc,  # ends in `last`
                       room=t.open_file(last, sudo=True).size() - wal.end_offset,
                       term=wal.hardstate_term, vote=wal.hardstate_vote)
        d = align_decision(host, wal.hardstate_commit, wal.last_index, cindex,
                           wal.torn_tail, tail, bool(step.params["commit_fix"]))
        if d.record is None:
            self.log(f"      {d.why}")
        return d.record

    # ------------------------------------------------------------------ preconditions
    def prepare_preflight(self, step: Step) -> dict[int, str]:
        allow = bool(step.params["allow_quorum"])
        earlier = self.planned_from
        if earlier is not None and time.monotonic() - self.fresh_at < FRESH_S:
            report = earlier
            self.log("      the plan's inspection, moments old, is the preflight's reading")
        else:
            report = inspect_cluster(
                self.inv, factory=self.factory, allow_quorum=allow, prefer=self.plan.chosen,
                exclude=step.params["exclude"],
                known_unreachable=[s for s in earlier.members if not s.reachable]
                if earlier else ())
        if report.quorum.has_quorum and not allow:
            raise PreconditionError(f"the cluster has quorum again ({report.decision.reason})")
        if report.decision.refused:
            raise PreconditionError(report.decision.reason)
        if self.check_fingerprint and fingerprint(report) != self.plan.fingerprint:
            raise PreconditionError(
                "the cluster's state differs from the one the plan was made from (fingerprint "
                f"{fingerprint(report)} != {self.plan.fingerprint}); make a new plan")
        if report.decision.chosen != self.plan.chosen and not allow:
            # (With --allow-quorum every member runs and the leader's log moves ahead of the
            # others' with every write: the choice is taken again from the disks once all are
            # fenced, before force-new-cluster.)
            raise PreconditionError(f"the member to keep is now {report.decision.chosen}, "
                                    f"not {self.plan.chosen}: {report.decision.reason}; "
                                    "make a new plan")
        for name in step.params["members"]:
            st = next(s for s in report.members if s.name == name)
            if not st.reachable:
                raise PreconditionError(f"{name} is no longer reachable: {st.error}")
        return {}

    def prepare_preflight_rejoin(self, step: Step) -> dict[int, str]:
        via, name = step.params["via"], step.params["name"]
        c = self.session.client(via)
        st = c.status()
        if not st.leader:
            raise PreconditionError(f"{via} has no leader: the cluster has no quorum; run "
                                    "`etcd-recovery execute` first")
        c.get(b"/etcd-recovery/probe", serializable=False)
        me = _find(c.member_list(serializable=False), self.inv.member(name).peer_url)
        if me is not None and not me.is_learner and self.session.etcd_pid(name) is not None:
            try:
                own = self.session.client(name).status()
                if own.leader and own.member_id == me.id:
                    raise RefusedError(f"{name} is already a healthy voting member; nothing "
                                       "to do")
            except EtcdApiError:
                pass
            finally:
                self.session.drop_client(name)
        return {}

    def _check_space(self, name: str, res: CommandResult) -> None:
        words = res.stdout.decode(errors="replace").split()
        try:
            avail, used = int(words[0]), int(words[1])
        except (IndexError, ValueError) as exc:
            raise PreconditionError(f"{name}: cannot tell free disk and data size from "
                                    f"{shell_join(res.argv[-2:])}: got {words!r}") from exc
        need = int(used * 1.1) + 16 * 1024 * 1024
        if avail < need:
            m = self.session.m(name)
            what = (f"{m.data_dir} and {m.wal} hold" if m.wal_outside_data_dir
                    else f"{m.data_dir} holds")
            raise RefusedError(f"{name}: not enough free disk for the backup: "
                               f"{avail} bytes free under /var/lib/etcd-recovery, "
                               f"{need} needed ({what} {used} bytes); nothing was changed")

    def _lock_refused(self, step: Step, n: int, a: Run, res: CommandResult) -> None:
        path = step.params["path"]
        read = self.session.run(a.host, ["cat", path], check=False)
        holder = read.stdout.decode(errors="replace").strip() if read.exit_status == 0 else ""
        if holder == self.plan.run_id:
            return
        # Release the locks this step took before this host (the unlock step's command).
        for done in step.actions[:n - 1]:
            assert isinstance(done, Run)
            unlock = unlock_argv(self.plan.run_id)
            self.journal.append("action-rollback", step.id, host=done.host,
                                argv=list(unlock))
            with contextlib.suppress(TransportError):
                self.session.run(done.host, unlock, check=False)
        if holder:
            raise RefusedError(f"{a.host}: another recovery holds the lock {path} (run "
                               f"{holder!r}); if that run is dead, take the lock over with "
                               "--take-over-lock")
        raise lock_failure(a.host, path, res, read)

    def check_reachable(self, step: Step) -> dict[int, str]:
        self.session.run(step.host or "", ["true"], timeout=30)
        return {}

    def check_etcd_stopped(self, step: Step) -> dict[int, str]:
        if self.session.etcd_pid(step.host or "") is not None:
            raise PreconditionError(f"{step.host}: etcd runs again although fenced; stopping, "
                                    "nothing done to it")
        return {}

    def check_backed_up(self, step: Step) -> dict[int, str]:
        name = step.host or ""
        sums = posixpath.join(self.rdir, "backup", "B2SUMS")
        if self.session.run(name, ["test", "-f", sums], check=False).exit_status != 0:
            raise PreconditionError(f"{name}: no verified backup at {sums}")
        return {}

    def check_others_fenced(self, step: Step) -> dict[int, str]:
        names = [n for n in self.plan.steps[0].params["members"] if n != step.host]
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            pids = list(pool.map(self.session.etcd_pid, names))
        for name, pid in zip(names, pids, strict=True):
            if pid is not None:
                raise PreconditionError(f"{name}: etcd is running although it was fenced")
        return {}

    def check_kept_healthy(self, step: Step) -> dict[int, str]:
        c = self.session.client(step.host or "")
        st = c.status()
        if st.leader != st.member_id:
            raise PreconditionError(f"{step.host} does not lead (leader {st.leader:x})")
        c.get(b"/etcd-recovery/probe", serializable=False)
        return {}

    def check_first_wait(self, step: Step) -> dict[int, str]:
        """members-after: checked by the step's first action, a wait for the member list."""
        first = step.actions[0] if step.actions else None
        if not (isinstance(first, Wait) and first.condition == "members-are"):
            raise PreconditionError(f"{step.id}: its first action is not the wait for the "
                                    "member list that checks its precondition")
        return {}

    def check_all_done(self, step: Step) -> dict[int, str]:
        done = done_steps(self.journal.events())
        before = [s.id for s in self.plan.steps[:self.plan.steps.index(step)]]
        missing = [sid for sid in before if sid not in done]
        if missing:
            raise PreconditionError(f"{step.id}: steps not done before it: "
                                    + ", ".join(missing))
        return {}

    def check_verified(self, step: Step) -> dict[int, str]:
        done = done_steps(self.journal.events())
        verify = [s.id for s in self.plan.steps if s.kind is StepKind.VERIFY]
        if not verify or any(v not in done for v in verify):
            raise PreconditionError(f"{step.id}: the verify step has not passed")
        return {}

    def check_lock_free(self, step: Step) -> dict[int, str]:
        """lock-free: checked by the step's own actions, which take the lock only where it
        is free (a race-free test on the host); a refusal names the run that holds it."""
        if not step.actions or not all(isinstance(a, Run) for a in step.actions):
            raise PreconditionError(f"{step.id}: its actions are not the lock commands that "
                                    "check its precondition")
        return {}

    def prepare_align_commit(self, step: Step) -> dict[int, str]:
        name = step.host or ""
        if not step.actions:
            return {}
        a = step.actions[0]
        if not isinstance(a, AppendWal) or a.offset < 0:
            return {}
        wal = self._read_wal(step)
        if wal.hardstate_commit == a.commit and wal.end_offset == a.offset + len(
                bytes.fromhex(a.record_hex)):
            return {1: "the WAL already ends with this record (resumed)"}
        if wal.torn_tail or wal.end_offset != a.offset or wal.last_crc != a.crc_before:
            raise PreconditionError(
                f"{name}: the WAL changed since the plan was made (it ends at offset "
                f"{wal.end_offset} with CRC {wal.last_crc:x}; the plan read offset {a.offset}, "
                f"CRC {a.crc_before:x}); nothing was written: make a new plan")
        return {}

    def prepare_force_new_cluster(self, step: Step) -> dict[int, str]:
        name = step.host or ""

        def resumed() -> dict[int, str]:
            # Resumed after the start: the restore is under way; only wait for it.
            self.check_others_fenced(step)
            why = "etcd already runs with --force-new-cluster (resumed)"
            wait = next(i for i, a in enumerate(step.actions, 1) if isinstance(a, Wait))
            return {i: why for i in range(1, wait)}

        if self.session.runs_without_force(name) is False:
            return resumed()
        # Every member must be stopped, and then its disk is authoritative: the member to keep
        # is decided again, by the same function that chose it for the plan. Each host is
        # checked and read at the same time.
        names = self.plan.steps[0].params["members"]

        def fenced_disk(n: str) -> MemberState | None:
            if self.session.etcd_pid(n) is not None:
                # After a failed start, the kept member's supervisor restarts etcd with the
                # step's --force-new-cluster (a crash loop); a start between the first look
                # and this one is the step under way, not a member that escaped its fence.
                if n == name and self.session.runs_without_force(n) is False:
                    return None
                raise PreconditionError(f"{n}: etcd is running although it was fenced")
            return read_disk(self.session.t(n), self.session.m(n))

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            read = list(pool.map(fenced_disk, names))
        states = [s for s in read if s is not None]
        if len(states) < len(read):
            return resumed()
        require_kept(states, name, self.plan.inventory)
        return {}

    def finish_force_new_cluster(self, step: Step) -> None:
        keys = self.session.client(step.host or "").count_keys()
        self.log(f"      {step.host} holds {keys} keys after the restore")
        self.journal.append("keys-counted", step.id, keys=keys)

    def prepare_restart_plain(self, step: Step) -> dict[int, str]:
        if self.session.runs_without_force(step.host or ""):
            why = "etcd already runs without --force-new-cluster (resumed)"
            return {1: why, 2: why}
        return self.check_kept_healthy(step)

    def prepare_remove_stale(self, step: Step) -> dict[int, str]:
        planned = {int(a.member_id, 16) for a in step.actions
                   if isinstance(a, EtcdCall) and a.member_id}
        kept_url = self.session.m(step.host or "").peer_url
        for x in self.session.client(step.host or "").member_list(serializable=False):
            if x.id not in planned and kept_url not in x.peer_urls:
                raise PreconditionError(
                    f"the member list holds {x.name or '(unstarted)'} {x.id:x} "
                    f"({', '.join(x.peer_urls)}), which the plan does not know; nothing was "
                    "removed: make a new plan")
        return {}

    def prepare_learner_add(self, step: Step) -> dict[int, str]:
        add = step.actions[1]
        assert isinstance(add, EtcdCall) and add.peer_url
        listed = self.session.client(add.via).member_list(serializable=False)
        if _find(listed, add.peer_url) is not None:
            return {1: f"{add.name} is already in the member list (resumed)"}
        return {}

    def prepare_start_learner(self, step: Step) -> dict[int, str]:
        name = step.host or ""
        if self.session.etcd_pid(name) is not None:
            why = "etcd already runs (resumed)"
            return {2: why, 3: why}
        m = self.session.m(name)
        member_dir = posixpath.join(m.data_dir, "member")
        if self.session.run(name, ["test", "-e", member_dir], check=False).exit_status == 0:
            raise PreconditionError(f"{name}: {member_dir} exists; a learner starts from an "
                                    "empty data dir (the move-aside step moves it)")
        # A WAL dir of its own must hold no WAL file either: etcd would restart from it as the
        # old member (etcd v3.6.16 server/storage/wal/util.go: Exist = any *.wal in the dir).
        if m.wal_apart and self.session.run(name, list(wal_files_argv(m.wal)),
                                            check=False).exit_status == 0:
            raise PreconditionError(f"{name}: {m.wal} holds WAL files; a learner starts with "
                                    "no WAL (the move-aside step moves the WAL dir aside)")
        return {}

    def prepare_promote(self, step: Step) -> dict[int, str]:
        if self.session.etcd_pid(step.host or "") is None:
            raise PreconditionError(f"{step.host}: etcd is not running")
        return {}

    # ------------------------------------------------------------------ the snapshot method
    def prepare_preflight_file(self, step: Step) -> dict[int, str]:
        earlier = self.planned_from
        if earlier is not None and time.monotonic() - self.fresh_at < FRESH_S:
            report = earlier
        else:
            report = inspect_cluster(
                self.inv, factory=self.factory, prefer=self.plan.chosen,
                known_unreachable=[s for s in earlier.members if not s.reachable]
                if earlier else ())
        if report.quorum.has_quorum:
            raise PreconditionError(f"the cluster has quorum again ({report.decision.reason})")
        if self.check_fingerprint and fingerprint(report) != self.plan.fingerprint:
            raise PreconditionError(
                "the cluster's state differs from the one the plan was made from (fingerprint "
                f"{fingerprint(report)} != {self.plan.fingerprint}); make a new plan")
        for name in step.params["members"]:
            st = next(s for s in report.members if s.name == name)
            if not st.reachable:
                raise PreconditionError(f"{name} is no longer reachable: {st.error}")
        got = self._sha256("", step.params["file"])
        if got != step.params["sha256"]:
            raise PreconditionError(f"{step.params['file']} changed since the plan was made "
                                    f"(sha256 {got}, the plan's {step.params['sha256']}); "
                                    "make a new plan")
        return {}

    def check_snapshot_made(self, step: Step) -> dict[int, str]:
        for a in step.actions:
            if isinstance(a, CopyFile) and a.src_host and \
                    f"snapshot:{a.src_host}" not in self.refs:
                raise PreconditionError(f"{step.id}: the snapshot on {a.src_host} is not made "
                                        f"yet (no snapshot:{a.src_host} in the journal)")
        return {}

    def _snapshot_sha(self, step: Step) -> str:
        if step.params["sha256"]:
            return str(step.params["sha256"])
        ref = self.refs.get(step.params["ref"])
        if not isinstance(ref, dict) or not ref.get("sha256"):
            raise PreconditionError(f"{step.id}: no {step.params['ref']} in the journal: the "
                                    "snapshot is not made yet")
        return str(ref["sha256"])

    def check_snapshot_here(self, step: Step) -> dict[int, str]:
        name, snap = step.host or "", step.params["snapshot"]
        if self.session.run(name, ["test", "-e", posixpath.join(self.rdir, "restore.done")],
                            check=False).exit_status == 0:
            return {}  # restored already (resumed): the snapshot is no longer needed there
        want = self._snapshot_sha(step)
        got = self._sha256(name, snap) if self.session.run(
            name, ["test", "-f", snap], check=False).exit_status == 0 else "(no file)"
        if got != want:
            raise PreconditionError(f"{name}: {snap} has sha256 {got}, not the snapshot's "
                                    f"{want}; nothing restored there")
        return {}

    def check_restored(self, step: Step) -> dict[int, str]:
        name = step.host or ""
        done = posixpath.join(self.rdir, "restore.done")
        if self.session.run(name, ["test", "-e", done], check=False).exit_status != 0:
            raise PreconditionError(f"{name}: its restore did not finish ({done} is missing)")
        return {}

    def finish_snapshot_make(self, step: Step) -> None:
        """Prove the snapshot holds the kept member's whole log (its consistent index is at
        least the WAL's last index), check etcdutl's status of it against the inspection, and
        journal what it is (sha256, revision, hash, keys) as the step's named reference."""
        name, snap = step.host or "", step.params["snapshot"]
        t = self.session.t(name)
        cindex = read_backend(t.open_file(snap, sudo=True)).consistent_index or 0
        wal = self._read_wal(step)
        if cindex < wal.last_index:
            raise StepFailed(f"{name}: the snapshot's consistent index {cindex} is below the "
                             f"WAL's last index {wal.last_index}: it would leave entries of the "
                             "log out; nothing was restored")
        if self._snapshot_status is None:  # resumed after the status command ran
            status = next(a for a in step.actions if isinstance(a, Run)
                          and a.argv[1:3] == ("snapshot", "status"))
            self._snapshot_status = _snapshot_status(name, self.session.run(
                name, status.argv, timeout=status.timeout_s))
        st = self._snapshot_status
        if st["revision"] < step.params["min_revision"]:
            raise StepFailed(f"{name}: the snapshot's revision {st['revision']} is below the "
                             f"{step.params['min_revision']} inspected; nothing was restored")
        value = {**st, "sha256": self._sha256(name, snap), "consistent_index": cindex}
        self.log(f"      snapshot: revision {st['revision']}, {st['total_key']} keys, "
                 f"{st['total_size']} bytes, consistent index {cindex} >= WAL last index "
                 f"{wal.last_index}")
        self.resolve(step.params["ref"], value)

    def finish_restore_check(self, step: Step) -> None:
        bump = int(step.params["bump_revision"])
        if step.params["ref"]:
            ref = self.refs.get(step.params["ref"])
            if not isinstance(ref, dict):
                raise PreconditionError(f"no {step.params['ref']} in the journal")
            rev0 = int(ref["revision"])
        else:
            rev0 = int(step.params["revision"])
        c = self.session.client(self.plan.chosen)
        st = c.status()
        if st.revision < rev0 + bump:
            raise StepFailed(f"the revision is {st.revision}, below the snapshot's {rev0} + "
                             f"the bump {bump}")
        canceled, compact, _ = c.watch_compacted(b"/etcd-recovery/probe", max(1, rev0))
        if not canceled or compact <= rev0:
            raise StepFailed(f"a watch from revision {rev0} was not refused as compacted "
                             f"(canceled {canceled}, compact revision {compact})")
        self.log(f"      revision {st.revision} >= {rev0} + {bump}; a watch from {rev0} is "
                 f"refused as compacted (compact revision {compact})")
        self.journal.append("restore-checked", step.id, revision=st.revision,
                            compact_revision=compact)

    def keys_counted(self) -> int | None:
        counts = [e.detail.get("keys") for e in self.journal.events()
                  if e.event == "keys-counted"]
        return int(counts[-1]) if counts and counts[-1] is not None else None

    def finish_verify(self, step: Step) -> None:
        keys = step.params["keys_before"]
        if keys is None:
            keys = self.keys_counted()
        problems = verify_cluster(self.session, step.params["members"], keys)
        if problems:
            raise StepFailed("verification failed: " + "; ".join(problems))


def _snapshot_status(host: str, res: CommandResult) -> dict[str, Any]:
    """etcdutl snapshot status -w json: {"hash", "revision", "totalKey", "totalSize"} (and
    "version" from 3.6: etcdutl/snapshot/v3_snapshot.go @v3.6.16, Status)."""
    try:
        d = json.loads(res.stdout.decode(errors="replace"))
        return {"hash": int(d["hash"]), "revision": int(d["revision"]),
                "total_key": int(d["totalKey"]), "total_size": int(d["totalSize"]),
                "version": str(d.get("version", ""))}
    except (ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"{host}: etcdutl snapshot status printed no status it can read: "
                         f"{res.stdout_text()[:200]!r}") from exc


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


def _find(members: list[MemberInfo], peer_url: str) -> MemberInfo | None:
    return next((x for x in members if peer_url in x.peer_urls), None)


def _journal_form(a: Action) -> dict[str, Any]:
    """What the journal keeps of an action: enough to match it with the plan's, no secrets
    (a file's content is kept as its digest only)."""
    if isinstance(a, Run):
        return {"host": a.host, "argv": list(a.argv)}
    if isinstance(a, WriteFile):
        return {"host": a.host, "path": a.path, "digest": a.digest, "mode": a.mode}
    if isinstance(a, EtcdCall):
        return {"via": a.via, "call": a.call, "peer_url": a.peer_url,
                "member_id": a.member_id, "member_ref": a.member_ref}
    if isinstance(a, Wait):
        return {"host": a.host, "condition": a.condition, "timeout_s": a.timeout_s}
    if isinstance(a, CopyFile):
        return {"host": a.host, "src_host": a.src_host, "src_path": a.src_path,
                "path": a.path, "mode": a.mode}
    return {"host": a.host, "file": a.file, "offset": a.offset, "record_hex": a.record_hex}


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


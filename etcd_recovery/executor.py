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

import functools
import hashlib
import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

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
    sha256_argv,
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
from .etcdlog import Cause
from .fanout import Fanout
from .formats.backend import read_backend
from .formats.wal import read_wal, wal_file_names
from .inventory import Inventory
from .journal import Event, Journal, done_actions, done_steps
from .live import ERR_LEARNER_NOT_READY, ERR_TOO_MANY_LEARNERS, ERR_UNHEALTHY
from .model import InspectReport, WalTail
from .plan.force_new_cluster import align_decision
from .plan.scripts import is_guarded, lock_argv
from .plan.snapshot import file_given
from .plan.steps import (
    BACKGROUND,
    BESIDE_BACKGROUND,
    RESTARTS_ETCD,
    Plan,
    Step,
    StepKind,
    run_dir,
)
from .results import StepTiming, Summary
from .retry import Backoff, poll, retry
from .runtimes.base import runtime_for
from .session import ClientFactory, Session, tunnel_client
from .stepchecks import AFTER_RUN, AFTERMATH, CHECKS, FINISH, SKIPS
from .stepchecks.base import find_member
from .transport.base import CommandResult, read_through_all
from .transport.factory import TransportFactory, ssh_transport
from .watch import LOG_LINES, WATCHED, wait_watching

T = TypeVar("T")
Log = Callable[[str], None]
CHUNK = 1024 * 1024  # a copy streams in blocks of this size (each stream holds one or two)
COPY_READ_S = 3600.0  # a copy's source read off a host, at most (1 GB took 30 s on the lab)
EARLIER_MAX_S = 1800.0   # waiting for an earlier run's command of unknown step, at most
EARLIER_BACKOFF = Backoff(first=0.05, factor=1.5, cap=1.0)   # polling its command lock
API_BACKOFF = Backoff(first=0.05, factor=1.5, cap=0.15)      # a membership call etcd refused

__all__ = ["Executor", "StepFailed"]


class _InStep(Exception):
    """A failure inside one of several steps run together: which step, and what."""

    def __init__(self, step: Step | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.step = step
        self.error = error


def source_of(a: CopyFile) -> tuple[str, str]:
    return a.src_host, a.src_path


# A file's identity (Executor.file_identity): GNU stat's device, inode, size, and mtime and
# ctime with nanoseconds ("%.9Y": coreutils 8.x and later)
IDENTITY = re.compile(r"\d+:\d+:\d+:\d+\.\d{9}:\d+\.\d{9}")


def identity_argv(path: str) -> list[str]:
    return ["stat", "-c", "%d:%i:%s:%.9Y:%.9Z", "--", path]


def verified_ref(host: str, path: str) -> str:
    return f"verified:{host}:{path}"


def fanouts_for(steps: list[Step], blocks: Callable[[str, str], Iterator[bytes]]
                ) -> dict[tuple[str, str], Fanout]:
    """One shared read for each host's file that two or more of ``steps`` copy, each to its
    own host (a file on this machine is read by each send: reading it costs nothing)."""
    to: dict[tuple[str, str], list[str]] = {}
    for step in steps:
        for a in step.actions:
            if isinstance(a, CopyFile) and a.src_host:
                to.setdefault(source_of(a), []).append(a.host)
    return {src: Fanout(hosts, functools.partial(blocks, *src)) for src, hosts in to.items()
            if len(hosts) > 1 and len(set(hosts)) == len(hosts)}


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
        # reading while younger than stepchecks.base.FRESH_S; after that the preflight reads
        # again, but does not wait a second time on the hosts it found unreachable. (None: a
        # resumed run.)
        self.planned_from = planned_from
        self.fresh_at = time.monotonic()
        self.on_step = on_step or (lambda _event, _step: None)  # a live status line's feed
        # Steps of the "background" group run while the plan goes on; each is waited for
        # before the next step on its host (or on every host; not by BESIDE_BACKGROUND's
        # kinds: a snapshot's copy) and before the run ends.
        self._bg_pool: ThreadPoolExecutor | None = None
        # A group's sends of one host's file share one read of it (fanout.py)
        self._fanouts: dict[tuple[str, str], Fanout] = {}
        self._bg: list[tuple[Step, Future[StepTiming]]] = []
        self._bg_lock = threading.Lock()
        # Background backups the plan marks in_turn run one at a time, in the plan's order:
        # several at once competed for the disk and the CPU with the kept member's restore,
        # which runs meanwhile (plan.common.backups_in_turn).
        self._one_at_a_time = threading.Semaphore(1)
        self._bg_timings: list[StepTiming] = []
        # A resumed run (or one that took the lock over) first waits, on each host, for the
        # guarded commands an earlier run left running there (plan.COMMANDS_LOCK).
        self._probe_hosts = False
        self._settled: set[str] = set()
        self._settle_lock = threading.Lock()
        # Each precondition's checker (conditions.py lists each step kind's; a checker may
        # find actions already in effect), each kind's check after its actions, and each
        # kind's reading of a command's result: the tables of stepchecks/, one module per
        # method, bound to this run.
        self._checks: dict[str, Callable[[Step], dict[int, str]]] = {
            key: functools.partial(fn, self) for key, fn in CHECKS.items()}
        self._finish: dict[StepKind, Callable[[Step], None]] = {
            kind: functools.partial(fn, self) for kind, fn in FINISH.items()}
        self.notes: dict[str, Any] = {}

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
                             f"cause and run again with --resume{self._aftermath(current)}"
                             ) from exc
        if not isinstance(exc, Exception):  # SystemExit and the like pass through
            raise exc
        # a bug must not leave a traceback and an open run behind
        self.journal.append("step-failed", sid, error=f"internal error: {exc!r}")
        raise StepFailed(f"step {sid} failed with an internal error ({exc!r}); the journal "
                         "says where; run again with --resume once the cause is fixed") from exc

    def _aftermath(self, step: Step | None) -> str:
        """What the failed ``step`` left going, as its kind's module says (stepchecks)."""
        if step is None or (say := AFTERMATH.get(step.kind)) is None:
            return ""
        said = say(self, step)
        return f". {said}" if said else ""

    # ------------------------------------------------------------------ background steps
    def _start_background(self, n: int, total: int, step: Step,
                          acts_done: set[tuple[str, int]], t0: float) -> None:
        if self._bg_pool is None:
            self._bg_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="background")
        self.log(f"[{n}/{total}] {step.id}: runs in the background from here")
        if step.params.get("in_turn") is True:
            def in_turn() -> StepTiming:
                with self._one_at_a_time:
                    return self.one_step(n, total, step, acts_done, t0)
            future = self._bg_pool.submit(in_turn)
        else:
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
        whole = next((why for skip in SKIPS if (why := skip(self, step))), "")
        if step.group != BACKGROUND and step.kind not in BESIDE_BACKGROUND and not whole:
            self._join_background(step.host)   # (a step skipped whole touches no host)
        s0 = time.monotonic()
        self.log(f"[{n}/{total}] {step.id}: {step.title}")
        if whole:
            # Skipped whole, as an earlier step decided and journaled: nothing of it runs, not
            # even its checks. Its start, every action skipped and its end go into the journal
            # in one write (an fsync beside three 1 GB backups on the same disk: 0.1-0.3 s).
            self.log(f"      skipped: {whole}")
            self.on_step("start", step)
            self.on_step("end", step)
            self.journal.append_many([
                ("step-start", step.id, {}),
                *(("action-skipped", step.id, {"action": i, "why": whole})
                  for i in range(1, len(step.actions) + 1) if (step.id, i) not in acts_done),
                ("step-done", step.id, {"seconds": round(time.monotonic() - s0, 3)})])
            self.log(f"[{n}/{total}] {step.id}: skipped")
            return StepTiming(step.id, time.monotonic() - s0)
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
        self._fanouts = fanouts_for([step for _, step in todo], self._source_blocks)

        def one(n: int, step: Step) -> StepTiming:
            try:
                return self.one_step(n, total, step, acts_done, t0)
            finally:   # a send that never got to its copy must not hold the others' read
                for a in step.actions:
                    if isinstance(a, CopyFile) and (f := self._fanouts.get(source_of(a))):
                        f.leave(a.host)

        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = [pool.submit(one, n, step) for n, step in todo]
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
        self._fanouts = {}   # (one left by an exception is harmless: no send of it is pending)
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
            if step.kind in RESTARTS_ETCD:
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
        rt = runtime_for(self.inv.runtime)
        argv = rt.log_argv(m, LOG_LINES)
        state_argv = rt.state_argv(m)

        def log() -> list[str]:
            res = self.session.run(a.host, argv, check=False, timeout=10)
            return res.stdout.decode(errors="replace").splitlines()

        unit: Callable[[list[str]], Cause | None] | None = None
        if state_argv is not None:
            show = state_argv

            def state() -> str:
                res = self.session.run(a.host, show, check=False, timeout=10)
                return res.stdout.decode(errors="replace")

            try:
                before = state()    # as the wait begins: what an earlier try left is not news
            except TransportError:
                before = ""

            def unit(lines: list[str]) -> Cause | None:
                return rt.state_cause(m, state(), lines, before)

        wait_watching(lambda: self.condition(a), a.timeout_s, a.summary(),
                      pid=lambda: self.session.etcd_pid(a.host), log=log, host=a.host,
                      unit=unit)

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
            retry(lambda: self.session.command_holder(host) is None, limit, EARLIER_BACKOFF,
                  done=bool, timed_out=lambda _: StepFailed(
                      f"{host}: {what} started by {by} (pid {pid}) still runs after "
                      f"{limit:.0f} s; nothing more was done on {host}. Let it end (or "
                      f"stop it: kill -- -{pid} on {host})"))
            waited = time.monotonic() - w0
            self.log(f"{host}: {what} started by {by} ended after {waited:.1f} s more; going on")
            self.journal.append("earlier-ended", step.id, host=host, pid=pid,
                                seconds=round(waited, 3))
        with self._settle_lock:
            self._settled.add(host)

    # ------------------------------------------------------------------ action kinds
    def after_run(self, step: Step, n: int, a: Run, res: CommandResult) -> None:
        hook = AFTER_RUN.get(step.kind)
        if hook is not None:
            hook(self, step, n, a, res)

    def etcd_call(self, a: EtcdCall) -> dict[str, Any]:
        c = self.session.client(a.via)
        members = c.member_list(serializable=False)
        if a.call == "member-add-learner":
            assert a.peer_url and a.result
            existing = find_member(members, a.peer_url)
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
            me = find_member(members, a.peer_url)
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
        else the source's own, read now. A destination that already has it is left alone: a
        file this run journaled as checked and whose identity is unchanged (still_verified),
        else one whose sha256 matches, read now."""
        want = a.sha256 or str((self.refs.get(f"snapshot:{a.src_host}") or {}).get("sha256", ""))
        if not want:
            want = self.sha256(a.src_host, a.src_path)
        fan = self._fanouts.get(source_of(a))
        sent = [0]
        failed: list[BaseException] = []

        def counted(blocks: Iterator[bytes]) -> Iterator[bytes]:
            # A read that fails ends the stream (the receiving end then refuses the short
            # copy by its sha256) and is named below, rather than dying in the feeder thread.
            try:
                for block in blocks:
                    sent[0] += len(block)
                    yield block
            except Exception as exc:  # noqa: BLE001 - raised below as the step's failure
                failed.append(exc)

        try:   # (a send sharing a read leaves it as soon as it takes no more: fanout.py)
            # A resumed run: this very file checked before (its sha256 and identity in the
            # journal), unchanged since, is not read again (1 GB per host at 1 GB)
            if self.still_verified(a.host, a.path, want):
                return {"result": "already there", "sha256": want, "checked": "identity"}
            have = self.session.run(a.host, sha256_argv(a.path), check=False, timeout=600)
            if have.exit_status == 0 and have.stdout.decode(errors="replace")[:64] == want:
                self.note_verified(a.host, a.path, want)
                return {"result": "already there", "sha256": want}
            shared = fan.join(a.host) if fan is not None else None
            self.session.run(a.host, receive_argv(a.path, a.mode, want),
                             stdin=counted(shared if shared is not None else
                                           self._source_blocks(*source_of(a))),
                             timeout=a.timeout_s)
        except EtcdRecoveryError:
            if not failed:
                raise
        finally:
            if fan is not None:
                fan.leave(a.host)
        if failed:
            exc = failed[0]
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StepFailed(f"{file_given(a.src_host, a.src_path)}: cannot read it: {why}") \
                from exc
        self.note_verified(a.host, a.path, want)
        return {"sha256": want, "bytes": sent[0]}

    def file_identity(self, host: str, path: str) -> str | None:
        """The file's device, inode, size, mtime and ctime (to the nanosecond), or None when
        the host's ``stat`` cannot say them all (or the file is on this machine: "" host).
        A file written, truncated, replaced or renamed over since shows another: its ctime is
        the kernel's, not settable from user space (stat(2))."""
        if not host:
            return None
        res = self.session.run(host, identity_argv(path), check=False)
        out = res.stdout.decode(errors="replace").strip()
        return out if res.exit_status == 0 and IDENTITY.fullmatch(out) else None

    def note_verified(self, host: str, path: str, sha256: str) -> None:
        """Journal that ``host:path`` was found to have ``sha256``, with the file's identity
        read after it: a later check of the same file (the restore's precondition) compares
        the identity instead of reading 1 GB again."""
        ident = self.file_identity(host, path)
        if ident is not None:
            self.resolve(verified_ref(host, path), {"sha256": sha256, "identity": ident})

    def still_verified(self, host: str, path: str, sha256: str) -> bool:
        """``host:path`` is the file journaled with ``sha256`` (note_verified) and has not
        been changed since: the same device, inode, size, mtime and ctime."""
        rec = self.refs.get(verified_ref(host, path))
        return isinstance(rec, dict) and rec.get("sha256") == sha256 and \
            bool(rec.get("identity")) and self.file_identity(host, path) == rec["identity"]

    def _source_blocks(self, host: str, path: str) -> Iterator[bytes]:
        """The file's blocks, read from ``host`` ("" for this machine)."""
        if not host:
            with open(path, "rb") as f:
                while block := f.read(CHUNK):
                    yield block
            return
        # streamed with cat, not read over SFTP: paramiko's readv keeps a slice of every
        # block it prefetched until the file is closed (transport/ssh.py, stream)
        yield from self.session.t(host).stream(["cat", "--", path], sudo=True,
                                               timeout=COPY_READ_S)

    def sha256(self, host: str, path: str) -> str:
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
        res = self.session.run(host, sha256_argv(path), timeout=600)
        return res.stdout.decode(errors="replace")[:64]

    def resolve(self, name: str, value: Any) -> None:
        self.refs[name] = value
        self.journal.append("ref-resolved", name=name, value=value)

    def retry_api(self, fn: Callable[[], T], timeout: float, what: str,
                  retry_on: tuple[str, ...] = (ERR_UNHEALTHY,)) -> T:
        def transient(exc: Exception) -> bool:
            details = getattr(exc, "details", str(exc))
            return bool(getattr(exc, "retryable", False) or any(r in details for r in retry_on))

        try:
            return retry(fn, timeout, API_BACKOFF, retry_on=(EtcdApiError,),
                         transient=transient)
        except EtcdApiError as exc:
            raise StepFailed(f"{what}: {exc}") from exc

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
        wal = self.read_wal(step)
        if wal.hardstate_commit != a.commit:
            raise StepFailed(f"{a.host}: after the write the WAL reads commit "
                             f"{wal.hardstate_commit}, expected {a.commit}")
        return {"file": a.file, "offset": a.offset, "record_hex": a.record_hex,
                "commit": a.commit}

    def read_wal(self, step: Step) -> Any:
        t = self.session.t(step.host or "")
        wal_dir = step.params["wal_dir"]
        names = wal_file_names(f.name for f in t.list_dir(wal_dir, sudo=True))
        if not names:
            raise PreconditionError(f"{step.host}: no WAL files in {wal_dir}")
        with read_through_all(t, [posixpath.join(wal_dir, n) for n in names[-2:]],
                              sudo=True) as sources:
            return read_wal(sources)

    def _wal_record(self, step: Step, host: str) -> AppendWal | None:
        """The plan's align-commit decision (plan.align_decision), taken now from the fenced
        member's WAL; None when there is nothing to write (said in the run's log)."""
        t = self.session.t(host)
        wal = self.read_wal(step)
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




"""execute: run the plan's steps in order, each as precondition -> action -> check.

The executor runs exactly the steps of the plan it was given (the one shown to the operator),
never a plan worked out again. Before every step it re-reads what that step depends on from the
live system; if the precondition no longer holds it stops, having changed nothing more. Every
step is idempotent, so ``--resume`` re-runs an interrupted step safely, and every event is
journaled on the operator's machine and on the host the step touched.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import choose
from .errors import (
    EtcdApiError,
    EtcdRecoveryError,
    PreconditionError,
    RefusedError,
    TransportError,
)
from .formats.backend import read_backend
from .formats.wal import read_wal, wal_file_names
from .formats.walwrite import hardstate_frame
from .inspect import TransportFactory, inspect_cluster, read_disk, ssh_transport
from .inventory import Inventory, Member
from .journal import Journal, done_steps
from .live import (
    ERR_LEARNER_NOT_READY,
    ERR_TOO_MANY_LEARNERS,
    ERR_UNHEALTHY,
    EtcdClient,
    MemberInfo,
)
from .model import MemberState, Quorum
from .plan import Plan, Step, config_path, fingerprint, run_dir, sh, unlock_argv
from .runtimes import config as rconf
from .transport.base import Transport

T = TypeVar("T")
Log = Callable[[str], None]


class StepFailed(EtcdRecoveryError):
    """A step's action or check failed; the journal says where, the state is left as is."""


def poll(fn: Callable[[], T | None], timeout: float, what: str, first: float = 0.05,
         cap: float = 0.5) -> T:
    """Call ``fn`` until it returns something other than None, backing off from ``first`` to
    ``cap`` seconds; raise StepFailed after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = first
    last_error: Exception | None = None
    while True:
        try:
            value = fn()
            if value is not None:
                return value
        except (EtcdApiError, TransportError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_error})" if last_error else ""
            raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(delay)
        delay = min(cap, delay * 1.6)


@dataclass
class StepTiming:
    id: str
    seconds: float
    skipped: bool = False


@dataclass
class Summary:
    run_id: str
    ok: bool
    total_s: float = 0.0
    steps: list[StepTiming] = field(default_factory=list)
    stopped_at: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "ok": self.ok, "total_s": round(self.total_s, 3),
                "stopped_at": self.stopped_at, "message": self.message,
                "steps": [{"id": s.id, "seconds": round(s.seconds, 3), "skipped": s.skipped}
                          for s in self.steps]}


class Executor:
    def __init__(self, inv: Inventory, plan: Plan, journal: Journal, *,
                 factory: TransportFactory = ssh_transport, log: Log = lambda _: None,
                 take_over_lock: bool = False, check_fingerprint: bool = True,
                 stop_after: str | None = None) -> None:
        self.inv = inv
        self.plan = plan
        self.journal = journal
        self.factory = factory
        self.log = log
        self.take_over_lock = take_over_lock
        self.check_fingerprint = check_fingerprint
        self.stop_after = stop_after   # for tests and rehearsals: stop after this step id
        self._transports: dict[str, Transport] = {}
        self._stack = contextlib.ExitStack()
        self._clients: dict[str, EtcdClient] = {}
        self.rdir = run_dir(plan.run_id)

    # ------------------------------------------------------------------ plumbing
    def t(self, name: str) -> Transport:
        if name not in self._transports:
            self._transports[name] = self.factory(self.inv.member(name))
        return self._transports[name]

    def m(self, name: str) -> Member:
        return self.inv.member(name)

    def run_cmd(self, name: str, argv: list[str], timeout: float = 60.0,
                check: bool = True) -> Any:
        return self.t(name).run(argv, sudo=True, timeout=timeout, check=check)

    def client(self, name: str) -> EtcdClient:
        """A gRPC client for a member through an SSH tunnel, kept open for the whole run."""
        if name not in self._clients:
            m = self.m(name)
            host, port = m.client_hostport
            lhost, lport = self._stack.enter_context(self.t(name).tunnel(host, port))
            user, password = self.inv.credentials()
            self._clients[name] = self._stack.enter_context(EtcdClient(
                f"{lhost}:{lport}", ca_file=self.inv.tls.ca, cert_file=self.inv.tls.cert,
                key_file=self.inv.tls.key, server_name=host, username=user, password=password,
                timeout=5.0))
        return self._clients[name]

    def drop_client(self, name: str) -> None:
        client = self._clients.pop(name, None)
        if client is not None:
            client.close()

    def etcd_pid(self, name: str) -> int | None:
        res = self.run_cmd(name, ["pgrep", "-x", "etcd"], check=False, timeout=10)
        pids = res.stdout.decode().split()
        return int(pids[0]) if res.exit_status == 0 and pids else None

    def host_journal(self, name: str, event: str, step: str) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "run": self.plan.run_id,
                           "event": event, "step": step})
        path = posixpath.join(self.rdir, "journal.jsonl")
        with contextlib.suppress(TransportError):
            self.run_cmd(name, sh('umask 077; mkdir -p "$(dirname "$2")"; '
                                  'printf "%s\\n" "$1" >> "$2"', line, path), timeout=10)

    def close(self) -> None:
        self._clients.clear()
        self._stack.close()
        for t in self._transports.values():
            with contextlib.suppress(Exception):
                t.close()
        self._transports.clear()

    # ------------------------------------------------------------------ the run
    def run(self) -> Summary:
        t0 = time.monotonic()
        summary = Summary(run_id=self.plan.run_id, ok=False)
        done = done_steps(self.journal.events())
        if not done:
            self.journal.append("run-start", chosen=self.plan.chosen)
        else:
            self.journal.append("resume", done=sorted(done))
        total = len(self.plan.steps)
        current: Step | None = None
        try:
            for i, step in enumerate(self.plan.steps, 1):
                current = step
                if step.id in done:
                    summary.steps.append(StepTiming(step.id, 0.0, skipped=True))
                    self.log(f"[{i}/{total}] {step.id}: already done (journal)")
                    continue
                s0 = time.monotonic()
                self.log(f"[{i}/{total}] {step.id} on {step.host or 'all members'}: "
                         f"{step.title}")
                for command in step.commands:  # the dry run of this step, as planned
                    for line in command.splitlines():
                        self.log(f"      {line}")
                self.journal.append("step-start", step.id)
                if step.host:
                    self.host_journal(step.host, "step-start", step.id)
                handler = getattr(self, f"step_{step.kind}")
                handler(step)
                elapsed = time.monotonic() - s0
                self.journal.append("step-done", step.id, seconds=round(elapsed, 3))
                if step.host:
                    self.host_journal(step.host, "step-done", step.id)
                summary.steps.append(StepTiming(step.id, elapsed))
                self.log(f"[{i}/{total}] {step.id}: done in {elapsed:.2f} s "
                         f"(at {time.monotonic() - t0:.1f} s)")
                if self.stop_after == step.id:
                    summary.stopped_at = step.id
                    summary.message = f"stopped after {step.id} as asked"
                    summary.total_s = time.monotonic() - t0
                    return summary
            self.journal.finish()
            summary.ok = True
            summary.message = "recovered and verified"
        except KeyboardInterrupt:
            sid = current.id if current else None
            self.journal.append("interrupted", sid)
            summary.stopped_at = sid
            summary.message = (f"interrupted during {sid}; the journal says where; "
                               "run again with --resume")
            summary.total_s = time.monotonic() - t0
            raise
        except RefusedError as exc:
            sid = current.id if current else None
            self.journal.append("step-refused", sid, error=str(exc))
            changed = any(s.mutating for s in self.plan.steps
                          if s.id in done_steps(self.journal.events()))
            if not changed:  # nothing was touched: close the run instead of leaving it open
                self.journal.abandon()
            summary.stopped_at, summary.message = sid, str(exc)
            summary.total_s = time.monotonic() - t0
            raise
        except EtcdRecoveryError as exc:
            sid = current.id if current else None
            self.journal.append("step-failed", sid, error=str(exc))
            summary.stopped_at, summary.message = sid, str(exc)
            summary.total_s = time.monotonic() - t0
            raise StepFailed(f"step {sid} failed: {exc}. Nothing after it was done; fix the "
                             "cause and run again with --resume") from exc
        finally:
            self.close()
        summary.total_s = time.monotonic() - t0
        return summary

    # ------------------------------------------------------------------ steps
    def step_preflight(self, step: Step) -> None:
        allow = bool(step.params.get("allow_quorum"))
        report = inspect_cluster(self.inv, allow_quorum=allow, prefer=self.plan.chosen)
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
            self.check_space(name)

    def step_preflight_rejoin(self, step: Step) -> None:
        via, name = step.params["via"], step.params["name"]
        c = self.client(via)
        st = c.status()
        if not st.leader:
            raise PreconditionError(f"{via} has no leader: the cluster has no quorum; run "
                                    "`etcd-recovery execute` first")
        c.get(b"/etcd-recovery/probe", serializable=False)
        me = self._find(c.member_list(serializable=False), self.m(name).peer_url)
        if me is not None and not me.is_learner and self.etcd_pid(name) is not None:
            try:
                own = self.client(name).status()
                if own.leader and own.member_id == me.id:
                    raise RefusedError(f"{name} is already a healthy voting member; nothing "
                                       "to do")
            except EtcdApiError:
                pass
            finally:
                self.drop_client(name)
        self.check_space(name)

    def check_space(self, name: str) -> None:
        m = self.m(name)
        res = self.run_cmd(name, sh('set -e; mkdir -p -m 0700 "$1"; '
                                    'df -B1 --output=avail "$1" | tail -n 1; '
                                    'du -sb "$2" | cut -f1', "/var/lib/etcd-recovery",
                                    m.data_dir), timeout=60)
        avail, used = (int(x) for x in res.stdout.decode().split()[:2])
        need = int(used * 1.1) + 16 * 1024 * 1024
        if avail < need:
            raise RefusedError(f"{name}: not enough free disk for the backup: "
                               f"{avail} bytes free under /var/lib/etcd-recovery, "
                               f"{need} needed ({m.data_dir} holds {used} bytes); nothing "
                               "was changed")

    def step_lock(self, step: Step) -> None:
        path = step.params["path"]
        taken: list[str] = []
        try:
            for name in step.params["members"]:
                self._lock_one(name, step, path)
                taken.append(name)
        except RefusedError:
            for name in taken:  # leave no half-taken lock behind
                with contextlib.suppress(TransportError):
                    self.run_cmd(name, unlock_argv(self.plan.run_id), check=False)
            raise

    def _lock_one(self, name: str, step: Step, path: str) -> None:
        res = self.run_cmd(name, step.params["argv"], check=False)
        if res.exit_status == 0:
            return
        holder = self.run_cmd(name, ["cat", path], check=False).stdout.decode().strip()
        if holder == self.plan.run_id:
            return
        if self.take_over_lock:
            self.log(f"{name}: taking over the lock of run {holder!r}")
            self.run_cmd(name, sh('umask 077; echo "$2" > "$1"', path, self.plan.run_id))
            return
        raise RefusedError(f"{name}: another recovery holds the lock {path} (run "
                           f"{holder!r}); if that run is dead, take the lock over with "
                           "--take-over-lock")

    def step_fence(self, step: Step) -> None:
        name = step.host
        assert name
        self.run_cmd(name, step.params["argv"], timeout=120)
        poll(lambda: True if self.etcd_pid(name) is None else None, 60,
             f"etcd to stop on {name}")

    def step_backup(self, step: Step) -> None:
        name = step.host
        assert name
        if self.etcd_pid(name) is not None:
            raise PreconditionError(f"{name}: etcd runs again although fenced; stopping")
        self.run_cmd(name, step.params["argv"], timeout=1800)

    def _require_all_fenced(self, except_: str | None = None) -> None:
        for name in self.plan.steps[0].params["members"]:
            if name != except_ and self.etcd_pid(name) is not None:
                raise PreconditionError(f"{name}: etcd is running although it was fenced")

    def _require_fenced_and_backed_up(self, name: str) -> None:
        """Precondition of every step that writes into or moves a data dir."""
        if self.etcd_pid(name) is not None:
            raise PreconditionError(f"{name}: etcd runs although fenced; not touching its data")
        sums = posixpath.join(self.rdir, "backup", "SHA256SUMS")
        if self.run_cmd(name, ["test", "-f", sums], check=False).exit_status != 0:
            raise PreconditionError(f"{name}: no verified backup at {sums}")

    def step_align_commit(self, step: Step) -> None:
        name = step.host
        assert name
        self._require_fenced_and_backed_up(name)
        t = self.t(name)
        wal_dir = step.params["wal_dir"]
        names = wal_file_names(f.name for f in t.list_dir(wal_dir, sudo=True))
        if not names:
            raise PreconditionError(f"{name}: no WAL files in {wal_dir}")
        last_path = posixpath.join(wal_dir, names[-1])
        paths = [posixpath.join(wal_dir, n) for n in names[-2:]]
        wal = read_wal([t.open_file(p, sudo=True) for p in paths])
        cindex = read_backend(t.open_file(step.params["db"], sudo=True)).consistent_index or 0
        # Commit every entry this member holds, as raft does when a member with this log is
        # elected and commits an entry of its own term: entries acknowledged to clients are
        # on a majority's disks, but the commit index that says so may never have been
        # flushed anywhere. Never less than what the backend already applied.
        target = max(cindex, wal.last_index)
        if target <= wal.hardstate_commit:
            self.log(f"{name}: WAL commit {wal.hardstate_commit} already covers its log "
                     f"(last index {wal.last_index}, consistent index {cindex}); nothing to "
                     "write")
            return
        if wal.torn_tail or wal.last_index < cindex:
            why = ("the WAL ends in a torn write" if wal.torn_tail else
                   f"the WAL's last entry ({wal.last_index}) is before the consistent index")
            self.log(f"WARNING {name}: WAL commit {wal.hardstate_commit} < {target} but {why}: "
                     "not aligning; verify's HashKV check will tell whether members diverge")
            self.journal.append("align-skipped", step.id, reason=why)
            return
        data, _ = hardstate_frame(wal.last_crc, wal.hardstate_term, wal.hardstate_vote, target)
        size = t.open_file(last_path, sudo=True).size()
        if wal.end_offset + len(data) > size:
            raise PreconditionError(f"{name}: no room after the last record of {last_path}")
        self.log(f"{name}: WAL commit {wal.hardstate_commit} < {target} (last index "
                 f"{wal.last_index}, consistent index {cindex}): appending a HardState at "
                 f"offset {wal.end_offset} of {last_path}")
        self.t(name).run(sh('dd of="$1" bs=1M seek="$2" oflag=seek_bytes '
                            'conv=notrunc,fsync status=none', last_path,
                            str(wal.end_offset)), sudo=True, stdin=data, timeout=60)
        again = read_wal([t.open_file(p, sudo=True) for p in paths])
        if again.hardstate_commit != target or again.last_index != wal.last_index:
            raise StepFailed(f"{name}: after the write the WAL reads commit "
                             f"{again.hardstate_commit}, expected {target}")
        self.journal.append("commit-aligned", step.id, old=wal.hardstate_commit, new=target)

    def _runs_forced(self, name: str) -> bool:
        """Does etcd run on ``name`` with --force-new-cluster (a resumed restore)?"""
        pid = self.etcd_pid(name)
        return pid is not None and self._running_without_flag(name, None) is None

    def step_force_new_cluster(self, step: Step) -> None:
        name = step.host
        assert name
        if self._runs_forced(name):
            # Resumed after the start: the restore is under way; only wait for it.
            self.log(f"{name}: etcd already runs with --force-new-cluster (resumed)")
            self._require_all_fenced(except_=name)
            member_id: int | None = poll(lambda: self.client(name).status().member_id, 60,
                                         f"{name} to answer")
        else:
            self._require_all_fenced()
            # All members are stopped now, so their disks are authoritative: the member to
            # keep is decided again, by the same function that chose it for the plan.
            states = [read_disk(self.t(other), self.m(other))
                      for other in self.plan.steps[0].params["members"]]
            kept = require_kept(states, name, self.inv.path)
            self.stage_and_start(step)
            member_id = kept.member_id

        def single_member_leader() -> bool | None:
            st = self.client(name).status()
            if st.leader != st.member_id or st.member_id != member_id:
                return None
            self.client(name).get(b"/etcd-recovery/probe", serializable=False)
            return True

        poll(single_member_leader, 90, f"{name} to lead a one-member cluster")
        self.keys_after_restore = self.client(name).count_keys()
        self.log(f"{name} holds {self.keys_after_restore} keys after the restore")
        self.journal.append("keys-counted", step.id, keys=self.keys_after_restore)

    def stage_and_start(self, step: Step) -> None:
        name = step.host
        assert name
        self.t(name).write_file(step.params["staged"], step.params["config"].encode(),
                                mode=0o600, sudo=True)
        self.run_cmd(name, step.params["start"], timeout=60)

    def _running_without_flag(self, name: str, old_pid: int | None) -> bool | None:
        pid = self.etcd_pid(name)
        if pid is None or pid == old_pid:
            return None
        res = self.run_cmd(name, sh('tr "\\0" "\\n" < /proc/"$1"/cmdline; '
                                    'tr "\\0" "\\n" < /proc/"$1"/environ', str(pid)),
                           check=False)
        text = res.stdout.decode(errors="replace")
        if "--force-new-cluster" in text or "ETCD_FORCE_NEW_CLUSTER=" in text:
            return None
        return True

    def step_restart_plain(self, step: Step) -> None:
        name = step.host
        assert name
        old_pid = self.etcd_pid(name)
        if old_pid is not None and self._running_without_flag(name, None):
            self.log(f"{name}: etcd already runs without --force-new-cluster (resumed)")
        else:
            self.stage_and_start(step)
            self.drop_client(name)
            poll(lambda: self._running_without_flag(name, old_pid), 60,
                 f"{name} to run again without --force-new-cluster")

        def healthy() -> bool | None:
            st = self.client(name).status()
            if st.leader != st.member_id:
                return None
            self.client(name).get(b"/etcd-recovery/probe", serializable=False)
            return True

        poll(healthy, 60, f"{name} to be healthy after the restart")

    def step_remove_stale(self, step: Step) -> None:
        name = step.host
        assert name
        c = self.client(name)
        me = c.status().member_id
        for member in c.member_list(serializable=False):
            if member.id != me:
                self.log(f"removing {member.name or '(unstarted)'} {member.id:x} "
                         f"{'learner' if member.is_learner else 'voter'}")
                mid = member.id
                self.retry_api(lambda: c.member_remove(mid), 60,  # noqa: B023 - used now
                               f"removing member {mid:x}")
        left = [x.id for x in c.member_list(serializable=False)]
        if left != [me]:
            raise StepFailed(f"the member list still holds {[hex(x) for x in left]}")

    def retry_api(self, fn: Callable[[], T], timeout: float, what: str,
                  retry_on: tuple[str, ...] = (ERR_UNHEALTHY,)) -> T:
        deadline = time.monotonic() + timeout
        delay = 0.1
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
                delay = min(1.0, delay * 1.5)

    def step_remove_old(self, step: Step) -> None:
        name = step.host
        assert name
        if self.etcd_pid(name) is not None:
            raise PreconditionError(f"{name}: etcd runs although fenced")
        c = self.client(self.plan.chosen)
        old = self._find(c.member_list(serializable=False), step.params["peer_url"])
        if old is not None and not old.is_learner:
            self.log(f"removing {name}'s old entry {old.id:x} from membership")
            self.retry_api(lambda: c.member_remove(old.id), 60, f"removing {name}'s old entry")

    def step_move_aside(self, step: Step) -> None:
        name = step.host
        assert name
        self._require_fenced_and_backed_up(name)
        self.run_cmd(name, step.params["argv"], timeout=600)

    def _find(self, members: list[MemberInfo], peer_url: str) -> MemberInfo | None:
        return next((x for x in members if peer_url in x.peer_urls), None)

    def step_learner_add(self, step: Step) -> None:
        c = self.client(self.plan.chosen)
        peer_url = step.params["peer_url"]
        existing = self._find(c.member_list(serializable=False), peer_url)
        if existing is not None:
            self.log(f"{step.host} is already in the member list "
                     f"({'learner' if existing.is_learner else 'voter'}); not adding again")
            return
        self.retry_api(lambda: c.member_add([peer_url], learner=True), 90,
                       f"adding {step.host} as a learner",
                       retry_on=(ERR_UNHEALTHY, ERR_TOO_MANY_LEARNERS))
        if self._find(c.member_list(serializable=False), peer_url) is None:
            raise StepFailed(f"{step.host} is not in the member list after MemberAdd")

    def step_start_learner(self, step: Step) -> None:
        name = step.host
        assert name
        m = self.m(name)
        c = self.client(self.plan.chosen)
        members = c.member_list(serializable=False)
        me = self._find(members, m.peer_url)
        if me is None:
            raise PreconditionError(f"{name} is not in the member list; add it first")
        pairs: list[tuple[str, str]] = []
        for x in members:
            nm = x.name or (name if x.id == me.id else "")
            if not nm:
                raise PreconditionError(f"member {x.id:x} has no name and is not {name}: "
                                        "another member was added but never started")
            pairs.extend((nm, u) for u in x.peer_urls)
        config = rconf.config_with_flags(
            self.inv.runtime, step.params["original"], step.params["path"],
            {"initial-cluster": rconf.initial_cluster(pairs),
             "initial-cluster-state": "existing"}, ())
        if self.etcd_pid(name) is None:
            self.t(name).write_file(step.params["staged"], config.encode(), mode=0o600,
                                    sudo=True)
            self.run_cmd(name, step.params["start"], timeout=60)
        poll(lambda: True if self.etcd_pid(name) is not None else None, 60,
             f"etcd to start on {name}")

    def step_promote(self, step: Step) -> None:
        name = step.host
        assert name
        c = self.client(self.plan.chosen)
        peer_url = step.params["peer_url"]
        me = self._find(c.member_list(serializable=False), peer_url)
        if me is None:
            raise PreconditionError(f"{name} is not in the member list")
        if self.etcd_pid(name) is None:
            raise PreconditionError(f"{name}: etcd is not running")
        if me.is_learner:
            self.retry_api(lambda: c.member_promote(me.id), 180, f"promoting {name}",
                           retry_on=(ERR_LEARNER_NOT_READY, ERR_UNHEALTHY))

        def voting_and_healthy() -> bool | None:
            st = self.client(name).status()
            if st.is_learner or not st.leader:
                return None
            self.client(name).get(b"/etcd-recovery/probe", serializable=False)
            return True

        poll(voting_and_healthy, 90, f"{name} to be a healthy voting member")

    def keys_counted(self) -> int | None:
        counts = [e.detail.get("keys") for e in self.journal.events()
                  if e.event == "keys-counted"]
        return int(counts[-1]) if counts and counts[-1] is not None else None

    def step_verify(self, step: Step) -> None:
        keys = step.params.get("keys_before")
        if keys is None:
            keys = self.keys_counted()
        problems = verify_cluster(self, step.params["members"], keys)
        if problems:
            raise StepFailed("verification failed: " + "; ".join(problems))

    def step_unlock(self, step: Step) -> None:
        for name in step.params["members"]:
            self.run_cmd(name, step.params["argv"])


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


# ---------------------------------------------------------------------------- verify

def verify_cluster(ex: Executor, expected: list[str], keys_before: int | None,
                   timeout: float = 30.0) -> list[str]:
    """Every check of the final verification; returns the problems found (empty: all good)."""
    problems: list[str] = []
    c = ex.client(expected[0])
    members = c.member_list(serializable=False)
    names = sorted(x.name for x in members)
    if names != sorted(expected):
        problems.append(f"members are {names}, expected {sorted(expected)}")
    learners = [x.name for x in members if x.is_learner]
    if learners:
        problems.append(f"learners remain: {learners}")
    # Same revision everywhere (followers apply a moment after the leader) and equal HashKV.
    def same_revision() -> int | None:
        revs = {n: ex.client(n).status().revision for n in expected}
        return revs[expected[0]] if len(set(revs.values())) == 1 else None

    try:
        rev = poll(same_revision, timeout, "every member to reach the same revision")
        hashes = {n: ex.client(n).hash_kv(rev).hash for n in expected}
        if len(set(hashes.values())) != 1:
            problems.append(f"HashKV at revision {rev} differs: "
                            + ", ".join(f"{n}={h:x}" for n, h in hashes.items()))
    except StepFailed as exc:
        problems.append(str(exc))
    for n in expected:
        st = ex.client(n).status()
        if not st.leader:
            problems.append(f"{n} has no leader")
        if st.errors:
            problems.append(f"{n} reports errors: {list(st.errors)}")
    alarms = c.alarms()
    if alarms:
        problems.append(f"alarms raised: {[(hex(a.member_id), a.alarm) for a in alarms]}")
    for n in expected:
        m = ex.m(n)
        path = config_path(ex.inv.runtime, m)
        res = ex.run_cmd(n, ["cat", path], check=False)
        text = res.stdout.decode(errors="replace")
        if res.exit_status != 0:
            problems.append(f"{n}: cannot read {path}")
        elif rconf.FLAG_FORCE_NEW_CLUSTER in rconf.config_flags(ex.inv.runtime, text, path):
            problems.append(f"{n}: {path} still has --force-new-cluster")
        if not ex._running_without_flag(n, None):
            problems.append(f"{n}: etcd is not running, or runs with --force-new-cluster")
    if keys_before is not None:
        count = c.count_keys()
        if count < keys_before:
            problems.append(f"{count} keys, fewer than the {keys_before} counted before")
    return problems


@contextlib.contextmanager
def verifier(inv: Inventory, factory: TransportFactory = ssh_transport) -> Iterator[Executor]:
    """An executor without a plan, for `etcd-recovery verify`."""
    plan = Plan(cluster=inv.name, runtime=inv.runtime, run_id="verify", chosen="",
                reason="", fingerprint="", steps=(), unreachable=(), rejoin_later=(),
                inventory=inv.path)
    ex = Executor(inv, plan, Journal("/nonexistent", "verify"), factory=factory)
    try:
        yield ex
    finally:
        ex.close()


def reachable_members(inv: Inventory, factory: TransportFactory = ssh_transport
                      ) -> tuple[list[str], dict[str, str]]:
    """Which inventory members answer over SSH (concurrently); the others with the reason."""
    from concurrent.futures import ThreadPoolExecutor

    def one(m: Member) -> str | None:
        t = factory(m)
        try:
            t.run(["true"], timeout=10)
            return None
        except TransportError as exc:
            return str(exc)
        finally:
            t.close()

    with ThreadPoolExecutor(max_workers=max(1, len(inv.members))) as pool:
        errors = list(pool.map(one, inv.members))
    ok = [m.name for m, e in zip(inv.members, errors, strict=True) if e is None]
    bad = {m.name: e for m, e in zip(inv.members, errors, strict=True) if e is not None}
    return ok, bad

"""A wait for etcd that also watches etcd: when it exits, fail within seconds with its words.

Every wait for etcd to come up or to become healthy (force-new-cluster, the restart without
the flag, a learner's start, a promote) polls its condition tightly. Alone, a wait whose etcd
exited at once (its peer address is not on the host, a port is taken, a certificate expired)
runs to its timeout and then reports the last gRPC error, which points the wrong way. So the
wait also looks at the member's etcd process: when a process seen earlier is gone or replaced
(its supervisor restarted it), or none has come within ``START_GRACE_S``, it reads the last
lines of etcd's log (the runtime's ``log_argv``) and fails with the fatal line there, if the
log has one that was not there when the wait began. A wait that runs out with etcd alive says
what etcd last said about its peers or its leader.

``ExitWatch`` is the pure part: fed each look at the process, it says when to read the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import EtcdApiError, StepFailed, TransportError
from .etcdlog import Cause, fatal_cause, stall_cause
from .retry import Backoff, retry

START_GRACE_S = 1.0     # no etcd process this long after the wait began: look at the log
LOOK_EVERY_S = 0.5      # how often the process is looked at (an SSH round each)
LOG_EVERY_S = 1.0       # how often the log is read while etcd keeps exiting
LOG_LINES = 80
# The conditions whose wait watches etcd (the others wait for etcd to stop, or for a list).
WATCHED = ("etcd-running", "leads-alone", "healthy-without-force", "voting-healthy",
           "serves-peers")


@dataclass
class ExitWatch:
    """Has etcd exited since the wait began? ``observe`` takes each look's PID (None: no etcd
    process) and says whether the log is worth reading now."""

    started: float
    seen: set[int] = field(default_factory=set)
    exited: bool = False        # a process seen was gone or replaced
    last_log: float = -1e9

    def observe(self, pid: int | None, now: float) -> bool:
        if pid is not None:
            if self.seen and pid not in self.seen:
                self.exited = True      # restarted by its supervisor
            self.seen.add(pid)
        elif self.seen:
            self.exited = True
        due = self.exited or (not self.seen and now - self.started >= START_GRACE_S)
        if due and now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            return True
        return False


def new_fatal(lines: list[str], before: Cause | None) -> Cause | None:
    """The log's fatal line, unless it is the one that was there before the wait began
    (an old crash's, with its own timestamp)."""
    cause = fatal_cause(lines)
    if cause is None or (before is not None and cause.line == before.line):
        return None
    return cause


def wait_watching(condition: Callable[[], bool], timeout: float, what: str, *,
                  pid: Callable[[], int | None], log: Callable[[], list[str]],
                  host: str, first: float = 0.02, cap: float = 0.1,
                  unit: Callable[[list[str]], Cause | None] | None = None) -> None:
    """Poll ``condition`` until it holds (backing off from ``first`` to ``cap``), watching
    etcd through ``pid`` and ``log``; StepFailed with etcd's fatal line as soon as it exited,
    or after ``timeout`` with what etcd last said. ``unit`` (given the log's lines): why etcd's
    supervisor will not run it (systemd: a missing binary, a unit it gave up on), asked when
    the log has no fatal line of etcd's; a cause fails the wait as etcd's fatal line does."""
    t0 = time.monotonic()
    try:
        before = fatal_cause(log())
    except TransportError:
        before = None
    watch = ExitWatch(t0)
    last_error: Exception | None = None
    next_look = t0

    def holds() -> bool:
        nonlocal last_error, next_look
        try:
            if condition():
                return True
        except (EtcdApiError, TransportError) as exc:
            last_error = exc
        now = time.monotonic()
        if now >= next_look:
            next_look = now + LOOK_EVERY_S
            try:
                if watch.observe(pid(), now):
                    lines = log()
                    cause = new_fatal(lines, before)
                    if cause is None and unit is not None:
                        cause = unit(lines)
                    if cause is not None:
                        how = "exited" if watch.exited else "did not start"
                        raise StepFailed(f"{host}: etcd {how} {now - t0:.1f} s into the wait "
                                         f"for {what}: {cause.quote()}")
            except TransportError:
                pass
        return False

    def timed_out(_: Exception | None) -> StepFailed:
        said = ""
        try:
            lines = log()
            stall = stall_cause(lines)
            if stall is not None:
                said = f"; etcd last said: {stall.quote()}"
            held = unit(lines) if unit is not None else None
            if held is not None:
                said += f"; {held.quote()}"
        except TransportError:
            pass
        extra = f" (last error: {last_error})" if last_error else ""
        return StepFailed(f"timed out after {timeout:.0f} s waiting for {what}{extra}{said}")

    # The deadline counts from t0, before the log was first read.
    retry(holds, t0 + timeout - time.monotonic(), Backoff(first, 1.6, cap), done=bool,
          timed_out=timed_out)

"""A wait that watches etcd: fails fast with etcd's fatal line once etcd exited, never with a
fatal line an earlier crash left in the log, and says what etcd last said when it runs out."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcd_recovery.errors import StepFailed
from etcd_recovery.watch import START_GRACE_S, ExitWatch, wait_watching

OLD = ('{"level":"fatal","ts":"2026-12-03T10:00:00Z","msg":"discovery failed",'
       '"error":"listen tcp 10.0.0.1:2380: bind: address already in use"}')
NEW = ('{"level":"fatal","ts":"2026-12-03T10:05:00Z","msg":"discovery failed",'
       '"error":"listen tcp 10.0.0.1:2380: bind: cannot assign requested address"}')


class Etcd:
    """A fake etcd process: it runs as ``pids`` say, one per look, and logs ``lines``."""

    def __init__(self, pids: list[int | None], lines: list[str], crash_logs: list[str]) -> None:
        self.pids = pids
        self.lines = lines
        self.crash_logs = crash_logs
        self.looks = 0

    def pid(self) -> int | None:
        p = self.pids[min(self.looks, len(self.pids) - 1)]
        self.looks += 1
        if self.looks == 2:
            self.lines.extend(self.crash_logs)  # it crashed after the first look
        return p

    def log(self) -> list[str]:
        return list(self.lines)


def test_exit_fails_fast_with_the_new_fatal_line() -> None:
    etcd = Etcd([101, None, 102, None], [OLD, '{"level":"info","msg":"x"}'], [NEW])
    t0 = time.monotonic()
    with pytest.raises(StepFailed) as exc:
        wait_watching(lambda: False, 60, "etcd-1 to lead alone", pid=etcd.pid, log=etcd.log,
                      host="etcd-1")
    took = time.monotonic() - t0
    assert took < 5, took
    msg = str(exc.value)
    assert msg.startswith("etcd-1: etcd exited ")
    assert "bind: cannot assign requested address" in msg and "already in use" not in msg


def test_an_old_crash_in_the_log_is_not_the_cause() -> None:
    etcd = Etcd([101, None, None], [OLD], [])
    t0 = time.monotonic()
    with pytest.raises(StepFailed) as exc:
        wait_watching(lambda: False, 2.0, "etcd-1 healthy", pid=etcd.pid, log=etcd.log,
                      host="etcd-1")
    assert time.monotonic() - t0 >= 2.0
    assert str(exc.value).startswith("timed out after 2 s waiting for etcd-1 healthy")


def test_a_timeout_says_what_etcd_last_said() -> None:
    stall = ('{"level":"warn","msg":"prober detected unhealthy status",'
             '"address":"https://10.0.0.2:2380"}')
    etcd = Etcd([7], [stall], [])
    with pytest.raises(StepFailed) as exc:
        wait_watching(lambda: False, 0.5, "etcd-2 to vote", pid=etcd.pid, log=etcd.log,
                      host="etcd-2")
    assert str(exc.value).endswith("; etcd last said: prober detected unhealthy status "
                                   "(https://10.0.0.2:2380)")


def test_the_condition_wins() -> None:
    calls = iter([False, False, True])
    etcd = Etcd([None], [NEW], [])   # even with a fatal line in the log from before
    wait_watching(lambda: next(calls), 5, "x", pid=etcd.pid, log=etcd.log, host="h")


def test_never_started_is_looked_at_after_the_grace() -> None:
    w = ExitWatch(started=0.0)
    assert not w.observe(None, 0.5)
    assert w.observe(None, START_GRACE_S)
    assert not w.exited


@given(st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=1, max_size=30))
def test_exit_is_said_only_after_a_process_was_seen_to_go(pids: list[int | None]) -> None:
    w = ExitWatch(started=0.0)
    for i, p in enumerate(pids):
        w.observe(p, i * 0.01)
    seen: set[int] = set()
    gone = False
    for p in pids:
        if p is None:
            gone = gone or bool(seen)
        else:
            gone = gone or (bool(seen) and p not in seen)
            seen.add(p)
    assert w.exited == gone

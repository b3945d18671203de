"""A lock that cannot be taken for a reason other than another run says that reason: sudo
refused, a read-only disk, an empty lock file. Never "another recovery holds the lock (run
'')". The locks taken before it are released and the run is closed, as for a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcd_recovery.errors import EXIT_FAILED, EXIT_REFUSED, RefusedError, StepFailed
from etcd_recovery.journal import Journal
from etcd_recovery.plan.scripts import LOCK_PATH, lock_argv, unlock_argv

from .test_executor import RUN, World, events, executor, lock_step

SUDO = "sudo: a password is required"
READ_ONLY = f"sh: 1: cannot create {LOCK_PATH}: Read-only file system"


def world(lock_stderr: str, lock_exit: int, cat_out: str, cat_exit: int,
          cat_err: str = "") -> World:
    w = World()
    w.hosts["a"].expect(lock_argv(RUN))
    w.hosts["a"].expect(unlock_argv(RUN))
    w.hosts["b"].expect(lock_argv(RUN), exit_status=lock_exit, stderr=lock_stderr)
    w.hosts["b"].expect(["cat", LOCK_PATH], cat_out, exit_status=cat_exit, stderr=cat_err)
    return w


@pytest.mark.parametrize(("lock_stderr", "lock_exit", "cat_err"), [
    (SUDO, 1, SUDO),
    (READ_ONLY, 2, f"cat: {LOCK_PATH}: No such file or directory"),
    ("", 1, f"cat: {LOCK_PATH}: No such file or directory"),
])
def test_a_lock_refused_by_the_host_says_why(tmp_path: Path, lock_stderr: str, lock_exit: int,
                                            cat_err: str) -> None:
    w = world(lock_stderr, lock_exit, "", 1, cat_err)
    with pytest.raises(StepFailed) as exc:
        executor(w, (lock_step(),), tmp_path).run()
    message = str(exc.value)
    why = f"{lock_stderr} (exit {lock_exit})" if lock_stderr else \
        f"exit {lock_exit}, no error output"
    assert message == (f"step lock failed: b: could not take the recovery lock {LOCK_PATH}: "
                       f"{why}; no other run holds it. Nothing had been changed; the run is "
                       "closed, so the next execute starts afresh")
    assert "another recovery" not in message and "(run '')" not in message
    assert exc.value.exit_code == EXIT_FAILED
    # What the step took before b is released, and nothing changed: the run is closed.
    assert w.hosts["a"].commands == [tuple(lock_argv(RUN)), tuple(unlock_argv(RUN))]
    assert any(e == "action-rollback" and d["host"] == "a" for e, _, d in events(tmp_path))
    assert Journal.current(tmp_path) is None


def test_an_empty_lock_file_is_a_stale_lock_not_another_run(tmp_path: Path) -> None:
    w = world(f"sh: 1: cannot create {LOCK_PATH}: File exists", 2, "", 0)
    with pytest.raises(RefusedError) as exc:
        executor(w, (lock_step(),), tmp_path).run()
    message = str(exc.value)
    assert f"the lock file {LOCK_PATH} exists but names no run" in message
    assert "File exists (exit 2)" in message and "--take-over-lock" in message
    assert "another recovery" not in message and exc.value.exit_code == EXIT_REFUSED
    assert Journal.current(tmp_path) is None


def test_another_run_is_still_named(tmp_path: Path) -> None:
    w = world(f"sh: 1: cannot create {LOCK_PATH}: File exists", 2, "other-run\n", 0)
    with pytest.raises(RefusedError, match="another recovery holds the lock .*'other-run'"):
        executor(w, (lock_step(),), tmp_path).run()

"""Real data dirs shared by the format test modules, made once per test session.

``once(name, make)`` runs ``make(dir)`` once per session and returns its (pickled) result.
Under pytest-xdist every worker asks for the same data: the first one to ask makes it in the
session's shared temporary directory, under an exclusive lock on a file beside it, and pickles
the result there; the others wait on the lock and load that. So each real etcd scenario runs
once per session however the tests are spread. Tests must not modify these dirs: copy first.

``real_run(role, sig)`` is the standard run: 250 keys, one raft entry each, with
``--snapshot-count=50`` (so four ``.snap`` files and WAL snapshot records), stopped with
SIGTERM (a clean stop) or SIGKILL (a crash). test_wal and test_snap read the same runs.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from tests.formats.realetcd import EtcdRun, make_data_dir

KEYS = 250
SNAPSHOT_COUNT = 50

T = TypeVar("T")
RunFactory = Callable[[str, int], EtcdRun]


class Once(Protocol):
    def __call__(self, name: str, make: Callable[[Path], T]) -> T: ...


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory all the workers of this session see (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def once(tmp_path_factory: pytest.TempPathFactory) -> Once:
    """``once(name, make)``: ``make(dir)``'s result, made once per session (see module doc);
    ``name`` must be unique to what ``make`` does."""
    root = shared_dir(tmp_path_factory) / "formats-once"
    root.mkdir(exist_ok=True)
    memo: dict[str, Any] = {}

    def get(name: str, make: Callable[[Path], T]) -> T:
        if name in memo:
            result: T = memo[name]
            return result
        base = root / name
        done = root / f"{name}.pickle"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if done.exists():
                result = pickle.loads(done.read_bytes())  # noqa: S301 (written just now)
            else:
                shutil.rmtree(base, ignore_errors=True)  # a run that failed half-way
                base.mkdir()
                result = make(base)
                done.write_bytes(pickle.dumps(result))
        memo[name] = result
        return result

    return get


@pytest.fixture(scope="session")
def real_run(once: Once) -> RunFactory:
    """``real_run(role, sig)``: the standard data dir of that build, made on first use."""

    def get(role: str, sig: int = signal.SIGTERM) -> EtcdRun:
        def make(base: Path) -> EtcdRun:
            return make_data_dir(role, base / "data", keys=KEYS, per_txn=1,
                                 snapshot_count=SNAPSHOT_COUNT, sig=sig)

        return once(f"run-{role}-{signal.Signals(sig).name}", make)

    return get

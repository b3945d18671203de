"""Verification: is the cluster whole and consistent? Reads only."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import EtcdApiError, StepFailed, TransportError
from .runtimes import config as rconf
from .runtimes.base import runtime_for
from .session import Session

T = TypeVar("T")


def poll(fn: Callable[[], T | None], timeout: float, what: str, first: float = 0.02,
         cap: float = 0.1) -> T:
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


def verify_cluster(s: Session, expected: list[str], keys_before: int | None,
                   timeout: float = 30.0) -> list[str]:
    """Every check of the final verification; returns the problems found (empty: all good)."""
    problems: list[str] = []
    c = s.client(expected[0])
    members = c.member_list(serializable=False)
    names = sorted(x.name for x in members)
    if names != sorted(expected):
        problems.append(f"members are {names}, expected {sorted(expected)}")
    learners = [x.name for x in members if x.is_learner]
    if learners:
        problems.append(f"learners remain: {learners}")

    # Same revision everywhere (followers apply a moment after the leader) and equal HashKV.
    def same_revision() -> int | None:
        revs = {n: s.client(n).status().revision for n in expected}
        return revs[expected[0]] if len(set(revs.values())) == 1 else None

    try:
        rev = poll(same_revision, timeout, "every member to reach the same revision")
        with ThreadPoolExecutor(max_workers=len(expected)) as pool:  # seconds each at 1 GB
            hashes = dict(zip(expected, pool.map(lambda n: s.client(n).hash_kv(rev).hash,
                                                 expected), strict=True))
        if len(set(hashes.values())) != 1:
            problems.append(f"HashKV at revision {rev} differs: "
                            + ", ".join(f"{n}={h:x}" for n, h in hashes.items()))
    except StepFailed as exc:
        problems.append(str(exc))
    alarms = c.alarms()
    if alarms:
        problems.append(f"alarms raised: {[(hex(a.member_id), a.alarm) for a in alarms]}")
    rt = runtime_for(s.inv.runtime)

    def member(n: str) -> list[str]:
        """One member's own checks (each member's on its own connection, all at once)."""
        found = []
        st = s.client(n).status()
        if not st.leader:
            found.append(f"{n} has no leader")
        if st.errors:
            found.append(f"{n} reports errors: {list(st.errors)}")
        path = rt.config_path(s.m(n))
        res = s.run(n, ["cat", path], check=False)
        text = res.stdout.decode(errors="replace")
        if res.exit_status != 0:
            found.append(f"{n}: cannot read {path}")
        elif rconf.FLAG_FORCE_NEW_CLUSTER in rt.config_flags(text, path):
            found.append(f"{n}: {path} still has --force-new-cluster")
        if not s.runs_without_force(n):
            found.append(f"{n}: etcd is not running, or runs with --force-new-cluster")
        return found

    with ThreadPoolExecutor(max_workers=max(1, len(expected))) as pool:
        for found in pool.map(member, expected):
            problems.extend(found)
    if keys_before is not None:
        count = c.count_keys()
        if count < keys_before:
            problems.append(f"{count} keys, fewer than the {keys_before} counted before")
    return problems

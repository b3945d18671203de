"""What a step kind's checker may use of the run that calls it, and the registry's types.

A checker (a precondition's, ``conditions.KIND_CONDITIONS``) takes the run and the step and
returns the actions it found already in effect ({action number: why}, for a resumed run), or
raises PreconditionError/RefusedError. A finisher runs after a step's actions, its check. A
skipper says why a step is skipped whole, from what an earlier step journaled (the snapshot
method's log check). An after-run hook reads one Run action's result (the preflight's free
space, the lock's refusal).
The executor (:mod:`..executor`) is the one Runner; the checkers never import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ..actions import Run
from ..inventory import Inventory
from ..journal import Journal
from ..live import MemberInfo
from ..model import InspectReport
from ..plan import Plan, Step
from ..session import Session
from ..transport.base import CommandResult
from ..transport.factory import TransportFactory

# The inspection a run was planned from, moments ago, is its preflight's reading while younger
# than this (seconds); after that the preflight reads the cluster again.
FRESH_S = 10.0


class Runner(Protocol):
    """The run a checker works for."""

    inv: Inventory
    plan: Plan
    journal: Journal
    session: Session
    factory: TransportFactory
    refs: dict[str, Any]
    rdir: str
    planned_from: InspectReport | None
    fresh_at: float
    check_fingerprint: bool
    # what one step's checks learn for a later check of the same run (the snapshot's status)
    notes: dict[str, Any]

    log: Callable[[str], None]
    def resolve(self, name: str, value: Any) -> None: ...
    def read_wal(self, step: Step) -> Any: ...
    def sha256(self, host: str, path: str) -> str: ...
    def note_verified(self, host: str, path: str, sha256: str) -> None: ...
    def still_verified(self, host: str, path: str, sha256: str) -> bool: ...


Checker = Callable[[Runner, Step], dict[int, str]]
Finisher = Callable[[Runner, Step], None]
# What a failed step of a kind leaves behind, for its error ("" when nothing to say)
Aftermath = Callable[[Runner, Step], str]
AfterRun = Callable[[Runner, Step, int, Run, CommandResult], None]
# Why a step is skipped whole, as an earlier step of the run decided and journaled ("" when
# it runs): every action of it is then journaled as skipped, with this reason
Skipper = Callable[[Runner, Step], str]


def find_member(members: Iterable[MemberInfo], peer_url: str) -> MemberInfo | None:
    """The member listed with ``peer_url``, or None."""
    return next((x for x in members if peer_url in x.peer_urls), None)


def merged(*tables: Mapping[Any, Any]) -> dict[Any, Any]:
    """One registry from each method's table; a key registered twice is a bug."""
    out: dict[Any, Any] = {}
    for table in tables:
        twice = set(out) & set(table)
        if twice:
            raise AssertionError(f"registered twice: {sorted(map(str, twice))}")
        out.update(table)
    return out

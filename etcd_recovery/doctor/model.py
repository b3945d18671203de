"""Checks as data: a check's name, the member it is about (None: the cluster), its status, a
short figure and a message. The JSON schema (``Report.to_json``) is stable: fields are only
ever added."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED

SCHEMA = "etcd-recovery/doctor/v1"


class Status(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"

    @property
    def level(self) -> int:
        """0 ok, 1 warn, 2 fail (the Prometheus value)."""
        return {"ok": 0, "warn": 1, "fail": 2}[self.value]


@dataclass(frozen=True)
class Check:
    name: str                   # one of CHECKS
    member: str | None          # None: about the cluster as a whole
    status: Status
    figure: str                 # short, for the table: "12 ms", "81 % of 2.0 GiB"
    message: str = ""           # what it means, and the fix when not ok
    value: float | None = None  # the figure as a number (Prometheus), in ``unit``
    unit: str = ""              # "seconds", "bytes", "ratio", "days", "count"
    details: dict[str, Any] = field(default_factory=dict)  # JSON only

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "member": self.member, "status": self.status.value,
                "figure": self.figure, "message": self.message, "value": self.value,
                "unit": self.unit or None, "details": self.details}


@dataclass(frozen=True)
class CheckInfo:
    name: str
    group: str          # "etcd-diagnosis" (its report's checks) or "ssh" (what only SSH sees)
    about: str          # one line: what it checks
    threshold: str      # when it warns or fails, and whose advice that is


@dataclass(frozen=True)
class Report:
    cluster: str
    checks: tuple[Check, ...]
    elapsed_s: float
    started_at: float   # Unix time
    timings: dict[str, float] = field(default_factory=dict)  # reading -> seconds

    @property
    def worst(self) -> Status:
        levels = [c.status.level for c in self.checks]
        return [Status.ok, Status.warn, Status.fail][max(levels, default=0)]

    @property
    def exit_code(self) -> int:
        """0 all ok, 1 a warning, 3 a failed check (2, a usage or inventory error, is raised
        before any check runs)."""
        return {Status.ok: EXIT_OK, Status.warn: EXIT_FAILED,
                Status.fail: EXIT_REFUSED}[self.worst]

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "cluster": self.cluster, "status": self.worst.value,
                "exit_code": self.exit_code, "counts": self.counts(),
                "started_at": round(self.started_at, 3), "elapsed_s": round(self.elapsed_s, 3),
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
                "checks": [c.to_json() for c in self.checks]}


def select(checks: Sequence[Check], names: Sequence[str]) -> tuple[Check, ...]:
    """Only the checks named (all of them when none is)."""
    return tuple(c for c in checks if not names or c.name in names)

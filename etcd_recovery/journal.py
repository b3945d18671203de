"""The journal: append-only JSON lines, on the operator's machine and on each host.

Operator side, in the journal directory (default ``.etcd-recovery`` beside the inventory):
``<run>.plan.json`` (the plan being run), ``<run>.journal.jsonl`` (one event per line:
``run-start``, ``step-start``, ``step-done``, ``step-failed``, ``interrupted``, ``run-done``),
and ``current`` (the run id of an unfinished run, removed when the run completes).
``run-start`` says whether the run is bound to a reviewed plan: ``bound: true`` and its
``plan_id`` (``execute --confirm PLAN_ID``), or ``bound: false`` (a bare ``--confirm``, which
derived and ran in one go; its ``plan_id`` is still recorded). ``plans/<ID>.json`` are the
plans shown under each ID (planid.py).
Each line is flushed and fsynced before the step it announces goes on, so a killed run leaves
a journal that says exactly where it stopped. Secrets never go in: events carry step ids,
times and messages, never configuration content or keys.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FormatError, UsageError
from .plan.steps import Plan

_APPEND_LOCK = threading.Lock()


@dataclass(frozen=True)
class Event:
    ts: float
    event: str
    step: str | None
    detail: dict[str, Any]


def parse_events(text: str, file: str) -> list[Event]:
    """Parse a journal; a torn last line (a kill mid-write) is ignored, anything else is an
    error naming the line."""
    events: list[Event] = []
    lines = text.split("\n")
    offset = 0
    for i, line in enumerate(lines):
        start = offset
        offset += len(line.encode()) + 1
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict) or not isinstance(d.get("event"), str):
                raise ValueError("not a journal event")
            step = d.get("step")
            if step is not None and not isinstance(step, str):
                raise ValueError("step is not a string")
            detail = d.get("detail") or {}
            if not isinstance(detail, dict):
                raise ValueError("detail is not an object")
            events.append(Event(float(d.get("ts", 0)), d["event"], step, detail))
        except (ValueError, TypeError) as exc:
            if i == len(lines) - 1 or (i == len(lines) - 2 and not lines[-1]):
                break  # torn final line
            raise FormatError(file, start, f"line {i + 1}: {exc}") from exc
    return events


def done_steps(events: list[Event]) -> set[str]:
    return {e.step for e in events if e.event == "step-done" and e.step}


def done_actions(events: list[Event]) -> set[tuple[str, int]]:
    """(step, action number) of every action done or found already in effect (skipped)."""
    return {(e.step, int(e.detail["action"])) for e in events
            if e.event in ("action-done", "action-skipped") and e.step
            and isinstance(e.detail.get("action"), int)}


class Journal:
    def __init__(self, directory: str | Path, run_id: str) -> None:
        self.dir = Path(directory)
        self.run_id = run_id
        self.path = self.dir / f"{run_id}.journal.jsonl"
        self.plan_path = self.dir / f"{run_id}.plan.json"
        # Added to this run's run-start event (its binding to a reviewed plan: bound, plan_id).
        self.start_detail: dict[str, Any] = {}

    @classmethod
    def create(cls, directory: str | Path, plan: Plan,
               start_detail: dict[str, Any] | None = None) -> Journal:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        j = cls(d, plan.run_id)
        j.start_detail = dict(start_detail or {})
        _write_atomic(j.plan_path, json.dumps(plan.to_json(), indent=2) + "\n")
        _write_atomic(d / "current", plan.run_id + "\n")
        return j

    @classmethod
    def current(cls, directory: str | Path) -> Journal | None:
        p = Path(directory) / "current"
        try:
            run_id = p.read_text().strip()
        except FileNotFoundError:
            return None
        if not run_id or "/" in run_id:
            raise FormatError(str(p), 0, "not a run id")
        return cls(directory, run_id)

    def load_plan(self) -> Plan:
        try:
            data = json.loads(self.plan_path.read_text())
        except FileNotFoundError as exc:
            raise UsageError(f"{self.plan_path}: the plan of run {self.run_id} is missing") \
                from exc
        except ValueError as exc:
            raise FormatError(str(self.plan_path), 0, f"not JSON: {exc}") from exc
        return Plan.from_json(data, str(self.plan_path))

    def events(self) -> list[Event]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return parse_events(text, str(self.path))

    def append(self, event: str, step: str | None = None, **detail: Any) -> None:
        self.append_many([(event, step, detail)])

    def append_many(self, records: Sequence[tuple[str, str | None, Mapping[str, Any]]]
                    ) -> None:
        """Journal several events with one write and one fsync (the actions of a step skipped
        whole: an fsync beside 1 GB backups on the same disk took about 0.1 s). A kill in the
        middle leaves whole lines and at most a torn last one, which is ignored: as if it had
        come between two appends."""
        lines = []
        for event, step, detail in records:
            if event == "run-start":
                detail = {**self.start_detail, **detail}
            lines.append(json.dumps({"ts": round(time.time(), 3), "run": self.run_id,
                                     "event": event, "step": step, "detail": dict(detail)},
                                    sort_keys=True) + "\n")
        with _APPEND_LOCK:  # steps of one group journal from several threads
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, "".join(lines).encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def finish(self) -> None:
        self.append("run-done")
        try:
            (self.dir / "current").unlink()
        except FileNotFoundError:
            pass

    def abandon(self) -> None:
        """Close a run that changed nothing (refused in its preflight)."""
        self.append("run-abandoned")
        try:
            (self.dir / "current").unlink()
        except FileNotFoundError:
            pass

    def binding(self) -> dict[str, Any] | None:
        """The run-start event's binding (bound, plan_id), or None before it is journaled."""
        start = next((e for e in self.events() if e.event == "run-start"), None)
        return None if start is None or "plan_id" not in start.detail else dict(start.detail)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

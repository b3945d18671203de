"""Rendering reports for people (rich tables) and for automation (JSON).

Everything here is built as rich ``Text`` (data never read as markup, whatever the console),
and the wide tables are laid out to fit 100 columns: every column folds a value too long for
it onto the next line instead of cutting it. What the default tables leave out is in
``-o json`` (and, for inspect, ``-v``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from .errors import EXIT_DRY_RUN
from .inventory import Inventory
from .methods import Advice
from .model import InspectReport, MemberState, MinorityRead, id_hex
from .plan.steps import BACKGROUND, Plan, Step
from .results import Summary


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


# A column: its header, how its cells are justified, and whether they may wrap. Short values
# (states, numbers) do not wrap; when the table is too wide for the console, the columns that
# may wrap (names, hosts) give way first.
Column = tuple[str, JustifyMethod, bool]


def _table(title: str | None, columns: tuple[Column, ...], show_lines: bool = False,
           table_box: box.Box = box.HEAVY_HEAD) -> Table:
    """A table whose cells fold (wrap mid-word when they must) rather than end in an ellipsis."""
    table = Table(title=Text(title) if title else None, show_lines=show_lines, box=table_box)
    for header, justify, wraps in columns:
        table.add_column(Text(header), justify=justify, overflow="fold", no_wrap=not wraps)
    return table


def _line(*parts: str | tuple[str, str]) -> Text:
    """One line of plain text and (text, style) pieces; nothing in it is read as markup."""
    return Text.assemble(*parts)


def _etcd(m: MemberState) -> str:
    """running / stopped / unreachable; and, where it is not the usual (running: read live,
    stopped: read from disk), how its data was read."""
    if not m.reachable:
        return "unreachable"
    state = "-" if m.etcd_running is None else ("running" if m.etcd_running else "stopped")
    if m.source is None:
        return f"{state}\n(unread)"
    if m.etcd_running and m.source == "disk":
        return f"{state}\n(disk)"
    return state


def _last_log(m: MemberState) -> str:
    if m.last_term is None and m.last_index is None:
        return "-"
    return f"{_fmt(m.last_term)}/{_fmt(m.last_index)}"


_MEMBERS: tuple[Column, ...] = (
    ("member", "left", True), ("host", "left", True), ("etcd", "left", False),
    ("version", "left", True), ("last log\nterm/index", "right", False),
    ("revision", "right", False), ("checks", "left", False))
_DETAILS: tuple[Column, ...] = (
    ("member", "left", True), ("read", "left", False), ("member ID", "left", False),
    ("term", "right", False), ("commit", "right", False), ("applied", "right", False),
    ("DB", "right", True), ("SSH read", "right", True), ("seconds", "right", True))


def inspect_json(report: InspectReport, advice: Advice | None) -> dict[str, Any]:
    """inspect -o json: the report, and the method recommended (None when it refused)."""
    return {**report.to_json(), "method": {"recommended": advice.method,
                                           "reasons": list(advice.reasons)}
            if advice else None}


def inspect_table(report: InspectReport, console: Console, verbose: bool = False,
                  advice: Advice | None = None) -> None:
    """The members at a glance (fits 100 columns); ``verbose``: a second table with how each
    member was read, its ID, raft term, commit and applied index, DB size, the bytes read over
    SSH and the time taken; ``advice``: the method recommended, last."""
    table = _table(f"cluster {report.cluster}: what each member holds", _MEMBERS)
    for m in report.members:
        style = "bold green" if m.name == report.decision.chosen else ""
        version = _fmt(m.etcd_version) + (f"\nstorage {m.storage_version}"
                                          if m.storage_version else "")
        table.add_row(*(Text(cell) for cell in (
            m.name, m.host, _etcd(m), version, _last_log(m), _fmt(m.revision),
            _checks(m))),
            style=style)
    console.print(table, soft_wrap=False)  # a long title wraps too
    if verbose:
        details = _table(None, _DETAILS)
        for m in report.members:
            details.add_row(*(Text(cell) for cell in (
                m.name, _fmt(m.source), _fmt(id_hex(m.member_id)), _fmt(m.term),
                _fmt(m.commit_index), _fmt(m.consistent_index), _size(m.db_size_bytes),
                _size(m.bytes_read), f"{m.elapsed_s:.2f}")))
        console.print(details, soft_wrap=False)
    for m in report.members:
        for c in m.checks:
            if not c.ok:
                console.print(_line(f"  {m.name}: ", ("inventory mismatch", "red"),
                                    f": {c.field} is {c.inventory!r} in the inventory, "
                                    f"{c.host!r} in {c.source}"))
        for h in m.host_checks:
            if not h.ok:
                console.print(_line(f"  {m.name}: ", (f"{h.check} check failed", "red"),
                                    f": {h.subject}: {h.found}. {h.fix}"))
            elif h.warn or h.found.startswith("not checked"):
                console.print(_line(f"  {m.name}: {h.check}: {h.subject}: {h.found}"))
        if m.error:
            console.print(_line(f"  {m.name}: ", (m.error, "red")))
        for note in m.notes:
            console.print(_line(f"  {m.name}: {note}"))
    versions = sorted({m.etcd_version for m in report.members if m.etcd_version})
    if len(versions) > 1:
        console.print(_line(f"members run different etcd versions: {', '.join(versions)}"))
    if report.decision.minority:
        console.print(minority_line(report.decision.minority))
    if report.decision.refused:
        console.print(_line(("REFUSED", "bold red"),
                            f" ({report.decision.refused}): {report.decision.reason}"))
    else:
        console.print(_line("member to keep: ", (_fmt(report.decision.chosen), "bold"),
                            f" - {report.decision.reason}"))
    console.print(_line(f"inspected {len(report.members)} members in "
                        f"{report.elapsed_s:.2f} s"))
    if advice:
        console.print(Text(f"recommended method: {advice.method} - "
                           + "; ".join(advice.reasons)))


def minority_line(m: MinorityRead) -> Text:
    """Too few voting members read: the one line naming what is at stake."""
    return _line(("WARNING", "bold yellow"), f": {m.line()}")


def _checks(m: MemberState) -> str:
    """The inventory against the host, and whether etcd can start there: "ok (16)" (checks
    made), or how many differ from the inventory and how many host checks failed."""
    if not m.reachable:
        return "-"
    bad = [c for c in m.checks if not c.ok]
    failed = [h for h in m.host_checks if not h.ok]
    if not bad and not failed:
        return f"ok ({len(m.checks) + len(m.host_checks)})"
    return ", ".join(x for x in (f"{len(bad)} differ" if bad else "",
                                 f"{len(failed)} failed" if failed else "") if x)


def plan_table(plan: Plan, console: Console) -> None:
    """Every step: its id and host, then what it does (title, precondition, each action,
    check) in one wide cell, so that the table fits 100 columns."""
    console.print(_line(f"Recovery plan {plan.run_id} for cluster {plan.cluster} "
                        f"({plan.runtime}); keep ", (plan.chosen, "bold"), f": {plan.reason}"))
    for line in plan.advisories:
        console.print(_line(f"advisory: {line}"))
    if plan.minority_read:
        console.print(minority_line(plan.minority_read))
    table = _table(None, (("#", "right", False), ("step", "left", True),
                          ("what it does", "left", True)), show_lines=True, table_box=box.SQUARE)
    for i, s in enumerate(plan.steps, 1):
        step = Text(s.id)
        step.append(f"\non {s.host}" if s.host else "\non every member", style="dim")
        if s.group == BACKGROUND:
            step.append("\n(background)", style="dim")
        what = Text(s.title, style="bold")
        if s.precondition:
            what.append("\nbefore: ", style="dim")
            what.append(s.precondition)
        for n, a in enumerate(s.actions, 1):
            what.append(f"\n{n}. {a.summary()}")
        if s.check:
            what.append("\ncheck: ", style="dim")
            what.append(s.check)
        table.add_row(Text(str(i)), step, what)
    console.print(table, soft_wrap=False)  # a long title wraps too
    _later(plan, console)


def reviewed_plan(plan: Plan, console: Console, pid: str, command: str | None) -> None:
    """plan's table: the steps, the plan's ID and the command that carries out exactly this
    plan (None: the plan could not be kept under its ID)."""
    plan_table(plan, console)
    console.print(_line(f"plan ID: {pid}"))
    if command:
        console.print(_line(f"to carry out exactly this plan: {command}"))


def dry_run(plan: Plan, console: Console, pid: str | None = None, command: str | None = None,
            resume: bool = False) -> None:
    """Shown, not run (exit 4): the whole plan, its ID, and how to carry it out (``resume``:
    how to continue the run)."""
    plan_table(plan, console)
    if resume:
        console.print(_line(f"resume: nothing was changed. Add --confirm to continue this run "
                            f"(exit {EXIT_DRY_RUN}: shown, not run)."))
        return
    if pid is not None:
        console.print(_line(f"plan ID: {pid}"))
    console.print(_line(f"dry run: nothing was changed. Add --confirm to carry out this plan "
                        f"(exit {EXIT_DRY_RUN}: shown, not run)"
                        + (f": {command}" if command else ".")))


def run_start(plan: Plan, console: Console, journal_dir: Path, pid: str | None = None,
              bound: bool = False) -> None:
    """The line a run starts with. With a plan ID (execute): a run not bound to a reviewed
    plan shows its steps and ID first; a bound one names a minority read again."""
    named = ""
    if pid is not None:
        if not bound:
            plan_table(plan, console)
            console.print(_line(f"plan ID {pid}: not bound to a reviewed plan (--confirm "
                                "without a plan ID derives the plan and runs it in one go)"))
        elif plan.minority_read:  # plan_table said it above when not bound
            console.print(minority_line(plan.minority_read))
        named = f"plan {pid}" + (" (as reviewed)" if bound else "") + "; "
    console.print(_line(f"run {plan.run_id}: {named}keep {plan.chosen}; {len(plan.steps)} "
                        f"steps (journal in {journal_dir})"))


Log = Callable[[str], None]
OnStep = Callable[[str, Step], None]


@contextlib.contextmanager
def step_progress(console: Console, verbose: bool) -> Iterator[tuple[Log, OnStep | None]]:
    """How a run shows while it runs: the executor's ``log`` and ``on_step``. Off a terminal,
    every line plainly (for logs and pipes); on one, finished steps as lines and a live line
    per running step with its time (``verbose``: every action too)."""
    if not console.is_terminal:
        yield (lambda msg: console.print(msg, markup=False)), None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                        TimeElapsedColumn(), console=console, transient=True)
    tasks: dict[str, Any] = {}

    def on_step(event: str, step: Step) -> None:
        if event == "start":
            tasks[step.id] = progress.add_task(f"{step.id}: {step.title}"[:100])
        elif step.id in tasks:
            progress.remove_task(tasks.pop(step.id))

    def log(msg: str) -> None:
        if verbose or ": done" in msg or "WARNING" in msg or not msg.startswith("["):
            progress.console.print(msg, markup=False, highlight=False)

    with progress:
        yield log, on_step


def _later(plan: Plan, console: Console) -> None:
    for name in plan.rejoin_later:
        console.print(_line(f"{name} was unreachable: once it is back, bring it in with "
                            f"`etcd-recovery rejoin {name} -i {plan.inventory}` (its stale "
                            "data is moved aside first, so it cannot split the cluster)"))


def summary_table(summary: Summary, console: Console) -> None:
    table = _table(f"run {summary.run_id}: {'done' if summary.ok else 'stopped'} in "
                   f"{summary.total_s:.1f} s", (("step", "left", True), ("seconds", "right", True)))
    for s in summary.steps:
        table.add_row(Text(s.id),
                      Text("skipped (done before)" if s.skipped else f"{s.seconds:.2f}"))
    console.print(table, soft_wrap=False)  # a long title wraps too
    console.print(_line(summary.message))


def inventory_json(inv: Inventory) -> dict[str, Any]:
    """inventory check -o json: what the inventory describes."""
    return {"cluster": inv.name, "runtime": inv.runtime,
            "members": [{"name": m.name, "ssh_host": m.ssh.host, "peer_url": m.peer_url,
                         "client_url": m.client_url, "data_dir": m.data_dir}
                        for m in inv.members]}


def inventory_table(inv: Inventory, console: Console) -> None:
    """inventory check: each member's SSH address, URLs and data dir."""
    table = Table(title=f"{inv.path}: cluster {inv.name} ({inv.runtime})")
    for col in ("member", "ssh", "client URL", "peer URL", "data dir"):
        table.add_column(col, overflow="fold")  # a long value wraps; it is never cut
    for m in inv.members:
        user = f"{m.ssh.user}@" if m.ssh.user else ""
        port = f":{m.ssh.port}" if m.ssh.port else ""
        table.add_row(m.name, f"{user}{m.ssh.host}{port}", m.client_url, m.peer_url, m.data_dir)
    console.print(table, soft_wrap=False)  # a long title wraps too


def lab_status(status: dict[str, Any], console: Console) -> None:
    """lab status: each host's addresses and state, and the cluster's health."""
    table = Table(title=f"lab {status['lab']} ({status['runtime']}, "
                        f"etcd {status['etcd_version']})")
    for col in ("host", "ssh", "client URL", "etcd", "host up", "etcd running", "healthy",
                "partitioned"):
        table.add_column(col, overflow="fold")  # a long value wraps; it is never cut
    yes = {True: "yes", False: "no"}
    for h in status["hosts"]:
        table.add_row(h["name"], h["ssh"], h["client_url"], h["etcd_version"],
                      yes[h["host_up"]],
                      yes[h["etcd_running"]], yes[h["etcd_healthy"]], yes[h["partitioned"]])
    console.print(table, soft_wrap=False)  # a long title wraps too
    quorum = "has quorum" if status["quorum"] else "has LOST quorum"
    console.print(_line(f"cluster: {status['healthy_members']}/{status['members']} members "
                        f"healthy; {quorum}"))

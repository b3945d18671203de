"""Rendering reports for people (rich tables) and for automation (JSON).

Everything here is built as rich ``Text`` (data never read as markup, whatever the console),
and the wide tables are laid out to fit 100 columns: every column folds a value too long for
it onto the next line instead of cutting it. What the default tables leave out is in
``-o json`` (and, for inspect, ``-v``).
"""

from __future__ import annotations

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from .model import InspectReport, MemberState, MinorityRead, id_hex
from .plan.steps import BACKGROUND, Plan
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


def inspect_table(report: InspectReport, console: Console, verbose: bool = False) -> None:
    """The members at a glance (fits 100 columns); ``verbose``: a second table with how each
    member was read, its ID, raft term, commit and applied index, DB size, the bytes read over
    SSH and the time taken."""
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

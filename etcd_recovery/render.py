"""Rendering reports for people (rich tables) and for automation (JSON)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .executor import Summary
from .model import Check, InspectReport, id_hex
from .plan import BACKGROUND, Plan


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


def inspect_table(report: InspectReport, console: Console) -> None:
    table = Table(title=f"cluster {report.cluster}: what each member holds")
    for col, justify in (("member", "left"), ("host", "left"), ("reachable", "left"),
                         ("etcd", "left"), ("version", "left"), ("source", "left"),
                         ("member ID", "left"),
                         ("term", "right"), ("commit", "right"), ("applied/cindex", "right"),
                         ("last term", "right"), ("last index", "right"),
                         ("revision", "right"), ("DB", "right"), ("read", "right"),
                         ("inventory", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in report.members:
        etcd = "-" if m.etcd_running is None else ("running" if m.etcd_running else "stopped")
        style = "bold green" if m.name == report.decision.chosen else None
        version = _fmt(m.etcd_version) + (f"\nstorage {m.storage_version}"
                                          if m.storage_version else "")
        table.add_row(m.name, m.host, _fmt(m.reachable), etcd, version,
                      _fmt(m.source),
                      _fmt(id_hex(m.member_id)), _fmt(m.term), _fmt(m.commit_index),
                      _fmt(m.consistent_index), _fmt(m.last_term), _fmt(m.last_index),
                      _fmt(m.revision), _size(m.db_size_bytes), _size(m.bytes_read),
                      _checks(m.checks, m.reachable), style=style)
    console.print(table)
    for m in report.members:
        for c in m.checks:
            if not c.ok:
                console.print(f"  {m.name}: [red]inventory mismatch[/]: {c.field} is "
                              f"{c.inventory!r} in the inventory, {c.host!r} in {c.source}",
                              markup=True, highlight=False)
        if m.error:
            console.print(f"  {m.name}: [red]{m.error}[/]", markup=True, highlight=False)
        for note in m.notes:
            console.print(f"  {m.name}: {note}", markup=False)
    versions = sorted({m.etcd_version for m in report.members if m.etcd_version})
    if len(versions) > 1:
        console.print(f"members run different etcd versions: {', '.join(versions)}",
                      markup=False)
    if report.decision.refused:
        console.print(f"[bold red]REFUSED[/] ({report.decision.refused}): "
                      f"{report.decision.reason}", markup=True, highlight=False)
    else:
        console.print(f"member to keep: [bold]{report.decision.chosen}[/] - "
                      f"{report.decision.reason}", markup=True, highlight=False)
    console.print(f"inspected {len(report.members)} members in {report.elapsed_s:.2f} s",
                  markup=False)


def _checks(checks: tuple[Check, ...], reachable: bool) -> str:
    if not reachable:
        return "-"
    bad = [c for c in checks if not c.ok]
    return f"{len(bad)} mismatch" if bad else f"ok ({len(checks)} checks)"


def plan_table(plan: Plan, console: Console) -> None:
    console.print(f"Recovery plan {plan.run_id} for cluster {plan.cluster} ({plan.runtime}); "
                  f"keep [bold]{plan.chosen}[/]: {plan.reason}", markup=True, highlight=False)
    for line in plan.advisories:
        console.print(f"advisory: {line}", markup=False, highlight=False)
    table = Table(show_lines=True)
    for col in ("#", "step", "host", "actions", "precondition", "check"):
        table.add_column(col, overflow="fold")
    for i, s in enumerate(plan.steps, 1):
        lines = [s.title] + [f"{n}. {a.summary()}" for n, a in enumerate(s.actions, 1)]
        sid = s.id + ("\n(background)" if s.group == BACKGROUND else "")
        table.add_row(str(i), sid, s.host or "all", "\n".join(lines), s.precondition,
                      s.check)
    console.print(table)
    _later(plan, console)


def _later(plan: Plan, console: Console) -> None:
    for name in plan.rejoin_later:
        console.print(f"{name} was unreachable: once it is back, bring it in with "
                      f"`etcd-recovery rejoin {name} -i {plan.inventory}` (its stale data is "
                      "moved aside first, so it cannot split the cluster)", markup=False)


def summary_table(summary: Summary, console: Console) -> None:
    table = Table(title=f"run {summary.run_id}: {'done' if summary.ok else 'stopped'} in "
                        f"{summary.total_s:.1f} s")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for s in summary.steps:
        table.add_row(s.id, "skipped (done before)" if s.skipped else f"{s.seconds:.2f}")
    console.print(table)
    console.print(summary.message, markup=False)

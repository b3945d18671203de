"""doctor's three renderings: a table (one row per check, per member where it applies; fits
100 columns), the JSON report (model.Report.to_json) and the node_exporter textfile collector
format. Nothing here reads a secret: checks carry figures and messages only."""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .model import Check, Report, Status

_STYLE = {Status.ok: "green", Status.warn: "yellow", Status.fail: "bold red"}


def table(report: Report, console: Console) -> None:
    t = Table(title=Text(f"doctor: cluster {report.cluster}"), box=box.HEAVY_HEAD)
    t.add_column(Text("check"), no_wrap=True)
    t.add_column(Text("member"), no_wrap=True)
    t.add_column(Text("status"), no_wrap=True)
    t.add_column(Text("figure"), overflow="fold", max_width=44)
    for c in report.checks:
        t.add_row(Text(c.name), Text(c.member or "-"),
                  Text(c.status.value, style=_STYLE[c.status]), Text(c.figure))
    console.print(t, soft_wrap=False)
    for c in report.checks:
        if c.status is not Status.ok and c.message:
            who = f"{c.name} {c.member}" if c.member else c.name
            console.print(Text.assemble((f"{c.status.value}: ", _STYLE[c.status]),
                                        f"{who}: {c.message}"))
    n = report.counts()
    console.print(Text(f"{n['ok']} ok, {n['warn']} warning(s), {n['fail']} failed in "
                       f"{report.elapsed_s:.2f} s; exit {report.exit_code}"))


# ------------------------------------------------------------------------ Prometheus

PREFIX = "etcd_recovery_doctor"
METRICS = {
    f"{PREFIX}_check_status": "A check's status: 0 ok, 1 warning, 2 failed.",
    f"{PREFIX}_check_value": "A check's figure as a number, in the unit its label names.",
    f"{PREFIX}_checks": "How many checks ended with each status.",
    f"{PREFIX}_exit_code": "doctor's exit code: 0 all ok, 1 warnings, 3 a failed check.",
    f"{PREFIX}_duration_seconds": "How long doctor took.",
    f"{PREFIX}_last_run_timestamp_seconds": "When doctor ran (Unix time).",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def prometheus(report: Report) -> str:
    """The report in the Prometheus text exposition format, as node_exporter's textfile
    collector reads it (write it to a temporary file and rename it into the directory)."""
    lines: list[str] = []

    def family(name: str) -> None:
        lines.append(f"# HELP {name} {METRICS[name]}")
        lines.append(f"# TYPE {name} gauge")

    def base(c: Check) -> list[tuple[str, str]]:
        return [("cluster", report.cluster), ("check", c.name), ("member", c.member or "")]

    family(f"{PREFIX}_check_status")
    for c in report.checks:
        lines.append(f"{PREFIX}_check_status{_labels(base(c))} {c.status.level}")
    family(f"{PREFIX}_check_value")
    for c in report.checks:
        if c.value is not None:
            lines.append(f"{PREFIX}_check_value{_labels([*base(c), ('unit', c.unit)])} "
                         f"{_num(c.value)}")
    family(f"{PREFIX}_checks")
    for status, count in report.counts().items():
        lines.append(f"{PREFIX}_checks{_labels([('cluster', report.cluster), ('status', status)])}"
                     f" {count}")
    cl = _labels([("cluster", report.cluster)])
    family(f"{PREFIX}_exit_code")
    lines.append(f"{PREFIX}_exit_code{cl} {report.exit_code}")
    family(f"{PREFIX}_duration_seconds")
    lines.append(f"{PREFIX}_duration_seconds{cl} {_num(round(report.elapsed_s, 3))}")
    family(f"{PREFIX}_last_run_timestamp_seconds")
    lines.append(f"{PREFIX}_last_run_timestamp_seconds{cl} {_num(round(report.started_at, 3))}")
    return "\n".join(lines) + "\n"

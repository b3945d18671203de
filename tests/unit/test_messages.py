"""What people read: tables that fit 100 columns with no value cut, data printed as written
(never read as Rich markup), and a runbook whose here-documents cannot end early."""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from etcd_recovery.actions import WriteFile
from etcd_recovery.model import Check, InspectReport
from etcd_recovery.plan.steps import Plan
from etcd_recovery.render import inspect_table, plan_table
from etcd_recovery.runbook import HEREDOC_END, heredoc_terminator, plan_markdown

from .test_plan_actions import inventory, plan_for, report


def _render(draw: object, *args: object, width: int = 100, **kw: object) -> str:
    buf = io.StringIO()
    # markup and emoji on (Rich's defaults): the renderers must not depend on the caller's
    # console to keep data as it is
    console = Console(file=buf, width=width, color_system=None, markup=True, emoji=True)
    draw(*args, console, **kw)  # type: ignore[operator]
    return buf.getvalue()


def _fits(text: str, width: int = 100) -> None:
    assert "…" not in text, text
    assert max(cell_len(line) for line in text.splitlines()) <= width, text


def _realistic() -> InspectReport:
    """IDs, addresses and figures of the sizes a real cluster has."""
    base = report()
    a, b, c = base.members
    checks = tuple(Check("etcd-1", f, "x", "x", "manifest", True)
                   for f in ("name", "peer_url", "client_url", "data_dir"))
    a = replace(a, host="192.168.100.111", member_id=0x8E9E05C52164694D,
                cluster_id=0xCDF818194E3A8C32, term=123456, commit_index=98765432,
                consistent_index=98765430, last_term=123456, last_index=98765432,
                revision=87654321, db_size_bytes=7_500_000_000, bytes_read=1_234_567,
                etcd_version="3.6.16", storage_version="3.6", checks=checks, elapsed_s=1.25)
    b = replace(b, host="192.168.100.112", error="host 192.168.100.112:22: timed out")
    c = replace(c, host="192.168.100.113", member_id=0x91BC3C398FB3C146,
                cluster_id=0xCDF818194E3A8C32, term=123457, commit_index=98765000,
                consistent_index=98765000, last_term=123455, last_index=98765100,
                revision=87654000, db_size_bytes=7_400_000_000, etcd_version="3.6.16",
                checks=(*checks[:3], Check("etcd-3", "data_dir", "/var/lib/etcd",
                                           "/data/etcd", "manifest", False)))
    return replace(base, members=(a, b, c))


@pytest.mark.parametrize("verbose", [False, True])
def test_inspect_table_fits_100_columns_with_no_value_cut(verbose: bool) -> None:
    rep = _realistic()
    text = _render(inspect_table, rep, verbose=verbose)
    _fits(text)
    for m in rep.members:
        assert m.name in text and m.host in text
    a = rep.members[0]
    for value in ("123456/98765432", "87654321", "3.6.16", "storage 3.6", "unreachable"):
        assert value in text, value
    assert "1 differ" in text and "ok (4)" in text
    # the rest is in -v: how it was read, IDs, raft term, commit and applied index, DB size,
    # bytes read
    for value in ("8e9e05c52164694d", "123457", "98765000", "98765430", "7.0 GiB", "1.2 MiB",
                  "1.25"):
        assert (value in text) is verbose, value
    assert a.to_json()["member_id"] == "8e9e05c52164694d"


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_plan_table_fits_100_columns_with_no_value_cut(runtime: str) -> None:
    plan = plan_for(runtime)
    text = _render(plan_table, plan)
    _fits(text)
    # each row's cells, read back across the lines they wrap over (whitespace aside)
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("├") or line.startswith("┌"):
            rows.append(["", "", ""])
        elif line.startswith("│") and rows:
            for k, cell in enumerate(line.split("│")[1:4]):
                rows[-1][k] += "".join(cell.split())
    rows = rows[1:]  # the header
    assert len(rows) == len(plan.steps)
    for (num, step, what), s in zip(rows, plan.steps, strict=True):
        assert num == str(plan.steps.index(s) + 1) and step.startswith(s.id.replace(" ", ""))
        for shown in (s.title, s.precondition, s.check, *(a.summary() for a in s.actions)):
            assert "".join(shown.split()) in what, shown


def test_data_in_a_table_or_a_message_is_never_markup() -> None:
    base = report()
    a, b, c = base.members
    a = replace(a, host="fd00::1", error="[bold]x[/] read https://[fd00::1]:2380 :fire:",
                notes=("[red]note[/]",))
    b = replace(b, host="[fe80::1]", error="e[/x] no such file")
    rep = replace(base, members=(a, b, c),
                  decision=replace(base.decision, reason="[fe80::2] is [b]newer[/b]"))
    text = _render(inspect_table, rep)
    for raw in ("[bold]x[/] read https://[fd00::1]:2380 :fire:", "[red]note[/]",
                "e[/x] no such file", "[fe80::2] is [b]newer[/b]", "[fe80::1]"):
        assert raw in text, raw
    plan = plan_for("static-pod")
    plan = replace(plan, reason="[fe80::2] wins", advisories=("[bold]adv[/]",))
    text = _render(plan_table, plan)
    assert "[fe80::2] wins" in text and "[bold]adv[/]" in text


# ---------------------------------------------------------------------------- heredocs

def test_the_terminator_is_one_no_line_of_the_content_equals() -> None:
    assert heredoc_terminator("a\nb\n") == HEREDOC_END
    assert heredoc_terminator(f"{HEREDOC_END}x\n {HEREDOC_END}\n") == HEREDOC_END
    assert heredoc_terminator(f"a\n{HEREDOC_END}\n") == f"{HEREDOC_END}_1"
    assert heredoc_terminator(f"{HEREDOC_END}_1\n{HEREDOC_END}\r\n") == f"{HEREDOC_END}_2"


EVIL = f"apiVersion: v1\n{HEREDOC_END}\ntouch \"$MARK\"\nkind: Pod\n"


def _with_content(plan: Plan, content: str) -> tuple[Plan, WriteFile]:
    """The plan with its first write-file action's content replaced by ``content``."""
    for i, s in enumerate(plan.steps):
        for j, a in enumerate(s.actions):
            if isinstance(a, WriteFile):
                new = replace(a, content=content)
                actions = (*s.actions[:j], new, *s.actions[j + 1:])
                steps = (*plan.steps[:i], replace(s, actions=actions), *plan.steps[i + 1:])
                return replace(plan, steps=steps), new
    raise AssertionError("no write-file action in the plan")


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_a_runbook_block_writes_the_whole_content_and_runs_none_of_it(
        runtime: str, tmp_path: Path) -> None:
    plan, action = _with_content(plan_for(runtime), EVIL)
    md = plan_markdown(plan, inventory(runtime))
    # from the line of the write-file action to the end of its step's block
    start = re.search(rf"^feed {action.host} .*<<'{HEREDOC_END}", md, re.M)
    assert start is not None
    block = md[start.start():md.index("\n```", start.start())]
    out, mark = tmp_path / "written", tmp_path / "MARK"
    # `feed HOST CMD` passes stdin on to CMD on the host: here, into a local file per call;
    # the other commands of the block do nothing
    script = ('n=0; feed() { n=$((n + 1)); cat > "$OUT.$n"; }\non() { :; }\nretry() { :; }\n'
              'command_not_found_handle() { return 0; }\n' + block + "\n")
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         env={"OUT": str(out), "MARK": str(mark), "PATH": "/usr/bin:/bin"})
    assert res.stderr == ""
    assert not mark.exists(), "a line of the file's content ran as a command"
    assert Path(f"{out}.1").read_text() == EVIL
    assert f"<<'{HEREDOC_END}_1'" in block
    # an ordinary content keeps the usual terminator: the action shows as it always did
    md = plan_markdown(plan_for(runtime), inventory(runtime))
    writes = [a for s in plan_for(runtime).steps for a in s.actions if isinstance(a, WriteFile)]
    assert writes and all(a.show() in md for a in writes)
    assert f"<<'{HEREDOC_END}_" not in md

"""The command line's own surface: version, help texts, completion, messages that print
their data as written, exit codes, the saved plan's mode."""

from __future__ import annotations

import inspect
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from etcd_recovery import __version__, cli, planid, runs
from etcd_recovery.errors import EXIT_DRY_RUN, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from etcd_recovery.inventory import dump_inventory

from .test_plan_actions import inventory as pa_inventory
from .test_plan_actions import plan_for
from .test_plan_actions import report as pa_report

CLI = str(Path(sys.executable).parent / "etcd-recovery")


def test_version_prints_the_version() -> None:
    res = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"etcd-recovery {__version__}"


def test_no_command_shows_help_and_completion_is_offered() -> None:
    res = subprocess.run([CLI], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Usage: etcd-recovery" in res.stdout
    assert "inspect" in res.stdout and "execute" in res.stdout
    res = subprocess.run([CLI, "--show-completion", "bash"], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "SHELL": "/bin/bash"})
    assert res.returncode == 0 and "complete" in res.stdout and "etcd-recovery" in res.stdout


# ------------------------------------------------------------------------------ help texts

def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the CLI, with the words that name it."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ALL_COMMANDS = list(_commands(get_command(cli.app)))


def _help(path: tuple[str, ...], width: int) -> str:
    res = CliRunner().invoke(cli.app, [*path, "--help"], terminal_width=width,
                             max_content_width=width)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=lambda p: " ".join(p) or "-")
def test_every_option_has_help_and_no_flag_shows_a_type(path: tuple[str, ...]) -> None:
    command = dict(ALL_COMMANDS)[path]
    for param in command.params:
        assert (param.help or "").strip(), f"{' '.join(path)} {param.opts}: no help"
    text = _help(path, 100)
    assert "<bool>" not in text
    for param in command.params:
        if getattr(param, "is_flag", False):
            line = next(x for x in text.splitlines() if param.opts[-1] in x)
            assert "<" not in line.split(param.opts[-1], 1)[1].split("  ")[0], line


def _paragraphs(doc: str) -> list[str]:
    return [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n") if p.strip()]


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=lambda p: " ".join(p) or "-")
def test_help_has_no_line_break_inside_a_paragraph(path: tuple[str, ...]) -> None:
    """On a terminal wide enough, every paragraph of a help text is one line: the line breaks
    of a docstring's source never show (rejoin, verify, lab, inventory had them)."""
    command = dict(ALL_COMMANDS)[path]
    lines = [x.strip() for x in _help(path, 1000).splitlines()]
    for para in _paragraphs(command.help or ""):
        assert para in lines, (para, lines)
    for param in command.params:
        help_text = " ".join((param.help or "").split())
        assert any(help_text in x for x in lines), (param.opts, help_text)


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("path", [p for p, c in ALL_COMMANDS if getattr(c, "commands", None)],
                         ids=lambda p: " ".join(p) or "-")
def test_a_group_lists_each_command_with_its_whole_first_sentence(path: tuple[str, ...],
                                                                  width: int) -> None:
    group = dict(ALL_COMMANDS)[path]
    lines = _help(path, width).splitlines()
    for name, sub in group.commands.items():
        line = next(x for x in lines if x.strip().startswith(name + " "))
        assert line.split(None, 1)[1].strip() == _paragraphs(sub.help or "")[0], line
        assert len(line) <= width


def test_help_uses_up_to_100_columns() -> None:
    for columns, widest in (("200", 100), ("80", 80)):
        res = subprocess.run([CLI, "plan", "--help"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "COLUMNS": columns})
        assert widest - 12 < max(len(x) for x in res.stdout.splitlines()) <= widest, res.stdout


# ------------------------------------------------------------------ messages, exit codes

def _inventory(tmp: Path, peer_b: str = "https://[fd00::1]:2380") -> Path:
    path = tmp / "inventory.yaml"
    path.write_text(
        "cluster: {name: c, runtime: static-pod}\n"
        "members:\n"
        "  - {name: a, ssh: {host: 127.0.0.1}, peer_url: 'https://[fd00::1]:2380',\n"
        "     client_url: 'https://[fd00::1]:2379'}\n"
        f"  - {{name: b, ssh: {{host: 127.0.0.1}}, peer_url: '{peer_b}',\n"
        "     client_url: 'https://[fd00::2]:2379'}\n")
    return path


def test_an_ipv6_url_in_a_message_keeps_its_host(tmp_path: Path) -> None:
    res = subprocess.run([CLI, "inventory", "check", "-i", str(_inventory(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "'https://[fd00::1]:2380' is used by member 'a' too" in res.stderr, res.stderr


def test_a_path_with_brackets_is_named_as_it_is(tmp_path: Path) -> None:
    for name in ("e[/x]", "[bold]d", "a:fire:b"):
        missing = tmp_path / name / "inventory.yaml"
        res = subprocess.run([CLI, "inventory", "check", "-i", str(missing)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        assert res.stderr == f"error: {missing}: file not found\n", res.stderr


def test_inventory_table_shows_ipv6_urls_whole(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, peer_b="https://[fd00::2]:2380")
    res = subprocess.run([CLI, "inventory", "check", "-i", str(inv)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for url in ("https://[fd00::1]:2380", "https://[fd00::2]:2380", "https://[fd00::2]:2379"):
        assert url in res.stdout, res.stdout
    assert max(len(x) for x in res.stdout.splitlines()) <= 100


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Any]:
    """An inventory file and the plan the CLI derives for it (no host is asked)."""
    the_plan = plan_for("static-pod")
    inv = tmp_path / "inventory.yaml"
    inv.write_text(dump_inventory(pa_inventory("static-pod")))
    monkeypatch.setattr(cli, "_load", lambda path: pa_inventory("static-pod"))
    monkeypatch.setattr(runs, "derive_plan", lambda *a, **kw: (the_plan, pa_report()))
    return inv, the_plan


def test_a_dry_run_has_its_own_exit_code(planned: tuple[Path, Any]) -> None:
    inv, the_plan = planned
    res = CliRunner().invoke(cli.app, ["execute", "-i", str(inv)])
    assert res.exit_code == EXIT_DRY_RUN == 4, res.output
    assert EXIT_DRY_RUN not in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED)
    assert "Add --confirm" in res.stderr and the_plan.steps[0].id in res.stderr
    jdir = inv.parent / ".etcd-recovery"  # nothing journaled, nothing run: only the plan
    assert sorted(p.relative_to(jdir).as_posix() for p in jdir.rglob("*")) == [  # shown, kept
        "plans", f"plans/{planid.plan_id(the_plan, pa_inventory('static-pod'))}.json"]


def test_plan_save_writes_the_plan_mode_0600(planned: tuple[Path, Any],
                                            tmp_path: Path) -> None:
    inv, the_plan = planned
    saved = tmp_path / "plan.json"
    saved.write_text("old")
    saved.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        res = CliRunner().invoke(cli.app, ["plan", "-i", str(inv), "-o", "json",
                                           "--save", str(saved)])
    finally:
        os.umask(old_umask)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {
        "plan_id": planid.plan_id(the_plan, pa_inventory("static-pod")), **the_plan.to_json()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".plan.json")] == []


def test_off_a_terminal_output_is_laid_out_for_100_columns() -> None:
    assert not sys.stdout.isatty()
    assert cli.out.width == cli.err.width == 100

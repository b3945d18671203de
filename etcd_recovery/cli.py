"""The command line: parse, build objects, render, confirm, run. No recovery logic lives here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .errors import (
    EXIT_DRY_RUN,
    EXIT_FAILED,
    EXIT_REFUSED,
    EtcdRecoveryError,
    FormatError,
    RefusedError,
    UsageError,
)
from .inventory import load_inventory

# Help is plain text, reflowed to the terminal (rich_markup_mode=None): no Rich markup is read
# in a help text (``[user@]host`` stays as written), no line break of a docstring's source
# survives in the middle of a sentence, and flags show no type.
app = typer.Typer(add_completion=True, no_args_is_help=False, invoke_without_command=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"max_content_width": 100},
                  help="Bring an etcd cluster back after it has lost quorum.")
lab_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="A lab of real etcd hosts (Docker, SSH, TLS) to rehearse on.")
inventory_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                            help="Check, discover or import an inventory.")
app.add_typer(lab_app, name="lab")
app.add_typer(inventory_app, name="inventory")

# Off a terminal (a pipe, a log file), tables are laid out for 100 columns; the wide ones
# (inspect's members, plan's steps) fit there, and what they leave out is in -o json or -v.
_WIDTH = None if sys.stdout.isatty() else 100
# Markup and emoji codes are off: messages carry data (IPv6 URLs, paths with brackets, names)
# and print as written. Styled output (render.py) builds rich Text, never markup strings.
out = Console(highlight=False, soft_wrap=True, width=_WIDTH, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH, markup=False,
              emoji=False)

T = TypeVar("T")


class Output(StrEnum):
    table = "table"
    json = "json"


InventoryOpt = Annotated[Path, typer.Option("--inventory", "-i", metavar="FILE",
                                            help="Inventory YAML file.")]
LabDirOpt = Annotated[Path, typer.Option("--dir", metavar="DIR", help="Directory of the lab.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table or json.")]
JournalDirOpt = Annotated[Path | None, typer.Option(
    "--journal-dir", metavar="DIR", help="Where runs' journals, and the plans shown under "
    "their IDs, are kept on this machine (default: .etcd-recovery/ beside the inventory).")]


def fail(exc: EtcdRecoveryError) -> NoReturn:
    """Print the error's one line (its text as it is: never read as markup) and exit."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(exc)))
    raise typer.Exit(exc.exit_code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; an EtcdRecoveryError becomes a one-line message and its exit code."""
    try:
        return fn()
    except EtcdRecoveryError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


@app.callback()
def _root(ctx: typer.Context,
          version: Annotated[bool, typer.Option("--version", help="Print the version.",
                                                is_eager=True)] = False) -> None:
    if version:
        out.print(f"etcd-recovery {__version__}", markup=False)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help(), markup=False)
        raise typer.Exit(0)


# ----------------------------------------------------------------------------- main commands

def _load(inventory: Path) -> Any:
    """The inventory, checked; and TCP connections to its hosts' SSH ports begun at once."""
    from .transport import early

    inv = guarded(lambda: load_inventory(inventory, check_files=True))
    early.start((m.ssh.host, m.ssh.port or 22, m.ssh.connect_timeout or 1.0)
                for m in inv.members if not m.ssh.jump)
    return inv


@app.command()
def inspect(inventory: InventoryOpt, output: OutputOpt = Output.table,
            exclude: ExcludeOpt = None,
            verbose: Annotated[bool, typer.Option(
                "--verbose", "-v", help="Also show how each member was read (live or disk), "
                "its member ID, raft term, commit and applied index, DB size, bytes read "
                "over SSH and time taken (all in -o json too).")] = False
            ) -> None:
    """Read every member's state over SSH; choose whom to keep.

    The member to keep is the one with the most up-to-date raft log. Exit 0 with a member
    chosen; 3 when it refuses (quorum still there, cluster IDs differ, a corrupt data dir,
    nothing readable).
    """
    inv = _load(inventory)  # before the slower imports: the hosts' TCP connects are under way
    from .inspect import inspect_cluster
    from .methods import recommend
    from .render import inspect_table

    report = guarded(lambda: inspect_cluster(inv, exclude=exclude or ()))
    advice = None if report.decision.refused else recommend(report)
    if output is Output.json:
        print_json({**report.to_json(), "method": {"recommended": advice.method,
                                                   "reasons": list(advice.reasons)}
                    if advice else None})
    else:
        inspect_table(report, out, verbose=verbose)
        if advice:
            out.print(Text(f"recommended method: {advice.method} - "
                           + "; ".join(advice.reasons)))
    if report.decision.refused:
        raise typer.Exit(EXIT_REFUSED)


class PlanOutput(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def new_run_id() -> str:
    import secrets
    import time

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


AllowQuorumOpt = Annotated[bool, typer.Option(
    "--allow-quorum", help="Rebuild the cluster from its most up-to-date member even though "
    "it still has quorum (every member is fenced and re-added).")]


ExcludeOpt = Annotated[list[str] | None, typer.Option(
    "--exclude", metavar="MEMBER", help="Plan without this member's data (repeatable): a "
    "reachable member whose data cannot be read is refused otherwise. It is only moved aside "
    "and re-added, never kept.")]
TakeOverOpt = Annotated[bool, typer.Option(
    "--take-over-lock", help="Take the hosts' recovery lock over from a dead run (the lock "
    "step then overwrites it).")]
EtcdImageOpt = Annotated[str | None, typer.Option(
    "--etcd-image", metavar="IMAGE", help="Static pods: the image the kept member runs from "
    "--force-new-cluster on (e.g. a fixed etcd patch release when its own version has a bug "
    "the plan names).")]
EtcdBinaryOpt = Annotated[str | None, typer.Option(
    "--etcd-binary", metavar="PATH", help="systemd: an etcd build on the kept member's host "
    "(absolute path); the restore installs it where etcd.service runs etcd, the original kept "
    "in the run directory (e.g. a fixed etcd patch release when its own version has a bug the "
    "plan names).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every action as it runs.")]


MethodOpt = Annotated[str | None, typer.Option(
    "--method", metavar="METHOD", help="force-new-cluster (the default: the kept member "
    "restarts alone, the others rejoin as learners one at a time) or snapshot (one snapshot "
    "of the kept member's whole log restored on every member at once, with a new cluster "
    "token and a bumped revision).")]
FromSnapshotOpt = Annotated[str | None, typer.Option(
    "--from-snapshot", metavar="FILE", help="Restore every member from this snapshot file "
    "on this machine (etcdctl snapshot save, or a copied member/snap/db with "
    "--skip-hash-check): for when no member's data is to be trusted.")]
BumpOpt = Annotated[int | None, typer.Option(
    "--bump-revision", metavar="N", help="The snapshot method: add N to the restored "
    "revision and mark it compacted (default 1000000000, etcd's advice for Kubernetes).")]
EtcdutlOpt = Annotated[str | None, typer.Option(
    "--etcdutl", metavar="PATH", help="The snapshot method: an etcdutl build on this "
    "machine, copied to every host's run directory (checked by sha256); needed for static "
    "pods, optional for systemd (default: the etcdutl beside the unit's etcd binary).")]
SkipHashOpt = Annotated[bool, typer.Option(
    "--skip-hash-check", help="--from-snapshot: restore a file that has no integrity hash "
    "(a copied member/snap/db).")]
OlderDataOpt = Annotated[bool, typer.Option(
    "--allow-older-data", help="--from-snapshot: restore the file although readable members "
    "hold newer data (a rollback).")]


def _snapshot_input(path: str) -> Any:
    """--from-snapshot FILE, read and checked here: integrity hash, etcdutl's status
    figures, its sha256 for the copies, its age."""
    import hashlib
    import time

    from .formats.snapshot import read_snapshot
    from .formats.source import FileSource
    from .plan.snapshot import SnapshotInput

    p = Path(path)
    try:
        st = p.stat()
        info = read_snapshot(FileSource(p))
        h = hashlib.sha256()
        with p.open("rb") as f:
            while block := f.read(4 * 1024 * 1024):
                h.update(block)
    except OSError as exc:
        fail(UsageError(f"--from-snapshot {path}: cannot read it: {exc.strerror or exc}"))
    except FormatError as exc:
        fail(UsageError(f"--from-snapshot {path}: {exc}"))
    return SnapshotInput(path=str(p.resolve()), sha256=h.hexdigest(), revision=info.revision,
                         total_key=info.total_keys or info.total_entries, hash=info.hash,
                         size=info.size, has_hash=info.has_hash,
                         age_s=max(0.0, time.time() - st.st_mtime))


def _local_etcdutl(path: str) -> tuple[str | None, str]:
    """--etcdutl PATH: its version (``etcdutl version``) and sha256."""
    import hashlib
    import re
    import subprocess

    p = Path(path)
    try:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        res = subprocess.run([str(p), "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        fail(UsageError(f"--etcdutl {path}: cannot run it: {exc}"))
    found = re.search(r"etcdutl version:\s*(\S+)", res.stdout.decode(errors="replace"))
    if res.returncode != 0 or found is None:
        fail(UsageError(f"--etcdutl {path}: `{path} version` printed no etcdutl version "
                        f"(exit {res.returncode})"))
    return found.group(1), digest


def _derive_plan(inv: Any, o: Any, run_id: str | None = None) -> tuple[Any, Any]:
    """Inspect and lay out the plan of the method the options ask for (planning is pure,
    over what inspect read); the plan and the inspection it was made from. ``o``: the
    command line's (or the reviewed plan's) planid.Options."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from .inspect import inspect_cluster, read_configs, read_etcdutl, read_new_binary
    from .methods import derive
    from .plan.snapshot import Etcdutl, etcdutl_on_host
    from .plan.steps import run_dir
    from .render import inspect_table

    file = _snapshot_input(o.from_snapshot) if o.from_snapshot else None
    report = guarded(lambda: inspect_cluster(inv, allow_quorum=o.allow_quorum,
                                             exclude=o.exclude or ()))
    if report.decision.refused and file is None:
        inspect_table(report, err)
        fail(RefusedError(f"no plan: {report.decision.reason}"))
    configs = guarded(lambda: read_configs(inv, report))
    new_binary = None
    if o.etcd_binary is not None:
        if inv.runtime != "systemd":
            fail(UsageError("--etcd-binary applies to a systemd cluster; for a static pod, "
                            "give the image with --etcd-image"))
        kept = inv.member(report.decision.chosen)
        new_binary = guarded(lambda: read_new_binary(kept, o.etcd_binary, kept.unit or ""))
    run_id = run_id or new_run_id()
    tools: dict[str, Any] = {}
    if o.method == "snapshot" or file is not None:
        reachable = [inv.member(s.name) for s in report.members if s.reachable]
        if o.etcdutl:
            version, digest = _local_etcdutl(o.etcdutl)
            where = etcdutl_on_host(run_dir(run_id))
            tools = {m.name: Etcdutl(where, version, str(Path(o.etcdutl).resolve()), digest)
                     for m in reachable}
        elif inv.runtime == "systemd":
            with ThreadPoolExecutor(max_workers=max(1, len(reachable))) as pool:
                found = dict(zip([m.name for m in reachable],
                                 pool.map(read_etcdutl, reachable), strict=True))
            tools = {n: Etcdutl(f[0], f[1]) for n, f in found.items() if f is not None}
    plan = guarded(lambda: derive(
        inv, report, configs, run_id, method=o.method or "force-new-cluster",
        allow_quorum=o.allow_quorum, take_over_lock=o.take_over_lock,
        exclude=o.exclude or (), etcd_image=o.etcd_image, etcd_binary=new_binary,
        tools=tools, snapshot_file=file, bump_revision=o.bump_revision,
        skip_hash_check=o.skip_hash_check, allow_older_data=o.allow_older_data))
    extra = {**report.extra,
             **({"new_binary": new_binary} if new_binary is not None else {}),
             **({"tools": tools} if tools else {}),
             **({"snapshot_file": file} if file is not None else {})}
    if extra != report.extra:  # the planning inputs a reviewed plan keeps (planid.py)
        report = dataclasses.replace(report, extra=extra)
    return plan, report


def _execute_command(inventory: Path, pid: str, flags: list[str],
                     journal_dir: Path | None) -> str:
    """The exact command that runs the plan shown under ``pid``."""
    import shlex

    return shlex.join(["etcd-recovery", "execute", "-i", str(inventory), "--confirm", pid,
                       *flags, *(["--journal-dir", str(journal_dir)] if journal_dir else [])])


def _keep_reviewed(record: Any, jdir: Path) -> bool:
    """Save what was shown under its plan ID; a journal directory that cannot be written is
    said (the ID is then unknown to a later execute), not fatal to a command that only shows."""
    from . import planid

    try:
        planid.save(jdir, record)
    except EtcdRecoveryError as exc:
        err.print(f"warning: {exc}; `execute --confirm {record.plan_id}` will not know this "
                  "plan ID (give a writable --journal-dir)", markup=False)
        return False
    return True


def _show_plan(plan: Any, output: PlanOutput, inv: Any, pid: str | None = None,
               command: str | None = None) -> None:
    from .render import plan_table
    from .runbook import plan_markdown

    if output is PlanOutput.json:
        print_json({"plan_id": pid, **plan.to_json()} if pid else plan.to_json())
        if pid and command:
            err.print(f"plan ID {pid}; run it with: {command}", markup=False)
    elif output is PlanOutput.markdown:
        sys.stdout.write(plan_markdown(plan, inv, plan_id=pid, command=command))
    else:
        plan_table(plan, out)
        if pid:
            out.print(f"plan ID: {pid}", markup=False)
        if command:
            out.print(f"to carry out exactly this plan: {command}", markup=False)


@app.command()
def plan(inventory: InventoryOpt,
         output: Annotated[PlanOutput, typer.Option(
             "--output", "-o", help="table, json or markdown (a runbook of shell blocks a "
             "person can paste).")] = PlanOutput.table,
         save: Annotated[Path | None, typer.Option(
             "--save", metavar="FILE", help="Also write the plan (JSON, with its state "
             "fingerprint) to FILE, mode 0600, for execute --plan.")] = None,
         allow_quorum: AllowQuorumOpt = False, take_over_lock: TakeOverOpt = False,
         exclude: ExcludeOpt = None, etcd_image: EtcdImageOpt = None,
         etcd_binary: EtcdBinaryOpt = None, journal_dir: JournalDirOpt = None,
         method: MethodOpt = None, from_snapshot: FromSnapshotOpt = None,
         bump_revision: BumpOpt = None, etcdutl: EtcdutlOpt = None,
         skip_hash_check: SkipHashOpt = False, allow_older_data: OlderDataOpt = False) -> None:
    """Lay out every step of the recovery; nothing is changed.

    Inspects the members, chooses the member to keep, and shows each step's precondition,
    actions and check: as a table, JSON, or a Markdown runbook. It ends with the plan's ID
    and the command that carries out exactly this plan (execute --confirm PLAN_ID); what was
    shown is kept under that ID in the journal directory.
    """
    from . import planid

    inv = _load(inventory)
    the_plan, report = _derive_plan(inv, planid.Options(
        allow_quorum, take_over_lock, tuple(exclude or ()), etcd_image, etcd_binary, method,
        bump_revision, etcdutl, from_snapshot, skip_hash_check, allow_older_data))
    record = planid.review(the_plan, inv, report, report.extra.get("new_binary"))
    kept = _keep_reviewed(record, _journal_dir(inventory, journal_dir))
    command = _execute_command(inventory, record.plan_id, record.options.flags(),
                               journal_dir) if kept else None
    _show_plan(the_plan, output, inv, record.plan_id, command)
    if save is not None:
        try:
            write_private(save, json.dumps({"plan_id": record.plan_id, **the_plan.to_json()},
                                           indent=2) + "\n")
        except OSError as exc:
            fail(UsageError(f"{save}: cannot write the plan: {exc.strerror or exc}"))
        err.print(f"plan saved to {save}")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole, mode 0600 whatever the umask (a plan names the
    cluster's hosts, paths and certificates, like the journal): a temporary file beside it,
    created 0600, then renamed over it, so an existing file's wider mode does not stay."""
    import contextlib
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _confirmed_journal(the_plan: Any, confirm: bool, jdir: Path) -> Any:
    """Without --confirm show the plan and stop there (exit 4: shown, not run); else open its
    journal."""
    from .journal import Journal
    from .render import plan_table

    if not confirm:
        plan_table(the_plan, err)
        err.print(f"dry run: nothing was changed. Add --confirm to carry out this plan "
                  f"(exit {EXIT_DRY_RUN}: shown, not run).")
        raise typer.Exit(EXIT_DRY_RUN)
    err.print(f"run {the_plan.run_id}: keep {the_plan.chosen}; {len(the_plan.steps)} steps "
              f"(journal in {jdir})", markup=False)
    return guarded(lambda: Journal.create(jdir, the_plan))


def _run(inv: Any, the_plan: Any, journal: Any, verbose: bool,
         check_fingerprint: bool, planned_from: Any = None) -> Any:
    """Run the plan; ``planned_from``: the inspection this invocation just made it from."""
    import contextlib

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .executor import Executor

    kw: dict[str, Any] = dict(verbose=verbose, check_fingerprint=check_fingerprint,
                              planned_from=planned_from)
    if not err.is_terminal:  # plain lines for logs and pipes
        return guarded(Executor(inv, the_plan, journal,
                                log=lambda msg: err.print(msg, markup=False), **kw).run)
    # On a terminal: finished steps as lines, and a live line per running step with its time.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                        TimeElapsedColumn(), console=err, transient=True)
    tasks: dict[str, Any] = {}

    def on_step(event: str, step: Any) -> None:
        if event == "start":
            tasks[step.id] = progress.add_task(f"{step.id}: {step.title}"[:100])
        elif step.id in tasks:
            progress.remove_task(tasks.pop(step.id))

    def log(msg: str) -> None:
        if verbose or ": done" in msg or "WARNING" in msg or not msg.startswith("["):
            progress.console.print(msg, markup=False, highlight=False)

    with contextlib.ExitStack() as stack:
        stack.enter_context(progress)
        return guarded(Executor(inv, the_plan, journal, log=log, on_step=on_step, **kw).run)


def _journal_dir(inventory: Path, journal_dir: Path | None) -> Path:
    return journal_dir or inventory.resolve().parent / ".etcd-recovery"


def _load_saved_plan(plan_file: Path) -> Any:
    from .plan.steps import Plan

    try:
        data = json.loads(plan_file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        fail(UsageError(f"{plan_file}: cannot read the plan: {exc}"))
    except ValueError as exc:
        fail(UsageError(f"{plan_file}: not JSON: {exc}"))
    try:
        return Plan.from_json(data, str(plan_file))
    except FormatError as exc:  # a saved plan that is not one: a usage error, exit 2
        fail(UsageError(str(exc)))


@app.command()
def execute(inventory: InventoryOpt,
            plan_id: Annotated[str | None, typer.Argument(
                metavar="PLAN_ID", help="The ID `plan` printed: the plan derived now from "
                "the inventory and the live state runs only if it has this ID (what was "
                "reviewed is what runs); otherwise exit 3, naming the first difference. "
                "Without it, --confirm derives the plan and runs it in one go (for scripts: "
                "it prints the steps and the ID first, and the journal records the run as not "
                "bound to a reviewed plan).")] = None,
            confirm: Annotated[bool, typer.Option(
                "--confirm", help="Really act: execute -i FILE --confirm PLAN_ID. Without "
                "it, execute shows the whole plan and its ID and exits 4, changing "
                "nothing.")] = False,
            plan_file: Annotated[Path | None, typer.Option(
                "--plan", metavar="FILE", help="Run this saved plan: loaded strictly, then "
                "derived again from the inventory and the live state; it runs only if both "
                "agree on every action. A flag the saved plan contradicts is refused (exit "
                "2).")] = None,
            resume: Annotated[bool, typer.Option(
                "--resume", help="Continue the unfinished run from its journal, once its "
                "plan, derived again from the journal and the inventory, is still the "
                "journaled one.")] = False,
            take_over_lock: TakeOverOpt = False,
            journal_dir: JournalDirOpt = None,
            allow_quorum: AllowQuorumOpt = False,
            abandon: Annotated[bool, typer.Option(
                "--abandon", help="Give up the unfinished run (its journal is kept; its host "
                "locks then need --take-over-lock) so that a new plan can be made.")] = False,
            verbose: VerboseOpt = False, exclude: ExcludeOpt = None,
            etcd_image: EtcdImageOpt = None, etcd_binary: EtcdBinaryOpt = None,
            output: OutputOpt = Output.table, method: MethodOpt = None,
            from_snapshot: FromSnapshotOpt = None, bump_revision: BumpOpt = None,
            etcdutl: EtcdutlOpt = None, skip_hash_check: SkipHashOpt = False,
            allow_older_data: OlderDataOpt = False) -> None:
    """Carry out the plan step by step (needs --confirm).

    execute -i FILE --confirm PLAN_ID runs the plan `plan` showed under that ID, and only
    that. Every action is journaled; an interrupted run goes on with --resume. Without
    --confirm it shows the plan and its ID and exits 4 (shown, not run), changing nothing.
    """
    from . import planid
    from .journal import Journal
    from .render import summary_table

    jdir = _journal_dir(inventory, journal_dir)
    inv = _load(inventory)
    if plan_id is not None:
        guarded(lambda: planid.check_id_form(plan_id))
    given = planid.Options(allow_quorum, take_over_lock, tuple(exclude or ()), etcd_image,
                           etcd_binary, method, bump_revision, etcdutl, from_snapshot,
                           skip_hash_check, allow_older_data)
    current = guarded(lambda: Journal.current(jdir))
    if abandon:
        if current is None:
            fail(UsageError(f"nothing to abandon: no unfinished run in {jdir}"))
        current.abandon()
        err.print(f"run {current.run_id} abandoned; its journal stays in {jdir}. Look at the "
                  "cluster (etcd-recovery inspect) before planning again.")
        return
    planned_from = None
    if resume:
        if current is None:
            fail(UsageError(f"nothing to resume: no unfinished run in {jdir}"))
        the_plan = guarded(current.load_plan)
        guarded(lambda: planid.refuse_contradictions(planid.options_of(the_plan), given,
                                                     f"run {current.run_id}'s plan"))
        guarded(lambda: _check_resumed(current, the_plan, inv, plan_id, jdir, inventory))
        journal = current
        if not confirm:
            from .render import plan_table

            plan_table(the_plan, err)
            err.print(f"resume: nothing was changed. Add --confirm to continue this run "
                      f"(exit {EXIT_DRY_RUN}: shown, not run).")
            raise typer.Exit(EXIT_DRY_RUN)
    else:
        if current is not None:
            fail(RefusedError(f"run {current.run_id} is unfinished (journal in {jdir}): "
                              "continue it with --resume"))
        if plan_file is not None:
            saved = _load_saved_plan(plan_file)
            o = planid.options_of(saved)
            guarded(lambda: planid.refuse_contradictions(o, given,
                                                         f"the saved plan {plan_file}"))
            derived, planned_from = _derive_plan(inv, o, run_id=saved.run_id)
            diff = saved.first_difference(derived)
            if diff is not None:
                fail(RefusedError(f"{plan_file}: the saved plan is not what this inventory "
                                  f"and the cluster's state give now: {diff}. Nothing was "
                                  "changed; make a new plan"))
            the_plan = saved
        elif plan_id is not None:
            reviewed = guarded(lambda: planid.load(jdir, plan_id, str(inventory)))
            o = reviewed.options
            guarded(lambda: planid.refuse_contradictions(o, given, f"plan {plan_id}"))
            the_plan, planned_from = _derive_plan(inv, o)
        else:
            the_plan, planned_from = _derive_plan(inv, given)
        record = planid.review(the_plan, inv, planned_from,
                               planned_from.extra.get("new_binary"))
        if plan_id is not None and record.plan_id != plan_id:
            what = (planid.first_difference(reviewed, record) if plan_file is None else
                    f"the plan {plan_file} and this inventory have plan ID {record.plan_id}")
            fail(RefusedError(f"plan {plan_id} is not what this inventory and the cluster's "
                              f"state give now: {what}. Nothing was changed; review the plan "
                              f"again (`etcd-recovery plan -i {inventory}`) and run it with "
                              "the ID it prints"))
        kept = _keep_reviewed(record, jdir)
        bound = plan_id is not None or plan_file is not None
        journal = _start_journal(the_plan, record.plan_id, bound, confirm, jdir,
                                 _execute_command(inventory, record.plan_id,
                                                  record.options.flags(), journal_dir)
                                 if kept else None)
    summary = _run(inv, the_plan, journal, verbose, check_fingerprint=not resume,
                   planned_from=None if resume else planned_from)
    later = {name: f"etcd-recovery rejoin {name} -i {inventory}"
             for name in the_plan.rejoin_later}
    if output is Output.json:
        print_json({**summary.to_json(), "rejoin_later": later})
    else:
        summary_table(summary, out)
    for name, command in later.items():
        err.print(f"{name} was unreachable: once it is back, run `{command}`", markup=False)


def _start_journal(the_plan: Any, pid: str, bound: bool, confirm: bool, jdir: Path,
                   command: str | None) -> Any:
    """Without --confirm: show the whole plan and its ID and stop (exit 4: shown, not run).
    With it: open the run's journal, its run-start recording whether the run is bound to a
    reviewed plan; a run that is not (bare --confirm) shows its steps and ID first."""
    from .journal import Journal
    from .render import minority_line, plan_table

    if not confirm:
        plan_table(the_plan, err)
        err.print(f"plan ID: {pid}", markup=False)
        err.print(f"dry run: nothing was changed. Add --confirm to carry out this plan "
                  f"(exit {EXIT_DRY_RUN}: shown, not run)"
                  + (f": {command}" if command else "."), markup=False)
        raise typer.Exit(EXIT_DRY_RUN)
    if not bound:
        plan_table(the_plan, err)
        err.print(f"plan ID {pid}: not bound to a reviewed plan (--confirm without a plan "
                  "ID derives the plan and runs it in one go)", markup=False)
    elif the_plan.minority_read:  # plan_table said it above when not bound
        err.print(minority_line(the_plan.minority_read))
    err.print(f"run {the_plan.run_id}: plan {pid}" + (" (as reviewed)" if bound else "")
              + f"; keep {the_plan.chosen}; {len(the_plan.steps)} steps (journal in {jdir})",
              markup=False)
    return guarded(lambda: Journal.create(jdir, the_plan,
                                          start_detail={"bound": bound, "plan_id": pid}))


def _check_resumed(journal: Any, the_plan: Any, inv: Any, given: str | None, jdir: Path,
                   inventory: Path) -> None:
    """A resumed run goes on only with the plan it started with: the journaled plan and
    today's inventory still have the run's plan ID, and the plan derived again from the
    planning inputs kept at its start and today's inventory is the journaled one. Refused
    (exit 3) with the first difference otherwise."""
    from . import planid

    binding = journal.binding()
    if binding is None:  # a run started before plan IDs were journaled: nothing to hold to
        err.print(f"warning: run {journal.run_id} has no plan ID in its journal; its plan is "
                  "run as journaled", markup=False)
        return
    started = str(binding["plan_id"])
    if given is not None and given != started:
        raise RefusedError(f"run {journal.run_id} runs plan {started}, not {given}; nothing "
                           "was changed")
    how = (f"Nothing was changed. Resume with the inventory and tool the run started with, "
           f"or close the run (`etcd-recovery execute -i {inventory} --abandon`) and make a "
           "new plan")
    try:
        record = planid.load(jdir, started, str(inventory))
    except RefusedError:
        record = None
    now = planid.plan_id(the_plan, inv)
    if now != started:
        what = (f"plan ID {started} then, {now} now" if record is None else
                planid.first_difference(record, planid.Reviewed(
                    plan_id=now, plan=the_plan, inventory=planid.inventory_facts(inv),
                    state=record.state, options=planid.options_of(the_plan))))
        raise RefusedError(f"run {journal.run_id}: its journaled plan is not the plan it "
                           f"started with: {what}. {how}")
    if record is None or not record.inputs:
        err.print(f"warning: the planning inputs of plan {started} are not in {jdir}; the "
                  "journaled plan is checked against its ID only", markup=False)
        return
    try:
        derived = planid.rederive(record, inv, journal.run_id)
    except EtcdRecoveryError as exc:
        raise RefusedError(f"run {journal.run_id}: its plan cannot be derived again from "
                           f"what it was made from and this inventory: {exc}. {how}") from exc
    diff = planid.plan_difference(the_plan, derived)
    if diff is not None:
        raise RefusedError(f"run {journal.run_id}: derived again from what it was made from "
                           f"and this inventory, its plan differs from the journaled one: "
                           f"{diff}. {how}")


@app.command()
def rejoin(name: Annotated[str, typer.Argument(metavar="MEMBER",
                                               help="Inventory member to bring back.")],
           inventory: InventoryOpt,
           confirm: Annotated[bool, typer.Option("--confirm", help="Really act.")] = False,
           take_over_lock: TakeOverOpt = False,
           journal_dir: JournalDirOpt = None,
           verbose: VerboseOpt = False,
           output: OutputOpt = Output.table) -> None:
    """Bring one member back into the healthy cluster.

    For a host that was unreachable during the recovery, or one that came back: fence it, back
    it up, move its stale data aside, add it as a learner, start it, promote it, verify.
    Without --confirm it shows the plan and exits 4 (shown, not run), changing nothing.
    """
    from .inspect import inspect_cluster, read_configs
    from .journal import Journal
    from .plan.rejoin import make_rejoin_plan
    from .render import summary_table

    jdir = _journal_dir(inventory, journal_dir)
    inv = guarded(lambda: load_inventory(inventory, check_files=True))
    member = guarded(lambda: inv.member(name))
    current = guarded(lambda: Journal.current(jdir))
    if current is not None:
        fail(RefusedError(f"run {current.run_id} is unfinished (journal in {jdir}): "
                          "continue it with `execute --resume`"))
    report = guarded(lambda: inspect_cluster(inv))
    if report.decision.refused == "inventory":
        fail(RefusedError(f"no plan: {report.decision.reason}"))
    if not report.quorum.has_quorum or report.quorum.via is None:
        fail(RefusedError("the cluster has no quorum: recover it first with `etcd-recovery "
                          "execute`; rejoin adds a member to a healthy cluster"))
    st = next(s for s in report.members if s.name == name)
    if not st.reachable:
        fail(RefusedError(f"{name} is not reachable: {st.error}"))
    configs = guarded(lambda: read_configs(inv, report, members=[member]))
    if name not in configs:
        fail(RefusedError(f"{name}: its etcd configuration could not be read"))
    via = report.quorum.via if report.quorum.via != name else next(
        s.name for s in report.members if s.source == "live" and s.name != name)
    membership = next(s.membership for s in report.members if s.name == via)
    the_plan = guarded(lambda: make_rejoin_plan(inv, name, via, configs[name], new_run_id(),
                                                membership, take_over_lock))
    journal = _confirmed_journal(the_plan, confirm, jdir)
    summary = _run(inv, the_plan, journal, verbose, check_fingerprint=False)
    if output is Output.json:
        print_json(summary.to_json())
    else:
        summary_table(summary, out)


@app.command()
def verify(inventory: InventoryOpt, output: OutputOpt = Output.table) -> None:
    """Check that the cluster is whole and consistent.

    The membership as a member reads it; on each member of it: voting, a leader, no errors,
    the same revision and equal HashKV, no alarms, no --force-new-cluster left. Exit 0 when
    every member of the membership was checked and all of it holds; 1 when something does
    not, or a member of the membership could not be checked.
    """
    from .session import Session, reachable_members
    from .verify import verify_standalone

    inv = guarded(lambda: load_inventory(inventory, check_files=True))
    names, unreachable = guarded(lambda: reachable_members(inv))

    def run() -> Any:
        with Session(inv) as session:
            return verify_standalone(session, names, unreachable)

    report = guarded(run)
    if output is Output.json:
        print_json(report.to_json(str(inventory)))
    else:
        for line in report.lines(str(inventory)):
            out.print(line, markup=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@inventory_app.command("check")
def inventory_check(inventory: InventoryOpt, output: OutputOpt = Output.table) -> None:
    """Validate an inventory file and show what it describes."""
    inv = guarded(lambda: load_inventory(inventory, check_files=True))
    if output is Output.json:
        print_json({"cluster": inv.name, "runtime": inv.runtime,
                    "members": [{"name": m.name, "ssh_host": m.ssh.host,
                                 "peer_url": m.peer_url, "client_url": m.client_url,
                                 "data_dir": m.data_dir} for m in inv.members]})
        return
    table = Table(title=f"{inv.path}: cluster {inv.name} ({inv.runtime})")
    for col in ("member", "ssh", "client URL", "peer URL", "data dir"):
        table.add_column(col, overflow="fold")  # a long value wraps; it is never cut
    for m in inv.members:
        user = f"{m.ssh.user}@" if m.ssh.user else ""
        port = f":{m.ssh.port}" if m.ssh.port else ""
        table.add_row(m.name, f"{user}{m.ssh.host}{port}", m.client_url, m.peer_url, m.data_dir)
    out.print(table, soft_wrap=False)  # a long title wraps too


SshUserOpt = Annotated[str | None, typer.Option("--user", metavar="USER", help="SSH user.")]
SshPortOpt = Annotated[int | None, typer.Option("--port", metavar="PORT", help="SSH port.")]
IdentityOpt = Annotated[Path | None, typer.Option(
    "--identity-file", metavar="FILE", help="SSH private key (default: the agent and "
    "~/.ssh/config).")]
KnownHostsOpt = Annotated[Path | None, typer.Option(
    "--known-hosts", metavar="FILE", help="known_hosts file to check the hosts' keys against "
    "(default: ~/.ssh/config's UserKnownHostsFile, else ~/.ssh/known_hosts).")]
JumpOpt = Annotated[str | None, typer.Option(
    "--jump", metavar="[USER@]HOST[:PORT]", help="Reach the hosts through this jump host "
    "(ProxyJump).")]
SudoOpt = Annotated[bool, typer.Option("--sudo", help="Read through sudo -n (a non-root "
                                                      "user).")]
ClusterOpt = Annotated[str | None, typer.Option(
    "--cluster", metavar="NAME", help="Cluster name (default: from the cluster token).")]
OutFileOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", metavar="FILE", help="Write the inventory here (default: stdout).")]
FetchOpt = Annotated[Path | None, typer.Option(
    "--fetch-client-cert", metavar="DIR", help="Copy a client certificate (kubeadm's "
    "healthcheck-client, else the member's peer certificate) and the CA from a host into this "
    "directory (mode 0600) and use them.")]


def _abs(p: Path | None) -> str | None:
    return str(p.expanduser().resolve()) if p else None


def _read_remote(t: Any, path: str) -> bytes:
    src = t.open_file(path, sudo=True)
    data: bytes = src.read(0, src.size())
    return data


def _write_discovered(hosts: list[Any], common: dict[str, Any], cluster: str | None,
                      output_file: Path | None, fetch_client_cert: Path | None,
                      origin: str) -> None:
    """Probe ``hosts`` (ImportedHost: address, member name, per-host SSH), then write the
    inventory, or report the problems (exit 3) and write nothing."""
    import yaml

    from .discover import client_files_of, inventory_from, local_names, probe_all
    from .inventory import SshTarget
    from .transport.factory import host_target
    from .transport.ssh import SshTransport

    by_address = {h.address: h for h in hosts}

    def per_host(address: str) -> dict[str, Any]:
        h = by_address[address]
        mine = {"user": h.user, "port": h.port, "identity_file": h.identity_file}
        return {**common, **{k: v for k, v in mine.items() if v is not None}}

    def connect(address: str) -> Any:
        o = per_host(address)
        return SshTransport(address, host_target(SshTarget(
            host=address, port=o.get("port"), user=o.get("user"),
            identity_file=o.get("identity_file"), known_hosts=o.get("known_hosts"),
            jump=o.get("jump"), sudo=bool(o.get("sudo")))))

    findings = guarded(lambda: probe_all(list(by_address), connect))
    tls: dict[str, str] | None = None
    if fetch_client_cert is not None:
        got = client_files_of(findings)
        if got is None:
            fail(RefusedError("--fetch-client-cert: no reachable host holds a client "
                              "certificate (kubeadm's healthcheck-client or a peer certificate)"))
        finding, remote = got
        names = local_names(remote)
        fetch_client_cert.mkdir(parents=True, exist_ok=True, mode=0o700)
        t = connect(finding.address)
        try:
            for path, name in zip(remote, names, strict=True):
                data = guarded(lambda p=path: _read_remote(t, p))  # type: ignore[misc]
                dest = fetch_client_cert / name
                dest.touch(mode=0o600, exist_ok=True)
                dest.chmod(0o600)
                dest.write_bytes(data)
        finally:
            t.close()
        d = fetch_client_cert.resolve()
        tls = {"ca": str(d / names[0]), "cert": str(d / names[1]), "key": str(d / names[2])}
        err.print(f"client certificate from {finding.address}:{remote[1]} copied to {d}",
                  markup=False)
    found = inventory_from(findings, cluster, {k: v for k, v in common.items()
                                               if v not in (None, False)}, tls)
    for m in found.inventory["members"]:
        h = by_address.get(m["ssh"]["host"]) or next(
            (x for x in hosts if x.member_name == m["name"]), None)
        if h is None:
            continue
        own = {k: v for k, v in (("host", h.address), ("user", h.user), ("port", h.port),
                                 ("identity_file", h.identity_file)) if v is not None}
        m["ssh"] = {**m["ssh"], **own}
        if h.member_name and h.member_name != m["name"] and m["ssh"]["host"] == h.address:
            found.problems.append(f"{origin} names {h.address} member {h.member_name!r}, but "
                                  f"its etcd is named {m['name']!r}")
    for problem in found.problems:
        err.print(f"problem: {problem}", markup=False)
    if found.problems:
        fail(RefusedError(f"{len(found.problems)} problem(s) above; nothing was written "
                          "(hosts that disagree are not merged)"))
    text = "".join(f"# {line}\n" for line in (
        f"Inventory discovered from {origin}.", *(f"MISSING: {m}" for m in found.missing))) \
        + yaml.safe_dump(found.inventory, sort_keys=False)
    for m in found.missing:
        err.print(f"missing: {m}", markup=False)
    if output_file is None:
        sys.stdout.write(text)
        return
    try:
        output_file.write_text(text)
    except OSError as exc:
        fail(UsageError(f"{output_file}: cannot write: {exc.strerror or exc}"))
    err.print(f"inventory written to {output_file}", markup=False)


@inventory_app.command("discover")
def inventory_discover(
        hosts: Annotated[list[str], typer.Argument(metavar="HOST",
                                                   help="The hosts' addresses (or ~/.ssh/config "
                                                        "aliases).")],
        user: SshUserOpt = None, port: SshPortOpt = None, identity_file: IdentityOpt = None,
        known_hosts: KnownHostsOpt = None, jump: JumpOpt = None, sudo: SudoOpt = False,
        cluster: ClusterOpt = None, output_file: OutFileOpt = None,
        fetch_client_cert: FetchOpt = None) -> None:
    """Write an inventory from what the hosts say about their etcd.

    Each host's kubeadm manifest, else its etcd.service and environment file, else the running
    process. Hosts that disagree are reported (exit 3), never merged.
    """
    from .importer import ImportedHost

    common = {"user": user, "port": port, "identity_file": _abs(identity_file),
              "known_hosts": _abs(known_hosts), "jump": jump, "sudo": sudo or None}
    _write_discovered([ImportedHost(h) for h in hosts], common, cluster, output_file,
                      fetch_client_cert, ", ".join(hosts))


@inventory_app.command("import")
def inventory_import(
        source: Annotated[Path, typer.Argument(metavar="SOURCE",
                                               help="A kubespray / Ansible inventory (YAML or "
                                                    "INI, the etcd group) or vmware/etcd-"
                                                    "recovery's hosts.json.")],
        known_hosts: KnownHostsOpt = None, jump: JumpOpt = None, sudo: SudoOpt = False,
        cluster: ClusterOpt = None, output_file: OutFileOpt = None,
        fetch_client_cert: FetchOpt = None) -> None:
    """Write an inventory from one people keep (Ansible, hosts.json).

    SOURCE is a kubespray / Ansible inventory or vmware/etcd-recovery's hosts.json. The hosts
    and their SSH settings come from SOURCE; what it does not say is read from the hosts (as
    discover does) or stated as missing.
    """
    from .importer import ImportedHost, parse_source

    try:
        text = source.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(UsageError(f"{source}: cannot read: {exc}"))
    hosts = guarded(lambda: parse_source(text, str(source)))
    base = source.resolve().parent
    hosts = [ImportedHost(h.address, h.member_name, h.user, h.port,
                          str((base / Path(h.identity_file).expanduser()).resolve())
                          if h.identity_file else None) for h in hosts]
    common = {"known_hosts": _abs(known_hosts), "jump": jump, "sudo": sudo or None}
    _write_discovered(hosts, common, cluster, output_file, fetch_client_cert, str(source))


# ------------------------------------------------------------------------------- doctor

class DoctorOutput(StrEnum):
    table = "table"
    json = "json"
    prometheus = "prometheus"


@app.command()
def doctor(inventory: InventoryOpt,
           output: Annotated[DoctorOutput, typer.Option(
               "--output", "-o", help="table, json (a stable schema) or prometheus (the "
               "node_exporter textfile collector format).")] = DoctorOutput.table,
           check: Annotated[list[str] | None, typer.Option(
               "--check", metavar="NAME", help="Run only this check (repeatable).")] = None
           ) -> None:
    """Check a running cluster and rehearse its recovery.

    Nothing is changed. etcd-diagnosis' checks (membership, endpoint status, DB quota and
    fragmentation, read latencies, metrics percentiles) and what only SSH sees (certificates,
    versions, disk, clocks, membership hygiene, alarms, the recovery rehearsed). Exit 0 all
    ok, 1 a warning, 2 a usage or inventory error, 3 a failed check.
    """
    inv = _load(inventory)
    from .doctor import output as doctor_output
    from .doctor.run import check_names
    from .doctor.run import doctor as run_doctor

    names = guarded(lambda: check_names(check or []))
    report = guarded(lambda: run_doctor(inv, names))
    if output is DoctorOutput.json:
        print_json(report.to_json())
    elif output is DoctorOutput.prometheus:
        sys.stdout.write(doctor_output.prometheus(report))
    else:
        doctor_output.table(report, out)
    raise typer.Exit(report.exit_code)


# ------------------------------------------------------------------------------------ lab

def _lab(lab_dir: Path) -> Any:
    from .lab.lab import Lab

    return Lab(lab_dir, log=lambda msg: err.print(f"[lab] {msg}"))


class Runtime(StrEnum):
    static_pod = "static-pod"
    systemd = "systemd"


@lab_app.command("up")
def lab_up(members: Annotated[int, typer.Option(metavar="N",
                                                help="3 or 5 (1-9 accepted).")] = 3,
           runtime: Annotated[Runtime, typer.Option(
               help="How the hosts run etcd: a kubelet static pod or a systemd unit."
               )] = Runtime.static_pod,
           etcd_version: Annotated[str, typer.Option(
               "--etcd-version", help="An installed etcd: exact (3.5.30) or a minor (3.5: its "
               "newest build); a comma list gives one per host, the last repeating "
               "(3.5.16,3.5.16,3.5.30).")] = "3.5",
           etcd_binary: Annotated[Path | None, typer.Option(
               "--etcd-binary", metavar="DIR", help="A directory holding any etcd build (etcd, "
               "etcdctl): every host runs it instead of --etcd-version.")] = None,
           keys: Annotated[int, typer.Option(metavar="N",
                                             help="Keys to load once healthy.")] = 1000,
           auth: Annotated[bool, typer.Option(help="Turn on etcd user/password auth (user "
                                               "root; password in <dir>/etcd-root-password)."
                                               )] = False,
           wal_dir: Annotated[str, typer.Option(
               "--wal-dir", metavar="DIR", help="Give every member a WAL dir of its own "
               "(etcd's --wal-dir DIR) on a disk of its own, mounted on DIR's parent "
               "directory, e.g. /var/lib/etcd-wal/wal.")] = "",
           data_disk: Annotated[bool, typer.Option(
               "--data-disk", help="Put every member's data dir (/var/lib/etcd) on a disk of "
               "its own, as on a production host.")] = False,
           lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Start the hosts and a healthy TLS cluster, with keys loaded.

    The hosts' image is built first (offline, cached) or reused.
    """
    lab = _lab(lab_dir)
    state = guarded(lambda: lab.up(members=members, runtime=runtime.value,
                                   version=etcd_version, keys=keys, auth=auth,
                                   wal_dir=wal_dir, data_disk=data_disk,
                                   etcd_binary=None if etcd_binary is None
                                   else str(etcd_binary)))
    out.print(f"lab {state.id}: {len(state.hosts)} members, {state.runtime}, "
              f"etcd {', '.join(dict.fromkeys(state.versions))}, in {lab.dir}")
    for h in state.hosts:
        out.print(f"  {h.name:8} ssh root@{h.mgmt_ip}  client {h.client_url}  "
                  f"peer {h.peer_url}  etcd {state.version_of(h)}")
    if state.wal_dir:
        from .lab.configs import wal_mount

        out.print(f"WAL dir:   {state.wal_dir} on every host (its own disk, mounted on "
                  f"{wal_mount(state.wal_dir)})")
    if state.data_disk:
        out.print("data dir:  /var/lib/etcd on every host (its own disk)")
    out.print(f"inventory: {lab.inventory_path}")
    out.print(f"SSH:       ssh -i {lab.dir}/ssh/id_ed25519 -o UserKnownHostsFile="
              f"{lab.dir}/known_hosts root@{state.hosts[0].mgmt_ip}")
    out.print(f"etcdctl:   eval \"$(etcd-recovery lab env --dir {lab.dir})\"; "
              "etcdctl endpoint health")


@lab_app.command("status")
def lab_status(lab_dir: LabDirOpt = Path(".lab"), output: OutputOpt = Output.table) -> None:
    """Each host's addresses and state, and the cluster's health.

    Exit 1 when the lab's cluster is not fully healthy.
    """
    lab = _lab(lab_dir)
    status = guarded(lambda: lab.status())
    if output is Output.json:
        print_json(status)
    else:
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
        out.print(table, soft_wrap=False)  # a long title wraps too
        quorum = "has quorum" if status["quorum"] else "has LOST quorum"
        out.print(f"cluster: {status['healthy_members']}/{status['members']} members healthy; "
                  f"{quorum}")
    if not status["healthy"]:
        raise typer.Exit(1)


@lab_app.command("env")
def lab_env(lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Shell exports for etcdctl: eval "$(etcd-recovery lab env)"."""
    lab = _lab(lab_dir)
    for line in guarded(lambda: lab.env_lines()):
        sys.stdout.write(line + "\n")


def _fault(verb: str, help_text: str) -> None:
    def command(name: Annotated[str, typer.Argument(metavar="HOST",
                                                    help="Lab host name, e.g. etcd-2.")],
                lab_dir: LabDirOpt = Path(".lab")) -> None:
        lab = _lab(lab_dir)
        guarded(lambda: getattr(lab, verb.replace("-", "_"))(name))
        out.print(f"{verb} {name}: done")

    command.__doc__ = help_text
    lab_app.command(verb)(command)


_fault("stop-etcd", "SIGKILL etcd on a host and keep it down (data left as is).")
_fault("start-etcd", "Let etcd run again on a host after stop-etcd.")
_fault("kill-host", "Make a host gone: SSH and etcd unreachable (disk kept).")
_fault("revive-host", "Boot a killed host again.")
_fault("partition", "Cut a host from its peers; it stays reachable over SSH.")
_fault("heal", "Reconnect a partitioned host to its peers.")


@lab_app.command("down")
def lab_down(lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Remove every container, network and file this lab made.

    Nothing else is removed.
    """
    lab = _lab(lab_dir)
    removed = guarded(lambda: lab.down())
    out.print(f"removed {len(removed)} lab objects" + (": " + ", ".join(removed)
                                                       if removed else ""))


def main() -> None:
    import logging

    # Library chatter (paramiko's channel messages) would bury what the tool itself says;
    # failures reach the operator through the tool's own errors.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    logging.getLogger("etcd_recovery.transport").setLevel(logging.CRITICAL)
    try:
        app(standalone_mode=True)
    except EtcdRecoveryError as exc:  # one that escaped a command's own handling
        err.print(f"error: {exc}", markup=False)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        raise SystemExit(130) from None
    except Exception as exc:  # a bug: say what and where, never a traceback
        import traceback

        frame = traceback.extract_tb(exc.__traceback__)[-1]
        err.print(f"internal error: {exc.__class__.__name__}: {exc} (at "
                  f"{Path(frame.filename).name}:{frame.lineno}); nothing after this point "
                  "was done. Please report it with the command line that caused it.",
                  markup=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

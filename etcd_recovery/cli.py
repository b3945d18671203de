"""The command line: parse, build the options' values, call, render. No decision is made here:
the plan/execute/rejoin workflow is runs.py, inventory discovery discover.py, what is shown
render.py; an error becomes its one-line message and exit code (:func:`fail`, :func:`guarded`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from . import __version__
from .errors import (
    EXIT_DRY_RUN,
    EXIT_FAILED,
    EXIT_REFUSED,
    EtcdRecoveryError,
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


class PlanOutput(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


class DoctorOutput(StrEnum):
    table = "table"
    json = "json"
    prometheus = "prometheus"


class Runtime(StrEnum):
    static_pod = "static-pod"
    systemd = "systemd"


# ----------------------------------------------------------------------- options, arguments

def _opt(spec: str, text: str, **kw: Any) -> Any:
    """A typer option. ``spec``: its flags and metavar as help shows them ("--etcd-image
    IMAGE", "--verbose -v", "N"; without a flag typer makes one of the parameter's name).
    ``text``: its help as prose, whose line breaks and indentation are single spaces."""
    words = spec.split()
    metavar = next((w for w in words if not w.startswith("-")), None)
    return typer.Option(*(w for w in words if w.startswith("-")), metavar=metavar,
                        help=" ".join(text.split()), **kw)


def _arg(metavar: str, text: str) -> Any:
    """A typer argument, its help as in :func:`_opt`."""
    return typer.Argument(metavar=metavar, help=" ".join(text.split()))


InventoryOpt = Annotated[Path, _opt("--inventory -i FILE", "Inventory YAML file.")]
OutputOpt = Annotated[Output, _opt("--output -o", "table or json.")]
JournalDirOpt = Annotated[Path | None, _opt("--journal-dir DIR", """
    Where runs' journals, and the plans shown under their IDs, are kept on this machine
    (default: .etcd-recovery/ beside the inventory).""")]
VersionOpt = Annotated[bool, _opt("--version", "Print the version.", is_eager=True)]
InspectVerboseOpt = Annotated[bool, _opt("--verbose -v", """
    Also show how each member was read (live or disk), its member ID, raft term, commit and
    applied index, DB size, bytes read over SSH and time taken (all in -o json too).""")]

# plan and execute: the choices a plan is made with (planid.Options)
AllowQuorumOpt = Annotated[bool, _opt("--allow-quorum", """
    Rebuild the cluster from its most up-to-date member even though it still has quorum
    (every member is fenced and re-added).""")]
ExcludeOpt = Annotated[list[str] | None, _opt("--exclude MEMBER", """
    Plan without this member's data (repeatable): a reachable member whose data cannot be
    read is refused otherwise. It is only moved aside and re-added, never kept.""")]
TakeOverOpt = Annotated[bool, _opt("--take-over-lock", """
    Take the hosts' recovery lock over from a dead run (the lock step then overwrites it).""")]
EtcdImageOpt = Annotated[str | None, _opt("--etcd-image IMAGE", """
    Static pods: the image the kept member runs from --force-new-cluster on (e.g. a fixed
    etcd patch release when its own version has a bug the plan names).""")]
EtcdBinaryOpt = Annotated[str | None, _opt("--etcd-binary PATH", """
    systemd: an etcd build on the kept member's host (absolute path); the restore installs it
    where etcd.service runs etcd, the original kept in the run directory (e.g. a fixed etcd
    patch release when its own version has a bug the plan names).""")]
MethodOpt = Annotated[str | None, _opt("--method METHOD", """
    force-new-cluster (the default: the kept member restarts alone, the others rejoin as
    learners one at a time) or snapshot (one snapshot of the kept member's whole log restored
    on every member at once, with a new cluster token and a bumped revision).""")]
FromSnapshotOpt = Annotated[str | None, _opt("--from-snapshot FILE", """
    Restore every member from this snapshot file (etcdctl snapshot save, or a copied
    member/snap/db with --skip-hash-check): for when no member's data is to be trusted. FILE
    is on this machine, or MEMBER:/PATH on that member's host.""")]
BumpOpt = Annotated[int | None, _opt("--bump-revision N", """
    The snapshot method: add N to the restored revision and mark it compacted (default
    1000000000, etcd's advice for Kubernetes).""")]
EtcdutlOpt = Annotated[str | None, _opt("--etcdutl PATH", """
    The snapshot method: an etcdutl build on this machine, copied to every host's run
    directory (checked by sha256), except to a host that has the same file at PATH.
    Default: on systemd, the etcdutl beside the unit's etcd binary; on static pods, the one
    in the etcd image the manifest names, where containerd holds it (ctr images mount).""")]
SkipHashOpt = Annotated[bool, _opt("--skip-hash-check", """
    --from-snapshot: restore a file that has no integrity hash (a copied member/snap/db).""")]
OlderDataOpt = Annotated[bool, _opt("--allow-older-data", """
    --from-snapshot: restore the file although readable members hold newer data (a
    rollback).""")]

PlanOutputOpt = Annotated[PlanOutput, _opt("--output -o", """
    table, json or markdown (a runbook of shell blocks a person can paste).""")]
SaveOpt = Annotated[Path | None, _opt("--save FILE", """
    Also write the plan (JSON, with its state fingerprint) to FILE, mode 0600, for execute
    --plan.""")]
PlanIdArg = Annotated[str | None, _arg("PLAN_ID", """
    The ID `plan` printed: the plan derived now from the inventory and the live state runs
    only if it has this ID (what was reviewed is what runs); otherwise exit 3, naming the
    first difference. Without it, --confirm derives the plan and runs it in one go (for
    scripts: it prints the steps and the ID first, and the journal records the run as not
    bound to a reviewed plan).""")]
ConfirmOpt = Annotated[bool, _opt("--confirm", """
    Really act: execute -i FILE --confirm PLAN_ID. Without it, execute shows the whole plan
    and its ID and exits 4, changing nothing.""")]
PlanFileOpt = Annotated[Path | None, _opt("--plan FILE", """
    Run this saved plan: loaded strictly, then derived again from the inventory and the live
    state; it runs only if both agree on every action. A flag the saved plan contradicts is
    refused (exit 2).""")]
ResumeOpt = Annotated[bool, _opt("--resume", """
    Continue the unfinished run from its journal, once its plan, derived again from the
    journal and the inventory, is still the journaled one.""")]
AbandonOpt = Annotated[bool, _opt("--abandon", """
    Give up the unfinished run (its journal is kept; its host locks then need
    --take-over-lock) so that a new plan can be made.""")]
VerboseOpt = Annotated[bool, _opt("--verbose -v", "Show every action as it runs.")]
MemberArg = Annotated[str, _arg("MEMBER", "Inventory member to bring back.")]
ReallyOpt = Annotated[bool, _opt("--confirm", "Really act.")]

# inventory discover and import
HostsArg = Annotated[list[str], _arg("HOST", "The hosts' addresses (or ~/.ssh/config aliases).")]
SourceArg = Annotated[Path, _arg("SOURCE", """
    A kubespray / Ansible inventory (YAML or INI, the etcd group) or vmware/etcd-recovery's
    hosts.json.""")]
SshUserOpt = Annotated[str | None, _opt("--user USER", "SSH user.")]
SshPortOpt = Annotated[int | None, _opt("--port PORT", "SSH port.")]
IdentityOpt = Annotated[Path | None, _opt("--identity-file FILE", """
    SSH private key (default: the agent and ~/.ssh/config).""")]
KnownHostsOpt = Annotated[Path | None, _opt("--known-hosts FILE", """
    known_hosts file to check the hosts' keys against (default: ~/.ssh/config's
    UserKnownHostsFile, else ~/.ssh/known_hosts).""")]
JumpOpt = Annotated[str | None, _opt("--jump [USER@]HOST[:PORT]", """
    Reach the hosts through this jump host (ProxyJump).""")]
SudoOpt = Annotated[bool, _opt("--sudo", "Read through sudo -n (a non-root user).")]
ClusterOpt = Annotated[str | None, _opt("--cluster NAME", """
    Cluster name (default: from the cluster token).""")]
OutFileOpt = Annotated[Path | None, _opt("--output -o FILE", """
    Write the inventory here (default: stdout).""")]
FetchOpt = Annotated[Path | None, _opt("--fetch-client-cert DIR", """
    Copy a client certificate (kubeadm's healthcheck-client, else the member's peer
    certificate) and the CA from a host into this directory (mode 0600) and use them.""")]

DoctorOutputOpt = Annotated[DoctorOutput, _opt("--output -o", """
    table, json (a stable schema) or prometheus (the node_exporter textfile collector
    format).""")]
CheckOpt = Annotated[list[str] | None, _opt("--check NAME", "Run only this check (repeatable).")]

# lab
LabDirOpt = Annotated[Path, _opt("--dir DIR", "Directory of the lab.")]
LabHostArg = Annotated[str, _arg("HOST", "Lab host name, e.g. etcd-2.")]
MembersOpt = Annotated[int, _opt("N", "3 or 5 (1-9 accepted).")]
RuntimeOpt = Annotated[Runtime, _opt("", """
    How the hosts run etcd: a kubelet static pod or a systemd unit.""")]
EtcdVersionOpt = Annotated[str, _opt("--etcd-version", """
    An installed etcd: exact (3.5.30) or a minor (3.5: its newest build); a comma list gives
    one per host, the last repeating (3.5.16,3.5.16,3.5.30).""")]
LabBinaryOpt = Annotated[Path | None, _opt("--etcd-binary DIR", """
    A directory holding any etcd build (etcd, etcdctl): every host runs it instead of
    --etcd-version.""")]
KeysOpt = Annotated[int, _opt("N", "Keys to load once healthy.")]
AuthOpt = Annotated[bool, _opt("", """
    Turn on etcd user/password auth (user root; password in <dir>/etcd-root-password).""")]
WalDirOpt = Annotated[str, _opt("--wal-dir DIR", """
    Give every member a WAL dir of its own (etcd's --wal-dir DIR) on a disk of its own,
    mounted on DIR's parent directory, e.g. /var/lib/etcd-wal/wal.""")]
DataDiskOpt = Annotated[bool, _opt("--data-disk", """
    Put every member's data dir (/var/lib/etcd) on a disk of its own, as on a production
    host.""")]


# ----------------------------------------------------------------------- errors, output

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


def _planned(fn: Callable[[], T]) -> T:
    """:func:`guarded`, for what derives a plan: a refused inspection shows what it read
    before its refusal."""
    from .render import inspect_table
    from .runs import NoPlan

    def shown() -> T:
        try:
            return fn()
        except NoPlan as exc:
            inspect_table(exc.report, err)
            raise

    return guarded(shown)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


@app.callback()
def _root(ctx: typer.Context, version: VersionOpt = False) -> None:
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
            exclude: ExcludeOpt = None, verbose: InspectVerboseOpt = False) -> None:
    """Read every member's state over SSH; choose whom to keep.

    The member to keep is the one with the most up-to-date raft log. Exit 0 with a member
    chosen; 3 when it refuses (quorum still there, cluster IDs differ, a corrupt data dir,
    nothing readable).
    """
    inv = _load(inventory)  # before the slower imports: the hosts' TCP connects are under way
    from .render import inspect_json, inspect_table
    from .runs import inspection

    report, advice = guarded(lambda: inspection(inv, exclude=exclude or ()))
    if output is Output.json:
        print_json(inspect_json(report, advice))
    else:
        inspect_table(report, out, verbose=verbose, advice=advice)
    if report.decision.refused:
        raise typer.Exit(EXIT_REFUSED)


def _keep_reviewed(record: Any, jdir: Path, inventory: Path,
                   journal_dir: Path | None) -> str | None:
    """Keep what was shown under its plan ID; the command that runs it, or None (said) when
    the journal directory cannot keep it."""
    from .runs import keep_reviewed

    command, warning = keep_reviewed(record, jdir, inventory, journal_dir)
    if warning:
        err.print(warning, markup=False)
    return command


@app.command()
def plan(inventory: InventoryOpt, output: PlanOutputOpt = PlanOutput.table,
         save: SaveOpt = None, allow_quorum: AllowQuorumOpt = False,
         take_over_lock: TakeOverOpt = False, exclude: ExcludeOpt = None,
         etcd_image: EtcdImageOpt = None, etcd_binary: EtcdBinaryOpt = None,
         journal_dir: JournalDirOpt = None, method: MethodOpt = None,
         from_snapshot: FromSnapshotOpt = None, bump_revision: BumpOpt = None,
         etcdutl: EtcdutlOpt = None, skip_hash_check: SkipHashOpt = False,
         allow_older_data: OlderDataOpt = False) -> None:
    """Lay out every step of the recovery; nothing is changed.

    Inspects the members, chooses the member to keep, and shows each step's precondition,
    actions and check: as a table, JSON, or a Markdown runbook. It ends with the plan's ID
    and the command that carries out exactly this plan (execute --confirm PLAN_ID); what was
    shown is kept under that ID in the journal directory.
    """
    inv = _load(inventory)
    from . import planid, runs
    from .render import reviewed_plan
    from .runbook import plan_markdown

    options = runs.with_local_paths_resolved(planid.Options(
        allow_quorum, take_over_lock, tuple(exclude or ()), etcd_image, etcd_binary, method,
        bump_revision, etcdutl, from_snapshot, skip_hash_check, allow_older_data), inv)
    the_plan, report = _planned(lambda: runs.derive_plan(inv, options))
    record = planid.review(the_plan, inv, report, report.extra.get("new_binary"))
    pid = record.plan_id
    command = _keep_reviewed(record, runs.journal_dir(inventory, journal_dir), inventory,
                             journal_dir)
    if output is PlanOutput.json:
        print_json({"plan_id": pid, **the_plan.to_json()})
        if command:
            err.print(f"plan ID {pid}; run it with: {command}", markup=False)
    elif output is PlanOutput.markdown:
        sys.stdout.write(plan_markdown(the_plan, inv, plan_id=pid, command=command))
    else:
        reviewed_plan(the_plan, out, pid, command)
    if save is not None:
        guarded(lambda: runs.save_plan(save, pid, the_plan))
        err.print(f"plan saved to {save}")


def _run(inv: Any, the_plan: Any, journal: Any, verbose: bool,
         check_fingerprint: bool, planned_from: Any = None) -> Any:
    """Run the plan; ``planned_from``: the inspection this invocation just made it from."""
    from .executor import Executor
    from .render import step_progress

    with step_progress(err, verbose) as (log, on_step):
        return guarded(Executor(inv, the_plan, journal, log=log, on_step=on_step,
                                verbose=verbose, check_fingerprint=check_fingerprint,
                                planned_from=planned_from).run)


@app.command()
def execute(inventory: InventoryOpt, plan_id: PlanIdArg = None, confirm: ConfirmOpt = False,
            plan_file: PlanFileOpt = None, resume: ResumeOpt = False,
            take_over_lock: TakeOverOpt = False, journal_dir: JournalDirOpt = None,
            allow_quorum: AllowQuorumOpt = False, abandon: AbandonOpt = False,
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
    inv = _load(inventory)
    from . import planid, runs
    from .journal import Journal
    from .render import dry_run, run_start, summary_table

    jdir = runs.journal_dir(inventory, journal_dir)
    if plan_id is not None:
        guarded(lambda: planid.check_id_form(plan_id))
    given = runs.with_local_paths_resolved(planid.Options(
        allow_quorum, take_over_lock, tuple(exclude or ()), etcd_image, etcd_binary, method,
        bump_revision, etcdutl, from_snapshot, skip_hash_check, allow_older_data), inv)
    current = guarded(lambda: Journal.current(jdir))
    if abandon:
        run_id = guarded(lambda: runs.abandon(current, jdir))
        err.print(f"run {run_id} abandoned; its journal stays in {jdir}. Look at the "
                  "cluster (etcd-recovery inspect) before planning again.")
        return
    planned_from = None
    if resume:
        journal, the_plan, warning = guarded(lambda: runs.resumed(
            current, inv, jdir, inventory, given, plan_id))
        if warning:
            err.print(warning, markup=False)
        if not confirm:
            dry_run(the_plan, err, resume=True)
            raise typer.Exit(EXIT_DRY_RUN)
    else:
        bound = _planned(lambda: runs.bind(current, inv, jdir, inventory, given, plan_id,
                                           plan_file))
        the_plan, planned_from, pid = bound.plan, bound.planned_from, bound.record.plan_id
        command = _keep_reviewed(bound.record, jdir, inventory, journal_dir)
        if not confirm:
            dry_run(the_plan, err, pid, command)
            raise typer.Exit(EXIT_DRY_RUN)
        run_start(the_plan, err, jdir, pid, bound.bound)
        journal = guarded(lambda: runs.open_journal(jdir, the_plan, pid, bound.bound))
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


@app.command()
def rejoin(name: MemberArg, inventory: InventoryOpt, confirm: ReallyOpt = False,
           take_over_lock: TakeOverOpt = False, journal_dir: JournalDirOpt = None,
           verbose: VerboseOpt = False, output: OutputOpt = Output.table) -> None:
    """Bring one member back into the healthy cluster.

    For a host that was unreachable during the recovery, or one that came back: fence it, back
    it up, move its stale data aside, add it as a learner, start it, promote it, verify.
    Without --confirm it shows the plan and exits 4 (shown, not run), changing nothing.
    """
    from . import runs
    from .render import dry_run, run_start, summary_table

    jdir = runs.journal_dir(inventory, journal_dir)
    inv = guarded(lambda: load_inventory(inventory, check_files=True))
    the_plan = guarded(lambda: runs.rejoin_plan(inv, name, jdir, take_over_lock))
    if not confirm:
        dry_run(the_plan, err)
        raise typer.Exit(EXIT_DRY_RUN)
    run_start(the_plan, err, jdir)
    journal = guarded(lambda: runs.open_journal(jdir, the_plan))
    summary = _run(inv, the_plan, journal, verbose, check_fingerprint=False)
    if output is Output.json:
        print_json(summary.to_json())
    else:
        summary_table(summary, out)


@app.command()
def verify(inventory: InventoryOpt, output: OutputOpt = Output.table) -> None:
    """Check that the cluster is whole and consistent.

    The membership as a member reads it; on each member of it: voting, a leader, no errors,
    the same revision and equal HashKV (each host reads its member's db in order first, into
    the page cache), no alarms, no --force-new-cluster left. Exit 0 when
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


# ------------------------------------------------------------------------------ inventory

@inventory_app.command("check")
def inventory_check(inventory: InventoryOpt, output: OutputOpt = Output.table) -> None:
    """Validate an inventory file and show what it describes."""
    from .render import inventory_json, inventory_table

    inv = guarded(lambda: load_inventory(inventory, check_files=True))
    if output is Output.json:
        print_json(inventory_json(inv))
        return
    inventory_table(inv, out)


def _write_discovered(hosts: list[Any], ssh: dict[str, Any], cluster: str | None,
                      output_file: Path | None, fetch_client_cert: Path | None,
                      origin: str) -> None:
    """Probe ``hosts`` (ImportedHost: address, member name, per-host SSH), then write the
    inventory, or report the problems (exit 3) and write nothing."""
    from . import discover

    findings = guarded(lambda: discover.probe(hosts, ssh))
    tls: dict[str, str] | None = None
    if fetch_client_cert is not None:
        tls, copied = guarded(lambda: discover.fetch_client_cert(findings, hosts, ssh,
                                                                 fetch_client_cert))
        err.print(copied, markup=False)
    found = discover.discovered(findings, hosts, ssh, cluster, tls, origin)
    for problem in found.problems:
        err.print(f"problem: {problem}", markup=False)
    if found.problems:
        fail(RefusedError(f"{len(found.problems)} problem(s) above; nothing was written "
                          "(hosts that disagree are not merged)"))
    text = discover.inventory_text(found, origin)
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
def inventory_discover(hosts: HostsArg, user: SshUserOpt = None, port: SshPortOpt = None,
                       identity_file: IdentityOpt = None, known_hosts: KnownHostsOpt = None,
                       jump: JumpOpt = None, sudo: SudoOpt = False, cluster: ClusterOpt = None,
                       output_file: OutFileOpt = None, fetch_client_cert: FetchOpt = None
                       ) -> None:
    """Write an inventory from what the hosts say about their etcd.

    Each host's kubeadm manifest, else its etcd.service and environment file, else the running
    process. Hosts that disagree are reported (exit 3), never merged.
    """
    from .discover import ssh_settings
    from .importer import ImportedHost

    ssh = ssh_settings(user=user, port=port, identity_file=identity_file,
                       known_hosts=known_hosts, jump=jump, sudo=sudo)
    _write_discovered([ImportedHost(h) for h in hosts], ssh, cluster, output_file,
                      fetch_client_cert, ", ".join(hosts))


@inventory_app.command("import")
def inventory_import(source: SourceArg, known_hosts: KnownHostsOpt = None, jump: JumpOpt = None,
                     sudo: SudoOpt = False, cluster: ClusterOpt = None,
                     output_file: OutFileOpt = None, fetch_client_cert: FetchOpt = None
                     ) -> None:
    """Write an inventory from one people keep (Ansible, hosts.json).

    SOURCE is a kubespray / Ansible inventory or vmware/etcd-recovery's hosts.json. The hosts
    and their SSH settings come from SOURCE; what it does not say is read from the hosts (as
    discover does) or stated as missing.
    """
    from .discover import imported_hosts, ssh_settings

    hosts = guarded(lambda: imported_hosts(source))
    _write_discovered(hosts, ssh_settings(known_hosts=known_hosts, jump=jump, sudo=sudo),
                      cluster, output_file, fetch_client_cert, str(source))


# ------------------------------------------------------------------------------- doctor

@app.command()
def doctor(inventory: InventoryOpt, output: DoctorOutputOpt = DoctorOutput.table,
           check: CheckOpt = None) -> None:
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


@lab_app.command("up")
def lab_up(members: MembersOpt = 3, runtime: RuntimeOpt = Runtime.static_pod,
           etcd_version: EtcdVersionOpt = "3.5", etcd_binary: LabBinaryOpt = None,
           keys: KeysOpt = 1000, auth: AuthOpt = False, wal_dir: WalDirOpt = "",
           data_disk: DataDiskOpt = False, lab_dir: LabDirOpt = Path(".lab")) -> None:
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
        from .render import lab_status as status_table

        status_table(status, out)
    if not status["healthy"]:
        raise typer.Exit(1)


@lab_app.command("env")
def lab_env(lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Shell exports for etcdctl: eval "$(etcd-recovery lab env)"."""
    lab = _lab(lab_dir)
    for line in guarded(lambda: lab.env_lines()):
        sys.stdout.write(line + "\n")


def _fault(verb: str, help_text: str) -> None:
    def command(name: LabHostArg, lab_dir: LabDirOpt = Path(".lab")) -> None:
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

    from .memory import tame_malloc

    tame_malloc()   # before any thread starts (memory.py: 149 -> 109 MiB peak at 1 GB)

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

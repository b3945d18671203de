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

from . import __version__
from .errors import EXIT_REFUSED, EXIT_USAGE, EtcdRecoveryError
from .inventory import load_inventory

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Bring an etcd cluster back after it has lost quorum.")
lab_app = typer.Typer(no_args_is_help=True,
                      help="A lab of real etcd hosts (Docker, SSH, TLS) to test and rehearse on.")
inventory_app = typer.Typer(no_args_is_help=True, help="Check an inventory file.")
app.add_typer(lab_app, name="lab")
app.add_typer(inventory_app, name="inventory")

# Wide enough for tables when output goes to a pipe or a log file rather than a terminal.
_WIDTH = None if sys.stdout.isatty() else 160
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

T = TypeVar("T")


class Output(StrEnum):
    table = "table"
    json = "json"


InventoryOpt = Annotated[Path, typer.Option("--inventory", "-i", help="Inventory YAML file.")]
LabDirOpt = Annotated[Path, typer.Option("--dir", help="Directory of the lab.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table or json.")]


def fail(exc: EtcdRecoveryError) -> NoReturn:
    err.print(f"[bold red]error:[/] {exc}", markup=True)
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


def not_built(command: str) -> NoReturn:
    err.print(f"{command}: not built yet in this version ({__version__})")
    raise typer.Exit(EXIT_USAGE)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")]
          = False) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit(0)


# ----------------------------------------------------------------------------- main commands

@app.command()
def inspect(inventory: InventoryOpt, output: OutputOpt = Output.table) -> None:
    """Read every member's state over SSH and choose the member to keep.

    Exit 0 with a member chosen; 3 when it refuses (quorum still there, cluster IDs differ,
    a corrupt data dir, nothing readable).
    """
    from .inspect import inspect_cluster
    from .render import inspect_table

    inv = guarded(lambda: load_inventory(inventory))
    report = guarded(lambda: inspect_cluster(inv))
    if output is Output.json:
        print_json(report.to_json())
    else:
        inspect_table(report, out)
    if report.decision.refused:
        raise typer.Exit(EXIT_REFUSED)


@app.command()
def plan(inventory: InventoryOpt) -> None:
    """Lay out every step of the recovery (dry run)."""
    guarded(lambda: load_inventory(inventory))
    not_built("plan")


@app.command()
def execute(inventory: InventoryOpt,
            confirm: Annotated[bool, typer.Option("--confirm")] = False) -> None:
    """Carry out the plan step by step."""
    guarded(lambda: load_inventory(inventory))
    not_built("execute")


@app.command()
def verify(inventory: InventoryOpt) -> None:
    """Check that the cluster is whole and consistent."""
    guarded(lambda: load_inventory(inventory))
    not_built("verify")


@inventory_app.command("check")
def inventory_check(inventory: InventoryOpt, output: OutputOpt = Output.table) -> None:
    """Validate an inventory file and show what it describes."""
    inv = guarded(lambda: load_inventory(inventory))
    if output is Output.json:
        print_json({"cluster": inv.name, "runtime": inv.runtime,
                    "members": [{"name": m.name, "ssh_host": m.ssh.host,
                                 "peer_url": m.peer_url, "client_url": m.client_url,
                                 "data_dir": m.data_dir} for m in inv.members]})
        return
    table = Table(title=f"{inv.path}: cluster {inv.name} ({inv.runtime})")
    for col in ("member", "ssh", "client URL", "peer URL", "data dir"):
        table.add_column(col)
    for m in inv.members:
        user = f"{m.ssh.user}@" if m.ssh.user else ""
        port = f":{m.ssh.port}" if m.ssh.port else ""
        table.add_row(m.name, f"{user}{m.ssh.host}{port}", m.client_url, m.peer_url, m.data_dir)
    out.print(table)


# ------------------------------------------------------------------------------------ lab

def _lab(lab_dir: Path) -> Any:
    from .lab.lab import Lab

    return Lab(lab_dir, log=lambda msg: err.print(f"[lab] {msg}"))


class Runtime(StrEnum):
    static_pod = "static-pod"
    systemd = "systemd"


class EtcdVersion(StrEnum):
    v34 = "3.4"
    v35 = "3.5"


@lab_app.command("up")
def lab_up(members: Annotated[int, typer.Option(help="3 or 5 (1-9 accepted).")] = 3,
           runtime: Annotated[Runtime, typer.Option()] = Runtime.static_pod,
           etcd_version: Annotated[EtcdVersion, typer.Option("--etcd-version")] = EtcdVersion.v35,
           keys: Annotated[int, typer.Option(help="Keys to load once healthy.")] = 1000,
           lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Build (or reuse) the image, start the hosts and a healthy TLS cluster, load keys."""
    lab = _lab(lab_dir)
    state = guarded(lambda: lab.up(members=members, runtime=runtime.value,
                                   version=etcd_version.value, keys=keys))
    out.print(f"lab {state.id}: {len(state.hosts)} members, {state.runtime}, "
              f"etcd {state.etcd_version}, in {lab.dir}")
    for h in state.hosts:
        out.print(f"  {h.name:8} ssh root@{h.mgmt_ip}  client {h.client_url}  "
                  f"peer {h.peer_url}")
    out.print(f"inventory: {lab.inventory_path}")
    out.print(f"SSH:       ssh -i {lab.dir}/ssh/id_ed25519 -o UserKnownHostsFile="
              f"{lab.dir}/known_hosts root@{state.hosts[0].mgmt_ip}")
    out.print(f"etcdctl:   eval \"$(etcd-recovery lab env --dir {lab.dir})\"; "
              "etcdctl endpoint health")


@lab_app.command("status")
def lab_status(lab_dir: LabDirOpt = Path(".lab"), output: OutputOpt = Output.table) -> None:
    """Each host's addresses, whether it is up and runs etcd, and the cluster's health."""
    lab = _lab(lab_dir)
    status = guarded(lambda: lab.status())
    if output is Output.json:
        print_json(status)
    else:
        table = Table(title=f"lab {status['lab']} ({status['runtime']}, "
                            f"etcd {status['etcd_version']})")
        for col in ("host", "ssh", "client URL", "host up", "etcd running", "healthy",
                    "partitioned"):
            table.add_column(col)
        yes = {True: "yes", False: "no"}
        for h in status["hosts"]:
            table.add_row(h["name"], h["ssh"], h["client_url"], yes[h["host_up"]],
                          yes[h["etcd_running"]], yes[h["etcd_healthy"]], yes[h["partitioned"]])
        out.print(table)
        quorum = "has quorum" if status["quorum"] else "has LOST quorum"
        out.print(f"cluster: {status['healthy_members']}/{status['members']} members healthy; "
                  f"{quorum}")
    if not status["healthy"]:
        raise typer.Exit(1)


@lab_app.command("env")
def lab_env(lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Shell export lines for plain etcdctl: eval "$(etcd-recovery lab env)"."""
    lab = _lab(lab_dir)
    for line in guarded(lambda: lab.env_lines()):
        sys.stdout.write(line + "\n")


def _fault(verb: str, help_text: str) -> None:
    def command(name: Annotated[str, typer.Argument(help="Lab host name, e.g. etcd-2.")],
                lab_dir: LabDirOpt = Path(".lab")) -> None:
        lab = _lab(lab_dir)
        guarded(lambda: getattr(lab, verb.replace("-", "_"))(name))
        out.print(f"{verb} {name}: done")

    command.__doc__ = help_text
    lab_app.command(verb)(command)


_fault("stop-etcd", "SIGKILL etcd on a host and keep it down; its data dir is untouched.")
_fault("start-etcd", "Let etcd run again on a host after stop-etcd.")
_fault("kill-host", "The host is gone: SSH and etcd unreachable (its disk is kept).")
_fault("revive-host", "Boot a killed host again.")
_fault("partition", "Cut a host from its peers; it stays reachable over SSH.")
_fault("heal", "Reconnect a partitioned host to its peers.")


@lab_app.command("down")
def lab_down(lab_dir: LabDirOpt = Path(".lab")) -> None:
    """Remove every container, network and file this lab made, and nothing else."""
    lab = _lab(lab_dir)
    removed = guarded(lambda: lab.down())
    out.print(f"removed {len(removed)} lab objects" + (": " + ", ".join(removed)
                                                       if removed else ""))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

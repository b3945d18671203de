"""The member's own etcd process on its host, found by its data dir (etcdflags.own_process), not
"the first etcd on the host": a host can run several (kops: etcd-main and etcd-events). The
edge: two commands over a Transport, ``pgrep -x etcd`` and one read of every match's
``/proc/PID/cmdline`` and ``environ``; the deciding is pure (etcdflags)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from . import etcdflags
from .transport.base import Transport

Processes = dict[int, tuple[list[str], dict[str, str]]]
# For each pid: its number, then its cmdline and environ as base64 (NULs intact), one per line.
DUMP = ('for p in "$@"; do echo "$p"; base64 -w0 "/proc/$p/cmdline" 2>/dev/null; echo; '
        'base64 -w0 "/proc/$p/environ" 2>/dev/null; echo; done')


def parse_dump(text: str) -> Processes:
    """DUMP's output -> pid: (argv, environment). A process gone meanwhile has empty ones."""
    lines = text.splitlines()
    out: Processes = {}
    for i in range(0, len(lines) - 2, 3):
        pid, cmd, env = lines[i:i + 3]
        if not pid.strip().isdigit():
            continue
        try:
            cmdline, environ = base64.b64decode(cmd), base64.b64decode(env)
        except (binascii.Error, ValueError):
            cmdline = environ = b""
        out[int(pid)] = (etcdflags.argv_from_cmdline(cmdline) if cmdline else [],
                         etcdflags.env_from_environ(environ))
    return out


def etcd_processes(t: Transport, sudo: bool = True) -> Processes:
    """Every etcd process on the host, with its argv and environment."""
    res = t.run(["pgrep", "-x", "etcd"], check=False, timeout=10)
    pids = [p for p in res.stdout.decode(errors="replace").split() if p.isdigit()]
    if res.exit_status != 0 or not pids:
        return {}
    dump = t.run(["sh", "-c", DUMP, "etcd-recovery", *pids], sudo=sudo, check=False,
                 timeout=10)
    found = parse_dump(dump.stdout.decode(errors="replace"))
    return {int(p): found.get(int(p), ([], {})) for p in pids}


def own_pid(processes: Mapping[int, tuple[Sequence[str], Mapping[str, str]]],
            data_dir: str) -> int | None:
    return etcdflags.own_process(processes, data_dir) if processes else None


def runs_without_force(processes: Mapping[int, tuple[Sequence[str], Mapping[str, str]]],
                       data_dir: str) -> bool | None:
    """True: the member's etcd runs without --force-new-cluster; False: with it, or etcd
    cannot be told (a config file decides); None: the member's etcd does not run."""
    pid = own_pid(processes, data_dir)
    if pid is None:
        return None
    argv, env = processes[pid]
    force = etcdflags.runs_with_force_new_cluster(argv or ["etcd"], env)
    return force is False

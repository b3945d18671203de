"""Does the inventory describe the hosts as they are? Pure: configurations in, checks out.

An inventory written in a hurry can name the wrong data dir, swap two members' names, or give
a port that is not the one etcd uses; planning from it would back up and move aside the wrong
directory, or write an ``--initial-cluster`` that names the wrong member for a host. So inspect
reads each reachable member's real configuration (its static-pod manifest or environment file,
and the running etcd's command line and environment when it runs) and compares it with the
inventory, field by field: member name (also the name the member's own ID has in its own
membership view), data dir, WAL dir, peer and client URLs, and the runtime. A mismatch refuses
the plan (exit 3) with a message that names the member, the field, both values and the fix.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence

from . import etcdflags
from .errors import FormatError
from .inventory import Member, default_wal_dir
from .model import Check
from .runtimes import config as rconf


def process_flags(cmdline: bytes, environ: bytes) -> dict[str, str]:
    """etcd's flags from /proc/PID/cmdline and its environment, as etcd reads them
    (etcdflags: the one parser; the command line wins over ETCD_*)."""
    return etcdflags.parse(etcdflags.argv_from_cmdline(cmdline),
                           etcdflags.env_from_environ(environ)).flags


def _norm(path: str) -> str:
    return posixpath.normpath(path) if path else path


def _compare(member: Member, flags: Mapping[str, str], source: str) -> list[Check]:
    out = []

    def add(field: str, inv: str, host: str | None, ok: bool) -> None:
        out.append(Check(member.name, field, inv, host, source, ok))

    name = flags.get("name", "default")
    add("name", member.name, name, name == member.name)
    data = flags.get("data-dir")
    add("data_dir", member.data_dir, data, data is not None
        and _norm(data) == _norm(member.data_dir))
    # The WAL directory etcd uses: --wal-dir, else <data-dir>/member/wal (etcd v3.6.16
    # server/config/config.go: WALDir). Compared whenever either side names one of its own.
    wal = flags.get("wal-dir") or None
    if wal or member.wal_dir:
        host_wal = wal or (default_wal_dir(data) if data else None)
        add("wal_dir", member.wal, host_wal if wal else f"{host_wal} (no --wal-dir)",
            host_wal is not None and _norm(host_wal) == _norm(member.wal))
    peers = [u for u in flags.get("initial-advertise-peer-urls", "").split(",") if u]
    add("peer_url", member.peer_url, ",".join(peers) or None, member.peer_url in peers)
    clients = [u for u in flags.get("advertise-client-urls", "").split(",") if u]
    add("client_url", member.client_url, ",".join(clients) or None,
        member.client_url in clients)
    return out


def check_member(member: Member, runtime: str, config_path: str, config_text: str | None,
                 config_error: str | None, running: Mapping[str, str] | None,
                 own_name: str | None) -> tuple[Check, ...]:
    """Every check of one reachable member. ``config_text`` is its manifest / env file (None
    when it could not be read: ``config_error``), ``running`` the running etcd's flags (None
    when etcd does not run), ``own_name`` the name its own ID has in its membership view."""
    checks: list[Check] = []
    if config_text is None:
        checks.append(Check(member.name, "runtime", f"{runtime} ({config_path})",
                            config_error or "no such file", config_path, False))
    else:
        try:
            flags = rconf.config_flags(runtime, config_text, config_path)
        except FormatError as exc:
            checks.append(Check(member.name, "runtime", f"{runtime} ({config_path})",
                                f"not a {runtime} configuration: {exc}", config_path, False))
        else:
            checks += _compare(member, flags, config_path)
    if running is not None:
        checks += _compare(member, running, "the running etcd's command line")
    if own_name:
        checks.append(Check(member.name, "membership name", member.name, own_name,
                            "its own membership view (the name its member ID has)",
                            own_name == member.name))
    return tuple(checks)


def mismatches(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]

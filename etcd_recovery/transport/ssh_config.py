"""Where to connect: ~/.ssh/config applied to a HostTarget.

Resolves HostName, User, Port and IdentityFile for the host and for its one ProxyJump
hop, and picks the known_hosts files (the target's, else the config's
UserKnownHostsFile, else ~/.ssh/known_hosts plus /etc/ssh/ssh_known_hosts).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, replace
from typing import NamedTuple

import paramiko

from etcd_recovery.errors import TransportError
from etcd_recovery.transport.base import HostTarget


@dataclass(frozen=True)
class Endpoint:
    """One SSH server after ~/.ssh/config has been applied."""

    role: str  # "host" or "jump host"
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


class Route(NamedTuple):
    """The host, the jump host if any, and the known_hosts files to check both against."""

    final: Endpoint
    jump: Endpoint | None
    known_hosts: str
    extra_known: list[str]


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """Split a ProxyJump value ``[user@]host[:port]`` (``[v6addr]:port`` allowed)."""
    spec = spec.strip()
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://"):]
    if not spec or "," in spec:
        raise ValueError(f"ProxyJump {spec!r}: exactly one jump host is supported")
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
        user = user or None
    port: int | None = None
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep:
            raise ValueError(f"ProxyJump {spec!r}: unclosed '['")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"ProxyJump {spec!r}: junk after ']'")
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = int(port_text)
    else:
        host = spec
    if not host:
        raise ValueError(f"ProxyJump {spec!r}: no host")
    return user, host, port


def _read_config(label: str, target: HostTarget) -> paramiko.SSHConfig:
    path = os.path.expanduser(target.ssh_config or "~/.ssh/config")
    if not os.path.exists(path):
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(path)
    except (OSError, UnicodeDecodeError, ValueError, paramiko.SSHException) as exc:
        raise TransportError(label, f"cannot read ssh config {path}: {exc}") from exc


def _lookup(label: str, config: paramiko.SSHConfig, alias: str) -> dict[str, object]:
    try:
        return dict(config.lookup(alias))
    except (OSError, ValueError, ImportError, paramiko.SSHException) as exc:
        raise TransportError(label, f"ssh config for {alias}: {exc}") from exc


def _endpoint(label: str, role: str, opts: dict[str, object], alias: str, port: int | None,
              user: str | None, identity: str | None) -> Endpoint:
    hostname = str(opts.get("hostname") or alias)
    if port is None:
        try:
            port = int(str(opts.get("port", 22)))
        except ValueError as exc:
            raise TransportError(label, f"ssh config for {alias}: bad Port "
                                 f"{opts.get('port')!r}") from exc
    if user is None:
        configured = opts.get("user")
        user = str(configured) if configured else getpass.getuser()
    if identity is not None:
        identities: tuple[str, ...] = (identity,)
    else:
        configured_ids = opts.get("identityfile")
        if isinstance(configured_ids, str):
            identities = (configured_ids,)
        elif isinstance(configured_ids, list | tuple):
            identities = tuple(str(i) for i in configured_ids)
        else:
            identities = ()
    identities = tuple(os.path.expanduser(i) for i in identities)
    return Endpoint(role, hostname, port, user, identities)


def resolve(label: str, target: HostTarget) -> Route:
    """Resolve target, jump host and known_hosts files from the target and ssh config."""
    t = target
    config = _read_config(label, t)
    opts = _lookup(label, config, t.host)
    if opts.get("proxycommand") and not (t.proxy_jump or opts.get("proxyjump")):
        raise TransportError(label, "ssh config sets ProxyCommand for "
                             f"{t.host}, which is not supported; use ProxyJump")
    final = _endpoint(label, "host", opts, t.host, t.port, t.user, t.identity_file)
    jump_spec = t.proxy_jump or (str(opts["proxyjump"]) if opts.get("proxyjump") else None)
    jump: Endpoint | None = None
    if jump_spec and jump_spec.strip().lower() != "none":
        try:
            j_user, j_host, j_port = parse_jump(jump_spec)
        except ValueError as exc:
            raise TransportError(label, str(exc)) from exc
        j_opts = _lookup(label, config, j_host)
        jump = _endpoint(label, "jump host", j_opts, j_host, j_port, j_user, None)
        if not jump.identity_files and final.identity_files:
            # no key configured for the jump host: offer the target's (usually the same)
            jump = replace(jump, identity_files=final.identity_files)
    extra: list[str] = []
    if t.known_hosts is not None:
        known_hosts = os.path.expanduser(t.known_hosts)
    else:
        configured = str(opts.get("userknownhostsfile") or "").split()
        known_hosts = os.path.expanduser(configured[0] if configured
                                         else "~/.ssh/known_hosts")
        extra.append("/etc/ssh/ssh_known_hosts")
    return Route(final, jump, known_hosts, extra)

"""The inventory: one YAML file per cluster, read into frozen values with precise errors.

Example (the lab writes one like it; README documents every field)::

    cluster:
      name: prod-east
      runtime: static-pod            # static-pod | systemd
    tls:                             # client TLS for etcd's API, on the operator's machine
      ca: pki/ca.crt
      cert: pki/client.crt
      key: pki/client.key
    ssh:                             # defaults for every member; each member may override
      user: root
      identity_file: ssh/id_ed25519  # or leave out to use the ssh-agent / ~/.ssh/config
      known_hosts: known_hosts
      sudo: false
    members:
      - name: etcd-1
        ssh: {host: 10.0.0.11}
        peer_url: https://10.0.0.11:2380
        client_url: https://10.0.0.11:2379
        data_dir: /var/lib/etcd        # default /var/lib/etcd
        wal_dir: /srv/etcd-wal/wal     # etcd's --wal-dir, when it has one
                                       # (default <data_dir>/member/wal)

Relative paths are taken relative to the inventory file. Every value that ends up in a
command on a host is validated here against a strict pattern, so no shell metacharacter from
an inventory can reach a remote shell.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .errors import InventoryError

RUNTIMES = ("static-pod", "systemd")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?$|^\[?[0-9a-fA-F:]+\]?$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
UNIT_RE = re.compile(r"^[A-Za-z0-9@._-]+\.service$")
# What each pattern allows, in the words an error shows.
ALLOWED = {
    NAME_RE: "lower-case letters, digits, . and -, starting and ending with a letter or digit,"
             " at most 63 characters",
    HOST_RE: "a host name (letters, digits, . and -) or an IP address",
    USER_RE: "lower-case letters, digits, _ . and -, at most 32 characters",
    PATH_RE: "an absolute path of letters, digits and . _ / - only",
    UNIT_RE: "letters, digits and @ . _ -, ending in .service",
}

DEFAULTS = {
    "static-pod": {"data_dir": "/var/lib/etcd",
                   "manifest": "/etc/kubernetes/manifests/etcd.yaml"},
    "systemd": {"data_dir": "/var/lib/etcd", "env_file": "/etc/etcd/etcd.env",
                "unit": "etcd.service"},
}


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    jump: str | None = None
    sudo: bool = False
    connect_timeout: float | None = None   # the first TCP connect (default 1 s)


@dataclass(frozen=True)
class Member:
    name: str
    ssh: SshTarget
    peer_url: str
    client_url: str
    data_dir: str
    manifest: str | None = None  # static-pod
    env_file: str | None = None  # systemd
    unit: str | None = None      # systemd
    wal_dir: str | None = None   # etcd's --wal-dir; None: <data_dir>/member/wal

    @property
    def wal(self) -> str:
        """The directory etcd keeps this member's WAL in: ``--wal-dir`` when it has one,
        else ``<data-dir>/member/wal`` (etcd v3.6.16 server/config/config.go: WALDir returns
        DedicatedWALDir, else datadir.ToWALDir(DataDir))."""
        return self.wal_dir or default_wal_dir(self.data_dir)

    @property
    def wal_apart(self) -> bool:
        """The WAL lies outside the member directory (``<data_dir>/member``), so copying or
        moving the member directory does not take it along."""
        member_dir = posixpath.join(posixpath.normpath(self.data_dir), "member")
        wal = posixpath.normpath(self.wal)
        return wal != member_dir and not wal.startswith(member_dir + "/")

    @property
    def wal_outside_data_dir(self) -> bool:
        """The WAL lies outside the data dir (a copy of the data dir does not hold it)."""
        data, wal = posixpath.normpath(self.data_dir), posixpath.normpath(self.wal)
        return not wal.startswith(data.rstrip("/") + "/")

    @property
    def client_hostport(self) -> tuple[str, int]:
        return _hostport(self.client_url)

    @property
    def peer_hostport(self) -> tuple[str, int]:
        return _hostport(self.peer_url)


@dataclass(frozen=True)
class TlsFiles:
    ca: str | None
    cert: str | None
    key: str | None


@dataclass(frozen=True)
class EtcdAuth:
    """etcd user/password authentication (``--auth``); the password stays in its file."""

    user: str
    password_file: str

    def password(self, inventory_path: str) -> str:
        try:
            with open(self.password_file, encoding="utf-8") as fh:
                return fh.read().rstrip("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryError(inventory_path, f"cannot read {self.password_file}: "
                                 f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}",
                                 field="auth.password_file") from exc


@dataclass(frozen=True)
class Inventory:
    path: str
    name: str
    runtime: str
    tls: TlsFiles
    members: tuple[Member, ...]
    auth: EtcdAuth | None = None

    def credentials(self) -> tuple[str | None, str | None]:
        """(user, password) for etcd's API, or (None, None) without auth."""
        if self.auth is None:
            return None, None
        return self.auth.user, self.auth.password(self.path)

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise InventoryError(self.path, f"no member named {name!r}; members are "
                             + ", ".join(m.name for m in self.members))


def default_wal_dir(data_dir: str) -> str:
    """etcd's WAL directory without ``--wal-dir`` (etcd v3.6.16 server/storage/datadir:
    ToWALDir = <data-dir>/member/wal)."""
    return posixpath.join(data_dir, "member", "wal")


def wal_dir_problem(data_dir: str, wal_dir: str) -> str | None:
    """Why ``wal_dir`` cannot be a member's WAL directory beside ``data_dir``, or None.

    etcd creates a WAL by writing ``<wal-dir>.tmp`` and renaming it onto ``<wal-dir>``
    (etcd v3.6.16 server/storage/wal/wal.go: Create, renameWAL), and the recovery moves the
    WAL dir aside whole: so it is a directory of its own, neither the data dir, nor the member
    directory or its snap directory, nor a directory that holds any of them."""
    data = posixpath.normpath(data_dir)
    wal = posixpath.normpath(wal_dir)
    member = posixpath.join(data, "member")
    if wal == "/" or ".." in wal_dir.split("/"):
        return "must be a directory of its own (not / and without ..)"
    for what, path in (("the data dir", data), ("the member directory", member),
                       ("the snap directory", posixpath.join(member, "snap"))):
        if wal == path or path.startswith(wal.rstrip("/") + "/"):
            return f"is or holds {what} ({path}): give the directory etcd's --wal-dir names"
    if wal.startswith(posixpath.join(member, "snap") + "/"):
        return "lies inside the snap directory"
    return None


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


class _Reader:
    """Walks the YAML tree, remembering where it is for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base = Path(path).resolve().parent

    def err(self, msg: str, member: str | None = None, field: str | None = None) -> InventoryError:
        return InventoryError(self.path, msg, member=member, field=field)

    def mapping(self, value: Any, field: str, member: str | None = None,
                allowed: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.err(f"must be a mapping, got {type(value).__name__}", member, field)
        for key in value:
            if not isinstance(key, str) or (allowed and key not in allowed):
                raise self.err(f"unknown field {key!r}; expected one of: {', '.join(allowed)}",
                               member, field)
        return value

    def string(self, m: Mapping[str, Any], key: str, field: str, member: str | None = None,
               required: bool = True, pattern: re.Pattern[str] | None = None,
               what: str = "") -> str | None:
        if key not in m or m[key] is None:
            if required:
                raise self.err("is required", member, field)
            return None
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.err(f"must be a string, got {type(value).__name__}", member, field)
        value = str(value)
        if pattern is not None and not pattern.match(value):
            raise self.err(f"{value!r} is not a valid {what or 'value'}"
                           f" ({ALLOWED.get(pattern, 'no shell metacharacters')})",
                           member, field)
        return value

    def local_path(self, m: Mapping[str, Any], key: str, field: str,
                   member: str | None = None) -> str | None:
        value = self.string(m, key, field, member, required=False)
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else (self.base / p))

    def url(self, m: Mapping[str, Any], key: str, field: str, member: str) -> str:
        value = self.string(m, key, field, member)
        assert value is not None
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if (parts.scheme not in ("http", "https") or not parts.hostname or port is None
                or parts.path not in ("", "/") or parts.query or parts.fragment
                or parts.username or not HOST_RE.match(parts.hostname)):
            raise self.err(f"{value!r} is not a URL of the form https://HOST:PORT", member, field)
        return value.rstrip("/")


def parse_inventory(data: Any, path: str = "<inventory>") -> Inventory:
    """Turn the YAML tree into an Inventory, or raise InventoryError naming the bad field."""
    r = _Reader(path)
    top = r.mapping(data, "(top level)", allowed=("cluster", "tls", "ssh", "members", "auth"))
    cluster = r.mapping(top.get("cluster"), "cluster", allowed=("name", "runtime",
                                                                "etcd_version"))
    name = r.string(cluster, "name", "cluster.name", pattern=NAME_RE, what="cluster name")
    runtime = r.string(cluster, "runtime", "cluster.runtime")
    if runtime not in RUNTIMES:
        raise r.err(f"{runtime!r} is not one of {', '.join(RUNTIMES)}", field="cluster.runtime")
    tls_map = r.mapping(top.get("tls") or {}, "tls", allowed=("ca", "cert", "key"))
    tls = TlsFiles(*(r.local_path(tls_map, k, f"tls.{k}") for k in ("ca", "cert", "key")))
    if (tls.cert is None) != (tls.key is None):
        raise r.err("cert and key must be given together", field="tls")
    auth = None
    if top.get("auth") is not None:
        auth_map = r.mapping(top.get("auth"), "auth", allowed=("user", "password_file"))
        user = r.string(auth_map, "user", "auth.user", pattern=re.compile(r"^[A-Za-z0-9_.@-]+$"),
                        what="etcd user name")
        pfile = r.local_path(auth_map, "password_file", "auth.password_file")
        if pfile is None:
            raise r.err("is required with auth.user (the password stays in that file)",
                        field="auth.password_file")
        assert user is not None
        auth = EtcdAuth(user, pfile)
    ssh_keys = ("host", "port", "user", "identity_file", "known_hosts", "jump", "sudo",
                "connect_timeout")
    ssh_defaults = r.mapping(top.get("ssh") or {}, "ssh", allowed=ssh_keys)

    members_raw = top.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise r.err("must be a non-empty list of members", field="members")
    members: list[Member] = []
    member_keys = ("name", "ssh", "peer_url", "client_url", "data_dir", "wal_dir", "manifest",
                   "env_file", "unit")
    for i, raw in enumerate(members_raw):
        label = f"#{i + 1}"
        m = r.mapping(raw, f"members[{i}]", allowed=member_keys)
        mname = r.string(m, "name", "name", label, pattern=NAME_RE, what="member name")
        assert mname is not None
        ssh_map = {**ssh_defaults, **r.mapping(m.get("ssh") or {}, "ssh", mname,
                                               allowed=ssh_keys)}
        host = r.string(ssh_map, "host", "ssh.host", mname, pattern=HOST_RE, what="host name")
        port_raw = ssh_map.get("port")
        if port_raw is not None and (not isinstance(port_raw, int) or isinstance(port_raw, bool)
                                     or not 0 < port_raw < 65536):
            raise r.err(f"{port_raw!r} is not a port number", mname, "ssh.port")
        sudo = ssh_map.get("sudo", False)
        if not isinstance(sudo, bool):
            raise r.err("must be true or false", mname, "ssh.sudo")
        ct = ssh_map.get("connect_timeout")
        if ct is not None and (isinstance(ct, bool) or not isinstance(ct, int | float)
                               or not 0.05 <= ct <= 120):
            raise r.err(f"{ct!r} is not a number of seconds from 0.05 to 120", mname,
                        "ssh.connect_timeout")
        jump = r.string(ssh_map, "jump", "ssh.jump", mname, required=False,
                        pattern=re.compile(r"^([a-z_][a-z0-9_.-]*@)?[A-Za-z0-9.-]+(:\d+)?$"),
                        what="jump host ([user@]host[:port])")
        target = SshTarget(
            host=host or "", port=port_raw,
            user=r.string(ssh_map, "user", "ssh.user", mname, required=False, pattern=USER_RE,
                          what="user name"),
            identity_file=r.local_path(ssh_map, "identity_file", "ssh.identity_file", mname),
            known_hosts=r.local_path(ssh_map, "known_hosts", "ssh.known_hosts", mname),
            jump=jump, sudo=sudo, connect_timeout=float(ct) if ct is not None else None)
        defaults = DEFAULTS[runtime]
        paths: dict[str, str | None] = {}
        for key in ("data_dir", "manifest", "env_file", "unit"):
            value = r.string(m, key, key, mname, required=False,
                             pattern=PATH_RE if key != "unit" else UNIT_RE,
                             what="absolute path" if key != "unit" else "unit name")
            paths[key] = value if value is not None else defaults.get(key)
        data_dir = paths["data_dir"] or "/var/lib/etcd"
        wal_dir = r.string(m, "wal_dir", "wal_dir", mname, required=False, pattern=PATH_RE,
                           what="absolute path")
        if wal_dir is not None:
            why = wal_dir_problem(data_dir, wal_dir)
            if why is not None:
                raise r.err(f"{wal_dir!r} {why}", mname, "wal_dir")
            if posixpath.normpath(wal_dir) == default_wal_dir(posixpath.normpath(data_dir)):
                wal_dir = None   # etcd's default: the same as leaving it out
        if runtime == "static-pod" and (m.get("env_file") or m.get("unit")):
            raise r.err("env_file/unit apply to the systemd runtime only", mname, "env_file")
        if runtime == "systemd" and m.get("manifest"):
            raise r.err("manifest applies to the static-pod runtime only", mname, "manifest")
        members.append(Member(
            name=mname, ssh=target,
            peer_url=r.url(m, "peer_url", "peer_url", mname),
            client_url=r.url(m, "client_url", "client_url", mname),
            data_dir=data_dir, wal_dir=wal_dir,
            manifest=paths["manifest"], env_file=paths["env_file"], unit=paths["unit"]))

    seen: dict[str, str] = {}
    for mem in members:
        for key, value in (("name", mem.name), ("peer_url", mem.peer_url),
                           ("client_url", mem.client_url)):
            tag = f"{key}={value}"
            if tag in seen:
                raise r.err(f"{value!r} is used by member {seen[tag]!r} too", mem.name, key)
            seen[tag] = mem.name
    assert name is not None
    return Inventory(path=path, name=name, runtime=runtime, tls=tls, members=tuple(members),
                     auth=auth)


def load_inventory(path: str | os.PathLike[str], check_files: bool = False) -> Inventory:
    """Read and validate an inventory; with ``check_files``, every local file it names (TLS,
    SSH identity and known_hosts, the etcd password) must be there and readable too, so that
    a missing one is named now, not mid-run."""
    inv = _load(path)
    if check_files:
        _check_local_files(inv)
    return inv


def _check_local_files(inv: Inventory) -> None:
    wanted: list[tuple[str | None, str, str | None]] = [
        (inv.tls.ca, "tls.ca", None), (inv.tls.cert, "tls.cert", None),
        (inv.tls.key, "tls.key", None),
        (inv.auth.password_file if inv.auth else None, "auth.password_file", None)]
    for m in inv.members:
        wanted += [(m.ssh.identity_file, "ssh.identity_file", m.name),
                   (m.ssh.known_hosts, "ssh.known_hosts", m.name)]
    for path, field, member in wanted:
        if path is None:
            continue
        if not os.path.isfile(path):
            raise InventoryError(inv.path, f"{path}: no such file", member, field)
        if not os.access(path, os.R_OK):
            raise InventoryError(inv.path, f"{path}: not readable", member, field)


def _load(path: str | os.PathLike[str]) -> Inventory:
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise InventoryError(p, "file not found") from exc
    except OSError as exc:
        raise InventoryError(p, f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(p, f"not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InventoryError(p, f"not valid YAML{where}: {problem}") from exc
    return parse_inventory(data, p)


def dump_inventory(inv: Inventory) -> str:
    """Render an Inventory back to YAML (paths as given)."""
    data: dict[str, Any] = {"cluster": {"name": inv.name, "runtime": inv.runtime}}
    tls = {k: v for k, v in (("ca", inv.tls.ca), ("cert", inv.tls.cert), ("key", inv.tls.key))
           if v}
    if tls:
        data["tls"] = tls
    if inv.auth is not None:
        data["auth"] = {"user": inv.auth.user, "password_file": inv.auth.password_file}
    members = []
    for m in inv.members:
        ssh = {k: v for k, v in vars(m.ssh).items() if v not in (None, False)}
        entry: dict[str, Any] = {"name": m.name, "ssh": ssh, "peer_url": m.peer_url,
                                 "client_url": m.client_url, "data_dir": m.data_dir}
        if m.wal_dir:
            entry["wal_dir"] = m.wal_dir
        for key in ("manifest", "env_file", "unit"):
            if getattr(m, key):
                entry[key] = getattr(m, key)
        members.append(entry)
    data["members"] = members
    return yaml.safe_dump(data, sort_keys=False)

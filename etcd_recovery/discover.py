"""inventory discover: write the inventory from what the hosts say.

Over SSH (``~/.ssh/config``, the agent, known_hosts and ProxyJump honoured as inspect does),
each host is asked how it runs etcd: a kubeadm manifest, a systemd unit with its environment
file, or (failing both) the running process. From their flags comes a complete inventory:
member names, URLs, data dirs, WAL dirs (``--wal-dir``, when a host has one), runtime, and
the TLS files to use. Hosts that disagree (two cluster tokens, two runtimes) are reported,
not merged. With one reachable host, the other
members come from its ``--initial-cluster`` and are marked as not reached.

Reading a host is the edge (:func:`probe_host`); turning findings into an inventory is pure
(:func:`inventory_from`). The commands' steps, for ``inventory discover`` and ``inventory
import`` alike, follow: the hosts probed with the SSH settings given (:func:`probe`), a client
certificate copied (:func:`fetch_client_cert`), the inventory with each host's own SSH
settings (:func:`discovered`) and its YAML text (:func:`inventory_text`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import EtcdRecoveryError, FormatError, RefusedError, TransportError, UsageError
from .importer import ImportedHost, parse_source
from .inspect import running_flags
from .inventory import DEFAULTS, NAME_RE, SshTarget
from .runtimes import config as rconf
from .transport.base import Transport
from .transport.factory import host_target

MANIFEST = DEFAULTS["static-pod"]["manifest"]
UNIT = DEFAULTS["systemd"]["unit"]
# kubeadm's client certificate for health checks: what an operator uses against its etcd.
KUBEADM_CLIENT = ("/etc/kubernetes/pki/etcd/ca.crt",
                  "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
                  "/etc/kubernetes/pki/etcd/healthcheck-client.key")


@dataclass(frozen=True)
class Finding:
    """What one host said about its etcd (or why it said nothing)."""

    address: str
    runtime: str | None = None
    flags: dict[str, str] = field(default_factory=dict)
    config_path: str | None = None
    unit: str | None = None
    client_files: tuple[str, str, str] | None = None   # ca, cert, key on the host
    error: str | None = None
    unreachable: bool = False                            # SSH did not get through


def _read(t: Transport, path: str) -> str | None:
    try:
        src = t.open_file(path, sudo=True)
        size = src.size()
        return src.read(0, min(size, 1024 * 1024)).decode("utf-8", errors="replace")
    except TransportError:
        return None


def probe_host(address: str, t: Transport) -> Finding:
    """Ask one host how it runs etcd."""
    try:
        manifest = _read(t, MANIFEST)
        if manifest is not None:
            flags = rconf.manifest_flags(manifest, MANIFEST)
            return Finding(address, "static-pod", flags, MANIFEST, None, _client_files(t))
        show = t.run(["systemctl", "show", "-p", "EnvironmentFiles", "-p", "LoadState",
                      UNIT], sudo=True, check=False, timeout=15).stdout.decode(errors="replace")
        if "LoadState=loaded" in show:
            env_path = _env_file(show) or DEFAULTS["systemd"]["env_file"]
            text = _read(t, env_path)
            if text is not None:
                flags = rconf.env_flags(text, env_path)
                return Finding(address, "systemd", flags, env_path, UNIT,
                               _etcd_client_files(flags))
        pids = t.run(["pgrep", "-x", "etcd"], check=False, timeout=10).stdout.split()
        if pids:
            flags = running_flags(t, pids[0].decode()) or {}
            return Finding(address, None, flags, None, None, _etcd_client_files(flags),
                           error="etcd runs, but neither a kubeadm manifest nor "
                                 f"{UNIT} defines it: its runtime is unknown")
        return Finding(address, error=f"no etcd here: no {MANIFEST}, no {UNIT}, no etcd "
                                      "process")
    except (TransportError, FormatError) as exc:
        return Finding(address, error=str(exc))


def _env_file(show: str) -> str | None:
    for line in show.splitlines():
        if line.startswith("EnvironmentFiles="):
            value = line.split("=", 1)[1].strip()
            if value:
                return value.split()[0]
    return None


def _client_files(t: Transport) -> tuple[str, str, str] | None:
    ok = all(t.run(["test", "-r", p], sudo=True, check=False).exit_status == 0
             for p in KUBEADM_CLIENT)
    return KUBEADM_CLIENT if ok else None


def _etcd_client_files(flags: dict[str, str]) -> tuple[str, str, str] | None:
    """Without kubeadm's health-check client: the member's peer certificate, which is a
    client certificate to its peers, with the CA its client port trusts."""
    ca, cert, key = (flags.get(k) for k in ("trusted-ca-file", "peer-cert-file",
                                            "peer-key-file"))
    return (ca, cert, key) if ca and cert and key else None


def probe_all(addresses: Sequence[str], connect: Callable[[str], Transport]) -> list[Finding]:
    def one(address: str) -> Finding:
        try:
            t = connect(address)
            t.run(["true"], timeout=15)
        except EtcdRecoveryError as exc:
            return Finding(address, error=str(exc), unreachable=True)
        try:
            return probe_host(address, t)
        finally:
            t.close()

    with ThreadPoolExecutor(max_workers=max(1, len(addresses))) as pool:
        return list(pool.map(one, addresses))


# ------------------------------------------------------------------------------ pure part

def _first(urls: str, avoid_loopback: bool = True) -> str | None:
    items = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
    for u in items:
        host = urlsplit(u).hostname or ""
        if not (avoid_loopback and (host.startswith("127.") or host in ("localhost", "::1"))):
            return u
    return items[0] if items else None


@dataclass
class Discovered:
    inventory: dict[str, Any]
    problems: list[str]          # disagreements: reported, never merged (exit 3)
    missing: list[str]           # what the hosts did not say (stated, not guessed silently)
    unreached: list[str]         # members named by --initial-cluster whom we did not reach


def inventory_from(findings: Sequence[Finding], cluster: str | None, ssh: dict[str, Any],
                   tls: dict[str, str] | None) -> Discovered:
    """Findings -> an inventory (as the YAML tree ``load_inventory`` reads)."""
    found = [f for f in findings if f.runtime is not None]
    problems = [f"{f.address}: {f.error}" for f in findings if f.error and not f.unreachable]
    runtimes = {f.runtime for f in found}
    if len(runtimes) > 1:
        problems.append("hosts disagree on the runtime: " + ", ".join(
            f"{f.address}={f.runtime}" for f in found))
    tokens = {f.flags.get("initial-cluster-token") for f in found}
    if len(tokens) > 1:
        problems.append("hosts disagree on the cluster token (two clusters?): " + ", ".join(
            f"{f.address}={f.flags.get('initial-cluster-token')}" for f in found))
    members: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for f in found:
        name = f.flags.get("name")
        peer = _first(f.flags.get("initial-advertise-peer-urls", ""), avoid_loopback=False)
        client = _first(f.flags.get("advertise-client-urls", ""))
        if not name or not peer or not client:
            problems.append(f"{f.address}: its etcd flags lack --name, "
                            "--initial-advertise-peer-urls or --advertise-client-urls")
            continue
        if name in seen:
            problems.append(f"{f.address} and {seen[name]} both run member {name!r}")
            continue
        seen[name] = f.address
        m: dict[str, Any] = {"name": name, "ssh": {"host": f.address}, "peer_url": peer,
                             "client_url": client,
                             "data_dir": f.flags.get("data-dir", "/var/lib/etcd")}
        if f.flags.get("wal-dir"):   # a WAL dir of its own (etcd's --wal-dir)
            m["wal_dir"] = f.flags["wal-dir"]
        if f.runtime == "static-pod":
            m["manifest"] = f.config_path
        if f.runtime == "systemd":
            m["env_file"] = f.config_path
            m["unit"] = f.unit
        members.append(m)
    unreached: list[str] = []
    for f in found[:1]:
        listed = f.flags.get("initial-cluster")
        pairs = rconf.parse_initial_cluster(listed, "--initial-cluster") if listed else []
        for name, url in pairs:
            if name in seen or any(m["peer_url"] == url for m in members):
                continue
            host = urlsplit(url).hostname or ""
            unreached.append(name)
            seen[name] = host
            entry: dict[str, Any] = {"name": name, "ssh": {"host": host}, "peer_url": url,
                                     "client_url": f"https://{host}:2379",
                                     "data_dir": f.flags.get("data-dir", "/var/lib/etcd")}
            if f.flags.get("wal-dir"):   # a guess from the host read, as the data dir is
                entry["wal_dir"] = f.flags["wal-dir"]
            if f.runtime == "systemd":
                entry["env_file"], entry["unit"] = f.config_path, f.unit
            else:
                entry["manifest"] = f.config_path
            members.append(entry)
    members.sort(key=lambda m: m["name"])
    missing = [f"{f.address} was not reached ({f.error})" for f in findings if f.unreachable]
    if unreached:
        missing.append(f"not reached, taken from --initial-cluster (ssh.host and client_url "
                       f"are guesses from the peer URL; check them): {', '.join(unreached)}")
    runtime = next(iter(runtimes)) if len(runtimes) == 1 else None
    inv: dict[str, Any] = {"cluster": {"name": cluster or _cluster_name(found),
                                       "runtime": runtime or "static-pod"}}
    if tls:
        inv["tls"] = tls
    else:
        missing.append("tls: no client certificate here: copy the cluster's CA and a client "
                       "certificate to this machine (kubeadm: ca.crt and healthcheck-client.* "
                       "under /etc/kubernetes/pki/etcd), or use --fetch-client-cert DIR")
    if ssh:
        inv["ssh"] = ssh
    inv["members"] = members
    if not members:
        problems.append("no host told us about an etcd member")
    return Discovered(inv, problems, missing, unreached)


def _cluster_name(found: Sequence[Finding]) -> str:
    token = next((f.flags.get("initial-cluster-token") for f in found
                  if f.flags.get("initial-cluster-token")), None)
    name = (token or "etcd").removesuffix("-token").lower()
    # A cluster name follows NAME_RE (kubespray's token is k8s_etcd, which becomes k8s-etcd).
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-.") else "-" for c in name)
    safe = safe[:63].strip("-.")
    return safe if NAME_RE.match(safe) else "etcd"


def client_files_of(findings: Sequence[Finding]) -> tuple[Finding, tuple[str, str, str]] | None:
    """The first reachable host that holds a client certificate, and its files."""
    for f in findings:
        if f.runtime is not None and f.client_files:
            return f, f.client_files
    return None


def local_names(files: tuple[str, str, str]) -> tuple[str, str, str]:
    return ("ca.crt", posixpath.basename(files[1]), posixpath.basename(files[2]))


# ------------------------------------------------------------- inventory discover and import

def abs_path(p: Path | None) -> str | None:
    return str(p.expanduser().resolve()) if p else None


def ssh_settings(*, user: str | None = None, port: int | None = None,
                 identity_file: Path | None = None, known_hosts: Path | None = None,
                 jump: str | None = None, sudo: bool = False) -> dict[str, Any]:
    """The SSH settings given for every host, their files as absolute paths (the inventory
    is read from elsewhere than where it was written)."""
    return {"user": user, "port": port, "identity_file": abs_path(identity_file),
            "known_hosts": abs_path(known_hosts), "jump": jump, "sudo": sudo or None}


def imported_hosts(source: Path) -> list[ImportedHost]:
    """inventory import SOURCE: its hosts and their SSH settings, an identity file as an
    absolute path (one SOURCE names relative to its own directory)."""
    try:
        text = source.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: cannot read: {exc}") from exc
    hosts = parse_source(text, str(source))
    base = source.resolve().parent
    return [ImportedHost(h.address, h.member_name, h.user, h.port,
                         str((base / Path(h.identity_file).expanduser()).resolve())
                         if h.identity_file else None) for h in hosts]


def connector(hosts: Sequence[ImportedHost],
              ssh: Mapping[str, Any]) -> Callable[[str], Transport]:
    """The transport to each of ``hosts`` (by address): its own SSH settings over ``ssh``,
    those given for all."""
    from .transport.ssh import SshTransport

    by_address = {h.address: h for h in hosts}

    def connect(address: str) -> Transport:
        h = by_address[address]
        mine = {"user": h.user, "port": h.port, "identity_file": h.identity_file}
        o = {**ssh, **{k: v for k, v in mine.items() if v is not None}}
        return SshTransport(address, host_target(SshTarget(
            host=address, port=o.get("port"), user=o.get("user"),
            identity_file=o.get("identity_file"), known_hosts=o.get("known_hosts"),
            jump=o.get("jump"), sudo=bool(o.get("sudo")))))

    return connect


def probe(hosts: Sequence[ImportedHost], ssh: Mapping[str, Any]) -> list[Finding]:
    """What each of ``hosts`` says about its etcd (each address once)."""
    return probe_all(list({h.address: h for h in hosts}), connector(hosts, ssh))


def read_remote(t: Transport, path: str) -> bytes:
    src = t.open_file(path, sudo=True)
    data: bytes = src.read(0, src.size())
    return data


def fetch_client_cert(findings: Sequence[Finding], hosts: Sequence[ImportedHost],
                      ssh: Mapping[str, Any], directory: Path) -> tuple[dict[str, str], str]:
    """--fetch-client-cert DIR: a reachable host's client certificate, key and CA copied
    into ``directory`` (mode 0600); the inventory's tls settings, and a line saying whence."""
    got = client_files_of(findings)
    if got is None:
        raise RefusedError("--fetch-client-cert: no reachable host holds a client "
                           "certificate (kubeadm's healthcheck-client or a peer certificate)")
    finding, remote = got
    names = local_names(remote)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    t = connector(hosts, ssh)(finding.address)
    try:
        for path, name in zip(remote, names, strict=True):
            data = read_remote(t, path)
            dest = directory / name
            dest.touch(mode=0o600, exist_ok=True)
            dest.chmod(0o600)
            dest.write_bytes(data)
    finally:
        t.close()
    d = directory.resolve()
    tls = {"ca": str(d / names[0]), "cert": str(d / names[1]), "key": str(d / names[2])}
    return tls, f"client certificate from {finding.address}:{remote[1]} copied to {d}"


def discovered(findings: Sequence[Finding], hosts: Sequence[ImportedHost],
               ssh: Mapping[str, Any], cluster: str | None, tls: dict[str, str] | None,
               origin: str) -> Discovered:
    """The inventory from the findings, each member with its host's own SSH settings; a
    host ``origin`` names as another member than its etcd is a problem."""
    by_address = {h.address: h for h in hosts}
    found = inventory_from(findings, cluster, {k: v for k, v in ssh.items()
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
    return found


def inventory_text(found: Discovered, origin: str) -> str:
    """The inventory file: a comment saying whence and what is missing, then the YAML."""
    import yaml

    return "".join(f"# {line}\n" for line in (
        f"Inventory discovered from {origin}.", *(f"MISSING: {m}" for m in found.missing))) \
        + yaml.safe_dump(found.inventory, sort_keys=False)

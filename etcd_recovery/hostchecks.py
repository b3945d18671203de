"""Can etcd start on this host as configured? Pure: what the host said in, checks out.

A member whose peer address is no longer on its host (a reboot that changed the IP, a NIC that
is down) cannot start: etcd exits at once with ``listen tcp ADDR:2380: bind: cannot assign
requested address``. So can one whose port another process holds, whose certificate expired or
cannot be read, or whose data dir sits on a read-only filesystem. Found only after every member
is fenced, each of these costs a wait and a misleading error; found here, before anything
changes, each refuses the plan with the cause and the likely fix.

What the host says (``HostFacts``) is gathered by one shell command (``FACTS_SCRIPT``: ``ip -o
addr``, ``ss -Htlnp``, ``/proc/mounts``, ``stat`` of the files etcd's flags name, ``getent
ahosts`` of host names in its URLs) and by reading the certificates' PEM text (public; the
private keys are only stat'ed, never read). Parsing and judging are the pure functions below.

etcd's flags (read at v3.6.16, server/embed/config.go): ``--listen-peer-urls``,
``--listen-client-urls``, ``--listen-metrics-urls``, ``--initial-advertise-peer-urls``,
``--advertise-client-urls``; ``--cert-file``, ``--key-file``, ``--trusted-ca-file`` and their
``--peer-`` twins. A listen URL's host must be an IP address (or ``localhost``), which etcd
binds (server/embed/etcd.go, configurePeerListeners / configureClientListeners).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

LISTEN_FLAGS = ("listen-peer-urls", "listen-client-urls", "listen-metrics-urls")
ADVERTISE_FLAGS = ("initial-advertise-peer-urls", "advertise-client-urls")
CERT_FLAGS = ("cert-file", "trusted-ca-file", "peer-cert-file", "peer-trusted-ca-file")
KEY_FLAGS = ("key-file", "peer-key-file")
# Which URLs each certificate is presented for: a client dials an advertised client URL, a peer
# an advertised peer URL, and each checks the certificate's SANs against that host.
SERVES = {"cert-file": "advertise-client-urls", "peer-cert-file": "initial-advertise-peer-urls"}
ANY_V4 = ".".join("0" * 4)  # the IPv4 wildcard address, which etcd may be told to listen on
WILDCARD = {ANY_V4, "::", ""}
# A certificate that runs out within this time is said (not refused): the restore works, the
# next restart may not.
SOON = dt.timedelta(days=14)

# One round over SSH. $1: the data dir; $2: etcd's user; $3: host names to resolve (space
# separated); the rest: files to stat. Sections start with "## name".
FACTS_SCRIPT = r"""
echo '## addr'; ip -o addr show 2>&1
echo '## listen'; ss -Htlnp 2>&1
echo '## mounts'; cat /proc/mounts
echo '## datadir'; d="$1"; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
readlink -f "$d"; [ -w "$d" ] && echo writable || echo not-writable
echo '## groups'; id -Gn "$2" 2>/dev/null || echo
echo '## resolve'; for n in $3; do getent ahosts "$n" | awk -v n="$n" '{print n, $1}'; done
shift 3; echo '## stat'
for f; do if [ -e "$f" ]; then stat -L -c '%U|%G|%a|%n' -- "$f"; else echo "missing|||$f"; fi
done
"""


@dataclass(frozen=True)
class Listener:
    address: str          # "0.0.0.0", "::", "172.30.16.11"
    port: int
    process: str | None   # "etcd"
    pid: int | None


@dataclass(frozen=True)
class FileStat:
    owner: str
    group: str
    mode: int


@dataclass(frozen=True)
class CertInfo:
    not_after: dt.datetime
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    subject: str


@dataclass(frozen=True)
class HostFacts:
    addresses: frozenset[str] | None        # None: the host could not say (no `ip`)
    listeners: tuple[Listener, ...] | None  # None: the host could not say (no `ss`)
    mounts: tuple[tuple[str, frozenset[str]], ...]   # (mount point, options)
    data_dir_path: str          # the data dir (or the nearest existing parent), resolved
    data_dir_writable: bool
    user: str                   # the user etcd runs as
    groups: frozenset[str]
    resolved: Mapping[str, frozenset[str]]
    files: Mapping[str, FileStat | None]              # None: no such file
    certs: Mapping[str, CertInfo | str] = field(default_factory=dict)  # str: why unreadable


@dataclass(frozen=True)
class HostCheck:
    member: str
    check: str      # "address", "port", "certificate", "data dir"
    subject: str    # what was checked: "peer URL https://172.31.16.11:2380", a file
    ok: bool
    found: str      # what the host said
    fix: str = ""   # the likely fix, when not ok
    warn: bool = False  # ok, but worth saying (a certificate about to expire)

    def message(self) -> str:
        text = f"{self.member}'s {self.subject}: {self.found}"
        return f"{text}. {self.fix}" if self.fix else text

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "ok": self.ok,
                "found": self.found, "fix": self.fix or None, "warn": self.warn}


# ------------------------------------------------------------------------------ parsing

def sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


_ADDR_RE = re.compile(r"\binet6?\s+([0-9a-fA-F.:]+)(?:/\d+)?")


def parse_addresses(lines: Sequence[str]) -> frozenset[str]:
    """``ip -o addr show``: every address assigned on the host."""
    found = set()
    for line in lines:
        m = _ADDR_RE.search(line)
        if m:
            try:
                found.add(str(ipaddress.ip_address(m.group(1))))
            except ValueError:
                continue
    return frozenset(found)


_USERS_RE = re.compile(r'\(\("([^"]*)",pid=(\d+)')


def parse_listeners(lines: Sequence[str]) -> tuple[Listener, ...]:
    """``ss -Htlnp``: ``LISTEN 0 4096 172.30.16.11:2379 0.0.0.0:* users:(("etcd",pid=9,fd=7))``
    (``[::]:2379`` and ``*:2379`` for the wildcards; ``%eth0`` scopes dropped)."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or not parts[0].startswith("LISTEN"):
            continue
        local = parts[3]
        host, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        host = host.strip("[]").split("%", 1)[0]
        host = ANY_V4 if host == "*" else host
        m = _USERS_RE.search(line)
        out.append(Listener(host, int(port), m.group(1) if m else None,
                            int(m.group(2)) if m else None))
    return tuple(out)


def parse_mounts(lines: Sequence[str]) -> tuple[tuple[str, frozenset[str]], ...]:
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 4:
            point = parts[1].replace("\\040", " ")
            out.append((point, frozenset(parts[3].split(","))))
    return tuple(out)


def parse_stats(lines: Sequence[str]) -> dict[str, FileStat | None]:
    out: dict[str, FileStat | None] = {}
    for line in lines:
        owner, group, mode, name = (line.split("|", 3) + ["", "", ""])[:4]
        if not name:
            continue
        if owner == "missing":
            out[name] = None
        else:
            try:
                out[name] = FileStat(owner, group, int(mode, 8))
            except ValueError:
                continue
    return out


def parse_facts(text: str, user: str, certs: Mapping[str, CertInfo | str]) -> HostFacts:
    s = sections(text)
    datadir = s.get("datadir", [])
    resolved: dict[str, set[str]] = {}
    for line in s.get("resolve", []):
        name, _, addr = line.partition(" ")
        if addr:
            resolved.setdefault(name, set()).add(addr.strip())
    listen = s.get("listen", [])
    addresses = parse_addresses(s.get("addr", []))
    # `ss -Htlnp` prints nothing at all when nothing listens; an error says so in words.
    listen_failed = any("not found" in x or "rror" in x or "nvalid" in x for x in listen)
    return HostFacts(
        addresses=addresses or None,
        listeners=None if listen_failed else parse_listeners(listen),
        mounts=parse_mounts(s.get("mounts", [])),
        data_dir_path=datadir[0].strip() if datadir else "",
        data_dir_writable=len(datadir) > 1 and datadir[1].strip() == "writable",
        user=user, groups=frozenset((s.get("groups") or [""])[0].split()),
        resolved={k: frozenset(v) for k, v in resolved.items()},
        files=parse_stats(s.get("stat", [])), certs=dict(certs))


def parse_cert(pem: bytes) -> CertInfo:
    """The first certificate of a PEM file (ValueError when there is none)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return CertInfo(cert.not_valid_after_utc, dns, ips, cert.subject.rfc4514_string())


# ------------------------------------------------------------------------------ judging

def url_hosts(flags: Mapping[str, str], names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(flag, url, host) for every URL of the named flags."""
    out = []
    for name in names:
        for url in (u.strip() for u in flags.get(name, "").split(",")):
            if not url:
                continue
            try:
                host = urlsplit(url).hostname or ""
            except ValueError:
                host = ""
            out.append((name, url, host))
    return out


def names_to_resolve(flags: Mapping[str, str]) -> list[str]:
    return sorted({h for _, _, h in url_hosts(flags, LISTEN_FLAGS + ADVERTISE_FLAGS)
                   if h and not _is_ip(h) and re.fullmatch(r"[A-Za-z0-9.-]+", h)})


def files_to_check(flags: Mapping[str, str]) -> list[str]:
    return sorted({flags[f] for f in CERT_FLAGS + KEY_FLAGS if flags.get(f)})


def certs_to_read(flags: Mapping[str, str]) -> list[str]:
    return sorted({flags[f] for f in CERT_FLAGS if flags.get(f)})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _norm_ip(host: str) -> str:
    return str(ipaddress.ip_address(host)) if _is_ip(host) else host


_WHAT = {"listen-peer-urls": "peer listen URL", "listen-client-urls": "client listen URL",
         "listen-metrics-urls": "metrics URL", "initial-advertise-peer-urls": "peer URL",
         "advertise-client-urls": "client URL"}


def _others(addresses: frozenset[str] | None) -> str:
    shown = sorted(a for a in addresses or () if not ipaddress.ip_address(a).is_loopback
                   and not ipaddress.ip_address(a).is_link_local)
    return ", ".join(shown) or "no address but loopback"


def check_addresses(member: str, flags: Mapping[str, str], facts: HostFacts) -> list[HostCheck]:
    if facts.addresses is None:
        return [HostCheck(member, "address", "URLs", True,
                          "not checked: `ip -o addr` printed no address on the host")]
    out = []
    for flag, url, host in url_hosts(flags, LISTEN_FLAGS + ADVERTISE_FLAGS):
        subject = f"{_WHAT[flag]} {url}"
        if host in WILDCARD:
            if flag in LISTEN_FLAGS:
                out.append(HostCheck(member, "address", subject, True, "listens on every address"))
            continue
        if host == "localhost":
            out.append(HostCheck(member, "address", subject, True, "localhost"))
            continue
        if _is_ip(host):
            addrs = {_norm_ip(host)}
            how = host
        else:
            addrs = set(facts.resolved.get(host, frozenset()))
            if not addrs:
                out.append(HostCheck(
                    member, "address", subject, False, f"{host} does not resolve on the host",
                    f"fix the name in DNS or /etc/hosts on {member}, or use its IP address"))
                continue
            how = f"{host} ({', '.join(sorted(addrs))})"
        if addrs & (facts.addresses or frozenset()):
            out.append(HostCheck(member, "address", subject, True, f"{how} is on the host"))
        else:
            out.append(HostCheck(
                member, "address", subject, False,
                f"{how} is not an address of the host (it has {_others(facts.addresses)})",
                f"Bring the address back on {member} (ip addr add {host}/PREFIX dev IFACE), "
                f"or, if it changed for good, plan without {member}'s data "
                f"(--exclude {member}): a member whose peer URL must change is not recovered "
                "in place (see the README, etcd must be able to start)"))
    return out


def _overlaps(a: str, b: str) -> bool:
    return a in WILDCARD or b in WILDCARD or _norm_ip(a) == _norm_ip(b) \
        or {a, b} <= {"127.0.0.1", "localhost"}


def check_ports(member: str, flags: Mapping[str, str], facts: HostFacts,
                own_pids: Sequence[int]) -> list[HostCheck]:
    """Each listen URL's port is free, or held by this member's own etcd (``own_pids``)."""
    if facts.listeners is None:
        return [HostCheck(member, "port", "listen URLs", True,
                          "not checked: `ss -Htlnp` did not run on the host")]
    out = []
    seen = set()
    for flag, url, host in url_hosts(flags, LISTEN_FLAGS):
        try:
            port = urlsplit(url).port
        except ValueError:
            port = None
        if port is None or (host, port) in seen:
            continue
        seen.add((host, port))
        holders = [x for x in facts.listeners if x.port == port and _overlaps(x.address, host)]
        foreign = [x for x in holders if x.pid is None or x.pid not in own_pids]
        subject = f"{_WHAT[flag]} {url}"
        if not foreign:
            found = "held by its own etcd" if holders else f"port {port} is free"
            out.append(HostCheck(member, "port", subject, True, found))
            continue
        x = foreign[0]
        who = f"{x.process} (pid {x.pid})" if x.pid is not None else "another process"
        out.append(HostCheck(
            member, "port", subject, False,
            f"port {port} on {x.address} is held by {who}",
            f"stop {who} on {member}, or give etcd another port"))
    return out


def _readable(st: FileStat, user: str, groups: frozenset[str]) -> bool:
    if user == "root":
        return True
    if st.owner == user:
        return bool(st.mode & 0o400)
    if st.group in groups:
        return bool(st.mode & 0o040)
    return bool(st.mode & 0o004)


def _covers(cert: CertInfo, host: str) -> bool:
    if _is_ip(host):
        return _norm_ip(host) in {_norm_ip(i) for i in cert.ips}
    host = host.lower().rstrip(".")
    for name in (d.lower().rstrip(".") for d in cert.dns):
        if name == host:
            return True
        if name.startswith("*.") and host.count(".") == name.count(".") \
                and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def check_files(member: str, flags: Mapping[str, str], facts: HostFacts,
                now: dt.datetime) -> list[HostCheck]:
    out = []
    for flag in CERT_FLAGS + KEY_FLAGS:
        path = flags.get(flag)
        if not path:
            continue
        subject = f"--{flag} {path}"
        st = facts.files.get(path)
        if st is None:
            out.append(HostCheck(member, "certificate", subject, False, "no such file",
                                 f"put the file back on {member} (it is in the member's "
                                 "backup, if one was taken) or fix the flag"))
            continue
        if not _readable(st, facts.user, facts.groups):
            out.append(HostCheck(
                member, "certificate", subject, False,
                f"etcd's user {facts.user} cannot read it (owner {st.owner}:{st.group}, "
                f"mode {st.mode:o})",
                f"chown {facts.user} or chmod it so that {facts.user} can read it"))
            continue
        if flag in KEY_FLAGS:
            out.append(HostCheck(member, "certificate", subject, True, "readable"))
            continue
        cert = facts.certs.get(path)
        if cert is None:
            out.append(HostCheck(member, "certificate", subject, True, "readable"))
            continue
        if isinstance(cert, str):
            out.append(HostCheck(member, "certificate", subject, False,
                                 f"not a PEM certificate: {cert}", "fix the file or the flag"))
            continue
        if cert.not_after <= now:
            out.append(HostCheck(
                member, "certificate", subject, False,
                f"expired {cert.not_after:%Y-%m-%d %H:%M} UTC ({cert.subject})",
                "renew it from the cluster's CA (kubeadm: `kubeadm certs renew etcd-server "
                "etcd-peer`) and plan again"))
            continue
        serves = (SERVES[flag],) if flag in SERVES else ()
        uncovered = [(f, u, h) for f, u, h in url_hosts(flags, serves)
                     if h and h not in WILDCARD and not _covers(cert, h)]
        if uncovered:
            f, u, h = uncovered[0]
            sans = ", ".join(cert.dns + cert.ips) or "none"
            out.append(HostCheck(
                member, "certificate", subject, False,
                f"its names ({sans}) do not cover {h} of the {_WHAT[f]} {u}",
                "issue a certificate whose SANs name that host, or fix the URL"))
            continue
        left = cert.not_after - now
        out.append(HostCheck(member, "certificate", subject, True,
                             f"valid until {cert.not_after:%Y-%m-%d} UTC"
                             + (f": {left.days} day(s) left" if left < SOON else ""),
                             warn=left < SOON))
    return out


def mount_of(path: str, mounts: Sequence[tuple[str, frozenset[str]]]
             ) -> tuple[str, frozenset[str]] | None:
    best: tuple[str, frozenset[str]] | None = None
    for point, opts in mounts:
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, opts)
    return best


def check_data_dir(member: str, data_dir: str, facts: HostFacts) -> list[HostCheck]:
    subject = f"data dir {data_dir}"
    if not facts.data_dir_path:
        return [HostCheck(member, "data dir", subject, True,
                          "not checked: the host did not say where it is")]
    path = facts.data_dir_path
    mount = mount_of(posixpath.normpath(path), facts.mounts)
    if mount is not None and "ro" in mount[1]:
        return [HostCheck(member, "data dir", subject, False,
                          f"{mount[0]} is mounted read-only",
                          f"remount it read-write on {member} (mount -o remount,rw "
                          f"{mount[0]}) and plan again")]
    if not facts.data_dir_writable:
        return [HostCheck(member, "data dir", subject, False, f"{path} is not writable",
                          "fix its permissions or its filesystem and plan again")]
    return [HostCheck(member, "data dir", subject, True,
                      f"writable ({mount[0]})" if mount else "writable")]


def host_checks(member: str, data_dir: str, flags: Mapping[str, str], facts: HostFacts,
                own_pids: Sequence[int], now: dt.datetime) -> tuple[HostCheck, ...]:
    """Every check of one member's host, in the order a refusal names the first failure."""
    return (*check_addresses(member, flags, facts), *check_ports(member, flags, facts, own_pids),
            *check_files(member, flags, facts, now), *check_data_dir(member, data_dir, facts))


def failures(checks: Sequence[HostCheck]) -> list[HostCheck]:
    return [c for c in checks if not c.ok]

"""doctor's edge: read every member's host and etcd concurrently, each reading under its own
timeout, into plain values (readings.py). Nothing on a host is changed.

Per member, on one SSH connection: ``true`` (SSH works), ``date`` (its clock against ours),
one script as root (etcd's pid, free space where backups go, the data dir's size and mount
point), etcd's flags (its process, else its configuration file), the certificates its flags
name (hostchecks' facts script and X.509 parser), inspect's WAL reader in place; through SSH
tunnels, etcd's gRPC API (Status, serializable MemberList, alarms, a serializable and a
linearizable read of one key, timed) and its metrics URL (``--listen-metrics-urls``, else the
client URL). A host that is gone costs its 1 s TCP probe, once. At the same time, the
recovery is rehearsed: inspect and ``plan --allow-quorum``, which change nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import posixpath
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from .. import hostchecks as hc
from .. import processes
from ..crosscheck import check_member
from ..errors import EtcdRecoveryError, FormatError, TransportError
from ..inspect import (
    etcd_user,
    own_flags,
    read_certs,
    read_config_text,
    read_wal_tail,
)
from ..inventory import Inventory, Member
from ..live import EtcdClient, LiveStatus
from ..model import Check as ModelCheck
from ..runtimes import config as rconf
from ..runtimes.base import runtime_for
from ..transport.base import Transport
from ..transport.factory import TransportFactory, ssh_transport
from . import checks
from . import metrics as mx
from .readings import ClusterReadings, InventoryMember, MemberReadings, Timed

GRPC_TIMEOUT_S = 2.0       # each etcd call
CMD_TIMEOUT_S = 10.0       # each host command
HTTP_TIMEOUT_S = 3.0       # the metrics page
MEMBER_BUDGET_S = 30.0     # a host's whole reading, past which it is reported as timed out
STATE_DIR = "/var/lib/etcd-recovery"   # where a recovery keeps its backups (plan.STATE_DIR)
READ_KEY = b"health"       # etcd-diagnosis reads this key (plugins/read/plugin.go)
MAX_METRICS = 16 * 1024 * 1024

# $1: the data dir; $2: where backups go; $3: --wal-dir (may be empty). Read-only.
HOST_SCRIPT = r"""
echo '## free'; d="$2"; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
echo "$d"; df -PB1 "$d" | awk 'NR==2 {print $4}'
echo '## size'; du -sb "$1" 2>/dev/null | cut -f1
echo '## mount'; df -P "$1" 2>/dev/null | awk 'NR==2 {print $6}'
echo '## walmount'; [ -n "$3" ] && df -P "$3" 2>/dev/null | awk 'NR==2 {print $6}'
exit 0
"""


def _why(exc: EtcdRecoveryError) -> str:
    return exc.detail if isinstance(exc, TransportError) else str(exc)


@dataclass
class _Live:
    """A member's open etcd client (through its tunnel), kept for the status retries."""

    client: EtcdClient
    stack: contextlib.ExitStack
    transport: Transport | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()


@dataclass
class Gathered:
    readings: ClusterReadings
    timings: dict[str, float] = field(default_factory=dict)


def parse_host_script(text: str) -> dict[str, list[str]]:
    return hc.sections(text)


def _int(lines: Sequence[str], i: int = 0) -> int | None:
    try:
        return int(lines[i].strip())
    except (IndexError, ValueError):
        return None


def _first(lines: Sequence[str]) -> str | None:
    return lines[0].strip() if lines and lines[0].strip() else None


def _flags(t: Transport, member: Member, runtime: str, running: dict[str, str] | None
           ) -> tuple[dict[str, str], str, tuple[ModelCheck, ...]]:
    """etcd's flags (the member's own running etcd's, else its configuration file's), where
    they were read, and the inventory against both (crosscheck: what `inventory discover`
    would write for this member today, field by field)."""
    path = runtime_for(runtime).config_path(member)
    text, error = read_config_text(t, member, runtime)
    drift = check_member(member, runtime, path, text, error, running, None)
    if running:
        return dict(running), "process", drift
    if text is not None:
        try:
            return rconf.config_flags(runtime, text, path), "config file", drift
        except FormatError:
            pass
    return {}, "", drift


def _certs(t: Transport, member: Member, runtime: str, flags: Mapping[str, str],
           now: dt.datetime) -> tuple[dict[str, hc.CertInfo | str], tuple[hc.HostCheck, ...]]:
    """The certificates etcd's flags name, read on the host (public PEM; keys only stat'ed),
    and hostchecks' file checks (exists, readable by etcd's user, SANs, expired)."""
    sudo = member.ssh.sudo
    user = etcd_user(t, runtime, member.unit or "etcd.service", timeout=CMD_TIMEOUT_S)
    res = t.run(["sh", "-c", hc.FACTS_SCRIPT, "sh", member.data_dir, user, "",
                 *hc.files_to_check(flags)], sudo=sudo, check=False, timeout=CMD_TIMEOUT_S)
    facts = hc.parse_facts(res.stdout.decode(errors="replace"), user, {})
    certs = read_certs(t, flags, facts, sudo)
    facts = replace(facts, certs=certs)
    return certs, tuple(hc.check_files(member.name, flags, facts, now))


def _timed(fn: Callable[[], str]) -> Timed:
    t0 = time.monotonic()
    try:
        detail = fn()
    except EtcdRecoveryError as exc:
        return Timed(time.monotonic() - t0, _why(exc) or exc.__class__.__name__)
    return Timed(time.monotonic() - t0, None, detail)


def metrics_url(flags: Mapping[str, str]) -> str:
    """Where etcd serves /metrics: the first --listen-metrics-urls URL, else its client URL
    (etcd serves /metrics there too)."""
    for flag in ("listen-metrics-urls", "advertise-client-urls"):
        for url in (u.strip() for u in flags.get(flag, "").split(",")):
            if url:
                return url
    return ""


def _fetch_metrics(t: Transport, url: str, inv: Inventory) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host in hc.WILDCARD:
        host = "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with t.tunnel(host, port) as (lhost, lport):
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=inv.tls.ca)
            ctx.check_hostname = False  # the tunnel's end is 127.0.0.1; the CA is checked
            if inv.tls.cert and inv.tls.key:
                ctx.load_cert_chain(inv.tls.cert, inv.tls.key)
            conn = http.client.HTTPSConnection(lhost, lport, timeout=HTTP_TIMEOUT_S,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection(lhost, lport, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read(MAX_METRICS)
            if resp.status != 200:
                raise TransportError(t.host, f"{url}/metrics answered HTTP {resp.status}")
            return body.decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise TransportError(t.host, f"{url}/metrics: {exc}") from exc
        finally:
            conn.close()


def _read_key(client: EtcdClient, serializable: bool) -> Timed:
    def read() -> str:
        client.get(READ_KEY, serializable=serializable)
        return ""
    return _timed(read)


def read_member(member: Member, inv: Inventory, factory: TransportFactory,
                live: dict[str, _Live], lock: threading.Lock) -> MemberReadings:
    """One member's readings; its etcd client is left open in ``live`` for the retries."""
    base = MemberReadings(name=member.name, host=member.ssh.host)
    t = factory(member)
    ok = False
    try:
        ssh = _timed(lambda: (t.run(["true"], timeout=CMD_TIMEOUT_S), "")[1])
        if not ssh.ok:
            return replace(base, ssh=ssh)
        r = replace(base, ssh=ssh)
        t0 = time.time()
        res = t.run(["date", "+%s.%N"], check=False, timeout=CMD_TIMEOUT_S)
        t1 = time.time()
        try:
            remote = float(res.stdout.decode().strip())
            r = replace(r, clock_offset_s=remote - (t0 + t1) / 2,
                        clock_uncertainty_s=(t1 - t0) / 2)
        except ValueError:
            pass
        wal_flag_dir = ""
        out: dict[str, list[str]] = {}

        def as_root() -> str:
            nonlocal out
            got = t.run(["sh", "-c", HOST_SCRIPT, "sh", member.data_dir, STATE_DIR,
                         wal_flag_dir], sudo=True, timeout=CMD_TIMEOUT_S)
            out = parse_host_script(got.stdout.decode(errors="replace"))
            return ""
        sudo = _timed(as_root)
        r = replace(r, sudo=sudo)
        if not sudo.ok:
            return r
        # the member's own etcd, by its data dir, among every etcd on the host (kops: two)
        procs = processes.etcd_processes(t, sudo=True)
        pid = processes.own_pid(procs, member.data_dir)
        free = out.get("free", [])
        r = replace(r, etcd_running=pid is not None,
                    free_path=free[0].strip() if free else "",
                    free_bytes=_int(free, 1), data_size=_int(out.get("size", [])),
                    data_mount=_first(out.get("mount", [])))
        flags, source, drift = _flags(t, member, inv.runtime, own_flags(procs, pid))
        flags.setdefault("data-dir", member.data_dir)
        r = replace(r, flags=flags, flags_source=source, config_checks=drift)
        if flags.get("wal-dir"):
            got = t.run(["sh", "-c", HOST_SCRIPT, "sh", member.data_dir, STATE_DIR,
                         flags["wal-dir"]], sudo=True, check=False, timeout=CMD_TIMEOUT_S)
            r = replace(r, wal_mount=_first(parse_host_script(
                got.stdout.decode(errors="replace")).get("walmount", [])))
        try:
            certs, cert_checks = _certs(t, member, inv.runtime, flags,
                                        dt.datetime.now(dt.UTC))
            r = replace(r, certs=certs, cert_checks=cert_checks)
        except TransportError as exc:
            r = replace(r, certs={"(host)": _why(exc)})

        def readable() -> str:
            for sub in ("wal", "snap"):
                t.list_dir(posixpath.join(member.data_dir, "member", sub), sudo=member.ssh.sudo)
            return "wal and snap listed"
        r = replace(r, data_dir_readable=_timed(readable))

        def disk() -> str:
            try:
                wal, nbytes, _ = read_wal_tail(t, member)
            except Exception as exc:  # inspect's private _NoWal: the WAL is not there
                if isinstance(exc, EtcdRecoveryError):
                    raise
                raise TransportError(member.name, str(exc)) from exc
            return f"last index {max(wal.last_index, wal.snapshot_index)}, {nbytes} bytes read"
        r = replace(r, disk_reader=_timed(disk))
        r = _read_live(t, member, inv, r, live, lock)
        url = metrics_url(flags)
        if r.etcd_running and url:
            try:
                text = _fetch_metrics(t, url, inv)
                r = replace(r, metrics=mx.parse(text), metrics_url=url)
            except (EtcdRecoveryError, OSError, ssl.SSLError) as exc:
                why = _why(exc) if isinstance(exc, EtcdRecoveryError) else str(exc)
                r = replace(r, metrics_error=why, metrics_url=url)
        else:
            r = replace(r, metrics_url=url, metrics_error="etcd is not running"
                        if not r.etcd_running else "no metrics URL in etcd's flags")
        ok = True
        return r
    except EtcdRecoveryError as exc:
        return replace(base, error=_why(exc))
    finally:
        with lock:
            kept = live.get(member.name) if ok else None
            if kept is not None:
                kept.transport = t
        if kept is None:
            with contextlib.suppress(Exception):
                t.close()


def _read_live(t: Transport, member: Member, inv: Inventory, r: MemberReadings,
               live: dict[str, _Live], lock: threading.Lock) -> MemberReadings:
    if not r.etcd_running:
        return replace(r, status_error="etcd is not running on the host")
    host, port = member.client_hostport
    stack = contextlib.ExitStack()
    try:
        lhost, lport = stack.enter_context(t.tunnel(host, port))
        user, password = inv.credentials()
        client = stack.enter_context(EtcdClient(
            f"{lhost}:{lport}", ca_file=inv.tls.ca, cert_file=inv.tls.cert,
            key_file=inv.tls.key, server_name=host, username=user, password=password,
            timeout=GRPC_TIMEOUT_S))
        st = client.status()
    except EtcdRecoveryError as exc:
        stack.close()
        return replace(r, status_error=_why(exc))
    r = replace(r, status=st, version=st.version or None)
    try:
        r = replace(r, members=tuple(client.member_list(serializable=True)))
    except EtcdRecoveryError as exc:
        r = replace(r, member_list_error=_why(exc))
    if st.leader and not st.is_learner:
        try:
            r = replace(r, alarms=tuple(client.alarms()))
        except EtcdRecoveryError as exc:
            r = replace(r, alarms_error=_why(exc))
    elif not st.leader:
        r = replace(r, alarms_error="no leader")
    r = replace(r, read_serializable=_read_key(client, True),
                read_linearizable=_read_key(client, False))
    with lock:
        live[member.name] = _Live(client, stack)
    return r


def _status_round(live: Mapping[str, _Live], order: Sequence[str]) -> dict[str, LiveStatus]:
    def one(name: str) -> tuple[str, LiveStatus | None]:
        try:
            return name, live[name].client.status()
        except EtcdRecoveryError:
            return name, None
    names = [n for n in order if n in live]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        got = list(pool.map(one, names))
    return {n: s for n, s in got if s is not None}


def rehearse_plan(inv: Inventory, factory: TransportFactory) -> Timed:
    """What ``plan --allow-quorum`` would do: inspect and lay out the plan; nothing is
    changed and no plan is kept."""
    from ..inspect import inspect_cluster, read_configs
    from ..plan.force_new_cluster import make_plan

    def plan() -> str:
        report = inspect_cluster(inv, factory, allow_quorum=True)
        if report.decision.refused or report.decision.chosen is None:
            raise EtcdRecoveryError(f"refused: {report.decision.reason}")
        configs = read_configs(inv, report)
        made = make_plan(inv, report, configs, "doctor-rehearsal", allow_quorum=True)
        return f"{len(made.steps)} steps, keep {made.chosen}"
    return _timed(plan)


def _client_cert(inv: Inventory) -> hc.CertInfo | str | None:
    if not inv.tls.cert:
        return None
    try:
        with open(inv.tls.cert, "rb") as fh:
            return hc.parse_cert(fh.read(1024 * 1024))
    except OSError as exc:
        return exc.strerror or str(exc)
    except ValueError as exc:
        return str(exc) or "no PEM certificate in it"


def gather(inv: Inventory, names: Sequence[str] = (), factory: TransportFactory = ssh_transport,
           plan: bool = True, sleep: Callable[[float], None] = time.sleep) -> Gathered:
    """Every reading the checks need (``plan``: also rehearse plan --allow-quorum)."""
    t0 = time.monotonic()
    live: dict[str, _Live] = {}
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=len(inv.members) + 1)
    timings: dict[str, float] = {}
    try:
        plan_future: Future[Timed] | None = pool.submit(rehearse_plan, inv, factory) \
            if plan else None
        futures = {m.name: pool.submit(read_member, m, inv, factory, live, lock)
                   for m in inv.members}
        members = []
        for m in inv.members:
            left = max(0.1, MEMBER_BUDGET_S - (time.monotonic() - t0))
            try:
                members.append(futures[m.name].result(timeout=left))
            except FutureTimeout:
                members.append(MemberReadings(name=m.name, host=m.ssh.host,
                                              error=f"no answer within {MEMBER_BUDGET_S:.0f} s"))
        timings["members"] = time.monotonic() - t0
        # The statuses compared are taken together, once every member has been read, as
        # etcd-diagnosis takes them one after the other; each member's own first Status is
        # what endpoint-status shows.
        first = _status_round(live, [m.name for m in inv.members])
        rounds = [first or {m.name: m.status for m in members if m.status is not None}]
        while checks.should_retry_status(rounds):
            sleep(checks.SOFT_RETRY_WAIT_S)
            rounds.append(_status_round(live, [m.name for m in inv.members]))
        timings["status_rounds"] = float(len(rounds))
        plan_reading = None
        if plan_future is not None:
            left = max(0.1, MEMBER_BUDGET_S * 2 - (time.monotonic() - t0))
            try:
                plan_reading = plan_future.result(timeout=left)
            except FutureTimeout:
                plan_reading = Timed(time.monotonic() - t0, "no plan within the time allowed")
            timings["plan"] = plan_reading.seconds
    finally:
        with lock:
            for entry in list(live.values()):
                entry.close()
        pool.shutdown(wait=False, cancel_futures=True)
    readings = ClusterReadings(
        cluster=inv.name,
        inventory=tuple(InventoryMember(m.name, m.peer_url) for m in inv.members),
        members=tuple(members), now=dt.datetime.now(dt.UTC), status_rounds=tuple(rounds),
        client_cert=_client_cert(inv), client_cert_path=inv.tls.cert or "", plan=plan_reading)
    timings["total"] = time.monotonic() - t0
    return Gathered(readings, timings)



"""inspect: read every inventory member's state over SSH, concurrently, and decide.

Per member (the edge; the parsing and the choice are pure and live elsewhere):
1. SSH in (strict host keys). Unreachable -> reported as such, not a crash.
2. Is its etcd running? (``pgrep -x etcd``, then the one whose data dir is the member's.)
3. Running: gRPC through an SSH tunnel to the member's client URL: Status, MemberList
   (serializable, works without quorum), alarms, and a linearizable read to prove quorum.
4. Stopped, or not answering: read the data dir in place with random-access reads: the last
   WAL file(s), the newest snap file name, and the bbolt backend's meta/key/members buckets.
   Nothing is copied whole.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from . import etcdflags
from . import hostchecks as hc
from .actions import sha256_argv
from .choose import decide
from .crosscheck import check_member, mismatches, process_flags
from .errors import (
    AccessDenied,
    EtcdApiError,
    EtcdRecoveryError,
    FormatError,
    HostKeyError,
    JumpHostError,
    TransportError,
    UsageError,
)
from .formats.backend import read_backend
from .formats.snap import latest_snapshot, parse_snap_name
from .formats.wal import WalState, read_wal, wal_file_names
from .inventory import Inventory, Member
from .live import EtcdClient
from .model import Decision, InspectReport, MemberState, NewBinary, PeerView, Quorum, WalTail
from .plan.snapshot import CTR_NAMESPACE
from .processes import Processes, etcd_processes, own_pid
from .runtimes import config as rconf
from .runtimes.base import runtime_for
from .runtimes.config import manifest_image
from .transport.base import Transport, read_through_all
from .transport.factory import TransportFactory, ssh_transport

GRPC_TIMEOUT_S = 3.0
QUORUM_PROBE_KEY = b"/etcd-recovery/quorum-probe"


def _why(exc: EtcdRecoveryError) -> str:
    """An error as a member's ``error`` or note says it: without the member's name in front,
    which a transport's errors carry (its label) and every rendering puts there itself."""
    return exc.detail if isinstance(exc, TransportError) else str(exc)


def _source_bytes(src: Any) -> int:
    return int(getattr(src, "bytes_read", 0))


# ------------------------------------------------------------------------------- on disk

class _NoWal(Exception):
    """The data dir has no WAL to read (or its directory cannot be listed)."""


def read_wal_tail(t: Transport, member: Member) -> tuple[WalState, int, WalTail | None]:
    """The member's last WAL file(s), read in place; with the bytes read over SSH and where
    its valid records end (None when the last file holds none)."""
    sudo = member.ssh.sudo
    wal_dir = member.wal   # --wal-dir, else <data-dir>/member/wal
    try:
        wal_names = wal_file_names(f.name for f in t.list_dir(wal_dir, sudo=sudo))
    except TransportError as exc:
        raise _NoWal(f"cannot list {wal_dir}: {_why(exc)}") from exc
    if not wal_names:
        raise _NoWal(f"no WAL files in {wal_dir}")
    total = 0
    # The last WAL file starts with the metadata and the HardState (etcd writes both at every
    # cut); read the one before it too when the last holds no entry yet.
    # Each file is streamed (read_through: a cat of it, several times SFTP's throughput);
    # the reader stops at the zeros of the last file's preallocated tail, and its close ends
    # the stream there.
    wal = None
    for count in (1, 2):
        with read_through_all(t, [posixpath.join(wal_dir, n) for n in wal_names[-count:]],
                              sudo=sudo) as sources:
            wal = read_wal(sources)
        total += sum(_source_bytes(s) for s in sources)
        if wal.entry_count > 0 or len(wal_names) <= count:
            break
    assert wal is not None
    last = sources[-1]
    tail = WalTail(file=posixpath.join(wal_dir, wal_names[-1]), offset=wal.end_offset,
                   crc=wal.last_crc, room=last.size() - wal.end_offset,
                   term=wal.hardstate_term, vote=wal.hardstate_vote) \
        if wal.end_file == last.name else None
    return wal, total, tail


def read_disk(t: Transport, member: Member) -> MemberState:
    """The member's state from its data dir, read in place."""
    sudo = member.ssh.sudo
    base = MemberState(name=member.name, host=member.ssh.host, reachable=True,
                       etcd_running=False, source="disk")
    snap_dir = posixpath.join(member.data_dir, "member", "snap")
    try:
        wal, total, tail = read_wal_tail(t, member)
    except _NoWal as exc:
        return replace(base, source=None, error=str(exc))
    snap_names = [f.name for f in t.list_dir(snap_dir, sudo=sudo)]
    latest = latest_snapshot(snap_names)
    snap_index = parse_snap_name(latest)[1] if latest else 0
    db = None
    if "db" in snap_names:
        src = t.open_file(posixpath.join(snap_dir, "db"), sudo=sudo)
        db = read_backend(src)
        total += _source_bytes(src)
    consistent = db.consistent_index if db else None
    notes = []
    if db is None:
        notes.append(f"no backend file {snap_dir}/db")
    if wal.torn_tail:
        notes.append(f"WAL ends in a torn write in {wal.end_file} at offset {wal.end_offset} "
                     f"({wal.torn_reason}); etcd repairs this on start")
    commit = max(wal.hardstate_commit, consistent or 0)
    return replace(
        base, member_id=wal.node_id, cluster_id=wal.cluster_id, term=wal.hardstate_term,
        commit_index=commit, consistent_index=consistent,
        last_index=max(wal.last_index, wal.snapshot_index, snap_index),
        last_term=wal.last_term or wal.snapshot_term, revision=db.revision if db else None,
        db_size_bytes=db.data_size_bytes if db else None, hardstate_commit=wal.hardstate_commit,
        snapshot_index=max(wal.snapshot_index, snap_index), torn_tail=wal.torn_tail,
        wal_tail=tail, term_starts=wal.term_starts,
        membership=tuple(PeerView(m.id, m.name or "", tuple(m.peer_urls), m.is_learner)
                         for m in (db.members if db else ())),
        removed_ids=tuple(db.removed_member_ids) if db else (),
        storage_version=db.storage_version if db else None,
        alarms=tuple(a.alarm for a in db.alarms) if db else (),
        notes=tuple(notes), bytes_read=total)



# ------------------------------------------------------------------------------- live

class StoppedSeen:
    """Members found reachable with no etcd process, shared by one inspection's readers: a
    quorum probe stops waiting once too few voters can still be running for a quorum. An
    unreachable host counts as possibly running (its etcd may be up behind a broken SSH
    path), and so does a voter the inventory does not name."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._names.add(name)

    def why_impossible(self, voters: Sequence[str]) -> str | None:
        """Why no quorum can exist among ``voters`` (their names), or None."""
        with self._lock:
            stopped = [n for n in voters if n in self._names]
        need = len(voters) // 2 + 1
        if len(voters) - len(stopped) < need:
            return (f"no quorum possible: etcd is not running on {', '.join(sorted(stopped))}, "
                    f"so at most {len(voters) - len(stopped)} of {len(voters)} voting members "
                    f"run (a quorum needs {need})")
        return None


def read_live(t: Transport, member: Member, inv: Inventory,
              stopped: StoppedSeen | None = None) -> tuple[MemberState, Quorum]:
    host, port = member.client_hostport
    with t.tunnel(host, port) as (lhost, lport):
        user, password = inv.credentials()
        with EtcdClient(f"{lhost}:{lport}", ca_file=inv.tls.ca, cert_file=inv.tls.cert,
                        key_file=inv.tls.key, server_name=host, username=user,
                        password=password, timeout=GRPC_TIMEOUT_S) as client:
            st = client.status()
            notes: list[str] = []
            try:
                members = client.member_list(serializable=True)
            except EtcdApiError as exc:
                members, notes = [], [f"member list: {exc}"]
            quorum = Quorum(False)
            alarms: tuple[str, ...] = ()
            if st.leader and not st.is_learner:
                # Alarm and a linearizable read both go through raft: only worth asking
                # when the member knows a leader. The read proves quorum; it is given up as
                # soon as too few voters are left running for one.
                voters = [m.name or f"{m.id:x}" for m in members if not m.is_learner]
                seen = stopped or StoppedSeen()
                why = client.quorum_read(QUORUM_PROBE_KEY,
                                         lambda: seen.why_impossible(voters) if voters else None)
                if why is None:
                    quorum = Quorum(True, via=member.name, leader_id=st.leader)
                    try:
                        alarms = tuple(a.alarm for a in client.alarms())
                    except EtcdApiError as exc:
                        notes.append(f"alarms: {exc}")
                else:
                    notes.append(f"no quorum: a linearizable read failed: {why}"
                                 if not why.startswith("no quorum") else why)
            else:
                notes.append("no leader: alarms not readable over gRPC without quorum")
    # etcd reports neither the last log term nor the last index live (raftIndex is the commit
    # index, raftTerm the current term): read both from the WAL in place. Entries are fsynced
    # before etcd acknowledges them, so what is on disk is the log raft would compare.
    last_index: int | None = None
    last_term: int | None = None
    term_starts: tuple[tuple[int, int], ...] = ()
    try:
        wal, wal_bytes, _ = read_wal_tail(t, member)
        last_index = max(wal.last_index, wal.snapshot_index)
        last_term = wal.last_term or wal.snapshot_term
        term_starts = wal.term_starts
        notes.append("last log term and index read from the WAL while etcd runs")
    except (_NoWal, EtcdRecoveryError) as exc:
        wal_bytes = 0
        notes.append(f"last log term and index unknown: the WAL could not be read while etcd "
                     f"runs ({exc})")
    state = MemberState(
        name=member.name, host=member.ssh.host, reachable=True, etcd_running=True,
        source="live", member_id=st.member_id, cluster_id=st.cluster_id, term=st.raft_term,
        commit_index=st.raft_index, consistent_index=st.raft_applied_index,
        last_index=last_index, last_term=last_term, revision=st.revision, bytes_read=wal_bytes,
        term_starts=term_starts, etcd_version=st.version or None,
        storage_version=st.storage_version or None,
        db_size_bytes=st.db_size, leader_id=st.leader or None, is_learner=st.is_learner,
        alarms=alarms,
        membership=tuple(PeerView(m.id, m.name, tuple(m.peer_urls), m.is_learner)
                         for m in members),
        notes=tuple(notes + [f"etcd reports errors: {e}" for e in st.errors]))
    return state, quorum


# ------------------------------------------------------------------------------- per member

def read_config_text(t: Transport, member: Member, runtime: str
                     ) -> tuple[str | None, str | None]:
    """The member's configuration file (manifest or env file) as text, or why not."""
    path = runtime_for(runtime).config_path(member)
    try:
        src = t.open_file(path, sudo=member.ssh.sudo)
        size = src.size()
        if size > 1024 * 1024:
            return None, "larger than 1 MiB: not an etcd configuration"
        return src.read(0, size).decode("utf-8"), None
    except TransportError as exc:
        return None, str(exc)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"


def own_flags(procs: Processes, pid: int | None) -> dict[str, str] | None:
    """The flags of the member's own running etcd, from the process dump already read (None:
    it does not run, or was gone when its /proc was read)."""
    if pid is None or not procs[pid][0]:
        return None
    return etcdflags.parse(*procs[pid]).flags


def etcd_user(t: Transport, runtime: str, unit: str, timeout: float = 10) -> str:
    """The user etcd runs as: the systemd unit's ``User=`` (empty: root); a static pod's etcd
    runs as root (kubeadm's manifest sets no runAsUser)."""
    if runtime != "systemd":
        return "root"
    show = t.run(["systemctl", "show", "-p", "User", unit], check=False,
                 timeout=timeout).stdout.decode(errors="replace")
    user = show.strip().partition("=")[2].strip()
    return user if re.fullmatch(r"[a-z_][a-z0-9_.-]*", user) else "root"


def read_certs(t: Transport, flags: Mapping[str, str], facts: hc.HostFacts, sudo: bool
               ) -> dict[str, hc.CertInfo | str]:
    """The certificates etcd's flags name that the host has (public PEM text), parsed, or
    why each could not be read."""
    certs: dict[str, hc.CertInfo | str] = {}
    for path in hc.certs_to_read(flags):
        if facts.files.get(path) is None:
            continue
        try:
            src = t.open_file(path, sudo=sudo)
            certs[path] = hc.parse_cert(src.read(0, min(src.size(), 1024 * 1024)))
        except TransportError as exc:
            certs[path] = _why(exc)
        except ValueError as exc:
            certs[path] = str(exc) or "no PEM certificate in it"
    return certs


def read_host_checks(t: Transport, member: Member, runtime: str, config_text: str | None,
                     pids: Sequence[str]) -> tuple[hc.HostCheck, ...]:
    """Can etcd start on this host as its configuration says (hostchecks.py)? One SSH round
    for the host's addresses, listeners, mounts and the files the flags name, then the
    certificates' PEM text (public); nothing when the configuration could not be read."""
    if config_text is None:
        return ()
    try:
        flags = rconf.config_flags(runtime, config_text, runtime_for(runtime).config_path(member))
    except FormatError:
        return ()
    flags.setdefault("data-dir", member.data_dir)
    sudo = member.ssh.sudo
    user = etcd_user(t, runtime, member.unit or "etcd.service")
    res = t.run(["sh", "-c", hc.FACTS_SCRIPT, "sh", member.data_dir, user,
                 " ".join(hc.names_to_resolve(flags)), *hc.files_to_check(flags)],
                sudo=sudo, check=False, timeout=20)
    facts = hc.parse_facts(res.stdout.decode(errors="replace"), user, {})
    facts = replace(facts, certs=read_certs(t, flags, facts, sudo))
    own = [int(p) for p in pids if p.isdigit()]
    return hc.host_checks(member.name, member.data_dir, flags, facts, own,
                          dt.datetime.now(dt.UTC))


def running_flags(t: Transport, pid: str) -> dict[str, str] | None:
    """The flags a running etcd was given (command line and ETCD_* environment), or None
    when the process is gone."""
    cmd = t.run(["cat", f"/proc/{pid}/cmdline"], sudo=True, check=False, timeout=10).stdout
    env = t.run(["cat", f"/proc/{pid}/environ"], sudo=True, check=False, timeout=10).stdout
    return process_flags(cmd, env) if cmd else None


_VERSION_RE = re.compile(r"(\d+\.\d+\.\d+)")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def _unit_exe(t: Transport, unit: str) -> str | None:
    """The binary a systemd unit runs (``systemctl show -p ExecStart``: ``path=...``)."""
    show = t.run(["systemctl", "show", "-p", "ExecStart", unit], check=False,
                 timeout=10).stdout.decode(errors="replace")
    found = re.search(r"path=(\S+)", show)
    return found.group(1) if found else None


def _exe_version(t: Transport, exe: str) -> tuple[str | None, int]:
    """What ``exe --version`` says its etcd version is (None: nothing), and its exit status."""
    res = t.run([exe, "--version"], check=False, timeout=20)
    m = re.search(r"etcd Version:\s*(\S+)", res.stdout.decode(errors="replace"))
    return (m.group(1) if m else None), res.exit_status


def _version(t: Transport, runtime: str, config: str | None, pids: list[str], unit: str
             ) -> tuple[str | None, str | None]:
    """The member's etcd version when etcd does not answer: the static pod's image tag, else
    the binary the running process or its systemd unit runs (``etcd --version``)."""
    if runtime == "static-pod" and config:
        try:
            image = manifest_image(config, "manifest") or ""
        except FormatError:
            image = ""
        m = _VERSION_RE.search(image.rsplit(":", 1)[-1]) if ":" in image else None
        if m:
            return m.group(1), f"image {image}"
        return None, None
    try:
        if pids:
            exe = t.run(["readlink", "-f", f"/proc/{pids[0]}/exe"], sudo=True, check=False,
                        timeout=10).stdout.decode(errors="replace").strip()
        else:
            exe = _unit_exe(t, unit) or ""
        if not exe:
            return None, None
        version, _ = _exe_version(t, exe)
    except TransportError:
        return None, None
    return (version, f"{exe} --version") if version else (None, None)


def read_new_binary(member: Member, path: str, unit: str,
                    factory: TransportFactory = ssh_transport) -> NewBinary:
    """``--etcd-binary PATH``: the build's version, read on the kept member's host, and the
    binary its unit runs (which the restore replaces)."""
    if not path.startswith("/") or not _SAFE_PATH.fullmatch(path):
        raise UsageError(f"--etcd-binary {path!r}: give an absolute path on {member.name}")
    t = factory(member)
    try:
        version, status = _exe_version(t, path)
        if status != 0 or version is None:
            raise UsageError(f"--etcd-binary {path}: `{path} --version` on {member.name} "
                             f"printed no etcd version (exit {status})")
        exe = _unit_exe(t, unit)
        if exe is None:
            raise UsageError(f"--etcd-binary: {member.name}: `systemctl show -p ExecStart "
                             f"{unit}` names no binary to replace")
        return NewBinary(path=path, version=version, replaces=exe)
    finally:
        t.close()


def read_etcdutl(member: Member, factory: TransportFactory = ssh_transport
                 ) -> tuple[str, str | None] | None:
    """systemd: the etcdutl beside the etcd binary the member's unit runs (release tarballs
    and packages install the three together), and its version; None when there is none."""
    t = factory(member)
    try:
        exe = _unit_exe(t, member.unit or "etcd.service")
        if exe is None:
            return None
        # Beside the unit's etcd, else beside the file it links to (/usr/local/bin/etcd ->
        # /opt/etcd-3.6.16/etcd): the first etcdutl found, and what its `version` says.
        res = t.run(["sh", "-c", 'for d in "$(dirname "$1")" "$(dirname "$(readlink -f "$1")")"; '
                     'do if [ -x "$d/etcdutl" ]; then echo "$d/etcdutl"; '
                     'exec "$d/etcdutl" version; fi; done; exit 1', "etcd-recovery", exe],
                    check=False, timeout=20)
        if res.exit_status != 0:
            return None
        out = res.stdout.decode(errors="replace")
        path = out.splitlines()[0].strip()
        found = re.search(r"etcdutl version:\s*(\S+)", out)
        return path, found.group(1) if found else None
    except TransportError:
        return None
    finally:
        t.close()


def _asked(member: Member, argv: list[str], factory: TransportFactory) -> str | None:
    """One command's output on the member's host (as root, on a connection of its own), or
    None when it failed or the host could not be asked: the planning-time probes below."""
    t = factory(member)
    try:
        res = t.run(argv, sudo=True, check=False, timeout=20)
        return res.stdout.decode(errors="replace") if res.exit_status == 0 else None
    except TransportError:
        return None
    finally:
        t.close()


def image_on_host(member: Member, image: str, factory: TransportFactory = ssh_transport
                  ) -> bool:
    """kubeadm: whether containerd on the host holds the etcd image its static pod names
    (``ctr -n k8s.io images ls -q``), so that etcdutl can be taken from it."""
    return _asked(member, ["sh", "-c", f'command -v ctr >/dev/null 2>&1 && ctr -n '
                           f'{CTR_NAMESPACE} images ls -q 2>/dev/null | grep -Fxq -- "$1"',
                           "etcd-recovery", image], factory) is not None


def same_file_on_host(member: Member, path: str, sha256: str,
                      factory: TransportFactory = ssh_transport) -> bool:
    """Whether the host has ``path`` with this sha256 (--etcdutl PATH when the hosts hold
    the same build at the same place, as a build mounted or installed everywhere does):
    then it runs in place and is not copied."""
    out = _asked(member, sha256_argv(path), factory)
    return out is not None and out[:64] == sha256


def inspect_member(member: Member, inv: Inventory, factory: TransportFactory = ssh_transport,
                   stopped: StoppedSeen | None = None) -> tuple[MemberState, Quorum]:
    t0 = time.monotonic()
    base = MemberState(name=member.name, host=member.ssh.host, reachable=False)
    t = factory(member)
    try:
        try:
            procs = etcd_processes(t, member.ssh.sudo)
        except TransportError as exc:  # unreachable, host key refused, auth failed
            return replace(base, error=_why(exc), elapsed_s=time.monotonic() - t0,
                           ssh_refused=isinstance(exc, AccessDenied | HostKeyError | JumpHostError)
                           ), Quorum(False)
        own = own_pid(procs, member.data_dir)   # its own etcd, by data dir (kops runs two)
        running = own is not None
        if not running and stopped is not None:
            stopped.add(member.name)
        pids = [str(own)] if own is not None else []
        state, quorum = _read_state(t, member, inv, running, stopped)
        text, error = read_config_text(t, member, inv.runtime)
        flags = own_flags(procs, own)
        own_name = next((p.name for p in state.membership
                         if p.id == state.member_id and p.name), None)
        checks = check_member(member, inv.runtime, runtime_for(inv.runtime).config_path(member),
                              text, error, flags, own_name)
        try:
            host_checks = read_host_checks(t, member, inv.runtime, text, pids)
        except TransportError as exc:
            host_checks = (hc.HostCheck(member.name, "host", "checks", True,
                                        f"not checked: {_why(exc)}"),)
        version, where = (state.etcd_version, "live Status") if state.etcd_version else \
            _version(t, inv.runtime, text, pids, member.unit or "etcd.service")
        return replace(state, checks=checks, host_checks=host_checks, config_text=text,
                       etcd_version=version,
                       version_source=where if version else None,
                       elapsed_s=time.monotonic() - t0), quorum
    finally:
        t.close()


def _read_state(t: Transport, member: Member, inv: Inventory, running: bool,
                stopped: StoppedSeen | None = None) -> tuple[MemberState, Quorum]:
    live_error = None
    if running:
        try:
            return read_live(t, member, inv, stopped)
        except EtcdRecoveryError as exc:
            live_error = f"etcd runs but did not answer over gRPC: {_why(exc)}"
    try:
        state = read_disk(t, member)
    except FormatError as exc:
        state = MemberState(name=member.name, host=member.ssh.host, reachable=True,
                            etcd_running=running, source=None, corrupt=True, error=str(exc))
    except TransportError as exc:
        state = MemberState(name=member.name, host=member.ssh.host, reachable=True,
                            etcd_running=running, source=None, error=_why(exc))
    if running:
        notes = (*state.notes, live_error) if live_error else state.notes
        state = replace(state, etcd_running=True, notes=notes)
    return state, Quorum(False)


def inspect_cluster(inv: Inventory, factory: TransportFactory = ssh_transport,
                    members: Sequence[Member] | None = None,
                    allow_quorum: bool = False, prefer: str | None = None,
                    exclude: Sequence[str] = (),
                    known_unreachable: Sequence[MemberState] = ()) -> InspectReport:
    """Read every member concurrently, check the inventory against what the hosts say, then
    decide which one to keep. ``known_unreachable``: members found unreachable moments ago
    in this same run, taken as they are rather than waited on a second time."""
    t0 = time.monotonic()
    todo = list(members or inv.members)
    for name in exclude:
        inv.member(name)  # an unknown name is an inventory error, not a silent no-op
    known = {s.name: s for s in known_unreachable if not s.reachable}
    stopped = StoppedSeen()

    def one(m: Member) -> tuple[MemberState, Quorum]:
        if m.name in known:
            return known[m.name], Quorum(False)
        return inspect_member(m, inv, factory, stopped)

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        results = list(pool.map(one, todo))
    states = tuple(replace(s, excluded=True, notes=(*s.notes, "excluded with --exclude: its "
                                                    "data is not used; it is only moved aside "
                                                    "and re-added"))
                   if s.name in exclude else s for s, _ in results)
    quorum = next((q for _, q in results if q.has_quorum), Quorum(False))
    if quorum.has_quorum and quorum.leader_id:
        names = {s.member_id: s.name for s in states if s.member_id is not None}
        quorum = replace(quorum, leader_name=names.get(quorum.leader_id))
    decision = decide(states, quorum, allow_quorum=allow_quorum, prefer=prefer)
    if decision.refused not in ("cluster-id", "corrupt"):  # those say more, so they win
        refusal = _inventory_refusal(inv, states) or _host_refusal(states)
        if refusal is not None:
            decision = replace(refusal, minority=decision.minority)
    return InspectReport(cluster=inv.name, members=states, quorum=quorum, decision=decision,
                         elapsed_s=time.monotonic() - t0)


def _inventory_refusal(inv: Inventory, states: Sequence[MemberState]) -> Decision | None:
    """The inventory does not describe the hosts, or a reachable member's data is unknown."""
    bad = [c for s in states for c in mismatches(s.checks)]
    if bad:
        more = f" (and {len(bad) - 1} more mismatch(es): inspect shows them all)" \
            if len(bad) > 1 else ""
        return Decision(None, bad[0].message(inv.path) + more, refused="inventory")
    refused = [s for s in states if s.ssh_refused and not s.excluded]
    if refused:
        s = refused[0]
        m = inv.member(s.name)
        how = (f"ssh.jump ({m.ssh.jump}), ssh.user, ssh.identity_file and ssh.known_hosts"
               if m.ssh.jump else "ssh.user, ssh.identity_file and ssh.known_hosts")
        return Decision(None, f"{s.error}. SSH did not let us reach {s.name}, which says "
                              f"nothing about whether it is gone: check {how} of {s.name} in "
                              f"{inv.path}, or plan without it with --exclude {s.name}",
                        refused="inventory")
    unread = [s for s in states if s.reachable and s.source is None and not s.corrupt
              and not s.excluded]
    if unread and any(s.readable for s in states):
        s = unread[0]
        return Decision(None, f"{s.name} is reachable but its data could not be read "
                              f"({s.error}); it may hold the newest data. Fix the cause, or "
                              f"plan without its data with --exclude {s.name} (it is then only "
                              "moved aside and re-added, never kept)", refused="unreadable")
    return None


def _host_refusal(states: Sequence[MemberState]) -> Decision | None:
    """A reachable member whose etcd could not start as configured (hostchecks.py): every
    reachable member is restarted by the plan, the kept one alone and the others as learners,
    so a failure on any of them refuses the plan before anything changes."""
    bad = [c for s in states if s.reachable for c in hc.failures(s.host_checks)]
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more: inspect shows them all)" if len(bad) > 1 else ""
    return Decision(None, bad[0].message() + more, refused="host")


def read_configs(inv: Inventory, report: InspectReport,
                 members: Sequence[Member] | None = None) -> dict[str, str]:
    """Each reachable member's etcd configuration (static pod manifest or env file) text, as
    inspect read it (no second SSH round)."""
    wanted = {m.name for m in (members or inv.members)}
    return {s.name: s.config_text for s in report.members
            if s.name in wanted and s.reachable and s.config_text is not None}

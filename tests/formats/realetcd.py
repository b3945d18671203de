"""Start real etcd on loopback (one member, or a cluster) to produce data dirs for the format
tests, and ask the build's ``etcdutl`` what it says about them.

Builds are named by role (``ROLES``; etcd_recovery/lab/builds.txt pins each role's version)
and found as ``/opt/etcd-<version>`` (or under $ETCD_RECOVERY_ETCD_DIR). Usage::

    args = ("--snapshot-count=100",)
    with running_etcd("3.6-newest", tmp_path / "data", extra_args=args) as e:
        e.put_many(500, prefix="k", value_size=32, per_txn=1)
        st = e.status()
        e.stop(signal.SIGKILL)

Keys are written through etcd's JSON gateway (``/v3/kv/txn``) over one keep-alive HTTP
connection: each call is one transaction, so one raft entry, and far faster than one ``etcdctl``
process per key. Status and compaction use ``etcdctl`` (the one beside ``etcd``).
Only the processes started here are ever signalled, by their PIDs.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etcd_recovery.lab.builds import version_of

START_TIMEOUT = 20.0
ETCD_DIR = Path(os.environ.get("ETCD_RECOVERY_ETCD_DIR", "/opt"))
#: The builds the real-data tests run on: the oldest supported minor and the newest of each.
ROLES = ("3.4", "3.5-newest", "3.6-newest", "3.7-newest")


def build_dir(role: str) -> Path:
    """``/opt/etcd-<version>`` of the build that has ``role``; fails loudly if it is missing."""
    d = ETCD_DIR / f"etcd-{version_of(role)}"
    if not (d / "etcd").is_file():
        raise RuntimeError(f"no {d}/etcd for the build {role!r} (run scripts/setup)")
    return d


def minor_of(role: str) -> tuple[int, int]:
    """(3, 6) for a role whose build is 3.6.x."""
    major, minor = version_of(role).split(".")[:2]
    return int(major), int(minor)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class EtcdStatus:
    """What ``etcdctl endpoint status -w json`` reports."""

    member_id: int
    cluster_id: int
    revision: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    leader: int
    version: str
    storage_version: str = ""  # 3.6+: meta/storageVersion, once set


@dataclass(frozen=True)
class Ports:
    """A member's loopback client and peer ports."""

    client: int
    peer: int

    @staticmethod
    def free() -> Ports:
        client = free_port()
        peer = free_port()
        while peer == client:
            peer = free_port()
        return Ports(client, peer)

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer}"


class EtcdHandle:
    """A running etcd started by :func:`running_etcd` or :func:`running_cluster`."""

    def __init__(self, role: str, data_dir: Path, name: str, extra_args: Sequence[str],
                 ports: Ports | None = None, initial_cluster: str | None = None,
                 cluster_state: str = "new") -> None:
        self.role = role
        self.version = version_of(role)
        self.version_dir = os.fspath(build_dir(role))
        self.data_dir = data_dir
        self.name = name
        self.etcd_bin = os.path.join(self.version_dir, "etcd")
        self.etcdctl_bin = os.path.join(self.version_dir, "etcdctl")
        ports = ports or Ports.free()
        self.client_port = ports.client
        self.peer_port = ports.peer
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.peer_url = ports.peer_url
        self.log_path = data_dir.parent / f"{data_dir.name}.etcd.log"
        self.returncode: int | None = None
        self._conn: http.client.HTTPConnection | None = None
        args = [
            self.etcd_bin,
            "--name", name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster or f"{name}={self.peer_url}",
            "--initial-cluster-state", cluster_state,
            "--logger", "zap",
            *extra_args,
        ]
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_clean_env(),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = START_TIMEOUT, learner: bool = False) -> None:
        """Wait until a linearizable read succeeds (a leader is known); a learner serves only
        serializable reads."""
        deadline = time.monotonic() + timeout
        probe: dict[str, object] = {"key": _b64(b"health-probe"), "serializable": learner}
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self._gateway("/v3/kv/range", probe, timeout=1.0)
                return
            except (OSError, http.client.HTTPException, RuntimeError):
                self._drop_conn()
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not ready after {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal etcd (by its PID) and wait for it to exit; returns its exit status."""
        self._drop_conn()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reap()
        assert self.proc.returncode is not None
        self.returncode = self.proc.returncode
        return self.returncode

    def _reap(self) -> None:
        if not self._log.closed:
            self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- client operations -------------------------------------------------------------------

    def etcdctl(self, *args: str, stdin: str | None = None, timeout: float = 30.0) -> str:
        res = subprocess.run(
            [self.etcdctl_bin, "--endpoints", self.client_url, *args],
            input=stdin, capture_output=True, text=True, timeout=timeout,
            env={**_clean_env(), "ETCDCTL_API": "3"}, check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} exited {res.returncode}: {res.stderr}")
        return res.stdout

    def etcdctl_json(self, *args: str) -> Any:
        return json.loads(self.etcdctl(*args, "-w", "json"))

    def status(self) -> EtcdStatus:
        out = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        st = out[0]["Status"]
        hdr = st["header"]
        return EtcdStatus(
            member_id=int(hdr["member_id"]),
            cluster_id=int(hdr["cluster_id"]),
            revision=int(hdr["revision"]),
            raft_term=int(st["raftTerm"]),
            raft_index=int(st["raftIndex"]),
            raft_applied_index=int(st.get("raftAppliedIndex", 0)),
            leader=int(st.get("leader", 0)),  # left out (omitempty) while there is none
            version=str(st["version"]),
            storage_version=str(st.get("storageVersion", "")),
        )

    def wait_storage_version(self, timeout: float = 15.0) -> EtcdStatus:
        """3.6+: wait until the member has set meta/storageVersion (once it knows the cluster
        version: UpdateStorageVersionIfNeeded, server/etcdserver/version/monitor.go @v3.6.16,
        at once for a new cluster, else within monitorVersionInterval, 4 s); then its status.
        Older builds have none: their status at once."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.storage_version or self.version.startswith(("3.4.", "3.5.")):
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {self.version}: no storage version after {timeout}s")
            time.sleep(0.05)

    def put_many(self, n: int, prefix: str = "key", value_size: int = 16,
                 per_txn: int = 100) -> None:
        """Write ``n`` keys ``<prefix><i>`` in transactions of ``per_txn`` puts each.

        Each transaction is one raft entry: ``per_txn=1`` makes ``n`` entries.
        """
        value = _b64(b"v" * value_size)
        for start in range(0, n, per_txn):
            ops = [
                {"requestPut": {"key": _b64(f"{prefix}{i:08d}".encode()), "value": value}}
                for i in range(start, min(n, start + per_txn))
            ]
            self._gateway("/v3/kv/txn", {"success": ops})

    def compact(self, revision: int | None = None) -> int:
        """Compact to ``revision`` (default: the current one) with ``--physical``; returns it."""
        rev = self.status().revision if revision is None else revision
        self.etcdctl("compaction", "--physical", str(rev))
        return rev

    def _gateway(self, path: str, body: dict[str, object],
                 timeout: float = 10.0) -> dict[str, object]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.client_port,
                                                    timeout=timeout)
        self._conn.request("POST", path, body=json.dumps(body),
                           headers={"Content-Type": "application/json"})
        resp = self._conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:200]!r}")
        result: dict[str, object] = json.loads(data)
        return result

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _clean_env() -> dict[str, str]:
    """The environment without ETCD_*/ETCDCTL_* settings that would change etcd's behaviour."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


def _kill(handle: EtcdHandle) -> None:
    if handle.proc.poll() is None:
        handle.stop(signal.SIGKILL)
    handle._drop_conn()
    handle._reap()


@contextmanager
def running_etcd(role: str, data_dir: Path, name: str = "m1",
                 extra_args: Sequence[str] = ()) -> Iterator[EtcdHandle]:
    """Start the build of ``role`` on free loopback ports with ``data_dir``; stop it after.

    The handle's ``stop(sig)`` may be called inside the block (e.g. SIGKILL); on leaving, an
    etcd still running is killed by its PID.
    """
    handle = EtcdHandle(role, data_dir, name, extra_args)
    try:
        handle.wait_ready()
        yield handle
    finally:
        _kill(handle)


class Cluster:
    """Members started by :func:`running_cluster`, plus any joined later with :meth:`join`."""

    def __init__(self, role: str, base: Path, extra_args: Sequence[str]) -> None:
        self.role = role
        self.base = base
        self.extra_args = tuple(extra_args)
        self.members: list[EtcdHandle] = []

    def member(self, name: str) -> EtcdHandle:
        return next(m for m in self.members if m.name == name)

    def restart(self, name: str) -> EtcdHandle:
        """Start a stopped member again on its ports and data dir (its flags as before)."""
        old = self.member(name)
        assert old.proc.poll() is not None, f"{name} still runs"
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        handle = EtcdHandle(self.role, old.data_dir, name, self.extra_args,
                            ports=Ports(old.client_port, old.peer_port), initial_cluster=initial)
        self.members[self.members.index(old)] = handle
        handle.wait_ready()
        return handle

    def join(self, name: str, ports: Ports, initial_cluster: str,
             learner: bool = False) -> EtcdHandle:
        """Start a member already added with ``member add`` (``--initial-cluster-state
        existing``)."""
        handle = EtcdHandle(self.role, self.base / name, name, self.extra_args, ports=ports,
                            initial_cluster=initial_cluster, cluster_state="existing")
        self.members.append(handle)
        handle.wait_ready(learner=learner)
        return handle


@contextmanager
def running_cluster(role: str, base: Path, names: Sequence[str] = ("m1", "m2", "m3"),
                    extra_args: Sequence[str] = ()) -> Iterator[Cluster]:
    """Start one member per name (data dir ``base/<name>``) as one new cluster; every member
    still running on leaving is killed by its PID."""
    ports = {n: Ports.free() for n in names}
    while len({p for pp in ports.values() for p in (pp.client, pp.peer)}) < 2 * len(names):
        ports = {n: Ports.free() for n in names}
    initial = ",".join(f"{n}={ports[n].peer_url}" for n in names)
    cluster = Cluster(role, base, extra_args)
    try:
        for n in names:
            cluster.members.append(EtcdHandle(role, base / n, n, extra_args, ports=ports[n],
                                              initial_cluster=initial))
        for m in cluster.members:
            m.wait_ready()
        yield cluster
    finally:
        for m in cluster.members:
            _kill(m)


@dataclass(frozen=True)
class EtcdRun:
    """A data dir left by :func:`make_data_dir` and what etcd said just before it stopped."""

    role: str
    data_dir: Path
    status: EtcdStatus
    exit_code: int

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "member" / "wal"

    @property
    def snap_dir(self) -> Path:
        return self.data_dir / "member" / "snap"

    @property
    def version(self) -> str:
        return version_of(self.role)


def make_data_dir(role: str, data_dir: Path, keys: int = 500,
                  per_txn: int = 1, snapshot_count: int = 100, sig: int = signal.SIGTERM,
                  extra_args: Sequence[str] = ()) -> EtcdRun:
    """Start etcd, write ``keys`` keys, read its status (3.6+: once the storage version is
    set, as on any member that ran for a few seconds), stop it with ``sig``."""
    args = (f"--snapshot-count={snapshot_count}", *extra_args)
    with running_etcd(role, data_dir, extra_args=args) as etcd:
        etcd.put_many(keys, per_txn=per_txn)
        status = etcd.wait_storage_version()
        code = etcd.stop(sig)
    return EtcdRun(role=role, data_dir=data_dir, status=status, exit_code=code)


# -- etcdutl: the build's own offline reading of a data dir ----------------------------------


def etcdutl_role(role: str) -> str:
    """The build whose etcdutl reads data of ``role``: its own, or for 3.4 (which has none)
    the newest 3.5's (``snapshot status`` reads any etcd backend)."""
    return role if (build_dir(role) / "etcdutl").is_file() else "3.5-newest"


def etcdutl(role: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(build_dir(role) / "etcdutl"), *args], capture_output=True,
                          text=True, timeout=60, env=_clean_env(), check=False)


def has_hashkv(role: str) -> bool:
    """Whether the build has an etcdutl with ``hashkv`` (3.6 and later; not 3.5, and 3.4 has
    no etcdutl)."""
    if not (build_dir(role) / "etcdutl").is_file():
        return False
    out = etcdutl(role, "--help")
    return any(line.split()[:1] == ["hashkv"] for line in out.stdout.splitlines())


def _on_copy(db: Path, scratch: Path) -> Path:
    """etcdutl opens the db with bbolt (a lock, maybe a freelist write): give it a copy."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"db-{os.getpid()}-{time.monotonic_ns()}"
    with open(db, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    return copy


def snapshot_status(role: str, db: Path, scratch: Path) -> dict[str, Any]:
    """``etcdutl snapshot status -w json`` of a copy of ``db``: hash, revision, totalKey,
    totalSize and (3.6+) version."""
    res = etcdutl(role, "snapshot", "status", str(_on_copy(db, scratch)), "-w", "json")
    if res.returncode != 0:
        raise RuntimeError(f"etcdutl snapshot status: {res.stderr}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def hashkv(role: str, db: Path, scratch: Path) -> dict[str, Any]:
    """``etcdutl hashkv -w json`` of a copy of ``db``: hash, hashRevision, compactRevision."""
    res = etcdutl(role, "hashkv", str(_on_copy(db, scratch)), "-w", "json")
    if res.returncode != 0:
        raise RuntimeError(f"etcdutl hashkv: {res.stderr}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out

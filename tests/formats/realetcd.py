"""Start a real single-member etcd on loopback to produce data dirs for the format tests.

Usage::

    args = ("--snapshot-count=100",)
    with running_etcd("/opt/etcd-3.5.16", tmp_path / "data", extra_args=args) as e:
        e.put_many(500, prefix="k", value_size=32, per_txn=1)
        st = e.status()
        e.stop(signal.SIGKILL)

Keys are written through etcd's JSON gateway (``/v3/kv/txn``) over one keep-alive HTTP
connection: each call is one transaction, so one raft entry, and far faster than one ``etcdctl``
process per key. Status and compaction use ``etcdctl`` (the one beside ``etcd``).
Only the process started here is ever signalled, by its PID.
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

START_TIMEOUT = 20.0


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


class EtcdHandle:
    """A running etcd started by :func:`running_etcd`."""

    def __init__(self, version_dir: str | os.PathLike[str], data_dir: Path, name: str,
                 extra_args: Sequence[str]) -> None:
        self.version_dir = os.fspath(version_dir)
        self.data_dir = data_dir
        self.name = name
        self.etcd_bin = os.path.join(self.version_dir, "etcd")
        self.etcdctl_bin = os.path.join(self.version_dir, "etcdctl")
        self.client_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.client_port:
            self.peer_port = free_port()
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
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
            "--initial-cluster", f"{name}={self.peer_url}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            *extra_args,
        ]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_clean_env(),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self._gateway("/v3/kv/range", {"key": _b64(b"health-probe")}, timeout=1.0)
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
            leader=int(st["leader"]),
            version=str(st["version"]),
        )

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


@contextmanager
def running_etcd(version_dir: str | os.PathLike[str], data_dir: Path, name: str = "m1",
                 extra_args: Sequence[str] = ()) -> Iterator[EtcdHandle]:
    """Start etcd from ``version_dir`` on free loopback ports with ``data_dir``; stop it after.

    The handle's ``stop(sig)`` may be called inside the block (e.g. SIGKILL); on leaving, an
    etcd still running is killed by its PID.
    """
    handle = EtcdHandle(version_dir, data_dir, name, extra_args)
    try:
        handle.wait_ready()
        yield handle
    finally:
        if handle.proc.poll() is None:
            handle.stop(signal.SIGKILL)
        handle._drop_conn()
        handle._reap()


@dataclass(frozen=True)
class EtcdRun:
    """A data dir left by :func:`make_data_dir` and what etcd said just before it stopped."""

    version_dir: str
    data_dir: Path
    status: EtcdStatus
    exit_code: int

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "member" / "wal"

    @property
    def snap_dir(self) -> Path:
        return self.data_dir / "member" / "snap"


def make_data_dir(version_dir: str | os.PathLike[str], data_dir: Path, keys: int = 500,
                  per_txn: int = 1, snapshot_count: int = 100, sig: int = signal.SIGTERM,
                  extra_args: Sequence[str] = ()) -> EtcdRun:
    """Start etcd, write ``keys`` keys, read its status, stop it with ``sig``."""
    args = (f"--snapshot-count={snapshot_count}", *extra_args)
    with running_etcd(version_dir, data_dir, extra_args=args) as etcd:
        etcd.put_many(keys, per_txn=per_txn)
        status = etcd.status()
        code = etcd.stop(sig)
    return EtcdRun(version_dir=os.fspath(version_dir), data_dir=data_dir, status=status,
                   exit_code=code)

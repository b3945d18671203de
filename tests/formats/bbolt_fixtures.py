"""Helpers for the bbolt/backend tests: a real single-member etcd on loopback (a build named by
role, as in realetcd), and hand-built bbolt files.

Bulk writes go through etcd's JSON gateway (``/v3/kv/txn``) so thousands of keys load
in a few requests; what the tests compare against is read back with ``etcdctl``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from etcd_recovery.formats.source import BytesSource
from etcd_recovery.lab.builds import version_of
from tests.formats.realetcd import build_dir

TXN_OPS = 1000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def key_name(prefix: str, i: int) -> str:
    return f"{prefix}{i:08d}"


def value_for(i: int, size: int) -> bytes:
    return (f"v{i}-".encode() * (size // 4 + 1))[:size]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Etcd:
    """One etcd process started by the tests; stopped by PID only."""

    def __init__(self, role: str, data_dir: Path, name: str = "m1",
                 extra_args: Sequence[str] = ()) -> None:
        self.role = role
        self.version = version_of(role)
        self.version_dir = build_dir(role)
        self.extra_args = tuple(extra_args)
        self.data_dir = data_dir
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            str(self.version_dir / "etcd"),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}",
            "--max-txn-ops", str(TXN_OPS),
            "--logger", "zap",
            "--log-level", "warn",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if self._http("GET", "/health", None).get("health") == "true":
                    return
            except (OSError, ValueError, RuntimeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd not ready after {timeout}s: "
                           f"{self.log_path.read_text()[-2000:]}")

    def _http(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {payload[:500]!r}")
        out: dict[str, Any] = json.loads(payload)
        return out

    def api(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to etcd's JSON gateway (``/v3/...``)."""
        return self._http("POST", path, body)

    def put_many(self, n: int, prefix: str = "k", value_size: int = 200,
                 start: int = 0, batch: int = TXN_OPS) -> int:
        """Put keys ``key_name(prefix, i)`` for i in start..start+n-1, ``batch`` per txn
        (so key i gets sub-revision ``(i - start) % batch``); returns the last revision."""
        rev = 0
        for base in range(start, start + n, batch):
            ops = []
            for i in range(base, min(base + batch, start + n)):
                key = key_name(prefix, i).encode()
                value = value_for(i, value_size)
                ops.append({"requestPut": {"key": _b64(key), "value": _b64(value)}})
            out = self.api("/v3/kv/txn", {"success": ops})
            rev = int(out["header"]["revision"])
        return rev

    def delete(self, key: str) -> int:
        out = self.api("/v3/kv/deleterange", {"key": _b64(key.encode())})
        return int(out["header"]["revision"])

    def compact(self, revision: int) -> None:
        self.api("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def ctl(self, *args: str) -> str:
        env = dict(os.environ, ETCDCTL_API="3")
        res = subprocess.run([str(self.version_dir / "etcdctl"), "--endpoints",
                              self.client_url, *args], env=env, capture_output=True,
                             timeout=30, check=True)
        return res.stdout.decode()

    def status(self) -> dict[str, Any]:
        out = json.loads(self.ctl("endpoint", "status", "-w", "json"))
        status: dict[str, Any] = out[0]["Status"]
        return status

    def member_list(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.ctl("member", "list", "-w", "json"))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
            raise

    @property
    def db_path(self) -> Path:
        return self.data_dir / "member" / "snap" / "db"


@contextmanager
def running_etcd(role: str, data_dir: Path, name: str = "m1",
                 extra_args: Sequence[str] = ()) -> Iterator[Etcd]:
    etcd = Etcd(role, data_dir, name, extra_args)
    try:
        etcd.start()
        yield etcd
    finally:
        etcd.stop(signal.SIGKILL)


class RecordingSource(BytesSource):
    """A BytesSource that records every read (offset, length)."""

    def __init__(self, data: bytes, name: str = "<test>") -> None:
        super().__init__(data, name)
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return super().read(offset, length)


# --- building small bbolt files by hand -------------------------------------------------

MAGIC = 0xED0CDAED
NO_FREELIST = 0xFFFF_FFFF_FFFF_FFFF
BRANCH = 0x01
LEAF = 0x02
META = 0x04
BUCKET_FLAG = 0x01


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    return h


def meta_page(pgid: int, page_size: int, root: int, hwm: int, txid: int,
              freelist: int = NO_FREELIST, *, magic: int = MAGIC, version: int = 2,
              bad_checksum: bool = False) -> bytes:
    body = struct.pack("<IIIIQQQQQ", magic, version, page_size, 0, root, 0, freelist, hwm,
                       txid)
    checksum = fnv1a64(body) ^ (1 if bad_checksum else 0)
    page = struct.pack("<QHHI", pgid, META, 0, 0) + body + struct.pack("<Q", checksum)
    return page.ljust(page_size, b"\0")


def _pad(page: bytes, page_size: int, pgid: int, flags: int, count: int) -> bytes:
    npages = max(1, -(-len(page) // page_size))
    header = struct.pack("<QHHI", pgid, flags, count, npages - 1)
    return (header + page[16:]).ljust(npages * page_size, b"\0")


def leaf_body(items: list[tuple[int, bytes, bytes]]) -> bytes:
    """A leaf page's bytes (header with id 0, no padding) for (flags, key, value) items."""
    n = len(items)
    elems = b""
    data = b""
    for i, (flags, key, value) in enumerate(items):
        pos = 16 * (n - i) + len(data)  # from this element to its key
        elems += struct.pack("<IIII", flags, pos, len(key), len(value))
        data += key + value
    return struct.pack("<QHHI", 0, LEAF, n, 0) + elems + data


def leaf_page(pgid: int, items: list[tuple[int, bytes, bytes]], page_size: int) -> bytes:
    return _pad(leaf_body(items), page_size, pgid, LEAF, len(items))


def branch_page(pgid: int, items: list[tuple[bytes, int]], page_size: int) -> bytes:
    n = len(items)
    elems = b""
    data = b""
    for i, (key, child) in enumerate(items):
        pos = 16 * (n - i) + len(data)
        elems += struct.pack("<IIQ", pos, len(key), child)
        data += key
    return _pad(struct.pack("<QHHI", 0, BRANCH, n, 0) + elems + data, page_size, pgid,
                BRANCH, n)


def bucket_value(root: int, sequence: int = 0,
                 inline: list[tuple[int, bytes, bytes]] | None = None) -> bytes:
    head = struct.pack("<QQ", root, sequence)
    return head if inline is None else head + leaf_body(inline)


class FileBuilder:
    """Allocates pages and assembles a bbolt file (both meta pages valid by default)."""

    def __init__(self, page_size: int = 1024) -> None:
        self.page_size = page_size
        self.pages: dict[int, bytes] = {}
        self.next_pgid = 2

    def add(self, make: Callable[[int], bytes]) -> int:
        pgid = self.next_pgid
        page = make(pgid)
        self.pages[pgid] = page
        self.next_pgid += len(page) // self.page_size
        return pgid

    def tree(self, items: list[tuple[int, bytes, bytes]], leaf_items: int = 4,
             fanout: int = 3) -> int:
        """Store sorted items as a B+tree; returns the root page id."""
        ps = self.page_size
        level: list[tuple[bytes, int]] = []
        for i in range(0, max(len(items), 1), leaf_items):
            chunk = items[i:i + leaf_items]
            pgid = self.add(partial(leaf_page, items=chunk, page_size=ps))
            level.append((chunk[0][1] if chunk else b"", pgid))
        while len(level) > 1:
            upper: list[tuple[bytes, int]] = []
            for i in range(0, len(level), fanout):
                group = level[i:i + fanout]
                pgid = self.add(partial(branch_page, items=group, page_size=ps))
                upper.append((group[0][0], pgid))
            level = upper
        return level[0][1]

    def build(self, root: int, txid: int = 5, hwm: int | None = None,
              meta0: bytes | None = None, meta1: bytes | None = None) -> bytes:
        ps = self.page_size
        hwm = self.next_pgid if hwm is None else hwm
        out = bytearray()
        out += meta0 if meta0 is not None else meta_page(0, ps, root, hwm, txid - 1)
        out += meta1 if meta1 is not None else meta_page(1, ps, root, hwm, txid)
        for pgid in range(2, self.next_pgid):
            page = self.pages.get(pgid)
            if page is not None:
                out[pgid * ps:pgid * ps + len(page)] = page
            elif len(out) < (pgid + 1) * ps:
                out += b"\0" * ((pgid + 1) * ps - len(out))
        return bytes(out)

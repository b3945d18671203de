"""What etcdutl computes from a backend, computed again with etcd_recovery's readers, and a
transport that lets ``inspect.read_disk`` read a local data dir in place.

``etcdutl snapshot status`` (etcdutl/snapshot/v3_snapshot.go ``Status``, @v3.5.35, @v3.6.16,
@v3.7.3): one bbolt read transaction; ``hash`` is the CRC-32C (Castagnoli) of, for every
top-level bucket in key order, the bucket's name and then each key and value in it;
``revision`` is the main revision of the last key of the ``key`` bucket (not raised to the
compaction revisions); ``totalSize`` is ``tx.Size()`` = high water mark x page size. 3.5
counts every key of every bucket as ``totalKey``; 3.6+ count the live keys only (the key
bucket's user keys, a tombstone deleting one) and add ``version`` =
``schema.ReadStorageVersionFromSnapshot`` (meta/storageVersion, "" when absent).

``etcdutl hashkv`` (etcdutl/etcdutl/hashkv_command.go @v3.6.16, @v3.7.3): opens an MVCC store
on the file (which restores the current revision as etcd does on start) and prints
``HashByRev(0)``: ``hashRevision`` = that revision, ``compactRevision`` = finishedCompactRev
(-1 when none), and ``hash`` = CRC-32C of ``key`` then each key-bucket key and value, leaving out
revisions above the current one, a tombstone at exactly the compaction revision, and, at or
below the compaction revision, every revision that is not the newest one of a live key at the
current revision (``keep = kvindex.Keep(currentRev)`` in ``store.hashByRev``,
server/storage/mvcc/kvstore.go; ``kvHasher.WriteKeyValue``, mvcc/hash.go; ``keyIndex.keep``,
mvcc/key_index.go, all @v3.6.16; an empty keep set leaves none out).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from etcd_recovery.errors import TransportError
from etcd_recovery.formats.backend import Revision, parse_revision_key, read_backend
from etcd_recovery.formats.bbolt import open_db
from etcd_recovery.formats.snapshot import read_snapshot
from etcd_recovery.formats.source import FileSource
from etcd_recovery.formats.wal import crc32c_update
from etcd_recovery.inspect import read_disk
from etcd_recovery.inventory import Member, SshTarget
from etcd_recovery.model import MemberState
from etcd_recovery.proto.kv_pb2 import KeyValue
from etcd_recovery.transport.base import CommandResult, FileInfo

MAX_ENTRIES = 10_000_000
REMOTE_DIR = "/var/lib/etcd"


def snapshot_status_of(db: Path, minor: tuple[int, int]) -> dict[str, Any]:
    """``etcdutl snapshot status -w json`` of the etcdutl of ``minor``, from our readers
    (etcd_recovery.formats.snapshot, whose module doc has the rules above)."""
    return read_snapshot(FileSource(db)).etcdutl_json(minor)


def hashkv_of(db: Path) -> dict[str, Any]:
    """``etcdutl hashkv -w json`` (3.6+) of a backend whose compaction (if any) finished."""
    state = read_backend(FileSource(db))
    assert state.scheduled_compact_revision == state.compact_revision, "compaction unfinished"
    compact = state.compact_revision
    bolt = open_db(FileSource(db))
    keys = bolt.bucket(b"key")
    assert keys is not None
    entries = [(parse_revision_key(e.key, bolt.name, e.value_offset), e)
                for e in keys.entries(MAX_ENTRIES)]
    newest: dict[bytes, Revision] = {}
    for rev, e in entries:  # in revision order
        newest[_kv_key(e.value)] = rev
    keep = {(r.main, r.sub) for r in newest.values() if not r.tombstone}
    lower = -1 if compact is None else compact
    h = crc32c_update(0, b"key")
    for rev, e in entries:
        if rev.main > state.revision or (rev.tombstone and rev.main == compact):
            continue
        if rev.main <= lower and keep and (rev.main, rev.sub) not in keep:
            continue
        h = crc32c_update(crc32c_update(h, e.key), e.value)
    return {"hash": h, "hashRevision": state.revision,
            "compactRevision": -1 if compact is None else compact}


def _kv_key(value: bytes) -> bytes:
    """mvccpb.KeyValue.key (field 1)."""
    return KeyValue.FromString(value).key


# ------------------------------------------------------------------------------ read_disk

class DirTransport:
    """A Transport over a local data dir seen as ``REMOTE_DIR`` on the host: files are read in
    place (FileSource counts the bytes read), nothing runs and nothing is written."""

    def __init__(self, local: Path, remote: str = REMOTE_DIR, host: str = "h-m1") -> None:
        self.local = local
        self.remote = remote
        self._host = host
        self.sources: list[FileSource] = []

    @property
    def host(self) -> str:
        return self._host

    def _path(self, path: str) -> Path:
        rel = posixpath.relpath(path, self.remote)
        if rel.startswith(".."):
            raise TransportError(self.host, f"{path}: outside {self.remote}")
        return self.local / rel

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float = 30.0,
            stdin: bytes | Iterable[bytes] | None = None,
            check: bool = True) -> CommandResult:
        raise AssertionError(f"read_disk ran {argv}")

    def open_file(self, path: str, *, sudo: bool = False) -> FileSource:
        local = self._path(path)
        if not local.is_file():
            raise TransportError(self.host, f"stat {path}: no such file")
        src = FileSource(local, name=f"{self.host}:{path}")
        self.sources.append(src)
        return src

    def stream(self, argv: Sequence[str], *, sudo: bool = False,
               timeout: float = 30.0) -> Iterator[bytes]:
        """Only ``cat -- PATH`` of a file opened before (read_through): its blocks are read
        through that file's FileSource, which so counts what was streamed too."""
        args = tuple(argv)
        if args[:2] != ("cat", "--") or len(args) != 3:
            raise AssertionError(f"read_disk streamed {argv}")
        name = f"{self.host}:{args[2]}"
        src = next((s for s in reversed(self.sources) if s.name == name), None)
        if src is None:
            raise AssertionError(f"read_disk streamed {args[2]} without opening it")
        at = 0
        while block := src.read(at, 1 << 20):
            at += len(block)
            yield block

    def list_dir(self, path: str, *, sudo: bool = False) -> list[FileInfo]:
        local = self._path(path)
        try:
            names = sorted(os.listdir(local))
        except OSError as exc:
            raise TransportError(self.host, f"list {path}: {exc.strerror}") from exc
        out = []
        for name in names:
            st = os.stat(local / name)
            out.append(FileInfo(name, st.st_size, st.st_mode, stat.S_ISDIR(st.st_mode)))
        return out

    def write_file(self, path: str, data: bytes, *, mode: int = 0o600,
                   sudo: bool = False) -> None:
        raise AssertionError(f"read_disk wrote {path}")

    @contextmanager
    def tunnel(self, remote_host: str, remote_port: int) -> Iterator[tuple[str, int]]:
        raise AssertionError("read_disk opened a tunnel")
        yield remote_host, remote_port  # pragma: no cover

    def close(self) -> None:
        pass


def disk_member(name: str = "m1") -> Member:
    return Member(name=name, ssh=SshTarget(host=f"h-{name}"), peer_url=f"http://{name}:2380",
                  client_url=f"http://{name}:2379", data_dir=REMOTE_DIR)


def read_disk_local(data_dir: Path, name: str = "m1") -> tuple[MemberState, DirTransport]:
    """``inspect.read_disk`` of a local data dir, and the transport (bytes read per file)."""
    t = DirTransport(data_dir, host=f"h-{name}")
    return read_disk(t, disk_member(name)), t

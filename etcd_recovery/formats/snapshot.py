"""An etcd v3 snapshot file: is it whole, and what is in it (``etcdutl snapshot status``).

Two kinds of file are read:

* what ``etcdctl snapshot save`` writes: the bbolt database followed by the sha256 of all
  of it. The server streams ``Backend().Snapshot()`` (``tx.Size()`` bytes: high water mark x
  page size) and then sends the sha256 of what it streamed as one more message
  (``maintenanceServer.Snapshot``, server/etcdserver/api/v3rpc/maintenance.go @v3.6.16; the
  same @v3.5.35); the client copies the stream to ``<path>.part``, refuses it unless
  ``hasChecksum(size)``, fsyncs and renames it (``SaveWithVersion``,
  client/v3/snapshot/v3_snapshot.go @v3.6.16).
* a raw copy of a member's ``member/snap/db``: a bbolt file, whole pages, no hash.

Which is which is decided by the size alone, as etcd does: ``hasChecksum(n)`` is
``(n % 512) == sha256.Size`` (etcdutl/snapshot/v3_snapshot.go @v3.6.16, @v3.5.35, @v3.7.3;
clientv3/snapshot/v3_snapshot.go @v3.4.23). ``snapshot restore`` (``copyAndVerifyDB``, same
files) then drops the last 32 bytes and compares the sha256 of the rest with them, or refuses a
file without a hash unless ``--skip-hash-check``.

The status is what ``Status`` in etcdutl/snapshot/v3_snapshot.go computes in one bbolt read
transaction (@v3.6.16; 3.6.0 and 3.6.5 the same; 3.7.3 differs only in its protobuf call;
@v3.5.35 and etcdctl's @v3.4.23 differ in ``totalKey`` and have no ``version``):

* ``hash``: CRC-32C (Castagnoli) of, for each top-level bucket in key order, its name, then
  each key and value of ``b.ForEach`` (a nested bucket's value is nil: nothing is hashed for
  it). A top-level key that is not a bucket makes Status fail.
* ``revision``: the main revision of the last key of the ``key`` bucket; 0 when it is empty
  (not raised to the compaction revisions, unlike the revision etcd serves after a restart).
* ``totalKey``: 3.6+ count the live user keys: every ``key``-bucket value is an
  mvccpb.KeyValue; a put adds its key, a tombstone (an 18-byte revision key ending in ``t``)
  removes it. 3.4 and 3.5 count every key of every bucket (``total_entries`` here).
* ``totalSize``: ``tx.Size()``, the high water mark x page size.
* ``version`` (3.6+): ``schema.ReadStorageVersionFromSnapshot``, meta/storageVersion parsed
  as a semver (coreos/go-semver v0.3.1 ``NewVersion``) and printed again; "" when absent or
  unparsable.

Status first runs bbolt's ``tx.Check()`` (freelist, page reachability, key order). This
reader checks what its walk meets (page ids, page bounds, cycles, key order in each bucket)
but does not read the freelist or account for unreachable pages: a verified sha256 is the
stronger check for a saved snapshot; a raw copy has only this walk.

Sources read: the Go modules the installed builds are compiled from (go.etcd.io/etcd/*@v3.5.35,
@v3.6.0, @v3.6.5, @v3.6.16, @v3.7.3; etcdutl/snapshot/v3_snapshot.go @v3.6.16 and @v3.5.35 are
byte-identical to etcd-io/etcd's git tags v3.6.14 and v3.5.33), and the v3.4.23 git tag.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.backend import (
    KEY_BUCKET,
    META_BUCKET,
    REVISION_KEY_LEN,
    STORAGE_VERSION_KEY,
    TOMBSTONE_MARK,
    parse_revision_key,
)
from etcd_recovery.formats.bbolt import BUCKET_LEAF_FLAG, BoltDB, Bucket, open_db
from etcd_recovery.formats.source import ByteSource, WindowedSource
from etcd_recovery.formats.wal import crc32c_update
from etcd_recovery.proto.kv_pb2 import KeyValue

SHA256_SIZE = 32
SECTOR = 512  # hasChecksum's modulus: "a minimum disk sector size"
HASH_CHUNK = 4 << 20  # bytes read at a time while hashing
NO_LIMIT = 1 << 62  # Bucket.entries' limit for a full walk: a snapshot may hold any number

_TOMB = TOMBSTONE_MARK
_SEP = ord("_")

try:  # google-crc32c's C extend, without crc32c_update's wrapper: called twice per key
    import google_crc32c as _gcrc

    if _gcrc.implementation != "c":
        raise ImportError("google-crc32c without its C extension")
    _crc_update: Callable[[int, bytes], int] = _gcrc.extend
except ImportError:  # pragma: no cover - the package is a dependency
    _crc_update = crc32c_update

BAD_HASH = ("the file's sha256 does not match its last 32 bytes: the snapshot is corrupt "
            "or was cut")

# coreos/go-semver v0.3.1 semver.go: "<int>.<int>.<int>[-pre][+meta]", each identifier
# matching reIdentifier; the integers go through strconv.ParseInt (so "+1" and "01" pass).
_SEMVER_IDENT = re.compile(r"[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*")
_GO_INT = re.compile(r"[+-]?[0-9]+")


def has_checksum(size: int) -> bool:
    """Whether a file of ``size`` bytes ends with a sha256, by etcd's rule (module doc)."""
    return size % SECTOR == SHA256_SIZE


@dataclass(frozen=True)
class SnapshotFile:
    """What one snapshot file is and holds.

    ``hash_ok`` is None when there is no hash to check or checking was skipped; False only
    when read with ``strict=False``. ``hash`` and the fields after it are what
    ``etcdutl snapshot status`` prints (:meth:`etcdutl_json` gives its JSON per minor).
    """

    file: str
    size: int  # the file's size, hash included
    has_hash: bool
    hash_ok: bool | None
    sha256: str | None  # the appended digest (hex), when has_hash
    db_size: int  # the bbolt part: size, less the 32-byte hash when there is one
    hash: int  # etcdutl's "hash": the CRC-32C described in the module doc
    revision: int
    total_keys: int  # 3.6+ "totalKey": live keys
    total_entries: int  # 3.4/3.5 "totalKey": every key of every bucket
    total_size: int  # "totalSize": high water mark x page size
    storage_version: str | None  # 3.6+ "version" (None where etcdutl prints "")
    page_size: int
    txid: int
    bytes_read: int

    @property
    def hash_hex(self) -> str:
        """The hash as the table output prints it (``%x``)."""
        return f"{self.hash:x}"

    def etcdutl_json(self, minor: tuple[int, int]) -> dict[str, Any]:
        """``snapshot status -w json`` as the etcdutl (etcdctl for 3.4) of ``minor`` prints it."""
        out: dict[str, Any] = {
            "hash": self.hash,
            "revision": self.revision,
            "totalKey": self.total_keys if minor >= (3, 6) else self.total_entries,
            "totalSize": self.total_size,
        }
        if minor >= (3, 6):
            out["version"] = self.storage_version or ""
        return out


class _Prefix:
    """The first ``length`` bytes of a source: the database without its appended hash."""

    def __init__(self, src: ByteSource, length: int) -> None:
        self._src = src
        self._length = length

    @property
    def name(self) -> str:
        return self._src.name

    def size(self) -> int:
        return self._length

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        length = max(0, min(length, self._length - offset))
        return self._src.read(offset, length) if length else b""


def _read(src: ByteSource, offset: int, length: int) -> bytes:
    try:
        return src.read(offset, length)
    except OSError as exc:
        raise FormatError(src.name, offset, f"read of {length} bytes failed: {exc}") from exc


def sha256_of(src: ByteSource, length: int, chunk_size: int = HASH_CHUNK) -> bytes:
    """The sha256 of the first ``length`` bytes of ``src``, read ``chunk_size`` at a time."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    h = hashlib.sha256()
    offset = 0
    while offset < length:
        want = min(chunk_size, length - offset)
        data = _read(src, offset, want)
        if len(data) != want:
            raise FormatError(src.name, offset + len(data),
                              f"the file ended while being read ({offset + len(data)} of "
                              f"{length} bytes): it shrank or was cut")
        h.update(data)
        offset += want
    return h.digest()


def _semver(raw: bytes) -> str | None:
    """meta/storageVersion as go-semver's ``NewVersion(...).String()`` prints it, or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    version, _, metadata = text.partition("+")
    version, _, pre = version.partition("-")
    for ident in (pre, metadata):
        if ident and _SEMVER_IDENT.fullmatch(ident) is None:
            return None
    parts = version.split(".", 2)
    if len(parts) != 3 or not all(_GO_INT.fullmatch(p) for p in parts):
        return None
    nums = [int(p) for p in parts]
    if not all(-(1 << 63) <= n < 1 << 63 for n in nums):
        return None
    out = "{}.{}.{}".format(*nums)
    if pre:
        out += f"-{pre}"
    if metadata:
        out += f"+{metadata}"
    return out


@dataclass(frozen=True)
class _Status:
    hash: int
    revision: int
    total_keys: int
    total_entries: int
    storage_version: str | None


def _walk_bucket(db: BoltDB, bucket: Bucket, crc: int, live: set[bytes] | None,
                 ) -> tuple[int, int, int]:
    """Hash one top-level bucket's entries; returns (crc, entries, last main revision).

    ``live`` is given for the key bucket: user keys are added and removed as Status does.
    This loop runs once per key of the snapshot, so it is written for speed: revision keys
    are decoded inline (parse_revision_key only for the ones it then refuses).
    """
    file = db.name
    entries = 0
    revision = 0
    prev = b""
    update = _crc_update
    parse_kv = KeyValue.FromString
    for key, value, flags, value_offset in bucket.raw_entries(NO_LIMIT):
        if key <= prev and entries:
            raise FormatError(file, value_offset,
                              f"bucket {bucket.name!r}: key {key[:40]!r} does not sort after "
                              f"{prev[:40]!r}: the tree is damaged")
        prev = key
        crc = update(crc, key)
        is_bucket = flags & BUCKET_LEAF_FLAG
        if not is_bucket:
            crc = update(crc, value)
        entries += 1
        if live is None:
            continue
        if is_bucket:
            raise FormatError(file, value_offset,
                              f"key bucket holds a nested bucket {key[:40]!r}")
        n = len(key)
        if not ((n == REVISION_KEY_LEN or (n == REVISION_KEY_LEN + 1 and key[17] == _TOMB))
                and key[8] == _SEP and key[0] < 0x80 and key[9] < 0x80):
            parse_revision_key(key, file, value_offset)  # raises, saying why
            raise FormatError(file, value_offset, f"bad revision key {key.hex()}")
        revision = int.from_bytes(key[:8], "big")
        try:
            user_key = parse_kv(value).key
        except DecodeError as exc:
            raise FormatError(file, value_offset, f"key bucket value is not an "
                                                  f"mvccpb.KeyValue: {exc}") from exc
        if n == REVISION_KEY_LEN:
            live.add(user_key)
        else:
            live.discard(user_key)
    return crc, entries, revision


def _status(db: BoltDB) -> _Status:
    file = db.name
    root = db.root_bucket()
    crc = 0
    total_entries = 0
    revision = 0
    live: set[bytes] = set()
    seen: set[bytes] = set()
    prev: bytes | None = None
    for top in root.entries(NO_LIMIT):
        if prev is not None and top.key <= prev:
            raise FormatError(file, top.value_offset,
                              f"top-level bucket {top.key[:40]!r} does not sort after "
                              f"{prev[:40]!r}: the tree is damaged")
        prev = top.key
        if not top.is_bucket:
            raise FormatError(file, top.value_offset,
                              f"top-level key {top.key[:40]!r} is not a bucket "
                              "(etcdutl snapshot status fails on it too)")
        bucket = root.bucket(top.key)
        if bucket is None:  # pragma: no cover - entries() just returned it as a bucket
            raise FormatError(file, top.value_offset, f"bucket {top.key!r} vanished")
        seen.add(top.key)
        crc = crc32c_update(crc, top.key)
        is_key = top.key == KEY_BUCKET
        crc, n, rev = _walk_bucket(db, bucket, crc, live if is_key else None)
        total_entries += n
        if is_key:
            revision = rev
    for required in (META_BUCKET, KEY_BUCKET):
        if required not in seen:
            raise FormatError(file, 0, f"no {required.decode()!r} bucket: a bbolt file, but "
                                       "not an etcd backend")
    meta = db.bucket(META_BUCKET)
    assert meta is not None
    raw = meta.get(STORAGE_VERSION_KEY)
    return _Status(hash=crc, revision=revision, total_keys=len(live),
                   total_entries=total_entries,
                   storage_version=None if raw is None else _semver(raw))


def read_snapshot(src: ByteSource, *, check_hash: bool = True, strict: bool = True,
                  chunk_size: int = HASH_CHUNK) -> SnapshotFile:
    """Read a snapshot file (saved, with its sha256, or a raw ``member/snap/db``).

    Raises FormatError for a file that is not a bbolt database, is shorter than its meta page
    says, has stray bytes after its last page, or whose tree is damaged; and, when ``strict``,
    for a sha256 that does not match. ``check_hash=False`` skips the sha256 (``hash_ok`` None),
    as ``--skip-hash-check`` does. The sha256 is computed ``chunk_size`` bytes at a time and
    the tree walked page by page: memory does not grow with the file, only with its keys (the
    live-key set Status keeps too).
    """
    try:
        size = src.size()
    except OSError as exc:
        raise FormatError(src.name, 0, f"cannot get the file size: {exc}") from exc
    with_hash = has_checksum(size)
    db_size = size - SHA256_SIZE if with_hash else size
    # The walk reads a page at a time: read 1 MiB windows of the file instead.
    db_src = WindowedSource(_Prefix(src, db_size))
    try:
        db = open_db(db_src)
    except FormatError as exc:
        why = str(exc).removeprefix(f"{exc.file} at offset {exc.offset}: ")
        raise FormatError(exc.file, exc.offset,
                          f"not a bbolt database (an etcd snapshot is one): {why}") from exc
    page_size = db.meta.page_size
    total_size = db.meta.pgid * page_size
    after = (" before the 32 bytes its size (% 512 == 32) says are a sha256" if with_hash
             else "")
    if total_size > db_size:
        raise FormatError(src.name, db_size,
                          f"truncated: meta page {db.meta.page} says the database has "
                          f"{db.meta.pgid} pages of {page_size} bytes ({total_size} bytes), "
                          f"but the file has {db_size} bytes{after}")
    if not with_hash and size % SECTOR:
        raise FormatError(src.name, size - size % SECTOR,
                          f"the file's {size} bytes are neither whole pages (a raw "
                          f"member/snap/db) nor whole pages plus a 32-byte sha256 (a saved "
                          f"snapshot): it was cut or has bytes appended")
    digest: bytes | None = None
    hash_ok: bool | None = None
    bytes_read = 0
    if with_hash:
        digest = _read(src, db_size, SHA256_SIZE)
        bytes_read += len(digest)
        if len(digest) != SHA256_SIZE:
            raise FormatError(src.name, db_size, "the file ended while being read: it shrank")
        if check_hash:
            hash_ok = sha256_of(src, db_size, chunk_size) == digest
            bytes_read += db_size
            if not hash_ok and strict:
                raise FormatError(src.name, db_size, BAD_HASH)
    st = _status(db)
    return SnapshotFile(
        file=src.name,
        size=size,
        has_hash=with_hash,
        hash_ok=hash_ok,
        sha256=None if digest is None else digest.hex(),
        db_size=db_size,
        hash=st.hash,
        revision=st.revision,
        total_keys=st.total_keys,
        total_entries=st.total_entries,
        total_size=total_size,
        storage_version=st.storage_version,
        page_size=page_size,
        txid=db.meta.txid,
        bytes_read=bytes_read + db.bytes_read,
    )

"""etcd 3.6- and 3.7-shaped data dirs, made from a real 3.5 one the way etcd's own code says.

No etcd 3.6 or 3.7 binary is on this machine (``/opt`` has etcd 3.4.23 and 3.5.16), so a data
dir written by real etcd 3.5.16 is transformed into what 3.6 and 3.7 leave on disk. Sources
(etcd-io/etcd; newest tags at the time of writing: v3.6.14, v3.7.1; ``main`` at c34dc7ee0; raft
from etcd-io/raft v3.7.0):

Backend (``member/snap/db``), 3.5 -> 3.6
    * ``server/storage/schema/schema.go`` @v3.6.14: ``schemaChanges`` holds one change, for
      V3_6: ``addNewField(Meta, MetaStorageVersionName, emptyStorageVersion)``, i.e. put
      ``meta/storageVersion`` (= ``""`` at first). ``UnsafeDetectSchemaVersion`` takes the
      storage version from that key and, without it, calls the backend 3.5 only when
      ``meta/term`` is non-zero.
    * ``server/storage/schema/migration.go`` @v3.6.14: a plan steps one minor version at a time;
      after its actions each step calls ``UnsafeSetStorageVersion(tx, target)`` when the target
      is >= 3.6. ``server/storage/schema/version.go``: the value is
      ``semver.Version{Major, Minor}.String()`` (coreos/go-semver), so the bytes ``3.6.0``
      (``schema_test.go`` @v3.7.1 expects ``"storageVersion": "3.6.0"``).
    * Nothing else changes: ``server/storage/schema/bucket.go`` @v3.6.14 lists the same
      buckets (key, meta, lease, alarm, cluster, members, members_removed, auth, authUsers,
      authRoles) and keys as 3.5, ``storageVersion`` being the only "Since v3.6" key.
    * Who writes it: offline, ``etcdutl migrate --target-version 3.6``
      (``etcdutl/etcdutl/migrate_command.go`` @v3.6.14: ``schema.Migrate`` then
      ``be.ForceCommit()``; only ``meta/storageVersion`` changes, the WAL is only read).
      Online, ``server/etcdserver/version/monitor.go`` ``UpdateStorageVersionIfNeeded`` runs
      the same migration once the cluster version is 3.6; that cluster version came in through
      a raft entry, which also wrote ``cluster/clusterVersion`` = ``3.6.0`` and moved the
      consistent index. The shapes here are the offline (etcdutl migrate) result; pass
      ``cluster_version`` to also set ``cluster/clusterVersion`` (the raft entry that would come
      with it online is not synthesized).

members, members_removed, cluster (``server/storage/schema/membership.go`` @v3.6.14, same in
@v3.7.1 but for the removal of ``MustHackySaveMemberToBackend``; 3.5.16's
``server/etcdserver/api/membership/store.go`` writes them identically)
    * ``members``: key ``BackendMemberKey(id)`` = ``types.ID.String()`` =
      ``strconv.FormatUint(id, 16)`` (lower-case hex, no padding; ``client/pkg/types/id.go``);
      value ``json.Marshal(membership.Member)``: ``{"id":<uint64 number>,"peerURLs":[...]``
      then ``"isLearner":true`` (omitempty), ``"name"`` and ``"clientURLs"`` (omitempty)
      (``server/etcdserver/api/membership/member.go``). 3.6 and 3.7 read membership from
      these buckets, not from the v2 store (``RaftCluster.UnsafeLoad`` in ``cluster.go``).
    * ``members_removed``: same key, value ``removed``.
    * ``cluster``: ``clusterVersion`` = ``ver.String()`` (e.g. ``3.5.0``), ``downgrade`` =
      JSON ``{"target-version": "...", "enabled": bool}``
      (``server/etcdserver/version/downgrade.go``), written only once a downgrade is
      enabled or cancelled.
    * 3.6 changes no encoding. Its one fix-up (``SyncLearnerPromotionIfNeeded``, bootstrap.go
      @v3.6.14, etcd-io/etcd#19557) rewrites a member that the v2 snapshot shows promoted but
      ``members`` still shows as learner; it does not apply to a member still a learner in
      both, as in the fixture here, so the buckets are kept byte for byte.
    * Seen on the real 3.5.16 db: a member's value has no ``clientURLs``. 3.5's
      ``UpdateAttributes`` (``api/membership/cluster.go`` @v3.5.16) saves through
      ``unsafeSaveMemberToBackend``, which refuses a member that already exists; 3.6's
      ``MustSaveMemberToBackend`` overwrites. A 3.6 that has run therefore shows
      ``clientURLs`` after its publish entry (raft, not migration; not modelled here).

``meta/confState`` (``server/storage/schema/confstate.go`` @v3.6.14 and @v3.7.1)
    ``json.Marshal(raftpb.ConfState)``: ``{"voters":[...],"learners":[...],...,
    "auto_leave":false}`` (lists omitempty). In raft v3.7.0 ``AutoLeave`` is a ``*bool`` with
    ``omitempty`` but ``tracker.ConfState()`` always sets it, so the JSON is unchanged. 3.7
    initialises raft's confState from it on bootstrap (etcd-io/etcd#21138). Kept as is.

3.6 -> 3.7
    * ``schema.go`` @v3.7.1 adds ``version.V3_7: {}``: no new key, the step only sets
      ``storageVersion`` to ``3.7.0`` (``migration.go``). ``bucket.go`` is unchanged.
    * .snap files: 3.7 stops *reading* them (etcd-io/etcd#21107, commit e74bb6a0e "do not load
      v2 snapshot on bootstrap": bootstrap takes the newest WAL snapshot record,
      ``recoverSnapshot`` in ``server/etcdserver/bootstrap.go`` @v3.7.1) but still *writes*
      them: "in order to be compatible with 3.6, we still need to write v2 snapshot"
      (same commit); ``EtcdServer.snapshot`` (server.go @v3.7.1) builds the v2 payload with
      ``GetMembershipInfoInV2Format`` and ``storage.SaveSnap`` (``server/storage/storage.go``
      @v3.7.1) writes the file before the WAL record. So a 3.7 dir has ``.snap`` files; it
      runs as well without them. Writing stops only on ``main`` after v3.8.0-alpha.0
      (etcd-io/etcd#22263, commit 5d1a827c1 "Stop generating v2 snapshot files"):
      ``make_37_shaped(..., snap_files=False)`` gives that layout (only ``db`` in
      ``member/snap``).
    * WAL: same framing and record types. 3.7 encodes with google.golang.org/protobuf
      (``server/storage/wal/walpb/record.proto`` @v3.7.1 drops gogoproto; raft v3.7.0
      ``raftpb.Entry`` has pointer fields), so records 3.7 appends leave out unset fields: a
      normal entry has no ``Type`` field (``node.Propose`` sets only ``Data``,
      ``raft.appendEntry`` sets ``Term`` and ``Index``). Existing records are not rewritten,
      so the WAL is kept as is; :func:`append_37_entry` appends records encoded that way.

``--v2-deprecation`` (``server/config/v2_deprecation.go``)
    3.6 (@v3.6.14): not-yet, write-only (default), write-only-skip-check, write-only-drop-data,
    gone. Its only effect is ``AssertNoV2StoreContent`` (``server/storage/util.go``) when the
    v2 snapshot is loaded: startup fails at write-only or above when the .snap holds content
    other than membership (skip-check only warns). No mode changes what is written: .snap
    files are written in every mode. 3.7 (@v3.7.1): ``etcdmain/config.go`` forces the default
    (write-only) whatever the flag says, and no code reads the mode any more. Nothing to model
    on disk.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from etcd_recovery.formats.bbolt import Bucket, open_db
from etcd_recovery.formats.snap import is_snap_name
from etcd_recovery.formats.source import FileSource
from etcd_recovery.formats.wal import crc32c_update
from etcd_recovery.formats.walwrite import frame, hardstate_bytes
from etcd_recovery.formats.walwrite import varint as _varint
from tests.formats.bbolt_fixtures import (
    BUCKET_FLAG,
    NO_FREELIST,
    branch_page,
    leaf_body,
    leaf_page,
    meta_page,
)

STORAGE_VERSION_KEY = b"storageVersion"
STORAGE_VERSION_36 = "3.6.0"
STORAGE_VERSION_37 = "3.7.0"

PAGE_HEADER = 16
ELEMENT = 16
BUCKET_HEADER = 16
MAX_ENTRIES = 1_000_000

ENTRY_TYPE = 2
STATE_TYPE = 3

T = TypeVar("T")


# ------------------------------------------------------------------------------ bbolt model

@dataclass
class BoltBucket:
    """A bucket's whole content: plain values, or nested buckets."""

    sequence: int = 0
    items: dict[bytes, bytes | BoltBucket] = field(default_factory=dict)

    def bucket(self, name: bytes) -> BoltBucket:
        child = self.items[name]
        assert isinstance(child, BoltBucket), f"{name!r} is not a bucket"
        return child

    def count(self) -> int:
        """Plain keys, nested buckets included (as etcdutl's ``totalKey`` counts them)."""
        return sum(v.count() if isinstance(v, BoltBucket) else 1 for v in self.items.values())


def _load(bucket: Bucket) -> BoltBucket:
    out = BoltBucket(sequence=bucket.sequence)
    for entry in bucket.entries(MAX_ENTRIES):
        if entry.is_bucket:
            child = bucket.bucket(entry.key)
            assert child is not None
            out.items[entry.key] = _load(child)
        else:
            out.items[entry.key] = entry.value
    return out


@dataclass(frozen=True)
class BoltFile:
    root: BoltBucket
    page_size: int
    txid: int


def read_bolt(path: str | os.PathLike[str]) -> BoltFile:
    """Every bucket and key of a bbolt file, read with etcd_recovery's reader."""
    db = open_db(FileSource(path))
    return BoltFile(root=_load(db.root_bucket()), page_size=db.meta.page_size, txid=db.meta.txid)


class BoltWriter:
    """Writes a bbolt file holding any number of keys, deterministically.

    Leaves and branches are packed full in key order (a page spans overflow pages when one
    element does not fit), nested buckets are written before their parent, and a bucket is
    stored inline exactly when bbolt's ``Bucket.inlineable`` would: no nested bucket and its
    leaf no larger than a quarter page. No freelist is written (``NoFreelistSync``, as etcd
    does: bbolt rebuilds it from the pages reachable from the root).
    """

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.pages: list[bytes] = []
        self.next_pgid = 2

    def _add(self, make: Callable[[int], bytes]) -> int:
        pgid = self.next_pgid
        page = make(pgid)
        assert len(page) % self.page_size == 0
        self.pages.append(page)
        self.next_pgid += len(page) // self.page_size
        return pgid

    def _elements(self, bucket: BoltBucket) -> list[tuple[int, bytes, bytes]]:
        out: list[tuple[int, bytes, bytes]] = []
        for key in sorted(bucket.items):
            value = bucket.items[key]
            if isinstance(value, BoltBucket):
                out.append((BUCKET_FLAG, key, self._bucket_value(value)))
            else:
                out.append((0, key, value))
        return out

    def _inlineable(self, bucket: BoltBucket) -> bool:
        size = PAGE_HEADER
        for key, value in bucket.items.items():
            if isinstance(value, BoltBucket):
                return False
            size += ELEMENT + len(key) + len(value)
        return size <= self.page_size // 4

    def _bucket_value(self, bucket: BoltBucket) -> bytes:
        if self._inlineable(bucket):
            return struct.pack("<QQ", 0, bucket.sequence) + leaf_body(self._elements(bucket))
        root = self._tree(self._elements(bucket))
        return struct.pack("<QQ", root, bucket.sequence)

    def _tree(self, items: list[tuple[int, bytes, bytes]]) -> int:
        """Store sorted leaf elements as a B+tree; returns the root page id."""
        ps = self.page_size
        level: list[tuple[bytes, int]] = []
        for chunk in _pack(items, lambda it: ELEMENT + len(it[1]) + len(it[2]), ps):
            pgid = self._add(partial(leaf_page, items=chunk, page_size=ps))
            level.append((chunk[0][1] if chunk else b"", pgid))
        while len(level) > 1:
            upper: list[tuple[bytes, int]] = []
            for group in _pack(level, lambda it: ELEMENT + len(it[0]), ps):
                pgid = self._add(partial(branch_page, items=group, page_size=ps))
                upper.append((group[0][0], pgid))
            level = upper
        return level[0][1]

    def build(self, root: BoltBucket, txid: int) -> bytes:
        """The whole file: meta pages 0 and 1 (txid and txid - 1, as bbolt alternates them),
        then the pages."""
        assert txid >= 2
        root_pgid = self._tree(self._elements(root))
        ps = self.page_size
        hwm = self.next_pgid
        metas = {txid % 2: meta_page(txid % 2, ps, root_pgid, hwm, txid, NO_FREELIST),
                 (txid - 1) % 2: meta_page((txid - 1) % 2, ps, root_pgid, hwm, txid - 1,
                                           NO_FREELIST)}
        out = metas[0] + metas[1] + b"".join(self.pages)
        assert len(out) == hwm * ps
        return out


def _pack(items: list[T], size: Callable[[T], int], page_size: int) -> list[list[T]]:
    """Split ``items`` in order into groups that each fit a page (at least one per group)."""
    groups: list[list[T]] = []
    cur: list[T] = []
    used = PAGE_HEADER
    for it in items:
        need = size(it)
        if cur and used + need > page_size:
            groups.append(cur)
            cur, used = [], PAGE_HEADER
        cur.append(it)
        used += need
    if cur or not groups:
        groups.append(cur)
    return groups


def write_bolt(path: str | os.PathLike[str], content: BoltFile) -> None:
    data = BoltWriter(content.page_size).build(content.root, content.txid)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


# ------------------------------------------------------------------------------ data dirs

def copy_data_dir(src: Path, dst: Path) -> Path:
    """Copy a data dir (``member/wal``, ``member/snap``) as it is."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def rewrite_db(data_dir: Path, change: Callable[[BoltBucket], None]) -> BoltFile:
    """Read ``member/snap/db`` whole, apply ``change`` to its content, write it back as one
    more bbolt transaction (txid + 1, as the migration's commit would be)."""
    path = data_dir / "member" / "snap" / "db"
    before = read_bolt(path)
    change(before.root)
    after = BoltFile(root=before.root, page_size=before.page_size, txid=before.txid + 1)
    write_bolt(path, after)
    return after


def migrate_storage_version(root: BoltBucket, target: str) -> None:
    """``schema.UnsafeMigrate`` from 3.5 (or later) to ``target`` (3.6 or 3.7).

    3.5 -> 3.6 runs ``addNewField(Meta, storageVersion, "")`` then sets ``storageVersion`` to
    ``3.6.0``; 3.6 -> 3.7 has no action and sets it to ``3.7.0``. Like etcd, refuse a
    backend that is neither 3.6+ nor a 3.5 one with ``meta/term`` set."""
    meta = root.bucket(b"meta")
    current = meta.items.get(STORAGE_VERSION_KEY)
    if current is None:
        term = meta.items.get(b"term")
        if not isinstance(term, bytes) or int.from_bytes(term, "big") == 0:
            raise ValueError("cannot detect storage schema version: missing term information")
    minor = int(target.split(".")[1])
    assert target == f"3.{minor}.0" and minor in (6, 7), target
    for step in range(6, minor + 1):
        if step == 6 and current is None:
            meta.items[STORAGE_VERSION_KEY] = b""  # addNewField(..., emptyStorageVersion)
        meta.items[STORAGE_VERSION_KEY] = f"3.{step}.0".encode()  # UnsafeSetStorageVersion


def _set_cluster_version(root: BoltBucket, version: str | None) -> None:
    if version is not None:
        root.bucket(b"cluster").items[b"clusterVersion"] = version.encode()


def make_35_rewritten(src: Path, dst: Path) -> Path:
    """A control: the 3.5 dir with its db rewritten by :class:`BoltWriter`, content unchanged."""
    copy_data_dir(src, dst)
    rewrite_db(dst, lambda root: None)
    return dst


def make_36_shaped(src: Path, dst: Path, *, cluster_version: str | None = None) -> Path:
    """What ``etcdutl migrate --target-version 3.6`` (etcd 3.6.14) leaves of a 3.5 data dir:
    every bucket and key of the db plus ``meta/storageVersion = 3.6.0``; WAL and .snap
    files untouched (3.6 reads both as 3.5 wrote them)."""
    copy_data_dir(src, dst)

    def change(root: BoltBucket) -> None:
        migrate_storage_version(root, STORAGE_VERSION_36)
        _set_cluster_version(root, cluster_version)

    rewrite_db(dst, change)
    return dst


def make_37_shaped(src: Path, dst: Path, *, snap_files: bool = True,
                   cluster_version: str | None = None) -> Path:
    """The 3.5 dir migrated to 3.7 (3.5 -> 3.6 -> 3.7: ``storageVersion = 3.7.0``, nothing
    else in the db). 3.7 still writes .snap files but never reads them: ``snap_files=False``
    removes them (only ``db`` stays in ``member/snap``), the layout etcd ``main`` writes since
    etcd-io/etcd#22263 and one 3.7 starts from unchanged."""
    copy_data_dir(src, dst)

    def change(root: BoltBucket) -> None:
        migrate_storage_version(root, STORAGE_VERSION_37)
        _set_cluster_version(root, cluster_version)

    rewrite_db(dst, change)
    if not snap_files:
        snap_dir = dst / "member" / "snap"
        for name in os.listdir(snap_dir):
            if is_snap_name(name):
                os.remove(snap_dir / name)
    return dst


def snap_dir_names(data_dir: Path) -> list[str]:
    return sorted(os.listdir(data_dir / "member" / "snap"))


# ------------------------------------------------------------------------------ 3.7 WAL records

def _record(rtype: int, crc: int, data: bytes) -> bytes:
    """walpb.Record as 3.7 marshals it: type and crc always set, then data."""
    return (_varint(1 << 3) + _varint(rtype) + _varint(2 << 3) + _varint(crc)
            + _varint((3 << 3) | 2) + _varint(len(data)) + data)


def entry_37(term: int, index: int, data: bytes) -> bytes:
    """raftpb.Entry of a normal proposal as raft v3.7.0 marshals it: ``Type`` unset (so not
    on the wire), ``Term`` (2), ``Index`` (3), ``Data`` (4)."""
    out = _varint(2 << 3) + _varint(term) + _varint(3 << 3) + _varint(index)
    if data:
        out += _varint((4 << 3) | 2) + _varint(len(data)) + data
    return out


def append_37_entry(wal_file: Path, offset: int, crc: int, term: int, vote: int, index: int,
                    data: bytes, commit: int) -> tuple[int, int]:
    """Write, at ``offset`` of ``wal_file`` (where its valid records end; running CRC
    ``crc``), one entry record and one HardState record the way etcd 3.7 encodes them.
    Returns (new end offset, new running CRC)."""
    ent = entry_37(term, index, data)
    crc = crc32c_update(crc, ent)
    blob = frame(_record(ENTRY_TYPE, crc, ent))
    hs = hardstate_bytes(term, vote, commit)
    crc = crc32c_update(crc, hs)
    blob += frame(_record(STATE_TYPE, crc, hs))
    with open(wal_file, "r+b") as fh:
        fh.seek(offset)
        fh.write(blob)
    return offset + len(blob), crc

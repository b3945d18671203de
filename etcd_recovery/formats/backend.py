"""What etcd keeps in its bbolt backend (``member/snap/db``), read without loading it.

Bucket and key names (the same in etcd 3.4 and 3.5; see etcd 3.4 ``mvcc/kvstore.go`` and
``etcdserver/api/membership/store.go``, 3.5 ``server/mvcc/buckets``, later
``server/storage/schema``):

* ``meta``: ``consistent_index`` (u64 big-endian: the last raft index applied to the
  backend), ``term`` (u64 big-endian, 3.5+), ``confState`` (JSON raftpb.ConfState, 3.5+),
  ``scheduledCompactRev`` / ``finishedCompactRev`` (revision keys, below),
  ``storageVersion`` (3.6+).
* ``key``: one entry per revision; the key is ``main u64 BE, '_', sub u64 BE`` plus a
  trailing ``'t'`` for a deletion (tombstone); the value is an mvccpb.KeyValue.
* ``cluster``: ``clusterVersion`` (e.g. ``3.5.0``).
* ``members``: key = member ID in lower-case hex, value = JSON
  ``{"id", "peerURLs", "name"?, "clientURLs"?, "isLearner"?}``.
* ``members_removed``: key = removed member ID in hex, value ``removed``.
* ``alarm``: key = protobuf AlarmMember ``{1: memberID, 2: alarm type}``, empty value.

The revision etcd serves after it restarts from this file is computed the way etcd's
``store.restore`` does: the main revision of the last key in ``key`` (1 if there is none),
raised to ``finishedCompactRev`` and then to ``scheduledCompactRev`` when those are higher
(etcd 3.4 drops a deletion's tombstone when compacting at that very revision, so the newest
revision may no longer have a key). etcd 3.4 does not apply the ``scheduledCompactRev`` step;
all inputs are reported as well.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.bbolt import BoltDB, Bucket, Entry, open_db
from etcd_recovery.formats.source import ByteSource
from etcd_recovery.proto.etcdserver_pb2 import AlarmMember

# The buckets and keys of the module docstring, by the names it gives them.
META_BUCKET, KEY_BUCKET, CLUSTER_BUCKET = b"meta", b"key", b"cluster"
MEMBERS_BUCKET, MEMBERS_REMOVED_BUCKET, ALARM_BUCKET = b"members", b"members_removed", b"alarm"
CONSISTENT_INDEX_KEY, TERM_KEY, CONF_STATE_KEY = b"consistent_index", b"term", b"confState"
SCHEDULED_COMPACT_KEY, FINISHED_COMPACT_KEY = b"scheduledCompactRev", b"finishedCompactRev"
STORAGE_VERSION_KEY = b"storageVersion"       # meta bucket, 3.6+
CLUSTER_VERSION_KEY = b"clusterVersion"       # cluster bucket

REVISION_KEY_LEN = 17
TOMBSTONE_MARK = ord("t")

MAX_MEMBERS = 1000
MAX_ALARMS = 1000
MAX_SMALL_VALUE = 64 << 10

_MEMBER_ID = re.compile(rb"[0-9a-f]{1,16}")

ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


@dataclass(frozen=True)
class Revision:
    main: int
    sub: int
    tombstone: bool = False


@dataclass(frozen=True)
class ConfState:
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    voters_outgoing: tuple[int, ...]
    learners_next: tuple[int, ...]
    auto_leave: bool


@dataclass(frozen=True)
class BackendMember:
    id: int
    name: str | None
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def id_hex(self) -> str:
        """The ID as etcd prints it (lower-case hex, no padding)."""
        return f"{self.id:x}"


@dataclass(frozen=True)
class Alarm:
    member_id: int
    alarm: str  # NOSPACE, CORRUPT, or ALARM_<n> for a type this reader does not know


@dataclass(frozen=True)
class BackendState:
    file: str
    db_size_bytes: int  # the file's size
    data_size_bytes: int  # high water mark x page size: etcd's "dbSize" as of the last commit
    page_size: int
    txid: int
    consistent_index: int | None  # None: never written (fresh backend)
    term: int | None  # None before etcd 3.5
    conf_state: ConfState | None  # None before etcd 3.5
    revision: int  # what etcd serves after restarting from this file (see module doc)
    last_key_revision: Revision | None  # newest entry of the key bucket
    compact_revision: int | None  # finishedCompactRev
    scheduled_compact_revision: int | None  # scheduledCompactRev
    cluster_version: str | None
    storage_version: str | None
    members: tuple[BackendMember, ...]
    removed_member_ids: tuple[int, ...]
    alarms: tuple[Alarm, ...]
    bytes_read: int


def parse_revision_key(key: bytes, file: str, offset: int) -> Revision:
    """Decode a ``key`` bucket key (17 bytes, or 18 with the tombstone mark)."""
    if len(key) not in (REVISION_KEY_LEN, REVISION_KEY_LEN + 1) or key[8] != ord("_"):
        raise FormatError(file, offset, f"not a revision key: {key[:32].hex()}")
    if len(key) == REVISION_KEY_LEN + 1 and key[17] != TOMBSTONE_MARK:
        raise FormatError(file, offset, f"revision key has unknown mark {key[17]:#x}")
    main = int.from_bytes(key[0:8], "big")
    sub = int.from_bytes(key[9:17], "big")
    if main >= 1 << 63 or sub >= 1 << 63:
        raise FormatError(file, offset, f"negative revision in key {key.hex()}")
    return Revision(main=main, sub=sub, tombstone=len(key) == REVISION_KEY_LEN + 1)


def _u64_be(entry: Entry, file: str, what: str) -> int:
    if len(entry.value) != 8:
        raise FormatError(file, entry.value_offset,
                          f"{what}: expected 8 bytes, found {len(entry.value)}")
    return int.from_bytes(entry.value, "big")


def _plain(bucket: Bucket, key: bytes, file: str) -> Entry | None:
    entry = bucket.entry(key)
    if entry is None:
        return None
    if entry.is_bucket:
        raise FormatError(file, entry.value_offset,
                          f"{key.decode()} in bucket {bucket.name.decode()} is a bucket")
    return entry


def _text(entry: Entry, file: str, what: str) -> str:
    if len(entry.value) > MAX_SMALL_VALUE:
        raise FormatError(file, entry.value_offset, f"{what}: {len(entry.value)} bytes")
    try:
        return entry.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(file, entry.value_offset, f"{what}: not UTF-8") from exc


def _json_object(entry: Entry, file: str, what: str) -> dict[str, Any]:
    text = _text(entry, file, what)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FormatError(file, entry.value_offset, f"{what}: bad JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise FormatError(file, entry.value_offset, f"{what}: JSON is not an object")
    return obj


def _u64_list(obj: dict[str, Any], field: str, file: str, offset: int,
              what: str) -> tuple[int, ...]:
    raw = obj.get(field)
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(_is_u64(x) for x in raw):
        raise FormatError(file, offset, f"{what}: {field} is not a list of IDs")
    return tuple(raw)


def _is_u64(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 64


def _str_list(obj: dict[str, Any], field: str, file: str, offset: int,
              what: str) -> tuple[str, ...]:
    raw = obj.get(field)
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise FormatError(file, offset, f"{what}: {field} is not a list of strings")
    return tuple(raw)


def _conf_state(entry: Entry, file: str) -> ConfState:
    obj = _json_object(entry, file, "confState")
    off = entry.value_offset
    auto_leave = obj.get("auto_leave", False)
    if not isinstance(auto_leave, bool):
        raise FormatError(file, off, "confState: auto_leave is not a boolean")
    return ConfState(
        voters=_u64_list(obj, "voters", file, off, "confState"),
        learners=_u64_list(obj, "learners", file, off, "confState"),
        voters_outgoing=_u64_list(obj, "voters_outgoing", file, off, "confState"),
        learners_next=_u64_list(obj, "learners_next", file, off, "confState"),
        auto_leave=auto_leave,
    )


def _member_id(key: bytes, file: str, offset: int) -> int:
    if _MEMBER_ID.fullmatch(key) is None:
        raise FormatError(file, offset, f"not a member ID: {key[:40]!r}")
    return int(key, 16)


def _member(entry: Entry, file: str) -> BackendMember:
    off = entry.value_offset
    member_id = _member_id(entry.key, file, off)
    what = f"member {member_id:x}"
    obj = _json_object(entry, file, what)
    json_id = obj.get("id", member_id)
    if not _is_u64(json_id) or json_id != member_id:
        raise FormatError(file, off, f"{what}: JSON id {json_id!r} differs from its key")
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        raise FormatError(file, off, f"{what}: name is not a string")
    is_learner = obj.get("isLearner", False)
    if not isinstance(is_learner, bool):
        raise FormatError(file, off, f"{what}: isLearner is not a boolean")
    return BackendMember(
        id=member_id,
        name=name or None,
        peer_urls=_str_list(obj, "peerURLs", file, off, what),
        client_urls=_str_list(obj, "clientURLs", file, off, what),
        is_learner=is_learner,
    )


def _alarm(entry: Entry, file: str) -> Alarm:
    """Decode an alarm key, an etcdserverpb.AlarmMember (uint64 memberID = 1; AlarmType alarm = 2).

    Unlike a WAL record or a .snap file, nothing checks these bytes (bbolt has no checksum over
    its leaves), so a memberID or alarm written with another wire type, which the protobuf
    library would set aside as an unknown field and read as 0, is refused here instead.
    """
    try:
        msg = AlarmMember.FromString(entry.key)
        unknown = UnknownFieldSet(msg)
        numbers = {unknown[i].field_number for i in range(len(unknown))}
        wrong = sorted(numbers & set(AlarmMember.DESCRIPTOR.fields_by_number))
        if wrong:
            raise DecodeError(f"field {wrong[0]} has the wrong wire type")
    except DecodeError as exc:
        raise FormatError(file, entry.value_offset,
                          f"bad alarm key {entry.key[:40].hex()}: {exc}") from exc
    return Alarm(member_id=msg.memberID,
                 alarm=ALARM_NAMES.get(msg.alarm, f"ALARM_{msg.alarm}"))


def _compact_rev(meta: Bucket, key: bytes, file: str) -> int | None:
    entry = _plain(meta, key, file)
    if entry is None:
        return None
    return parse_revision_key(entry.value, file, entry.value_offset).main


def _required(db: BoltDB, name: bytes) -> Bucket:
    bucket = db.bucket(name)
    if bucket is None:
        raise FormatError(db.name, 0, f"no {name.decode()!r} bucket: not an etcd backend")
    return bucket


def read_backend(src: ByteSource) -> BackendState:
    """Read etcd's state from a bbolt backend; FormatError if it is damaged or not etcd's."""
    db = open_db(src)
    file = db.name
    meta = _required(db, META_BUCKET)
    keys = _required(db, KEY_BUCKET)

    ci = _plain(meta, CONSISTENT_INDEX_KEY, file)
    term = _plain(meta, TERM_KEY, file)
    conf = _plain(meta, CONF_STATE_KEY, file)
    storage = _plain(meta, STORAGE_VERSION_KEY, file)
    finished = _compact_rev(meta, FINISHED_COMPACT_KEY, file)
    scheduled = _compact_rev(meta, SCHEDULED_COMPACT_KEY, file)

    last = keys.last_entry()
    last_rev = None if last is None else parse_revision_key(last.key, file, last.value_offset)
    revision = 1 if last_rev is None else last_rev.main
    revision = max(revision, finished or 0, scheduled or 0)

    cluster_version: str | None = None
    cluster = db.bucket(CLUSTER_BUCKET)
    if cluster is not None:
        cv = _plain(cluster, CLUSTER_VERSION_KEY, file)
        if cv is not None:
            cluster_version = _text(cv, file, "clusterVersion")

    members: list[BackendMember] = []
    bucket = db.bucket(MEMBERS_BUCKET)
    if bucket is not None:
        members = [_member(e, file) for e in bucket.entries(MAX_MEMBERS)]
    removed: list[int] = []
    bucket = db.bucket(MEMBERS_REMOVED_BUCKET)
    if bucket is not None:
        removed = [_member_id(e.key, file, e.value_offset)
                   for e in bucket.entries(MAX_MEMBERS)]
    alarms: list[Alarm] = []
    bucket = db.bucket(ALARM_BUCKET)
    if bucket is not None:
        alarms = [_alarm(e, file) for e in bucket.entries(MAX_ALARMS)]

    return BackendState(
        file=file,
        db_size_bytes=db.file_size,
        data_size_bytes=db.meta.pgid * db.meta.page_size,
        page_size=db.meta.page_size,
        txid=db.meta.txid,
        consistent_index=None if ci is None else _u64_be(ci, file, "consistent_index"),
        term=None if term is None else _u64_be(term, file, "term"),
        conf_state=None if conf is None else _conf_state(conf, file),
        revision=revision,
        last_key_revision=last_rev,
        compact_revision=finished,
        scheduled_compact_revision=scheduled,
        cluster_version=cluster_version,
        storage_version=None if storage is None else _text(storage, file, "storageVersion"),
        members=tuple(members),
        removed_member_ids=tuple(removed),
        alarms=tuple(alarms),
        bytes_read=db.bytes_read,
    )

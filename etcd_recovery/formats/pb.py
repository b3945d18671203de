"""A minimal protobuf wire-format decoder and the few etcd messages the readers need.

Only decoding is done here. Malformed input raises ``ValueError``; the file readers turn it
into ``FormatError(file, offset, ...)``.

Field numbers follow etcd's .proto files (3.4 and 3.5 alike):

* ``walpb.Record``            type=1 (int64), crc=2 (uint32), data=3 (bytes)
* ``walpb.Snapshot``          index=1, term=2, conf_state=3 (raftpb.ConfState, 3.5 and later)
* ``raftpb.Entry``            Type=1, Term=2, Index=3, Data=4
* ``raftpb.HardState``        term=1, vote=2, commit=3
* ``raftpb.ConfState``        voters=1, learners=2, voters_outgoing=3, learners_next=4 (repeated
  uint64), auto_leave=5
* ``raftpb.Snapshot``         data=1, metadata=2 (raftpb.SnapshotMetadata)
* ``raftpb.SnapshotMetadata`` conf_state=1, index=2, term=3
* ``snappb.snapshot``         crc=1 (uint32), data=2 (bytes)
* ``etcdserverpb.Metadata``   NodeID=1, ClusterID=2
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_START_GROUP = 3
WIRE_END_GROUP = 4
WIRE_FIXED32 = 5

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

FieldValue = int | bytes


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (value, position after it).

    At most 10 bytes are accepted; the value is truncated to 64 bits as Go's decoders do.
    """
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, FieldValue]]:
    """Yield (field number, wire type, value) for each field of an encoded message.

    Varint and fixed fields give an ``int`` (unsigned), length-delimited fields give ``bytes``.
    Groups are refused: none of the messages read here uses them.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        field = key >> 3
        wire = key & 7
        if field <= 0 or field > 0x1FFFFFFF:
            raise ValueError(f"invalid field number {field}")
        value: FieldValue
        if wire == WIRE_VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == WIRE_FIXED64:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == WIRE_FIXED32:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wire == WIRE_LEN:
            length, pos = read_varint(buf, pos)
            if length > end - pos:
                raise ValueError("length-delimited field runs past the end of the message")
            value = bytes(buf[pos:pos + length])
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire} for field {field}")
        yield field, wire, value


def _want_varint(field: int, wire: int, value: FieldValue) -> int:
    if wire != WIRE_VARINT or not isinstance(value, int):
        raise ValueError(f"field {field}: wrong wire type {wire} for a varint")
    return value


def _want_bytes(field: int, wire: int, value: FieldValue) -> bytes:
    if wire != WIRE_LEN or not isinstance(value, bytes):
        raise ValueError(f"field {field}: wrong wire type {wire} for bytes")
    return value


def _to_int64(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


def _repeated_uint64(field: int, wire: int, value: FieldValue, out: list[int]) -> None:
    """Append a repeated uint64 field, packed or not (gogo decoders accept both)."""
    if wire == WIRE_LEN:
        packed = _want_bytes(field, wire, value)
        pos = 0
        while pos < len(packed):
            item, pos = read_varint(packed, pos)
            out.append(item)
    else:
        out.append(_want_varint(field, wire, value))


@dataclass(frozen=True)
class Record:
    """walpb.Record: one framed WAL record."""

    type: int
    crc: int
    data: bytes


@dataclass(frozen=True)
class Entry:
    """raftpb.Entry (without its payload: readers need only the position)."""

    term: int
    index: int
    type: int
    data_size: int


@dataclass(frozen=True)
class HardState:
    """raftpb.HardState."""

    term: int
    vote: int
    commit: int


@dataclass(frozen=True)
class Metadata:
    """etcdserverpb.Metadata, the payload of a WAL metadata record."""

    node_id: int
    cluster_id: int


@dataclass(frozen=True)
class ConfState:
    """raftpb.ConfState."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False


@dataclass(frozen=True)
class WalSnapshot:
    """walpb.Snapshot: a snapshot marker in the WAL."""

    index: int
    term: int
    conf_state: ConfState | None = None


@dataclass(frozen=True)
class SnapPayload:
    """snappb.snapshot: the envelope of a .snap file."""

    crc: int
    data: bytes


@dataclass(frozen=True)
class SnapshotMetadata:
    """raftpb.SnapshotMetadata."""

    conf_state: ConfState
    index: int
    term: int


@dataclass(frozen=True)
class RaftSnapshot:
    """raftpb.Snapshot."""

    data: bytes
    metadata: SnapshotMetadata


def decode_record(buf: bytes) -> Record:
    rtype = crc = 0
    data = b""
    for field, wire, value in iter_fields(buf):
        if field == 1:
            rtype = _to_int64(_want_varint(field, wire, value))
        elif field == 2:
            crc = _want_varint(field, wire, value) & _U32
        elif field == 3:
            data = _want_bytes(field, wire, value)
    return Record(type=rtype, crc=crc, data=data)


def decode_entry(buf: bytes) -> Entry:
    term = index = etype = 0
    size = 0
    for field, wire, value in iter_fields(buf):
        if field == 1:
            etype = _want_varint(field, wire, value) & _U32
        elif field == 2:
            term = _want_varint(field, wire, value)
        elif field == 3:
            index = _want_varint(field, wire, value)
        elif field == 4:
            size = len(_want_bytes(field, wire, value))
    return Entry(term=term, index=index, type=etype, data_size=size)


def decode_hardstate(buf: bytes) -> HardState:
    term = vote = commit = 0
    for field, wire, value in iter_fields(buf):
        if field == 1:
            term = _want_varint(field, wire, value)
        elif field == 2:
            vote = _want_varint(field, wire, value)
        elif field == 3:
            commit = _want_varint(field, wire, value)
    return HardState(term=term, vote=vote, commit=commit)


def decode_metadata(buf: bytes) -> Metadata:
    node_id = cluster_id = 0
    for field, wire, value in iter_fields(buf):
        if field == 1:
            node_id = _want_varint(field, wire, value)
        elif field == 2:
            cluster_id = _want_varint(field, wire, value)
    return Metadata(node_id=node_id, cluster_id=cluster_id)


def decode_conf_state(buf: bytes) -> ConfState:
    lists: dict[int, list[int]] = {1: [], 2: [], 3: [], 4: []}
    auto_leave = False
    for field, wire, value in iter_fields(buf):
        if field in lists:
            _repeated_uint64(field, wire, value, lists[field])
        elif field == 5:
            auto_leave = _want_varint(field, wire, value) != 0
    return ConfState(
        voters=tuple(lists[1]),
        learners=tuple(lists[2]),
        voters_outgoing=tuple(lists[3]),
        learners_next=tuple(lists[4]),
        auto_leave=auto_leave,
    )


def decode_wal_snapshot(buf: bytes) -> WalSnapshot:
    index = term = 0
    conf: ConfState | None = None
    for field, wire, value in iter_fields(buf):
        if field == 1:
            index = _want_varint(field, wire, value)
        elif field == 2:
            term = _want_varint(field, wire, value)
        elif field == 3:
            conf = decode_conf_state(_want_bytes(field, wire, value))
    return WalSnapshot(index=index, term=term, conf_state=conf)


def decode_snap_payload(buf: bytes) -> SnapPayload:
    crc = 0
    data = b""
    for field, wire, value in iter_fields(buf):
        if field == 1:
            crc = _want_varint(field, wire, value) & _U32
        elif field == 2:
            data = _want_bytes(field, wire, value)
    return SnapPayload(crc=crc, data=data)


def decode_snapshot_metadata(buf: bytes) -> SnapshotMetadata:
    conf = ConfState()
    index = term = 0
    for field, wire, value in iter_fields(buf):
        if field == 1:
            conf = decode_conf_state(_want_bytes(field, wire, value))
        elif field == 2:
            index = _want_varint(field, wire, value)
        elif field == 3:
            term = _want_varint(field, wire, value)
    return SnapshotMetadata(conf_state=conf, index=index, term=term)


def decode_raft_snapshot(buf: bytes) -> RaftSnapshot:
    data = b""
    meta = SnapshotMetadata(conf_state=ConfState(), index=0, term=0)
    for field, wire, value in iter_fields(buf):
        if field == 1:
            data = _want_bytes(field, wire, value)
        elif field == 2:
            meta = decode_snapshot_metadata(_want_bytes(field, wire, value))
    return RaftSnapshot(data=data, metadata=meta)


__all__ = [
    "ConfState",
    "Entry",
    "HardState",
    "Metadata",
    "RaftSnapshot",
    "Record",
    "SnapPayload",
    "SnapshotMetadata",
    "WalSnapshot",
    "decode_conf_state",
    "decode_entry",
    "decode_hardstate",
    "decode_metadata",
    "decode_raft_snapshot",
    "decode_record",
    "decode_snap_payload",
    "decode_snapshot_metadata",
    "decode_wal_snapshot",
    "iter_fields",
    "read_varint",
]

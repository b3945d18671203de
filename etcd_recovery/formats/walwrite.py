"""Encoding one WAL record: the HardState etcd would have written had it flushed it.

etcd writes a commit-only HardState change to its WAL without syncing it (only new entries or
a term/vote change force a sync), so after a crash the WAL's commit can trail the backend's
consistent index: entries that were committed and applied look uncommitted in the WAL, and
``--force-new-cluster`` discards them from the raft log while the backend keeps their data.
Members added afterwards replay the log without those entries and end up with different data
(etcd-io/etcd#14009; the cause is described in etcd-io/etcd#20009 and fixed upstream by
etcd-io/etcd#20055 for later releases). Appending the HardState with ``commit`` set to the
consistent index restores what was true: those entries were committed.

Record framing (etcd's wal encoder): an 8-byte little-endian length word, whose top byte holds
``0x80 | pad`` when the record is padded to 8 bytes, then the walpb.Record bytes, then zeros.
walpb.Record: type=1 (varint), crc=2 (varint, CRC-32C chained over every record's data),
data=3 (bytes). raftpb.HardState: term=1, vote=2, commit=3, all varints, always written.
"""

from __future__ import annotations

import struct

from ..proto.raft_pb2 import HardState
from ..proto.wal_pb2 import Record
from .wal import crc32c_update

STATE_TYPE = 3


def hardstate_bytes(term: int, vote: int, commit: int) -> bytes:
    """raftpb.HardState as etcd marshals it: every field written, zeros too (gogoproto's
    non-nullable fields; a proto2 field set explicitly is written the same way), in field
    order."""
    return HardState(term=term, vote=vote, commit=commit).SerializeToString()


def frame(record: bytes) -> bytes:
    pad = (8 - len(record) % 8) % 8
    length = len(record)
    if pad:
        length |= (0x80 | pad) << 56
    return struct.pack("<Q", length) + record + b"\0" * pad


def hardstate_frame(prev_crc: int, term: int, vote: int, commit: int) -> tuple[bytes, int]:
    """The framed state record to append after a WAL whose running CRC is ``prev_crc``,
    and the running CRC after it."""
    data = hardstate_bytes(term, vote, commit)
    crc = crc32c_update(prev_crc, data)
    record = Record(type=STATE_TYPE, crc=crc, data=data).SerializeToString()
    return frame(record), crc

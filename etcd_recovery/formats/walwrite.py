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

from .wal import crc32c_update

STATE_TYPE = 3


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def hardstate_bytes(term: int, vote: int, commit: int) -> bytes:
    return _field_varint(1, term) + _field_varint(2, vote) + _field_varint(3, commit)


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
    record = _field_varint(1, STATE_TYPE) + _field_varint(2, crc) + \
        varint((3 << 3) | 2) + varint(len(data)) + data
    return frame(record), crc

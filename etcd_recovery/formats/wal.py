"""Reader for etcd's write-ahead log (``member/wal/*.wal``), etcd 3.4 and 3.5.

On-disk layout (etcd ``server/storage/wal``: encoder.go, decoder.go, wal.go, repair.go):

* A file is a sequence of frames. A frame is an 8-byte little-endian length word followed by an
  encoded ``walpb.Record`` and zero padding up to a multiple of 8 bytes. The low 56 bits of the
  length word are the record's byte length; when the top bit is set, the low 3 bits of the top
  byte are the number of padding bytes.
* Each record's ``crc`` is the CRC-32C (Castagnoli) of the ``data`` of every non-CRC record so
  far, chained across records and files. Each file starts with a CRC record carrying the running
  CRC of the previous file, then a metadata record (and, from the second file on, the HardState).
* Files are preallocated to 64 MB of zeros: a zero length word (or the end of the file) ends a
  file and reading moves on to the next one.

End of log and torn writes, as etcd's decoder decides them:

* In the last file, a partial length word, a record that runs past the end of the file, or a
  record that fails to decode or fails its CRC while one of its 512-byte sector pieces is all
  zeros is a torn write: etcd truncates the file there on start (``wal.Repair``). The reader
  stops there and reports ``torn_tail``; records after that point are never acknowledged data.
* A CRC mismatch or undecodable record with no zeroed sector, or any of the above in a file that
  is not the last, is corruption: etcd refuses to start, and the reader raises ``FormatError``.
* A CRC record must match the running CRC (unless the running CRC is 0, at the first file read),
  metadata records must all be equal, and unknown record types are refused, as in ``ReadAll``.

Records and their payloads are decoded by the protobuf library, with the message classes
``scripts/gen-proto`` generates from our copies of etcd's definitions (proto/etcd_recovery/proto:
wal.proto, raft.proto, metadata.proto). Bytes that do not parse are corruption (or a torn write)
like any other. A known field with the wrong wire type parses as an unknown field (protobuf-go,
which etcd 3.7 uses, does the same; gogoproto in 3.4 to 3.6 refuses it): in a record's ``data``
the CRC catches it first, and in the record itself it leaves ``type`` 0, ``crc`` 0 or ``data``
empty, which fail as an unknown record type or a CRC mismatch.

The reader never reads the zero-filled remainder of a preallocated file past the first chunk that
shows the end: reads go in chunks of 64 KiB growing to 1 MiB.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from google.protobuf.message import DecodeError

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.source import ByteSource
from etcd_recovery.proto.metadata_pb2 import Metadata
from etcd_recovery.proto.raft_pb2 import Entry, HardState
from etcd_recovery.proto.wal_pb2 import Record, Snapshot

METADATA_TYPE = 1
ENTRY_TYPE = 2
STATE_TYPE = 3
CRC_TYPE = 4
SNAPSHOT_TYPE = 5

FRAME_SIZE_BYTES = 8
MIN_SECTOR_SIZE = 512
SEGMENT_SIZE_BYTES = 64 * 1000 * 1000

_LEN_MASK = (1 << 56) - 1
_MIN_CHUNK = 64 * 1024
_MAX_CHUNK = 1024 * 1024

_WAL_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")

# --------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, slicing-by-8 over little-endian words.


def _make_crc_tables() -> tuple[tuple[int, ...], ...]:
    poly = 0x82F63B78
    base = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        base.append(c)
    tables = [base]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ base[prev[i] & 0xFF] for i in range(256)])
    return tuple(tuple(t) for t in tables)


_CRC_TABLES = _make_crc_tables()


def crc32c_update_py(crc: int, data: bytes) -> int:
    """Continue a CRC-32C over ``data`` (same meaning as Go's ``crc32.Update``), pure Python."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _CRC_TABLES
    crc = (crc & 0xFFFFFFFF) ^ 0xFFFFFFFF
    n = len(data)
    words = n & ~7
    if words >= 16:
        for lo, hi in struct.iter_unpack("<II", memoryview(data)[:words]):
            lo ^= crc
            crc = (t7[lo & 0xFF] ^ t6[(lo >> 8) & 0xFF] ^ t5[(lo >> 16) & 0xFF] ^ t4[lo >> 24]
                   ^ t3[hi & 0xFF] ^ t2[(hi >> 8) & 0xFF] ^ t1[(hi >> 16) & 0xFF] ^ t0[hi >> 24])
        tail = data[words:]
    else:
        tail = data
    for b in tail:
        crc = t0[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation, ~100x faster; same semantics as crc32c_update_py
    import google_crc32c as _gcrc

    if _gcrc.implementation != "c":
        raise ImportError("google-crc32c without its C extension")

    def crc32c_update(crc: int, data: bytes) -> int:
        """Continue a CRC-32C over ``data`` (same meaning as Go's ``crc32.Update``)."""
        return int(_gcrc.extend(crc & 0xFFFFFFFF, bytes(data)))
except ImportError:  # pragma: no cover - the package is a dependency; this keeps readers working
    crc32c_update = crc32c_update_py


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``."""
    return crc32c_update(0, data)


# --------------------------------------------------------------------------------------------
# File names


def parse_wal_name(name: str) -> tuple[int, int]:
    """``%016x-%016x.wal`` -> (sequence, first raft index); FormatError if it is not one."""
    m = _WAL_NAME.match(name)
    if m is None:
        raise FormatError(name, 0, "not a WAL file name (want %016x-%016x.wal)")
    return int(m.group(1), 16), int(m.group(2), 16)


def is_wal_name(name: str) -> bool:
    return _WAL_NAME.match(name) is not None


def wal_file_names(names: Iterable[str]) -> list[str]:
    """The WAL file names among ``names`` in reading order, checked for a continuous sequence.

    Anything else in the directory (``0.tmp`` preallocated segments, ``*.wal.broken`` copies left
    by a repair) is ignored, as etcd does. A gap in the sequence numbers raises FormatError
    naming the first file after the gap.
    """
    wal = sorted(n for n in names if is_wal_name(n))
    prev_seq: int | None = None
    for name in wal:
        seq, _ = parse_wal_name(name)
        if prev_seq is not None and seq != prev_seq + 1:
            raise FormatError(
                name, 0, f"WAL sequence is not continuous: sequence {seq:#x} follows {prev_seq:#x}")
        prev_seq = seq
    return wal


# --------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class WalSnapshotMark:
    """A snapshot record in the WAL (the raft index and term a .snap file was taken at).

    ``voters``/``learners`` are the membership at that point; etcd writes them from 3.5 on,
    they are None in records written by 3.4.
    """

    index: int
    term: int
    voters: tuple[int, ...] | None = None
    learners: tuple[int, ...] | None = None


@dataclass(frozen=True)
class WalState:
    """What the WAL says about a member, as etcd would read it on start.

    ``node_id``/``cluster_id`` are None only if no metadata record was found.
    ``last_index``/``last_term`` are where the log ends (0 if no entry): the last entry record,
    since a later entry with an index already seen replaces it and everything after it; or a
    snapshot record that replaced the log (see below) when no entry follows it.
    ``first_index`` is the index of the first entry record read.
    ``entry_count`` counts entry records read, overwritten ones included.
    ``snapshot_index``/``snapshot_term`` are those of the last snapshot record; ``snapshots`` lists
    them all in order. ``end_file``/``end_offset`` give where valid data ends in the last file;
    ``torn_tail`` says the log ended in a torn write there (``torn_reason`` says which kind).

    A snapshot record at (index S, term T) that the entries read before it do not hold (they end
    before S, or their entry S has another term) is a snapshot the member received from its
    leader and restored: raft then drops its whole log for it (``raftLog.restore`` after
    ``matchTerm(S, T)`` failed, raft.go ``restore`` @raft v3.6.0 and etcd 3.5's raft), and on
    restart etcd starts the log at S (``ReadAll`` keeps only entries after its snapshot,
    server/storage/wal/wal.go @v3.6.16). So the log's end becomes (S, T) and ``term_starts``
    restart at (S, T): the entries before it are not the log any more, and the terms they
    carried may be wrong for those indexes (a member that was down while the leader changed).
    A snapshot the member took itself lies inside the entries read, with the same term (or
    before the first entry read, when reading starts at a later segment); a snapshot record
    before any entry read changes nothing (``snapshot_index`` still reports it).
    """

    files: tuple[str, ...]
    node_id: int | None
    cluster_id: int | None
    hardstate_term: int
    hardstate_vote: int
    hardstate_commit: int
    first_index: int
    last_index: int
    last_term: int
    entry_count: int
    snapshot_index: int
    snapshot_term: int
    snapshots: tuple[WalSnapshotMark, ...]
    record_count: int
    bytes_read: int
    end_file: str
    end_offset: int
    torn_tail: bool
    torn_reason: str | None
    last_crc: int = 0  # running CRC after the last valid record (exact without a torn tail)
    # The log's terms over the entries read: (first index of a term, that term), ascending;
    # an entry that overwrites a later-indexed one truncates the steps first, as raft does.
    term_starts: tuple[tuple[int, int], ...] = ()

    def term_at(self, index: int) -> int | None:
        return term_at(self.term_starts, self.last_index, index)


def term_at(starts: Sequence[tuple[int, int]], last_index: int, index: int) -> int | None:
    """The term of the entry at ``index`` by the steps of ``starts``; None outside them."""
    if not starts or index < starts[0][0] or index > last_index:
        return None
    term = starts[0][1]
    for first, t in starts:
        if first > index:
            break
        term = t
    return term


# --------------------------------------------------------------------------------------------
# Reading


class _ChunkReader:
    """Sequential, chunked reads over one ByteSource (keeps one buffer, never re-reads)."""

    def __init__(self, src: ByteSource, size: int) -> None:
        self._src = src
        self._size = size
        self._buf = b""
        self._start = 0
        self._chunk = _MIN_CHUNK
        self.bytes_read = 0

    def read(self, off: int, length: int) -> bytes:
        end = min(off + length, self._size)
        if off >= end:
            return b""
        bstart = self._start
        bend = bstart + len(self._buf)
        if bstart <= off and end <= bend:
            return self._buf[off - bstart:end - bstart]
        keep = self._buf[off - bstart:] if bstart <= off < bend else b""
        fetch_from = off + len(keep)
        want = min(max(end - fetch_from, self._chunk), self._size - fetch_from)
        got = self._fetch(fetch_from, want)
        self._chunk = min(self._chunk * 2, _MAX_CHUNK)
        self._buf = keep + got
        self._start = off
        return self._buf[:end - off]

    def _fetch(self, off: int, length: int) -> bytes:
        parts: list[bytes] = []
        while length > 0:
            piece = self._src.read(off, length)
            if not piece:
                break
            piece = piece[:length]
            self.bytes_read += len(piece)
            parts.append(piece)
            off += len(piece)
            length -= len(piece)
        return b"".join(parts)


def _is_torn(data: bytes, file_off: int) -> bool:
    """etcd's isTornEntry: some 512-byte-sector-aligned piece of the frame body is all zeros."""
    pos = 0
    n = len(data)
    fo = file_off
    while pos < n:
        clen = min(MIN_SECTOR_SIZE - fo % MIN_SECTOR_SIZE, n - pos)
        if data.count(0, pos, pos + clen) == clen:
            return True
        pos += clen
        fo += clen
    return False


class _Torn(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def read_wal(files: Sequence[ByteSource]) -> WalState:
    """Read the WAL files (all of ``member/wal``'s ``*.wal``, in name order) into a WalState.

    Raises FormatError (naming the file and the record's offset) for corruption.
    """
    if not files:
        raise FormatError("member/wal", 0, "no WAL files to read")

    crc = 0
    metadata_raw: bytes | None = None
    meta: Metadata | None = None
    hs = HardState()
    first_index = last_index = last_term = entry_count = record_count = 0
    snaps: list[WalSnapshotMark] = []
    starts: list[tuple[int, int]] = []
    bytes_read = 0
    end_offset = 0
    torn: _Torn | None = None
    last_pos = len(files) - 1

    for pos, src in enumerate(files):
        name = src.name
        is_last = pos == last_pos
        size = src.size()
        reader = _ChunkReader(src, size)
        off = 0
        try:
            while True:
                head = reader.read(off, FRAME_SIZE_BYTES)
                if not head:
                    break
                if len(head) < FRAME_SIZE_BYTES:
                    _bad(name, off, is_last, "partial length word at end of file")
                lenfield = int.from_bytes(head, "little")
                if lenfield == 0:
                    break
                rec_bytes = lenfield & _LEN_MASK
                pad = (lenfield >> 56) & 0x7 if lenfield >> 63 else 0
                if rec_bytes > size - off - pad:
                    _bad(name, off, is_last,
                         f"record of {rec_bytes} bytes runs past the end of the file ({size})")
                body = reader.read(off + FRAME_SIZE_BYTES, rec_bytes + pad)
                if len(body) < rec_bytes + pad:
                    _bad(name, off, is_last, "record cut short by the end of the file")
                try:
                    rec = Record.FromString(body[:rec_bytes])
                except DecodeError as exc:
                    if is_last and _is_torn(body, off + FRAME_SIZE_BYTES):
                        raise _Torn(off, f"undecodable record with a zeroed sector: {exc}") \
                            from exc
                    raise FormatError(name, off, f"malformed WAL record: {exc}") from exc
                data = rec.data
                if rec.type != CRC_TYPE:
                    next_crc = crc32c_update(crc, data)
                    if rec.crc != next_crc:
                        if is_last and _is_torn(body, off + FRAME_SIZE_BYTES):
                            raise _Torn(off, "CRC mismatch in a record with a zeroed sector")
                        raise FormatError(
                            name, off, f"CRC mismatch: record says {rec.crc:#010x}, data "
                                       f"gives {next_crc:#010x}")
                    crc = next_crc
                rec_off = off
                off += FRAME_SIZE_BYTES + rec_bytes + pad
                record_count += 1
                try:
                    if rec.type == ENTRY_TYPE:
                        ent = Entry.FromString(data)
                        index, term = ent.Index, ent.Term
                        if entry_count == 0:
                            first_index = index
                        entry_count += 1
                        last_index = index
                        last_term = term
                        while starts and starts[-1][0] >= index:
                            starts.pop()
                        if not starts or starts[-1][1] != term:
                            starts.append((index, term))
                    elif rec.type == STATE_TYPE:
                        hs = HardState.FromString(data)
                    elif rec.type == METADATA_TYPE:
                        if metadata_raw is not None and metadata_raw != data:
                            raise FormatError(name, rec_off,
                                              "metadata record conflicts with an earlier one")
                        metadata_raw = data
                        meta = Metadata.FromString(data)
                    elif rec.type == CRC_TYPE:
                        if crc != 0 and rec.crc != crc:
                            raise FormatError(
                                name, rec_off,
                                f"CRC chain broken: CRC record says {rec.crc:#010x}, "
                                f"running CRC is {crc:#010x}")
                        crc = rec.crc
                    elif rec.type == SNAPSHOT_TYPE:
                        ws = Snapshot.FromString(data)
                        has_conf = ws.HasField("conf_state")  # written from etcd 3.5 on
                        snaps.append(WalSnapshotMark(
                            index=ws.index, term=ws.term,
                            voters=tuple(ws.conf_state.voters) if has_conf else None,
                            learners=tuple(ws.conf_state.learners) if has_conf else None))
                        held = term_at(starts, last_index, ws.index)
                        if entry_count and (ws.index > last_index
                                            or (held is not None and held != ws.term)):
                            # restored from the leader's snapshot: the log is replaced
                            starts = [(ws.index, ws.term)]
                            last_index, last_term = ws.index, ws.term
                    else:
                        raise FormatError(name, rec_off, f"unexpected record type {rec.type}")
                except DecodeError as exc:
                    raise FormatError(
                        name, rec_off, f"malformed payload in record type {rec.type}: {exc}"
                    ) from exc
        except _Torn as t:
            torn = t
            off = t.offset
        finally:
            bytes_read += reader.bytes_read
        if is_last:
            end_offset = off

    last_snap = snaps[-1] if snaps else WalSnapshotMark(index=0, term=0)
    return WalState(
        files=tuple(src.name for src in files),
        node_id=meta.NodeID if meta is not None else None,
        cluster_id=meta.ClusterID if meta is not None else None,
        hardstate_term=hs.term,
        hardstate_vote=hs.vote,
        hardstate_commit=hs.commit,
        first_index=first_index,
        last_index=last_index,
        last_term=last_term,
        entry_count=entry_count,
        snapshot_index=last_snap.index,
        snapshot_term=last_snap.term,
        snapshots=tuple(snaps),
        record_count=record_count,
        bytes_read=bytes_read,
        end_file=files[-1].name,
        end_offset=end_offset,
        torn_tail=torn is not None,
        torn_reason=torn.reason if torn is not None else None,
        last_crc=crc,
        term_starts=tuple(starts),
    )


def _bad(name: str, off: int, is_last: bool, reason: str) -> NoReturn:
    """A frame that ends early: a torn write in the last file, corruption elsewhere."""
    if is_last:
        raise _Torn(off, reason)
    raise FormatError(name, off, f"{reason} (not the last WAL file)")


__all__ = [
    "CRC_TYPE",
    "ENTRY_TYPE",
    "METADATA_TYPE",
    "SEGMENT_SIZE_BYTES",
    "SNAPSHOT_TYPE",
    "STATE_TYPE",
    "WalSnapshotMark",
    "WalState",
    "term_at",
    "crc32c",
    "crc32c_update",
    "is_wal_name",
    "parse_wal_name",
    "read_wal",
    "wal_file_names",
]

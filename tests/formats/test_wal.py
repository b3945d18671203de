"""WAL reader tests on WALs written by real etcd 3.4, 3.5, 3.6 and 3.7 (made in the test, on
loopback; builds by role, realetcd.ROLES).

3.7 marshals WAL records with google.golang.org/protobuf instead of gogoproto: raft v3.7.0's
``raftpb.Entry`` fields are plain ``optional`` (raftpb/raft.proto @raft v3.7.0; v3.6.0 had
``gogoproto.nullable = false``), so an unset ``Type`` (a normal entry) is left off the wire.
The framing, record types and CRC chain are unchanged (server/storage/wal @v3.7.3).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.source import BytesSource, FileSource
from etcd_recovery.formats.wal import (
    CRC_TYPE,
    ENTRY_TYPE,
    METADATA_TYPE,
    SEGMENT_SIZE_BYTES,
    SNAPSHOT_TYPE,
    STATE_TYPE,
    WalState,
    crc32c,
    crc32c_update,
    parse_wal_name,
    read_wal,
    wal_file_names,
)
from etcd_recovery.live import EtcdClient
from etcd_recovery.proto.metadata_pb2 import Metadata
from etcd_recovery.proto.raft_pb2 import ConfState, Entry, HardState, SnapshotMetadata
from etcd_recovery.proto.raft_pb2 import Snapshot as RaftSnapshot
from etcd_recovery.proto.wal_pb2 import Record
from etcd_recovery.proto.wal_pb2 import Snapshot as WalSnapshot
from tests.formats.conftest import KEYS, SNAPSHOT_COUNT, RunFactory
from tests.formats.groundtruth import read_disk_local
from tests.formats.realetcd import ROLES, EtcdRun, minor_of, running_etcd
from tests.formats.wire import f_bytes, f_varint, varint

# ----------------------------------------------------------------------------------------------
# Fixtures: real data dirs (tests/formats/conftest.py makes each once per process)


@pytest.fixture(scope="module", params=[
    (r, s) for r in ROLES for s in (signal.SIGTERM, signal.SIGKILL)
], ids=lambda p: f"{p[0]}-{signal.Signals(p[1]).name}")
def etcd_run(request: pytest.FixtureRequest, real_run: RunFactory) -> EtcdRun:
    role, sig = request.param
    return real_run(role, sig)


@pytest.fixture(scope="module", params=ROLES)
def killed_run(request: pytest.FixtureRequest, real_run: RunFactory) -> EtcdRun:
    """A data dir whose etcd was SIGKILLed (what a crashed member leaves)."""
    return real_run(request.param, signal.SIGKILL)


def wal_sources(wal_dir: Path) -> list[FileSource]:
    return [FileSource(wal_dir / n, name=n) for n in wal_file_names(os.listdir(wal_dir))]


def single_wal(run: EtcdRun) -> Path:
    names = wal_file_names(os.listdir(run.wal_dir))
    assert len(names) == 1
    return run.wal_dir / names[0]


# ----------------------------------------------------------------------------------------------
# An independent frame walker and encoder used to build test inputs


@dataclass(frozen=True)
class Frame:
    offset: int
    rec_bytes: int
    pad: int

    @property
    def body_offset(self) -> int:
        return self.offset + 8

    @property
    def end(self) -> int:
        return self.offset + 8 + self.rec_bytes + self.pad


def walk_frames(data: bytes) -> list[Frame]:
    frames = []
    off = 0
    while off + 8 <= len(data):
        word = int.from_bytes(data[off:off + 8], "little")
        if word == 0:
            break
        rec = word & ((1 << 56) - 1)
        pad = (word >> 56) & 7 if word >> 63 else 0
        frames.append(Frame(off, rec, pad))
        off += 8 + rec + pad
    return frames


def frame(rtype: int, crc: int, data: bytes) -> bytes:
    body = f_varint(1, rtype) + f_varint(2, crc) + (f_bytes(3, data) if data else b"")
    pad = (8 - len(body) % 8) % 8
    word = len(body) | ((0x80 | pad) << 56 if pad else 0)
    return word.to_bytes(8, "little") + body + bytes(pad)


def records_of(data: bytes) -> list[Record]:
    return [Record.FromString(data[f.body_offset:f.body_offset + f.rec_bytes])
            for f in walk_frames(data)]


def comparable(ws: WalState) -> WalState:
    """The state with the fields that depend on how it was read blanked out."""
    return replace(ws, files=(), bytes_read=0, end_file="", end_offset=0, torn_tail=False,
                   torn_reason=None)


# ----------------------------------------------------------------------------------------------
# CRC and protobuf basics


def test_crc32c_known_vectors() -> None:
    # RFC 3720 B.4 and the usual check value.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    data = bytes(random.Random(1).randrange(256) for _ in range(1000))
    for cut in (0, 1, 7, 8, 15, 16, 500, 999, 1000):
        assert crc32c_update(crc32c(data[:cut]), data[cut:]) == crc32c(data)


def test_generated_messages_decode_etcd_wire_bytes() -> None:
    """The classes generated from proto/etcd_recovery/proto read the bytes as etcd's do."""
    rec = Record.FromString(f_varint(1, 2) + f_varint(2, 0x1_0000_0005) + f_bytes(3, b"x"))
    assert (rec.type, rec.crc, rec.data) == (2, 5, b"x")  # uint32: the varint's low 32 bits
    assert Record.FromString(f_varint(1, (1 << 64) - 1)).type == -1  # int64
    ent = Entry.FromString(f_varint(2, 7) + f_varint(3, 99) + f_bytes(4, b"payload"))
    assert (ent.Term, ent.Index, ent.Type, ent.Data) == (7, 99, 0, b"payload")
    assert not ent.HasField("Type")  # proto2 presence: 3.7 leaves a normal entry's Type off
    hs = HardState.FromString(f_varint(1, 3) + f_varint(2, 4) + f_varint(3, 5))
    assert (hs.term, hs.vote, hs.commit) == (3, 4, 5)
    # repeated uint64, unpacked (as gogo writes proto2) and packed
    unpacked = f_varint(1, 10) + f_varint(1, 11) + f_varint(2, 12)
    packed = f_bytes(1, varint(10) + varint(11)) + f_bytes(2, varint(12))
    for conf in (unpacked, packed):
        assert list(ConfState.FromString(conf).voters) == [10, 11]
        assert list(ConfState.FromString(conf).learners) == [12]
    snap = WalSnapshot.FromString(f_varint(1, 100) + f_varint(2, 3) + f_bytes(3, unpacked))
    assert (snap.index, snap.term, list(snap.conf_state.voters)) == (100, 3, [10, 11])
    assert snap.HasField("conf_state")
    assert not WalSnapshot.FromString(f_varint(1, 100) + f_varint(2, 3)).HasField("conf_state")
    meta = SnapshotMetadata.FromString(f_bytes(1, packed) + f_varint(2, 8) + f_varint(3, 2))
    raft = RaftSnapshot.FromString(f_bytes(1, b"store") + f_bytes(2, f_varint(2, 8)))
    assert (meta.index, meta.term, list(meta.conf_state.learners)) == (8, 2, [12])
    assert (raft.data, raft.metadata.index) == (b"store", 8)
    md = Metadata.FromString(f_varint(1, 0xABC) + f_varint(2, (1 << 64) - 1))
    assert (md.NodeID, md.ClusterID) == (0xABC, (1 << 64) - 1)


def test_wrong_wire_type_is_an_unknown_field_and_the_reader_still_refuses_it() -> None:
    """Unlike gogoproto (etcd 3.4 to 3.6), the protobuf library reads a known field with another
    wire type as an unknown field; the WAL reader ends in a FormatError all the same."""
    rec = Record.FromString(f_bytes(1, b"x"))
    assert rec.type == 0 and not rec.HasField("type")
    unknown = UnknownFieldSet(rec)
    assert [(unknown[i].field_number, unknown[i].wire_type) for i in range(len(unknown))] == \
        [(1, 2)]
    meta = f_varint(1, 1) + f_varint(2, 2)
    crc = crc32c(meta)
    good = frame(CRC_TYPE, 0, b"") + frame(METADATA_TYPE, crc, meta)
    ent = f_varint(2, 1) + f_varint(3, 1)
    ecrc = crc32c_update(crc, ent)

    def body(fields: bytes) -> bytes:
        pad = (8 - len(fields) % 8) % 8
        return (len(fields) | ((0x80 | pad) << 56 if pad else 0)).to_bytes(8, "little") + \
            fields + bytes(pad)

    bad_records = {
        # type as bytes: reads as type 0, refused as an unknown record type
        "record type 0": body(f_bytes(1, b"\x02") + f_varint(2, ecrc) + f_bytes(3, ent)),
        # crc as fixed32: reads as crc 0, a CRC mismatch
        "CRC mismatch": body(f_varint(1, ENTRY_TYPE) + b"\x15" + ecrc.to_bytes(4, "little")
                             + f_bytes(3, ent)),
        # data as a varint: reads as no data, a CRC mismatch
        "CRC mismatch ": body(f_varint(1, ENTRY_TYPE) + f_varint(2, ecrc) + f_varint(3, 7)),
    }
    for what, rec_bytes in bad_records.items():
        with pytest.raises(FormatError, match=what.strip()) as err:
            read_wal([BytesSource(good + rec_bytes, "a.wal"), BytesSource(good, "b.wal")])
        assert (err.value.file, err.value.offset) == ("a.wal", len(good)), what


def test_undecodable_records_and_payloads_are_format_errors() -> None:
    meta = f_varint(1, 1) + f_varint(2, 2)
    crc = crc32c(meta)
    good = frame(CRC_TYPE, 0, b"") + frame(METADATA_TYPE, crc, meta)
    head = frame(CRC_TYPE, 0, b"")
    for payload_type in (ENTRY_TYPE, STATE_TYPE, METADATA_TYPE, SNAPSHOT_TYPE):
        # a truncated varint, with a CRC that matches it: only decoding can refuse it
        bad = b"\x10\x80"
        before, running = (head, 0) if payload_type == METADATA_TYPE else (good, crc)
        data = before + frame(payload_type, crc32c_update(running, bad), bad)
        with pytest.raises(FormatError, match=f"malformed payload in record type {payload_type}"
                           ) as err:
            read_wal([BytesSource(data, "a.wal")])
        assert (err.value.file, err.value.offset) == ("a.wal", len(before))
    # a record that is no protobuf message at all (a length-delimited field past its end),
    # in a file that is not the last: corruption, whatever the sectors hold
    body = f_bytes(3, b"abc")[:-1]
    word = (len(body) | (0x80 | (8 - len(body))) << 56).to_bytes(8, "little")
    data = good + word + body + bytes(8 - len(body))
    with pytest.raises(FormatError, match="malformed WAL record") as err:
        read_wal([BytesSource(data, "a.wal"), BytesSource(good, "b.wal")])
    assert (err.value.file, err.value.offset) == ("a.wal", len(good))


# ----------------------------------------------------------------------------------------------
# File names


def test_wal_file_names_filters_sorts_and_checks_sequence() -> None:
    a = "0000000000000000-0000000000000000.wal"
    b = "0000000000000001-00000000000001f5.wal"
    c = "0000000000000002-0000000000000400.wal"
    names = [c, "0.tmp", a, b + ".broken", "1.tmp", b, "junk.wal", "0000000000000003.wal"]
    assert wal_file_names(names) == [a, b, c]
    assert parse_wal_name(b) == (1, 0x1F5)
    assert wal_file_names([]) == []
    with pytest.raises(FormatError) as err:
        wal_file_names([a, c])
    assert err.value.file == c
    with pytest.raises(FormatError):
        parse_wal_name("0.tmp")


# ----------------------------------------------------------------------------------------------
# Real etcd: the reader agrees with what etcd reported


def test_wal_matches_etcd_status(etcd_run: EtcdRun) -> None:
    st_ = etcd_run.status
    srcs = wal_sources(etcd_run.wal_dir)
    ws = read_wal(srcs)
    assert ws.node_id == st_.member_id
    assert ws.cluster_id == st_.cluster_id
    # Every entry etcd reported committed is in the log: entries are fsynced first.
    assert ws.last_index >= st_.raft_index
    assert ws.last_index >= ws.hardstate_commit
    if etcd_run.exit_code == 0 or minor_of(etcd_run.role) < (3, 6):
        assert ws.hardstate_commit >= st_.raft_index
    else:
        # etcd 3.6+ after a crash: raft v3.6 counts the leader's own entry only once it is
        # persisted (raft.go @raft v3.6.0: "The leader needs to self-ack the entries just
        # appended once they have been durably persisted"), so a lone member's commit moves in
        # the next Ready, whose HardState etcd writes without a sync (wal.Save @v3.6.16 syncs
        # only when raft.MustSync: entries, term or vote changed) and so without flushing its
        # buffer; SIGKILL loses that record. The WAL's commit then trails the last entry etcd
        # applied and acknowledged (3.4/3.5's raft committed a lone leader's entry in the same
        # Ready as the entry itself). inspect takes max(WAL commit, consistent index).
        assert st_.raft_index - 1 <= ws.hardstate_commit <= st_.raft_index
    assert ws.hardstate_term == st_.raft_term
    assert ws.last_term == st_.raft_term
    assert ws.hardstate_vote == st_.member_id
    assert ws.entry_count >= KEYS
    assert ws.first_index == 1
    assert not ws.torn_tail and ws.torn_reason is None
    assert ws.files == tuple(s.name for s in srcs)
    # Snapshot records: the initial empty one, then one per --snapshot-count entries.
    marks = [(m.index, m.term) for m in ws.snapshots]
    assert marks[0] == (0, 0)
    assert len(marks) - 1 == ws.last_index // (SNAPSHOT_COUNT + 1) >= 3
    assert all(b[0] - a[0] == SNAPSHOT_COUNT + 1
               for a, b in zip(marks[1:], marks[2:], strict=False))
    assert ws.last_index - ws.snapshot_index <= SNAPSHOT_COUNT + 1
    assert (ws.snapshot_index, ws.snapshot_term) == marks[-1]
    assert ws.snapshot_index <= ws.hardstate_commit
    # etcd 3.5+ records the membership in each snapshot record, 3.4 does not.
    last = ws.snapshots[-1]
    if st_.version.startswith("3.4."):
        assert (last.voters, last.learners) == (None, None)
    else:
        assert (last.voters, last.learners) == ((st_.member_id,), ())
    # Only the start of the 64 MB preallocated file was read.
    size = sum(s.size() for s in srcs)
    assert size >= SEGMENT_SIZE_BYTES
    assert ws.bytes_read == sum(s.bytes_read for s in srcs)
    assert ws.bytes_read < 2 * 1024 * 1024
    assert ws.end_offset <= ws.bytes_read


def test_wal_frames_agree_with_independent_walk(etcd_run: EtcdRun) -> None:
    path = single_wal(etcd_run)
    with open(path, "rb") as fh:
        head = fh.read(4 * 1024 * 1024)
    frames = walk_frames(head)
    ws = read_wal([FileSource(path)])
    assert ws.record_count == len(frames)
    assert ws.end_offset == frames[-1].end
    recs = records_of(head)
    assert recs[0].type == CRC_TYPE and recs[0].crc == 0
    assert recs[1].type == METADATA_TYPE
    assert sum(r.type == ENTRY_TYPE for r in recs) == ws.entry_count
    # each record's crc is the running CRC-32C of every non-CRC record's data
    running = 0
    for r in recs[1:]:
        running = crc32c_update(running, r.data)
        assert r.crc == running
    # A normal entry's Type (field 1, varint: tag 0x08) is on the wire before 3.7 and left
    # off by 3.7 (see the module doc); the reader takes both as EntryNormal.
    normal = [r.data for r in recs if r.type == ENTRY_TYPE and Entry.FromString(r.data).Type == 0]
    assert len(normal) >= KEYS
    with_type = sum(d[:2] == b"\x08\x00" for d in normal)
    assert with_type == (0 if minor_of(etcd_run.role) >= (3, 7) else len(normal))


# ----------------------------------------------------------------------------------------------
# Torn tails and corruption, on copies of a real WAL left by SIGKILL


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _boundary_state(path: Path, tmp_path: Path, end: int) -> WalState:
    """Read a copy cut exactly at ``end`` (a frame boundary): the state etcd keeps after repair."""
    cut = _copy(path, tmp_path / "boundary.wal")
    os.truncate(cut, end)
    ws = read_wal([FileSource(cut)])
    assert not ws.torn_tail
    return ws


def _frames_of_file(path: Path) -> list[Frame]:
    with open(path, "rb") as fh:
        return walk_frames(fh.read(4 * 1024 * 1024))


def test_truncated_last_record_is_a_torn_tail(killed_run: EtcdRun, tmp_path: Path) -> None:
    path = single_wal(killed_run)
    frames = _frames_of_file(path)
    full = read_wal([FileSource(path)])
    for last in (frames[-1], frames[-2]):
        expected = _boundary_state(path, tmp_path, last.offset)
        broken = _copy(path, tmp_path / "00.wal")
        os.truncate(broken, last.body_offset + last.rec_bytes // 2)
        ws = read_wal([FileSource(broken, name="00.wal")])
        assert ws.torn_tail and ws.torn_reason
        assert ws.end_offset == last.offset and ws.end_file == "00.wal"
        assert comparable(ws) == comparable(expected)
        assert ws.record_count < full.record_count
    # A partial length word at the very end is torn as well.
    broken = _copy(path, tmp_path / "01.wal")
    os.truncate(broken, frames[-1].offset + 3)
    ws = read_wal([FileSource(broken)])
    assert ws.torn_tail and ws.end_offset == frames[-1].offset


def test_zeroed_sector_in_last_record_is_a_torn_tail(killed_run: EtcdRun,
                                                     tmp_path: Path) -> None:
    path = single_wal(killed_run)
    frames = _frames_of_file(path)
    full = read_wal([FileSource(path)])
    # Make the last frame an entry large enough to cross a sector boundary.
    recs = records_of(path.read_bytes()[:frames[-1].end])
    last_entry = [f for f, r in zip(frames, recs, strict=True) if r.type == ENTRY_TYPE][-1]
    data = bytearray(path.read_bytes()[:last_entry.end])
    tail_start = len(data)
    crc = records_of(bytes(data))[-1].crc
    entry = f_varint(2, full.last_term) + f_varint(3, full.last_index + 1) + f_bytes(4, b"x" * 900)
    crc = crc32c_update(crc, entry)
    data += frame(ENTRY_TYPE, crc, entry)
    data += bytes(4096)
    base = tmp_path / "base.wal"
    base.write_bytes(bytes(data))
    grown = read_wal([FileSource(base)])
    assert grown.last_index == full.last_index + 1 and not grown.torn_tail
    expected = _boundary_state(base, tmp_path, tail_start)

    new = walk_frames(bytes(data))[-1]
    assert new.offset == tail_start
    first_sector_end = (new.body_offset // 512 + 1) * 512
    assert first_sector_end < new.end
    for zero_from, zero_to in ((first_sector_end, new.end),            # tail sector lost
                               (new.body_offset, first_sector_end)):   # head sector lost
        torn = bytearray(data)
        torn[zero_from:zero_to] = bytes(zero_to - zero_from)
        p = tmp_path / "torn.wal"
        p.write_bytes(bytes(torn))
        ws = read_wal([FileSource(p, name="torn.wal")])
        assert ws.torn_tail, (zero_from, zero_to)
        assert ws.end_offset == tail_start
        assert comparable(ws) == comparable(expected)
        assert ws.last_index == full.last_index

    # Zeroing the whole last frame, length word included, is the ordinary end of the log.
    torn = bytearray(data)
    torn[new.offset:new.end] = bytes(new.end - new.offset)
    p.write_bytes(bytes(torn))
    ws = read_wal([FileSource(p)])
    assert not ws.torn_tail and ws.end_offset == tail_start
    assert comparable(ws) == comparable(expected)


def test_garbage_in_last_record_without_zeroed_sector_is_corruption(
        killed_run: EtcdRun, tmp_path: Path) -> None:
    # etcd only repairs a record that has an all-zero sector piece; other damage is a CRC error.
    path = single_wal(killed_run)
    frames = _frames_of_file(path)
    target = next(f for f in reversed(frames)
                  if f.body_offset // 512 == (f.end - 1) // 512 and f.rec_bytes > 20)
    data = bytearray(path.read_bytes()[:target.end] + bytes(4096))
    data[target.end - target.pad - 1] ^= 0x55
    p = tmp_path / "bad.wal"
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError) as err:
        read_wal([FileSource(p, name="bad.wal")])
    assert err.value.file == "bad.wal"
    assert err.value.offset == target.offset


def test_corruption_in_the_middle_is_an_error(killed_run: EtcdRun, tmp_path: Path) -> None:
    path = single_wal(killed_run)
    frames = _frames_of_file(path)
    # A record inside one sector: etcd would call any damage to a record with an all-zero
    # sector piece (even just its padding) a torn write, wherever it is in the last file.
    target = next(f for f in frames[len(frames) // 2:]
                  if f.body_offset // 512 == (f.end - 1) // 512)
    broken = _copy(path, tmp_path / "mid.wal")
    with open(broken, "r+b") as fh:
        fh.seek(target.end - target.pad - 1)
        b = fh.read(1)
        fh.seek(target.end - target.pad - 1)
        fh.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(FormatError) as err:
        read_wal([FileSource(broken, name="member/wal/mid.wal")])
    assert err.value.file == "member/wal/mid.wal"
    assert err.value.offset == target.offset
    assert "CRC mismatch" in str(err.value)


def test_data_after_a_zero_length_word_is_ignored(killed_run: EtcdRun, tmp_path: Path) -> None:
    path = single_wal(killed_run)
    frames = _frames_of_file(path)
    full = read_wal([FileSource(path)])
    data = bytearray(path.read_bytes()[:frames[-1].end + 8 + 4096])
    data[frames[-1].end + 8:] = random.Random(7).randbytes(4096)
    p = tmp_path / "after.wal"
    p.write_bytes(bytes(data))
    ws = read_wal([FileSource(p)])
    assert not ws.torn_tail and ws.end_offset == frames[-1].end
    assert comparable(ws) == comparable(full)


def test_overwritten_entries_last_record_wins(killed_run: EtcdRun, tmp_path: Path) -> None:
    # After a leader change a follower's WAL gets entries with an index it already has.
    path = single_wal(killed_run)
    frames = _frames_of_file(path)
    full = read_wal([FileSource(path)])
    data = bytearray(path.read_bytes()[:frames[-1].end])
    crc = [r for r in records_of(bytes(data)) if r.type != CRC_TYPE][-1].crc
    new_term = full.last_term + 1
    for idx in (full.last_index - 5, full.last_index - 4):
        ent = f_varint(2, new_term) + f_varint(3, idx) + f_bytes(4, b"new")
        crc = crc32c_update(crc, ent)
        data += frame(ENTRY_TYPE, crc, ent)
    hs = f_varint(1, new_term) + f_varint(3, full.last_index - 6)
    crc = crc32c_update(crc, hs)
    data += frame(STATE_TYPE, crc, hs)
    p = tmp_path / "over.wal"
    p.write_bytes(bytes(data) + bytes(1024))
    ws = read_wal([FileSource(p)])
    assert (ws.last_index, ws.last_term) == (full.last_index - 4, new_term)
    assert (ws.hardstate_term, ws.hardstate_commit) == (new_term, full.last_index - 6)
    assert ws.entry_count == full.entry_count + 2


# ----------------------------------------------------------------------------------------------
# Several files: a real WAL cut in two the way etcd cuts a segment


def _split(path: Path, at_record: int, tmp_path: Path) -> tuple[Path, Path]:
    frames = _frames_of_file(path)
    raw = path.read_bytes()[:frames[-1].end]
    recs = records_of(raw)
    crc = 0
    metadata = b""
    state = b""
    for r in recs[:at_record]:
        if r.type != CRC_TYPE:
            crc = r.crc
        if r.type == METADATA_TYPE:
            metadata = r.data
        if r.type == STATE_TYPE:
            state = r.data
    first = raw[:frames[at_record].offset]
    second = bytearray(frame(CRC_TYPE, crc, b""))
    crc = crc32c_update(crc, metadata)
    second += frame(METADATA_TYPE, crc, metadata)
    crc = crc32c_update(crc, state)
    second += frame(STATE_TYPE, crc, state)
    for r in recs[at_record:]:
        if r.type == CRC_TYPE:
            continue
        crc = crc32c_update(crc, r.data)
        second += frame(r.type, crc, r.data)
    p1 = tmp_path / "0000000000000000-0000000000000000.wal"
    p2 = tmp_path / "0000000000000001-0000000000000100.wal"
    p1.write_bytes(first)
    p2.write_bytes(bytes(second) + bytes(64 * 1024))
    return p1, p2


def test_two_files_chain_crc(killed_run: EtcdRun, tmp_path: Path) -> None:
    path = single_wal(killed_run)
    full = read_wal([FileSource(path)])
    at = len(_frames_of_file(path)) // 2
    p1, p2 = _split(path, at, tmp_path)
    assert wal_file_names(os.listdir(tmp_path)) == [p1.name, p2.name]
    ws = read_wal(wal_sources(tmp_path))
    assert ws.files == (p1.name, p2.name) and ws.end_file == p2.name
    assert (ws.node_id, ws.cluster_id) == (full.node_id, full.cluster_id)
    assert (ws.hardstate_commit, ws.hardstate_term) == (full.hardstate_commit, full.hardstate_term)
    assert (ws.last_index, ws.last_term) == (full.last_index, full.last_term)
    assert ws.snapshots == full.snapshots and ws.entry_count == full.entry_count
    assert not ws.torn_tail

    # Older files purged (etcd keeps the last few): reading starts at a CRC record that carries
    # the CRC of a file no longer there.
    tail = read_wal([FileSource(p2, p2.name)])
    assert (tail.node_id, tail.last_index, tail.hardstate_commit) == \
        (full.node_id, full.last_index, full.hardstate_commit)
    assert tail.entry_count < full.entry_count and tail.first_index > 1

    # The second file's CRC record must carry the first file's running CRC.
    good2 = p2.read_bytes()
    bad = bytearray(good2)
    rec = Record.FromString(good2[8:8 + walk_frames(good2)[0].rec_bytes])
    bad[:walk_frames(good2)[0].end] = frame(CRC_TYPE, rec.crc ^ 1, b"")
    p2.write_bytes(bytes(bad))
    with pytest.raises(FormatError) as err:
        read_wal(wal_sources(tmp_path))
    assert (err.value.file, err.value.offset) == (p2.name, 0)
    assert "chain" in str(err.value)
    p2.write_bytes(good2)

    # A first file that lost its tail: caught by the chain at the start of the second file.
    good1 = p1.read_bytes()
    frames1 = walk_frames(good1)
    p1.write_bytes(good1[:frames1[-3].end])
    with pytest.raises(FormatError) as err:
        read_wal(wal_sources(tmp_path))
    assert (err.value.file, err.value.offset) == (p2.name, 0)

    # A record cut short in a file that is not the last one is corruption, not a torn tail.
    p1.write_bytes(good1[:frames1[-1].body_offset + 3])
    with pytest.raises(FormatError) as err:
        read_wal(wal_sources(tmp_path))
    assert (err.value.file, err.value.offset) == (p1.name, frames1[-1].offset)
    assert "not the last" in str(err.value)

    # A zeroed sector in a file that is not the last one is corruption too.
    zeroed = bytearray(good1)
    zeroed[frames1[-1].body_offset:frames1[-1].end] = bytes(frames1[-1].end
                                                            - frames1[-1].body_offset)
    p1.write_bytes(bytes(zeroed))
    with pytest.raises(FormatError) as err:
        read_wal(wal_sources(tmp_path))
    assert err.value.file == p1.name

    # ...while the same damage at the end of the last file is a torn tail.
    p1.write_bytes(good1)
    frames2 = walk_frames(good2)
    p2.write_bytes(good2[:frames2[-1].body_offset + 3])
    ws = read_wal(wal_sources(tmp_path))
    assert ws.torn_tail and ws.end_file == p2.name and ws.end_offset == frames2[-1].offset


def _log(*items: tuple[str, int, int]) -> bytes:
    """A WAL of ("e", index, term) entries and ("s", index, term) snapshot records."""
    meta = f_varint(1, 1) + f_varint(2, 2)
    crc = crc32c(meta)
    out = frame(CRC_TYPE, 0, b"") + frame(METADATA_TYPE, crc, meta)
    for kind, index, term in items:
        if kind == "e":
            rtype, data = ENTRY_TYPE, f_varint(2, term) + f_varint(3, index)
        else:
            rtype, data = SNAPSHOT_TYPE, f_varint(1, index) + f_varint(2, term)
        crc = crc32c_update(crc, data)
        out += frame(rtype, crc, data)
    return out + bytes(64)


def test_a_snapshot_the_log_does_not_hold_replaces_it() -> None:
    """A snapshot record past the entries before it, or at an index they hold with another
    term, is one restored from the leader: the log becomes that snapshot (see WalState)."""
    own = read_wal([BytesSource(_log(("s", 0, 0), ("e", 1, 1), ("e", 2, 2), ("e", 3, 2),
                                     ("s", 3, 2), ("e", 4, 2)), "a.wal")])
    assert own.term_starts == ((1, 1), (2, 2)) and (own.last_index, own.last_term) == (4, 2)
    behind = read_wal([BytesSource(_log(("e", 1, 1), ("e", 2, 2), ("s", 9, 4)), "b.wal")])
    assert behind.term_starts == ((9, 4),) and (behind.last_index, behind.last_term) == (9, 4)
    assert behind.term_at(2) is None and behind.snapshot_index == 9
    more = read_wal([BytesSource(_log(("e", 1, 1), ("e", 2, 2), ("s", 9, 4), ("e", 10, 4),
                                      ("e", 11, 5)), "c.wal")])
    assert more.term_starts == ((9, 4), (11, 5)) and (more.last_index, more.last_term) == (11, 5)
    # Entry 3 is term 2 here but the snapshot at 3 is term 3: the log was replaced.
    other = read_wal([BytesSource(_log(("e", 2, 2), ("e", 3, 2), ("e", 4, 2), ("s", 3, 3)),
                                  "d.wal")])
    assert other.term_starts == ((3, 3),) and (other.last_index, other.last_term) == (3, 3)
    # Reading from a later segment: a snapshot before the first entry read, or before any
    # entry, says nothing about the entries.
    later = read_wal([BytesSource(_log(("s", 5, 2), ("e", 8, 3), ("s", 6, 2), ("e", 9, 3)),
                                  "e.wal")])
    assert later.term_starts == ((8, 3),) and (later.last_index, later.last_term) == (9, 3)
    assert later.snapshot_index == 6


def test_metadata_conflict_and_unknown_type_are_errors() -> None:
    meta_a = f_varint(1, 1) + f_varint(2, 2)
    meta_b = f_varint(1, 1) + f_varint(2, 3)
    crc = crc32c(meta_a)
    one = frame(CRC_TYPE, 0, b"") + frame(METADATA_TYPE, crc, meta_a)
    two = frame(CRC_TYPE, crc, b"") + frame(METADATA_TYPE, crc32c_update(crc, meta_b), meta_b)
    with pytest.raises(FormatError, match="metadata") as err:
        read_wal([BytesSource(one, "a.wal"), BytesSource(two, "b.wal")])
    assert (err.value.file, err.value.offset) == ("b.wal", 16)
    odd = one + frame(9, crc32c_update(crc, b"zz"), b"zz")
    with pytest.raises(FormatError, match="record type 9"):
        read_wal([BytesSource(odd, "a.wal")])
    ws = read_wal([BytesSource(one + bytes(64), "a.wal")])
    assert (ws.node_id, ws.cluster_id, ws.last_index, ws.record_count) == (1, 2, 0, 2)
    with pytest.raises(FormatError):
        read_wal([])


# ----------------------------------------------------------------------------------------------
# Efficiency: a 64 MB preallocated segment with a few records


def test_preallocated_segment_reads_little(tmp_path: Path) -> None:
    meta = f_varint(1, 0xABC) + f_varint(2, 0xDEF)
    crc = crc32c(meta)
    data = frame(CRC_TYPE, 0, b"") + frame(METADATA_TYPE, crc, meta)
    ent = f_varint(2, 1) + f_varint(3, 1) + f_bytes(4, b"hello")
    crc = crc32c_update(crc, ent)
    data += frame(ENTRY_TYPE, crc, ent)
    path = tmp_path / "0000000000000000-0000000000000000.wal"
    with open(path, "wb") as fh:
        fh.write(data)
        fh.truncate(SEGMENT_SIZE_BYTES)
    src = FileSource(path)
    ws = read_wal([src])
    assert (ws.node_id, ws.cluster_id, ws.last_index) == (0xABC, 0xDEF, 1)
    assert ws.bytes_read == src.bytes_read
    assert ws.bytes_read <= 64 * 1024
    assert ws.bytes_read * 100 < SEGMENT_SIZE_BYTES


# ----------------------------------------------------------------------------------------------
# Hypothesis: any input gives a WalState or a FormatError, quickly


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=4096), st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(first: bytes, second: bytes) -> None:
    for files in ([BytesSource(first, "a.wal")],
                  [BytesSource(first, "a.wal"), BytesSource(second, "b.wal")]):
        try:
            ws = read_wal(files)
        except FormatError as exc:
            assert exc.file in ("a.wal", "b.wal")
            assert exc.offset >= 0
        else:
            assert ws.end_offset <= len(files[-1].read(0, 1 << 20))


@pytest.fixture(scope="module")
def real_wal_prefix(real_run: RunFactory) -> bytes:
    """The first 130 records of the newest build's WAL (3.7's encoding), then zeros."""
    run = real_run(ROLES[-1], signal.SIGKILL)
    raw = single_wal(run).read_bytes()
    return raw[:walk_frames(raw[:1 << 20])[130].end] + bytes(2048)


@settings(max_examples=200, deadline=2000)
@given(st.data())
def test_mutated_real_wal_never_crashes(real_wal_prefix: bytes, data: st.DataObject) -> None:
    raw = bytearray(real_wal_prefix)
    n = data.draw(st.integers(min_value=1, max_value=8), label="mutations")
    for _ in range(n):
        kind = data.draw(st.sampled_from(["flip", "set", "zero", "truncate"]), label="kind")
        if not raw:
            break
        pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="pos")
        if kind == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "zero":
            end = min(len(raw), pos + data.draw(st.integers(1, 1024)))
            raw[pos:end] = bytes(end - pos)
        else:
            del raw[pos:]
    try:
        ws = read_wal([BytesSource(bytes(raw), "m.wal")])
    except FormatError as exc:
        assert exc.file == "m.wal"
        assert 0 <= exc.offset <= len(raw)
    else:
        assert 0 <= ws.end_offset <= len(raw)
        assert ws.last_index >= 0


@settings(max_examples=100, deadline=2000)
@given(st.integers(min_value=0, max_value=0xFFFFFFFF), st.binary(max_size=5000))
def test_fast_crc_matches_pure_python(crc: int, data: bytes) -> None:
    from etcd_recovery.formats.wal import crc32c_update, crc32c_update_py

    assert crc32c_update(crc, data) == crc32c_update_py(crc, data)


_U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(st.integers(min_value=0, max_value=0xFFFFFFFF), _U64, _U64, _U64)
def test_hardstate_frame_is_the_record_etcd_writes(prev: int, term: int, vote: int,
                                                   commit: int) -> None:
    """Byte for byte what etcd's encoder writes, zeros included (gogoproto writes every field
    of HardState): built here by hand, field by field, against the generated messages."""
    from etcd_recovery.formats.wal import crc32c_update
    from etcd_recovery.formats.walwrite import hardstate_frame

    data = f_varint(1, term) + f_varint(2, vote) + f_varint(3, commit)
    crc = crc32c_update(prev, data)
    assert hardstate_frame(prev, term, vote, commit) == (frame(3, crc, data), crc)


def test_appended_hardstate_is_read_back(killed_run: EtcdRun, tmp_path: Path) -> None:
    """A HardState frame appended at the WAL's end extends the CRC chain and sets commit."""
    from etcd_recovery.formats.walwrite import hardstate_frame

    last = _copy(single_wal(killed_run), tmp_path / "append.wal")
    before = read_wal([FileSource(last)])
    assert not before.torn_tail
    data, _ = hardstate_frame(before.last_crc, before.hardstate_term, before.hardstate_vote,
                              before.hardstate_commit + 7)
    with open(last, "r+b") as fh:
        fh.seek(before.end_offset)
        fh.write(data)
    after = read_wal([FileSource(last)])
    assert after.hardstate_commit == before.hardstate_commit + 7
    assert after.hardstate_term == before.hardstate_term
    assert after.last_index == before.last_index
    assert after.end_offset == before.end_offset + len(data)
    assert after.record_count == before.record_count + 1


# ----------------------------------------------------------------------------------------------
# A WAL etcd itself cut into segments


BIG_VALUE = 1_400_000  # under etcd's default --max-request-bytes (1.5 MiB)
BIG_PUTS = 47  # 47 x 1.4 MB > one 64 MB segment


@pytest.fixture(scope="module", params=ROLES)
def segmented_run(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdRun]:
    """etcd's own segment cut: puts of 1.4 MB (over gRPC: the JSON gateway is far slower)
    until the WAL passes 64 MB, then small ones; SIGTERM. Deleted afterwards (~200 MB)."""
    role: str = request.param
    base = tmp_path_factory.mktemp(f"seg-{role}")
    with running_etcd(role, base / "data", extra_args=("--snapshot-count=20",)) as etcd:
        with EtcdClient(f"127.0.0.1:{etcd.client_port}", timeout=30) as client:
            value = b"x" * BIG_VALUE
            for i in range(BIG_PUTS):
                client.put(f"big{i:04d}", value)
        etcd.put_many(10, prefix="small", per_txn=1)
        status = etcd.status()
        code = etcd.stop(signal.SIGTERM)
    yield EtcdRun(role=role, data_dir=base / "data", status=status, exit_code=code)
    shutil.rmtree(base)


def test_segments_cut_by_etcd(segmented_run: EtcdRun) -> None:
    run = segmented_run
    names = wal_file_names(os.listdir(run.wal_dir))
    assert len(names) >= 2
    assert [parse_wal_name(n)[0] for n in names] == list(range(len(names)))
    ws = read_wal(wal_sources(run.wal_dir))
    st_ = run.status
    assert (ws.node_id, ws.cluster_id) == (st_.member_id, st_.cluster_id)
    assert ws.hardstate_commit >= st_.raft_index and ws.last_index >= st_.raft_index
    assert ws.first_index == 1 and not ws.torn_tail and ws.end_file == names[-1]
    assert ws.entry_count == ws.last_index  # one member, no overwritten entries
    assert ws.term_at(ws.last_index) == ws.last_term == st_.raft_term
    # Each segment alone: its name carries the index of its first entry (wal.cut names the
    # new file after the last entry written + 1), and its CRC record the running CRC of the
    # segments before it, so the chain holds across the cut.
    crc = 0
    for name in names:
        one = read_wal([FileSource(run.wal_dir / name, name)])
        assert one.first_index == parse_wal_name(name)[1] + (name == names[0])
        with open(run.wal_dir / name, "rb") as fh:
            head = fh.read(4096)
        first_rec = Record.FromString(head[8:8 + walk_frames(head)[0].rec_bytes])
        assert first_rec.type == CRC_TYPE and first_rec.crc == crc
        crc = one.last_crc
        # A segment starts with the metadata (and, after the first, the HardState) again.
        assert (one.node_id, one.cluster_id) == (ws.node_id, ws.cluster_id)
    assert crc == ws.last_crc
    # inspect reads only the last segment (it holds entries), in place, and only its valid
    # part, the db's meta and a few pages of it: not the 64 MB files.
    state, t = read_disk_local(run.data_dir)
    wal_read = [s for s in t.sources if "/member/wal/" in s.name]
    assert [s.name.rsplit("/", 1)[1] for s in wal_read] == [names[-1]]
    assert (state.last_index, state.last_term) == (ws.last_index, ws.last_term)
    assert state.hardstate_commit == ws.hardstate_commit
    assert state.wal_tail is not None
    assert (state.wal_tail.offset, state.wal_tail.crc) == (ws.end_offset, ws.last_crc)
    assert state.revision == run.status.revision
    assert wal_read[0].bytes_read < ws.end_offset + 2 * 1024 * 1024
    assert state.bytes_read < wal_read[0].bytes_read + 8 * 1024 * 1024

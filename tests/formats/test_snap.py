"""Snapshot file tests on .snap files written by real etcd 3.4, 3.5, 3.6 and 3.7 (made in the
test; builds by role, realetcd.ROLES).

3.7 still writes a v2 ``.snap`` file with every snapshot ("For backward compatibility, generate
v2 snapshot from v3 state": ``EtcdServer.snapshot`` in server/etcdserver/server.go @v3.7.3, then
``storage.SaveSnap``, server/storage/storage.go, which writes the file before the WAL record),
but no longer reads one: bootstrap builds the raft snapshot from the newest WAL snapshot record
(``recoverSnapshot``, server/etcdserver/bootstrap.go @v3.7.3). test_real_versions covers a
3.7 data dir without them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.snap import (
    MAX_SNAP_BYTES,
    SnapInfo,
    is_snap_name,
    latest_snapshot,
    parse_snap_name,
    read_snap,
    snapshot_names,
)
from etcd_recovery.formats.source import BytesSource, FileSource
from etcd_recovery.formats.wal import crc32c, read_wal, wal_file_names
from tests.formats.conftest import RunFactory
from tests.formats.realetcd import ROLES, EtcdRun
from tests.formats.wire import varint as _varint


@pytest.fixture(scope="module", params=ROLES)
def snap_run(request: pytest.FixtureRequest, real_run: RunFactory) -> EtcdRun:
    return real_run(request.param, signal.SIGTERM)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _envelope(crc: int, data: bytes) -> bytes:
    return b"\x08" + _varint(crc) + b"\x12" + _varint(len(data)) + data


def test_snap_names() -> None:
    a = "0000000000000002-0000000000000065.snap"
    b = "0000000000000002-00000000000000ca.snap"
    c = "0000000000000003-0000000000000010.snap"
    assert parse_snap_name(b) == (2, 0xCA)
    assert parse_snap_name("/var/lib/etcd/member/snap/" + c) == (3, 0x10)
    for bad in ("db", a + ".broken", "00000000000000ca.snap.db", "2-65.snap",
                "0000000000000002-0000000000000065.SNAP", "db.tmp.123"):
        assert not is_snap_name(bad)
        with pytest.raises(FormatError) as err:
            parse_snap_name(bad)
        assert err.value.file == bad
    noise = ["db", "ffffffffffffffff-ffffffffffffffff.snap.broken", "00000000000000ff.snap.db"]
    assert snapshot_names([a, c, b, *noise]) == [c, b, a]
    assert latest_snapshot([a, b, *noise]) == b
    assert latest_snapshot(noise) is None
    assert latest_snapshot([]) is None


def test_real_snapshots_match_names_and_wal(snap_run: EtcdRun) -> None:
    names = sorted(os.listdir(snap_run.snap_dir))
    assert "db" in names
    snaps = snapshot_names(names)
    assert len(snaps) >= 3
    wal = read_wal([FileSource(snap_run.wal_dir / n, n)
                    for n in wal_file_names(os.listdir(snap_run.wal_dir))])
    marks = {(m.index, m.term) for m in wal.snapshots}
    member = snap_run.status.member_id
    for name in snaps:
        src = FileSource(snap_run.snap_dir / name, name)
        info = read_snap(src)
        assert info.crc_ok
        assert (info.term, info.index) == parse_snap_name(name)
        assert (info.index, info.term) in marks
        assert info.voters == (member,) and info.learners == ()
        assert info.data_size > 0 and info.file_size == src.size()
        assert info.name == name
    latest = latest_snapshot(names)
    assert latest is not None
    assert parse_snap_name(latest) == (wal.snapshot_term, wal.snapshot_index)
    assert wal.snapshot_index <= wal.hardstate_commit


def test_damaged_snapshots(snap_run: EtcdRun, tmp_path: Path) -> None:
    name = latest_snapshot(os.listdir(snap_run.snap_dir))
    assert name is not None
    raw = (snap_run.snap_dir / name).read_bytes()
    good = read_snap(BytesSource(raw, name))

    # A flipped byte inside the v2 store payload: still decodes, the CRC says it is damaged.
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    info = read_snap(BytesSource(bytes(flipped), name))
    assert not info.crc_ok
    assert (info.term, info.index) == (good.term, good.index)

    # A wrong CRC in the envelope.
    assert raw[0] == 0x08  # field 1 (crc), varint
    crc, pos = _read_varint(raw, 1)
    assert raw[pos] == 0x12  # field 2 (data), length-delimited
    length, data_pos = _read_varint(raw, pos + 1)
    assert data_pos + length == len(raw)
    assert crc == crc32c(raw[data_pos:])
    wrong = b"\x08" + _varint(crc ^ 1) + raw[pos:]
    assert not read_snap(BytesSource(wrong, name)).crc_ok

    for broken, what in ((b"", "empty"), (raw[: len(raw) // 2], "truncated"),
                         (_envelope(0, b"abc"), "no CRC"), (b"\x08\x01", "no data"),
                         (_envelope(crc32c(b"\xff\xff"), b"\xff\xff"), "garbage")):
        with pytest.raises(FormatError) as err:
            read_snap(BytesSource(broken, "x.snap"))
        assert err.value.file == "x.snap", what


def test_oversized_snapshot_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "0000000000000001-0000000000000001.snap"
    with open(path, "wb") as fh:
        fh.truncate(MAX_SNAP_BYTES + 1)  # sparse: no disk used
    src = FileSource(path)
    with pytest.raises(FormatError, match="allowed") as err:
        read_snap(src)
    assert err.value.file == str(path)
    assert src.bytes_read == 0


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        info = read_snap(BytesSource(raw, "a.snap"))
    except FormatError as exc:
        assert exc.file == "a.snap" and exc.offset >= 0
    else:
        assert isinstance(info, SnapInfo)
        assert info.file_size == len(raw)


@settings(max_examples=100, deadline=2000)
@given(st.binary(min_size=1, max_size=512))
def test_any_payload_with_matching_crc_is_checked(payload: bytes) -> None:
    try:
        info = read_snap(BytesSource(_envelope(crc32c(payload), payload), "b.snap"))
    except FormatError as exc:
        assert exc.file == "b.snap"
    else:
        assert info.crc_ok

"""Snapshot files (etcd_recovery.formats.snapshot) read against real etcd.

For each build (3.4, newest 3.5, 3.6, 3.7): start etcd on loopback, write keys (overwrites,
single and range deletes, a compaction, a last write that is a delete), ``etcdctl snapshot
save``, stop etcd and copy its ``member/snap/db``. Then the reader must say what the build's own
``snapshot status -w json`` says (etcdutl; 3.4's etcdctl) of both files, and what the other
minors' etcdutl say too (3.5 counts entries, 3.6+ live keys), and decide "has a hash" and
"hash good" as the build's ``snapshot restore`` does: it accepts the saved file, refuses the
raw copy without ``--skip-hash-check``, and refuses a file with one byte flipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.snapshot import (
    BAD_HASH,
    SnapshotFile,
    _semver,
    has_checksum,
    read_snapshot,
    sha256_of,
)
from etcd_recovery.formats.source import BytesSource, FileSource, WindowedSource
from tests.formats.bbolt_fixtures import FileBuilder, bucket_value
from tests.formats.conftest import Once
from tests.formats.realetcd import (
    ROLES,
    _clean_env,
    build_dir,
    minor_of,
    running_etcd,
)

N_KEYS = 400
OTHER_TOOLS = ("3.5-newest", "3.6-newest")  # the two ways of counting totalKey


@dataclass(frozen=True)
class Saved:
    """One build's run: the saved snapshot, the raw db after the stop, what etcd said."""

    role: str
    snapshot: Path
    raw_db: Path
    live_keys: int  # ``get --prefix --count-only`` over all keys just before the save
    revision: int  # the server's revision just before the save


def _tool(role: str) -> list[str]:
    """``snapshot status``/``restore`` of the build: its etcdutl, or 3.4's etcdctl."""
    d = build_dir(role)
    return [str(d / "etcdutl")] if (d / "etcdutl").is_file() else [str(d / "etcdctl")]


def _run(role: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_tool(role), *args], capture_output=True, text=True, timeout=60,
                          env={**_clean_env(), "ETCDCTL_API": "3"}, check=False)


def status_json(role: str, file: Path, scratch: Path) -> dict[str, Any]:
    """The build's ``snapshot status -w json`` of a copy of ``file`` (bbolt may lock it)."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"{file.name}.{role}.copy"
    shutil.copyfile(file, copy)
    res = _run(role, "snapshot", "status", str(copy), "-w", "json")
    copy.unlink()
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def restore(role: str, file: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The build's ``snapshot restore`` of ``file`` into the new data dir ``out``."""
    return _run(role, "snapshot", "restore", str(file), "--data-dir", str(out),
                "--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380", *extra)


def _make(role: str, base: Path) -> Saved:
    data = base / "data"
    snapshot = base / "snapshot.db"
    with running_etcd(role, data) as e:
        e.put_many(N_KEYS, prefix="k", value_size=64, per_txn=20)
        e.put_many(50, prefix="k", value_size=8, per_txn=1)  # overwrite k0..k49
        for i in range(50, 60):
            e.etcdctl("del", f"k{i:08d}")
        e.compact()
        e.etcdctl("put", "k00000055", "back again")  # deleted, then put again
        e.put_many(30, prefix="later", value_size=4000, per_txn=10)  # big values: overflow pages
        e.etcdctl("del", "k0000010", "--prefix")  # last: a range delete, tombstones last
        e.wait_storage_version()
        live = int(e.etcdctl_json("get", "", "--prefix", "--keys-only", "--limit", "1")["count"])
        revision = e.status().revision
        e.etcdctl("snapshot", "save", str(snapshot))
        e.stop()
    raw = base / "raw.db"
    shutil.copyfile(data / "member" / "snap" / "db", raw)
    return Saved(role=role, snapshot=snapshot, raw_db=raw, live_keys=live, revision=revision)


@pytest.fixture(scope="module", params=ROLES)
def saved(request: pytest.FixtureRequest, once: Once) -> Saved:
    role: str = request.param
    return once(f"snapshot-file-{role}", lambda base: _make(role, base))


def test_saved_snapshot_matches_snapshot_status(saved: Saved, tmp_path: Path) -> None:
    """The saved file has a good sha256; revision, total keys, hash, size and (3.6+) version
    are the build's own ``snapshot status``, and the other minors' etcdutl agree with the
    matching figures (3.5: every entry counted; 3.6: live keys)."""
    s = read_snapshot(FileSource(saved.snapshot))
    blob = saved.snapshot.read_bytes()
    assert s.size == len(blob) and s.has_hash and s.hash_ok is True
    assert s.sha256 == hashlib.sha256(blob[:-32]).hexdigest() == blob[-32:].hex()
    assert s.db_size == len(blob) - 32 == s.total_size  # the server streams tx.Size() bytes
    assert s.revision == saved.revision
    assert s.total_keys == saved.live_keys
    assert s.etcdutl_json(minor_of(saved.role)) == status_json(saved.role, saved.snapshot,
                                                               tmp_path)
    for other in OTHER_TOOLS:
        assert s.etcdutl_json(minor_of(other)) == status_json(other, saved.snapshot, tmp_path)
    if minor_of(saved.role) >= (3, 6):
        assert s.storage_version == f"{minor_of(saved.role)[0]}.{minor_of(saved.role)[1]}.0"
    else:
        assert s.storage_version is None


def test_raw_db_copy_has_no_hash(saved: Saved, tmp_path: Path) -> None:
    """A copy of member/snap/db: whole pages, no hash; its status is the build's too, and the
    build's restore refuses it without --skip-hash-check, as has_hash=False says."""
    s = read_snapshot(FileSource(saved.raw_db))
    assert not s.has_hash and s.hash_ok is None and s.sha256 is None
    assert s.db_size == s.size == saved.raw_db.stat().st_size
    assert s.total_size <= s.db_size
    assert s.total_keys == saved.live_keys
    assert s.etcdutl_json(minor_of(saved.role)) == status_json(saved.role, saved.raw_db,
                                                               tmp_path)
    res = restore(saved.role, saved.raw_db, tmp_path / "r1")
    assert res.returncode != 0 and "missing hash" in res.stderr
    res = restore(saved.role, saved.raw_db, tmp_path / "r2", "--skip-hash-check")
    assert res.returncode == 0, res.stderr


def test_flipped_byte_fails_the_hash(saved: Saved, tmp_path: Path) -> None:
    """One byte flipped in the middle: the sha256 check fails here and in the build's
    restore; strict=False reports hash_ok False, check_hash=False does not look."""
    blob = bytearray(saved.snapshot.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad = tmp_path / "flipped.db"
    bad.write_bytes(blob)
    with pytest.raises(FormatError) as err:
        read_snapshot(FileSource(bad))
    assert BAD_HASH in str(err.value) and err.value.file == str(bad)
    try:
        loose = read_snapshot(FileSource(bad), strict=False)
    except FormatError:
        pass  # the flip also broke the tree: that is a FormatError too
    else:
        assert loose.has_hash and loose.hash_ok is False
    try:
        skipped = read_snapshot(FileSource(bad), check_hash=False)
    except FormatError:
        pass
    else:
        assert skipped.hash_ok is None
    res = restore(saved.role, bad, tmp_path / "restored")
    assert res.returncode != 0 and "expected sha256" in res.stderr
    good = restore(saved.role, saved.snapshot, tmp_path / "restored-good")
    assert good.returncode == 0, good.stderr


@pytest.mark.parametrize("cut", ["half-page", "one-page", "into-hash", "one-byte",
                                 "first-page", "meta"])
def test_truncated_file_is_a_format_error(saved: Saved, tmp_path: Path, cut: str) -> None:
    blob = saved.snapshot.read_bytes()
    page = read_snapshot(FileSource(saved.snapshot)).page_size
    db_len = len(blob) - 32
    keep = {
        "half-page": (db_len // page // 2) * page,  # whole pages, no hash: too few pages
        "one-page": db_len - page + 32,  # looks hashed (size % 512 == 32), a page short
        "into-hash": len(blob) - 10,  # part of the hash gone: stray bytes after the pages
        "one-byte": len(blob) - 1,
        "first-page": 3000,  # meta page 0 whole, nothing else
        "meta": 40,  # not even a meta page
    }[cut]
    short = tmp_path / "short.db"
    short.write_bytes(blob[:keep])
    with pytest.raises(FormatError) as err:
        read_snapshot(FileSource(short))
    msg = str(err.value)
    if cut in ("half-page", "first-page"):
        assert "truncated" in msg and "sha256" not in msg
    elif cut == "one-page":
        assert "truncated" in msg and "says are a sha256" in msg
    elif cut == "meta":
        assert "not a bbolt database" in msg
    else:
        assert "cut or has bytes appended" in msg


def test_whole_db_without_its_hash_reads_as_a_raw_copy(saved: Saved) -> None:
    """The hash cut off exactly: etcd's rule (size % 512) sees a raw db, and so does this."""
    blob = saved.snapshot.read_bytes()
    s = read_snapshot(BytesSource(blob[:-32]))
    full = read_snapshot(BytesSource(blob))
    assert not s.has_hash and s.hash_ok is None
    assert (s.hash, s.revision, s.total_keys) == (full.hash, full.revision, full.total_keys)


# --------------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def small_snapshot(once: Once) -> bytes:
    """A saved 3.6 snapshot's bytes (the newest 3.6's run above)."""
    run = once("snapshot-file-3.6-newest", lambda base: _make("3.6-newest", base))
    return run.snapshot.read_bytes()


def _read_or_format_error(data: bytes, **kwargs: bool) -> SnapshotFile | None:
    try:
        return read_snapshot(BytesSource(data, name="fuzz"), **kwargs)
    except FormatError as exc:
        assert exc.file == "fuzz"
        return None


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0))
def test_any_prefix_is_a_snapshot_or_a_format_error(small_snapshot: bytes, cut: int) -> None:
    data = small_snapshot[:cut % (len(small_snapshot) + 1)]
    s = _read_or_format_error(data)
    if s is not None:  # only the whole file, or the file without its hash
        assert len(data) in (len(small_snapshot), len(small_snapshot) - 32)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0), st.integers(1, 255)), min_size=1, max_size=8),
       check_hash=st.booleans())
def test_damaged_snapshot_reads_or_is_a_format_error(small_snapshot: bytes,
                                                     flips: list[tuple[int, int]],
                                                     check_hash: bool) -> None:
    """Bytes changed anywhere, the sha256 checked or not (then the walk meets the damage)."""
    data = bytearray(small_snapshot)
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    s = _read_or_format_error(bytes(data), check_hash=check_hash)
    if s is not None and check_hash and data != small_snapshot:
        raise AssertionError("a changed byte passed the sha256 check")


@settings(max_examples=300, deadline=2000)
@given(blob=st.binary(max_size=20000) | st.binary(min_size=544, max_size=544))
def test_random_bytes_are_a_format_error(blob: bytes) -> None:
    with pytest.raises(FormatError):
        read_snapshot(BytesSource(blob))


# ------------------------------------------------------------------------------ pure parts


def test_has_checksum_is_etcds_rule() -> None:
    assert has_checksum(4096 * 13 + 32) and has_checksum(32) and has_checksum(512 + 32)
    assert not has_checksum(4096 * 13) and not has_checksum(4096 * 13 + 31)
    assert not has_checksum(0)


class _Counting(BytesSource):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append(length)
        return super().read(offset, length)


def test_sha256_streams_in_chunks() -> None:
    data = os.urandom(100_000)
    src = _Counting(data)
    assert sha256_of(src, len(data), chunk_size=4096) == hashlib.sha256(data).digest()
    assert max(src.reads) == 4096 and len(src.reads) == 25
    assert sha256_of(src, 10, chunk_size=3) == hashlib.sha256(data[:10]).digest()
    with pytest.raises(FormatError, match="ended while being read"):
        sha256_of(BytesSource(data[:50]), 100)


def test_saved_snapshot_is_read_in_bounded_pieces(small_snapshot: bytes) -> None:
    """The sha256 in ``chunk_size`` reads; the walk in windows of at most 1 MiB (clipped to
    the db here, a small file): no read grows with the file."""
    src = _Counting(small_snapshot)
    s = read_snapshot(src, chunk_size=8192)
    assert s.hash_ok is True
    assert sum(r == 8192 for r in src.reads) == s.db_size // 8192
    assert max(src.reads) <= max(8192, min(1 << 20, s.db_size))


@settings(max_examples=200, deadline=2000)
@given(data=st.binary(max_size=5000), window=st.integers(1, 700), keep=st.integers(1, 4),
       reads=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 1500)), max_size=30))
def test_windowed_source_reads_what_the_source_holds(data: bytes, window: int, keep: int,
                                                     reads: list[tuple[int, int]]) -> None:
    under = _Counting(data)
    src = WindowedSource(under, window=window, keep=keep)
    assert src.size() == len(data) and src.name == under.name
    for offset, length in reads:
        assert src.read(offset, length) == data[offset:offset + length]
    assert all(r <= max(window, 1500) for r in under.reads)


@pytest.mark.parametrize(("raw", "shown"), [
    (b"3.6.0", "3.6.0"),
    (b"3.7.0", "3.7.0"),
    (b"03.6.0", "3.6.0"),  # strconv.ParseInt
    (b"3.6.0-rc.1+build.5", "3.6.0-rc.1+build.5"),
    (b"3.6", None),
    (b"", None),
    (b"3.6.x", None),
    (b"3.6.0-", "3.6.0"),  # an empty pre-release passes validateIdentifier
    (b"3.6.0-a..b", None),
    (b"\xff", None),
])
def test_storage_version_is_parsed_as_go_semver(raw: bytes, shown: str | None) -> None:
    assert _semver(raw) == shown


def _bolt(buckets: list[tuple[bytes, list[tuple[int, bytes, bytes]]]]) -> bytes:
    """A bbolt file whose root holds the given buckets inline."""
    fb = FileBuilder(page_size=4096)
    items = [(1, name, bucket_value(0, inline=inner)) for name, inner in buckets]
    root = fb.tree(items, leaf_items=16)
    data = fb.build(root)
    return data + b"\0" * (-len(data) % 4096)


def test_bbolt_file_that_is_not_etcds() -> None:
    with pytest.raises(FormatError, match="not an etcd backend"):
        read_snapshot(BytesSource(_bolt([(b"other", [(0, b"a", b"1")])])))


def test_top_level_key_that_is_not_a_bucket() -> None:
    fb = FileBuilder(page_size=4096)
    root = fb.tree([(0, b"plain", b"value")])
    with pytest.raises(FormatError, match="is not a bucket"):
        read_snapshot(BytesSource(fb.build(root)))


def test_empty_etcd_buckets() -> None:
    s = read_snapshot(BytesSource(_bolt([(b"key", []), (b"meta", [])])))
    assert (s.revision, s.total_keys, s.total_entries, s.storage_version) == (0, 0, 0, None)


"""Every reader on etcd 3.6- and 3.7-shaped data dirs, made from one written by real etcd 3.5.16.

The shapes follow etcd's schema/migration code (see ``tests/formats/shaped.py`` for the
sources): 3.6 = the 3.5 db plus ``meta/storageVersion = 3.6.0``; 3.7 = the same with ``3.7.0``
(3.7 still writes ``.snap`` files); ``3.7-no-snap`` = 3.7 without any ``.snap`` file (3.7 never
reads them; etcd ``main`` no longer writes them). WAL and, where kept, ``.snap`` files are the
3.5 ones. The readers must report the same raft and MVCC state for all of them.
"""

from __future__ import annotations

import filecmp
import json
import os
import posixpath
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.backend import BackendState, read_backend
from etcd_recovery.formats.bbolt import open_db
from etcd_recovery.formats.snap import latest_snapshot, parse_snap_name, read_snap, snapshot_names
from etcd_recovery.formats.source import BytesSource, FileSource
from etcd_recovery.formats.wal import WalState, read_wal, wal_file_names
from etcd_recovery.inspect import read_disk
from etcd_recovery.inventory import Member, SshTarget
from etcd_recovery.model import MemberState
from etcd_recovery.plan import StepKind, align_step
from etcd_recovery.transport.fake import FakeTransport
from tests.formats import shaped
from tests.formats.realetcd import EtcdStatus, running_etcd

ETCD_35 = Path("/opt/etcd-3.5.16")
ETCDUTL_35 = ETCD_35 / "etcdutl"
SHAPES = ("3.5", "3.6", "3.7", "3.7-no-snap")
STORAGE_VERSION = {"3.5": None, "3.6": "3.6.0", "3.7": "3.7.0", "3.7-no-snap": "3.7.0"}
HAS_SNAP_FILES = {"3.5": True, "3.6": True, "3.7": True, "3.7-no-snap": False}
REMOTE_DIR = "/var/lib/etcd"
RUN_ID = "run-shaped"
KEYS_A, KEYS_B, KEYS_C = 150, 150, 10
COMPACT_AT = 200


@dataclass(frozen=True)
class Source:
    """The 3.5 data dir and what etcd said about it before it stopped."""

    data_dir: Path
    status: EtcdStatus
    removed_id: int  # a learner added then removed: members_removed
    learner_id: int  # a learner added and kept (never started)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Real etcd 3.5.16: 310 keys one per raft entry, snapshot every 100 entries (so .snap
    files and WAL snapshot records), a learner added and removed, one added and kept, a
    physical compaction; stopped with SIGTERM."""
    data = tmp_path_factory.mktemp("shaped") / "v35"
    with running_etcd(ETCD_35, data, extra_args=("--snapshot-count=100",)) as etcd:
        etcd.put_many(KEYS_A, prefix="a", per_txn=1)
        added = json.loads(etcd.etcdctl("member", "add", "gone", "--learner",
                                        "--peer-urls=http://127.0.0.1:9", "-w", "json"))
        removed_id = int(added["member"]["ID"])
        etcd.etcdctl("member", "remove", f"{removed_id:x}")
        added = json.loads(etcd.etcdctl("member", "add", "pending", "--learner",
                                        "--peer-urls=http://127.0.0.1:10", "-w", "json"))
        learner_id = int(added["member"]["ID"])
        etcd.put_many(KEYS_B, prefix="b", per_txn=1)
        etcd.compact(COMPACT_AT)
        etcd.put_many(KEYS_C, prefix="c", per_txn=1)
        status = etcd.status()
        etcd.stop(signal.SIGTERM)
    return Source(data_dir=data, status=status, removed_id=removed_id, learner_id=learner_id)


@pytest.fixture(scope="module")
def dirs(source: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("shapes")
    return {
        "3.5": source.data_dir,
        "3.6": shaped.make_36_shaped(source.data_dir, base / "v36"),
        "3.7": shaped.make_37_shaped(source.data_dir, base / "v37"),
        "3.7-no-snap": shaped.make_37_shaped(source.data_dir, base / "v37n", snap_files=False),
    }


def _db(data_dir: Path) -> Path:
    return data_dir / "member" / "snap" / "db"


def _backend(data_dir: Path) -> BackendState:
    return read_backend(FileSource(_db(data_dir)))


def _wal(data_dir: Path) -> WalState:
    wal_dir = data_dir / "member" / "wal"
    names = wal_file_names(os.listdir(wal_dir))
    return read_wal([FileSource(wal_dir / n) for n in names])


def _member() -> Member:
    return Member(name="m1", ssh=SshTarget(host="h-m1"), peer_url="http://m1:2380",
                  client_url="http://m1:2379", data_dir=REMOTE_DIR)


def _transport(data_dir: Path) -> FakeTransport:
    """A FakeTransport whose file system holds the data dir's files under REMOTE_DIR."""
    files: dict[str, bytes] = {}
    for root, _subdirs, names in os.walk(data_dir):
        rel = os.path.relpath(root, data_dir)
        for name in names:
            remote = posixpath.normpath(posixpath.join(REMOTE_DIR, rel.replace(os.sep, "/"),
                                                       name))
            files[remote] = (Path(root) / name).read_bytes()
    return FakeTransport("h-m1", files=files)


def _disk(data_dir: Path) -> MemberState:
    return read_disk(_transport(data_dir), _member())


def _etcdutl_status(db: Path) -> dict[str, int]:
    out = subprocess.run([str(ETCDUTL_35), "snapshot", "status", str(db), "-w", "json"],
                         capture_output=True, text=True, check=True, timeout=30)
    status: dict[str, int] = json.loads(out.stdout)
    return status


# ------------------------------------------------------------------------------ the 3.5 source

def test_source_has_what_the_shapes_need(source: Source) -> None:
    be = _backend(source.data_dir)
    snaps = snapshot_names(os.listdir(source.data_dir / "member" / "snap"))
    assert snaps, "a .snap file (--snapshot-count=100 with 310+ entries)"
    assert be.storage_version is None
    assert be.term is not None and be.term > 0  # what lets etcd 3.6 call it a 3.5 backend
    assert be.removed_member_ids == (source.removed_id,)
    assert {m.id for m in be.members} == {source.status.member_id, source.learner_id}
    assert be.revision == source.status.revision == KEYS_A + KEYS_B + KEYS_C + 1
    assert be.compact_revision == COMPACT_AT
    db = open_db(FileSource(_db(source.data_dir)))
    key_bucket = db.bucket(b"key")
    assert key_bucket is not None and key_bucket.depth() >= 2  # branch pages


# ------------------------------------------------------------------------------ backend

@pytest.mark.parametrize("shape", SHAPES)
def test_backend_state_is_the_same(shape: str, dirs: dict[str, Path], source: Source) -> None:
    ref = _backend(dirs["3.5"])
    be = _backend(dirs[shape])
    assert be.storage_version == STORAGE_VERSION[shape]
    assert be.consistent_index == ref.consistent_index
    assert be.consistent_index is not None
    assert be.consistent_index >= source.status.raft_applied_index
    assert be.term == ref.term == source.status.raft_term
    assert be.revision == ref.revision == source.status.revision
    assert be.last_key_revision == ref.last_key_revision
    assert (be.compact_revision, be.scheduled_compact_revision) == (COMPACT_AT, COMPACT_AT)
    assert be.members == ref.members
    learner = next(m for m in be.members if m.id == source.learner_id)
    assert learner.is_learner and learner.name is None
    assert be.removed_member_ids == ref.removed_member_ids == (source.removed_id,)
    assert be.conf_state == ref.conf_state
    assert be.conf_state is not None
    assert be.conf_state.voters == (source.status.member_id,)
    assert be.conf_state.learners == (source.learner_id,)
    assert be.cluster_version == ref.cluster_version == "3.5.0"
    assert be.alarms == ref.alarms == ()


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_db_keeps_every_bucket_and_key(shape: str, dirs: dict[str, Path]) -> None:
    before = shaped.read_bolt(_db(dirs["3.5"]))
    after = shaped.read_bolt(_db(dirs[shape]))
    meta = after.root.bucket(b"meta")
    assert meta.items.pop(shaped.STORAGE_VERSION_KEY) == str(STORAGE_VERSION[shape]).encode()
    assert after.root == before.root
    assert after.txid == before.txid + 1 and after.page_size == before.page_size


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_real_bbolt_reads_the_shaped_db(shape: str, dirs: dict[str, Path]) -> None:
    """etcdutl 3.5.16 (real bbolt) walks every bucket: same revision, one key more (the
    storage version), and a hash that differs only by it."""
    ref = _etcdutl_status(_db(dirs["3.5"]))
    got = _etcdutl_status(_db(dirs[shape]))
    assert got["revision"] == ref["revision"]
    assert got["totalKey"] == ref["totalKey"] + 1
    assert got["hash"] != ref["hash"]


def test_rewriting_keeps_the_bytes_etcd_hashes(source: Source, tmp_path: Path) -> None:
    """The writer alone (no change) gives a db whose etcdutl hash is the original's, and etcd
    3.5.16 starts on it and serves the same revision and members."""
    control = shaped.make_35_rewritten(source.data_dir, tmp_path / "r35")
    assert _etcdutl_status(_db(control)) == {**_etcdutl_status(_db(source.data_dir)),
                                             "totalSize": os.path.getsize(_db(control))}
    with running_etcd(ETCD_35, control) as etcd:
        status = etcd.status()
        members = json.loads(etcd.etcdctl("member", "list", "-w", "json"))["members"]
        value = json.loads(etcd.etcdctl("get", "c00000009", "-w", "json"))
        etcd.stop(signal.SIGTERM)
    assert status.revision == source.status.revision
    assert status.member_id == source.status.member_id
    assert value["count"] == 1
    assert {int(m["ID"]) for m in members} == {source.status.member_id, source.learner_id}


def test_wal_and_snap_files_are_kept(dirs: dict[str, Path]) -> None:
    orig = dirs["3.5"] / "member"
    for shape in SHAPES[1:]:
        member = dirs[shape] / "member"
        wal = sorted(os.listdir(orig / "wal"))
        cmp = filecmp.cmpfiles(orig / "wal", member / "wal", wal, shallow=False)
        assert cmp[0] == wal, shape
        snaps = snapshot_names(os.listdir(orig / "snap"))
        if HAS_SNAP_FILES[shape]:
            cmp = filecmp.cmpfiles(orig / "snap", member / "snap", snaps, shallow=False)
            assert cmp[0] == snaps, shape
        else:
            assert shaped.snap_dir_names(dirs[shape]) == ["db"]


def test_cluster_version_is_read(source: Source, tmp_path: Path) -> None:
    """The online upgrade also sets cluster/clusterVersion (through raft)."""
    d = shaped.make_36_shaped(source.data_dir, tmp_path / "v36cv", cluster_version="3.6.0")
    be = _backend(d)
    assert (be.cluster_version, be.storage_version) == ("3.6.0", "3.6.0")


def test_migration_refuses_a_backend_without_term() -> None:
    root = shaped.BoltBucket(items={b"meta": shaped.BoltBucket(
        items={b"consistent_index": struct.pack(">Q", 5)})})
    with pytest.raises(ValueError, match="missing term"):
        shaped.migrate_storage_version(root, shaped.STORAGE_VERSION_36)
    root.bucket(b"meta").items[b"term"] = struct.pack(">Q", 2)
    shaped.migrate_storage_version(root, shaped.STORAGE_VERSION_37)
    assert root.bucket(b"meta").items[shaped.STORAGE_VERSION_KEY] == b"3.7.0"


# ------------------------------------------------------------------------------ the writer

def test_writer_many_keys_deep_tree_overflow_and_inline(tmp_path: Path) -> None:
    big = bytes(range(256)) * 40  # 10240 bytes: a leaf with overflow pages
    keys = {f"k{i:07d}".encode(): f"v{i}".encode() * 3 for i in range(20000)}
    root = shaped.BoltBucket(items={
        # not "key": etcdutl would parse its keys as revisions
        b"data": shaped.BoltBucket(items={**keys, b"zz-big": big}),
        b"small": shaped.BoltBucket(sequence=7, items={b"a": b"1"}),
        b"empty": shaped.BoltBucket(),
        b"outer": shaped.BoltBucket(items={b"inner": shaped.BoltBucket(items={b"x": b"y"})}),
    })
    data = shaped.BoltWriter(4096).build(root, txid=9)
    assert data == shaped.BoltWriter(4096).build(root, txid=9)  # deterministic
    path = tmp_path / "db"
    path.write_bytes(data)
    db = open_db(BytesSource(data))
    assert db.meta.txid == 9 and db.meta.page_size == 4096
    key = db.bucket(b"data")
    assert key is not None and key.depth() >= 3
    assert key.get(b"zz-big") == big
    assert key.get(b"k0012345") == b"v12345" * 3
    assert key.root != 0
    small = db.bucket(b"small")
    assert small is not None and small.root == 0 and small.sequence == 7  # inline
    assert shaped.read_bolt(path).root == root
    status = _etcdutl_status(path)  # real bbolt walks it
    assert status["totalKey"] == root.count()


# ------------------------------------------------------------------------------ WAL and snap

@pytest.mark.parametrize("shape", SHAPES)
def test_wal_reads_the_same(shape: str, dirs: dict[str, Path], source: Source) -> None:
    ref = _wal(dirs["3.5"])
    wal = _wal(dirs[shape])
    assert (wal.node_id, wal.cluster_id) == (source.status.member_id, source.status.cluster_id)
    assert (wal.hardstate_term, wal.hardstate_vote, wal.hardstate_commit) == \
        (ref.hardstate_term, ref.hardstate_vote, ref.hardstate_commit)
    assert (wal.last_index, wal.last_term, wal.entry_count) == \
        (ref.last_index, ref.last_term, ref.entry_count)
    assert wal.last_index >= source.status.raft_index
    assert wal.snapshots == ref.snapshots and wal.snapshots
    assert not wal.torn_tail


@pytest.mark.parametrize("shape", SHAPES)
def test_snap_listing(shape: str, dirs: dict[str, Path], source: Source) -> None:
    snap_dir = dirs[shape] / "member" / "snap"
    names = os.listdir(snap_dir)
    latest = latest_snapshot(names)
    wal = _wal(dirs[shape])
    if not HAS_SNAP_FILES[shape]:
        assert latest is None and snapshot_names(names) == []
        return
    assert latest is not None
    info = read_snap(FileSource(snap_dir / latest))
    assert info.crc_ok
    assert (info.term, info.index) == parse_snap_name(latest)
    # The newest .snap is the WAL's newest snapshot record (etcd writes the file first).
    assert (info.index, info.term) == (wal.snapshot_index, wal.snapshot_term)
    assert info.voters == (source.status.member_id,)
    assert info.learners == (source.learner_id,)


# ------------------------------------------------------------------------------ inspect, plan

@pytest.fixture(scope="module")
def disk_states(dirs: dict[str, Path]) -> dict[str, MemberState]:
    return {shape: _disk(dirs[shape]) for shape in SHAPES}


@pytest.mark.parametrize("shape", SHAPES)
def test_read_disk_is_the_same(shape: str, disk_states: dict[str, MemberState],
                               source: Source) -> None:
    ref = disk_states["3.5"]
    st = disk_states[shape]
    assert st.error is None and st.source == "disk" and not st.corrupt
    assert (st.member_id, st.cluster_id) == (source.status.member_id, source.status.cluster_id)
    assert st.commit_index == ref.commit_index
    assert st.commit_index is not None and st.commit_index >= source.status.raft_index
    assert st.last_index == ref.last_index
    assert st.last_term == ref.last_term
    assert st.revision == ref.revision == source.status.revision
    assert st.consistent_index == ref.consistent_index
    assert st.membership == ref.membership
    assert {p.id: p.is_learner for p in st.membership} == \
        {source.status.member_id: False, source.learner_id: True}
    assert st.removed_ids == ref.removed_ids == (source.removed_id,)
    # Without .snap files the snapshot index comes from the WAL's snapshot records.
    assert st.snapshot_index == ref.snapshot_index
    assert st.wal_tail == ref.wal_tail and st.wal_tail is not None
    assert st.hardstate_commit == ref.hardstate_commit


@pytest.mark.parametrize("shape", SHAPES)
def test_align_step_is_the_same(shape: str, disk_states: dict[str, MemberState],
                                dirs: dict[str, Path]) -> None:
    ref = align_step(_member(), disk_states["3.5"], RUN_ID)
    step = align_step(_member(), disk_states[shape], RUN_ID)
    assert step == ref
    assert step.kind == StepKind.ALIGN_COMMIT
    wal = _wal(dirs[shape])
    ci = _backend(dirs[shape]).consistent_index or 0
    want = "none" if max(ci, wal.last_index) <= wal.hardstate_commit else "planned"
    assert step.params["target"] == want


# ------------------------------------------------------------------------------ 3.7 records

def test_entries_written_by_37_are_read(dirs: dict[str, Path], tmp_path: Path) -> None:
    """raft v3.7.0 leaves an unset Type off the wire: an entry record 3.7 appends after the
    3.5 records still reads as a normal entry, and read_disk and the align step follow it."""
    d = tmp_path / "v37-more"
    shutil.copytree(dirs["3.7-no-snap"], d)
    before = _wal(d)
    last = Path(before.end_file)
    wal_file = d / "member" / "wal" / last.name
    new_index = before.last_index + 1
    shaped.append_37_entry(wal_file, before.end_offset, before.last_crc,
                           term=before.hardstate_term, vote=before.hardstate_vote,
                           index=new_index, data=b"\x0a\x03abc", commit=new_index - 1)
    after = _wal(d)
    assert not after.torn_tail
    assert (after.last_index, after.last_term) == (new_index, before.hardstate_term)
    assert after.entry_count == before.entry_count + 1
    assert after.hardstate_commit == new_index - 1
    st = _disk(d)
    assert st.last_index == new_index
    assert st.commit_index == max(new_index - 1, st.consistent_index or 0)
    step = align_step(_member(), st, RUN_ID)
    assert step.params["target"] == "planned"
    assert f"commit {new_index}" in step.title


def test_a_37_record_with_a_wrong_crc_is_not_taken(dirs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """A record appended with a broken CRC chain is never read as an entry: corruption, or
    a torn tail when a sector piece of it is zeros (etcd's isTornEntry)."""
    d = tmp_path / "v37-bad"
    shutil.copytree(dirs["3.7-no-snap"], d)
    before = _wal(d)
    wal_file = d / "member" / "wal" / Path(before.end_file).name
    new_index = before.last_index + 1
    shaped.append_37_entry(wal_file, before.end_offset, before.last_crc ^ 1,
                           term=before.hardstate_term, vote=before.hardstate_vote,
                           index=new_index, data=b"x", commit=new_index)
    try:
        after = _wal(d)
    except FormatError as exc:
        assert "CRC mismatch" in str(exc)
    else:
        assert after.torn_tail and after.last_index == before.last_index

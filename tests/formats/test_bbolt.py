"""bbolt reader and etcd backend reader, against data dirs written by real etcd 3.4, 3.5, 3.6
and 3.7 (builds by role, realetcd.ROLES), checked against what etcd reported before it stopped,
against etcd after a restart, and against the build's own ``etcdutl`` (``snapshot status``;
``hashkv`` from 3.6; see groundtruth.py for what each computes).

The backend's layout is the same in all four: server/storage/schema/bucket.go @v3.6.16 and
@v3.7.3 list the buckets and keys of 3.5 plus ``meta/storageVersion`` ("Since v3.6"), which
3.6 and 3.7 set to "<major>.<minor>.0" once the cluster version is known
(``UpdateStorageVersionIfNeeded``, server/etcdserver/version/monitor.go; schema/migration.go
steps one minor at a time: 3.7 has no schema change of its own, schema.go @v3.7.3). 3.6 loads
the membership from the ``members``/``members_removed`` buckets (``RaftCluster.UnsafeLoad``,
server/etcdserver/api/membership/cluster.go @v3.6.16), no longer from the v2 store.

Rules asserted about ``consistent_index`` (the last raft index applied to the backend):

* after SIGTERM, etcd 3.5+ has committed everything it applied: consistent_index equals the
  raft index ``etcdctl endpoint status`` reported (a single member applies all it commits);
* etcd 3.4 stores consistent_index only with key-value writes, so it equals the raft index
  when the last entry was a put, and lags it by the entries since (e.g. a compaction);
* after SIGKILL both may lag further (the backend commits every 100 ms): the backend then
  holds a prefix of what etcd had applied, and restarting etcd replays the rest from its WAL.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import time
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.backend import Revision, read_backend
from etcd_recovery.formats.bbolt import open_db
from etcd_recovery.formats.source import BytesSource, FileSource
from etcd_recovery.proto.kv_pb2 import KeyValue

from .bbolt_fixtures import (
    BUCKET_FLAG,
    NO_FREELIST,
    FileBuilder,
    RecordingSource,
    branch_page,
    bucket_value,
    fnv1a64,
    key_name,
    leaf_page,
    meta_page,
    running_etcd,
    value_for,
)
from .conftest import Once
from .groundtruth import hashkv_of, snapshot_status_of
from .realetcd import ROLES, etcdutl_role, has_hashkv, hashkv, minor_of, snapshot_status


def rev_key(main: int, sub: int = 0, tombstone: bool = False) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub) + (b"t" if tombstone else b"")


def kv_fields(value: bytes) -> KeyValue:
    """The mvccpb.KeyValue a revision key's value holds."""
    return KeyValue.FromString(value)


# --- one real data dir per etcd version, shared by the tests below -------------------------

N_KEYS = 3000
PER_TXN = 100
VALUE_SIZE = 200
N_DELETES = 10
N_LATER = 200


@dataclass
class Scenario:
    role: str
    db_path: Path
    status: dict[str, Any]
    members: dict[str, Any]
    compact_rev: int
    overwrite_rev: int
    tombstones: list[tuple[str, int]]
    probe_key: str
    probe_rev: int
    probe_sub: int
    probe_get: dict[str, Any]

    @cached_property
    def db(self) -> bytes:
        return self.db_path.read_bytes()


@pytest.fixture(scope="module", params=ROLES)
def scenario(request: pytest.FixtureRequest, once: Once) -> Scenario:
    role: str = request.param
    return once(f"bbolt-{role}", partial(_make_scenario, role))


def _make_scenario(role: str, base: Path) -> Scenario:
    data = base / "data"
    with running_etcd(role, data) as etcd:
        etcd.put_many(N_KEYS, value_size=VALUE_SIZE, batch=PER_TXN)  # revisions 2..31
        # Overwrite the first txn's keys, then compact: revision 2's entries go away.
        overwrite_rev = etcd.put_many(PER_TXN, value_size=50, batch=PER_TXN)
        etcd.compact(overwrite_rev)
        tombstones = []
        for i in range(N_DELETES):
            key = key_name("k", 1000 + 7 * i)
            tombstones.append((key, etcd.delete(key)))
        last_rev = etcd.put_many(N_LATER, value_size=VALUE_SIZE, start=N_KEYS, batch=PER_TXN)
        probe = N_KEYS + N_LATER - 1  # last put of the last txn
        probe_key = key_name("k", probe)
        probe_get = json.loads(etcd.ctl("get", probe_key, "--rev", str(last_rev), "-w", "json"))
        status = etcd.status()
        deadline = time.monotonic() + 15
        while minor_of(role) >= (3, 6) and not status.get("storageVersion"):
            assert time.monotonic() < deadline, "no storage version"
            time.sleep(0.05)  # set soon after the cluster version (see the module doc)
            status = etcd.status()
        members = etcd.member_list()
        etcd.stop(signal.SIGTERM)
    return Scenario(
        role=role, db_path=etcd.db_path, status=status, members=members,
        compact_rev=overwrite_rev, overwrite_rev=overwrite_rev, tombstones=tombstones,
        probe_key=probe_key, probe_rev=last_rev, probe_sub=(probe - N_KEYS) % PER_TXN,
        probe_get=probe_get,
    )


def test_backend_matches_what_etcd_reported(scenario: Scenario) -> None:
    state = read_backend(BytesSource(scenario.db, name="db"))
    status = scenario.status
    assert state.revision == status["header"]["revision"] == scenario.probe_rev
    assert state.last_key_revision == Revision(scenario.probe_rev, scenario.probe_sub)
    assert state.consistent_index == status["raftIndex"] == status["raftAppliedIndex"]
    assert state.compact_revision == scenario.compact_rev
    assert state.scheduled_compact_revision == scenario.compact_rev

    member_id = status["header"]["member_id"]
    listed = {m["ID"] for m in scenario.members["members"]}
    assert {m.id for m in state.members} == listed == {member_id}
    (member,) = state.members
    assert member.id_hex == f"{member_id:x}"
    assert member.name == "m1"
    assert member.peer_urls == tuple(scenario.members["members"][0]["peerURLs"])
    assert not member.is_learner
    assert state.removed_member_ids == ()
    assert state.alarms == ()

    major, minor = minor_of(scenario.role)
    assert state.cluster_version == f"{major}.{minor}.0"
    # The client URLs are saved with the name by the member's publish (3.5.16's
    # unsafeSaveMemberToBackend refused to overwrite the member, so its backend had none;
    # 3.5.35's overwrites, store.go @v3.5.35, as 3.6's MustSaveMemberToBackend does).
    assert member.client_urls == tuple(scenario.members["members"][0]["clientURLs"])
    if minor >= 5:
        assert state.term == status["raftTerm"]
        assert state.conf_state is not None
        assert state.conf_state.voters == (member_id,)
        assert state.conf_state.learners == ()
    else:
        assert state.term is None and state.conf_state is None
    if minor >= 6:
        assert state.storage_version == f"{major}.{minor}.0" == status["storageVersion"]
    else:
        assert state.storage_version is None and "storageVersion" not in status

    assert state.page_size == 4096
    assert state.db_size_bytes == len(scenario.db)
    assert state.data_size_bytes <= state.db_size_bytes
    assert state.bytes_read < 20 * state.page_size


def test_etcdutl_agrees(scenario: Scenario, tmp_path: Path) -> None:
    """The build's etcdutl (3.4 has none: the newest 3.5's) reads the same file: its hash
    over every bucket, key and value is the one computed from this reader's walk, its
    revision is the last key's, its size the high water mark's, its version the storage
    version; ``hashkv`` (3.6+) restores the revision read_backend computes."""
    db = tmp_path / "db"
    db.write_bytes(scenario.db)
    state = read_backend(FileSource(db))
    util = etcdutl_role(scenario.role)
    truth = snapshot_status(util, db, tmp_path / "scratch")
    assert truth == snapshot_status_of(db, minor_of(util))
    assert state.last_key_revision is not None
    assert truth["revision"] == state.last_key_revision.main == scenario.probe_rev
    assert truth["totalSize"] == state.data_size_bytes
    if minor_of(util) >= (3, 6):
        assert truth["version"] == (state.storage_version or "")
        assert truth["totalKey"] == N_KEYS + N_LATER - N_DELETES
    else:
        assert "version" not in truth
    if has_hashkv(scenario.role):
        kv = hashkv(scenario.role, db, tmp_path / "scratch")
        assert kv == hashkv_of(db)
        assert (kv["hashRevision"], kv["compactRevision"]) == (state.revision,
                                                               scenario.compact_rev)
    else:
        assert minor_of(scenario.role) < (3, 6)


def test_reads_are_few_whole_pages(scenario: Scenario) -> None:
    src = RecordingSource(scenario.db)
    state = read_backend(src)
    ps = state.page_size
    assert state.bytes_read == src.bytes_read
    assert src.reads[0] == (0, 4096)
    for offset, length in src.reads[1:]:
        assert offset % ps == 0 and length == ps, (offset, length)
    assert len(src.reads) <= 10
    # The file holds hundreds of pages; only a handful were touched.
    assert len(scenario.db) // ps > 200


def test_get_meta_and_revision_keys(scenario: Scenario) -> None:
    db = open_db(BytesSource(scenario.db))
    meta = db.bucket(b"meta")
    keys = db.bucket(b"key")
    assert meta is not None and keys is not None
    assert db.bucket(b"no-such-bucket") is None
    assert keys.depth() >= 2  # the key bucket has branch pages

    ci = meta.get(b"consistent_index")
    assert ci == scenario.status["raftIndex"].to_bytes(8, "big")
    assert meta.get(b"consistent_indey") is None
    assert meta.get(b"") is None

    (kv,) = scenario.probe_get["kvs"]
    assert kv["mod_revision"] == scenario.probe_rev
    fields = kv_fields(keys.get(rev_key(scenario.probe_rev, scenario.probe_sub)) or b"")
    probe = int(scenario.probe_key[1:])
    assert fields.key == scenario.probe_key.encode()
    assert fields.mod_revision == scenario.probe_rev
    assert fields.value == value_for(probe, VALUE_SIZE)
    assert keys.get(rev_key(scenario.probe_rev, scenario.probe_sub + 1)) is None

    # Compacted away: the first txn's revision; its keys were overwritten before compaction.
    assert keys.get(rev_key(2, 5)) is None
    assert kv_fields(keys.get(rev_key(3, 5)) or b"").key == key_name("k", PER_TXN + 5).encode()
    assert kv_fields(keys.get(rev_key(scenario.overwrite_rev, 5)) or b"").value == value_for(5, 50)

    for key, rev in scenario.tombstones:
        tomb = keys.get(rev_key(rev, 0, tombstone=True))
        assert tomb is not None and kv_fields(tomb).key == key.encode()
        assert keys.get(rev_key(rev, 0)) is None


def test_point_lookups_agree_with_a_full_scan(scenario: Scenario) -> None:
    db = open_db(BytesSource(scenario.db))
    keys = db.bucket(b"key")
    assert keys is not None
    entries = list(keys.items(limit=100_000))
    expected = N_KEYS + N_DELETES + N_LATER  # the overwritten revision-2 entries are gone
    assert len(entries) == expected
    assert all(a[0] < b[0] for a, b in zip(entries, entries[1:], strict=False))
    assert keys.first() == entries[0]
    assert keys.last() == entries[-1]
    for k, v in entries[::17]:
        assert keys.get(k) == v
        assert keys.get(k + b"\0") is None
        assert keys.get(k[:-1]) is None
    with pytest.raises(FormatError, match="more than 100 entries"):
        list(keys.items(limit=100))


def test_falls_back_to_the_other_meta_page(scenario: Scenario) -> None:
    good = open_db(BytesSource(scenario.db)).meta
    data = bytearray(scenario.db)
    data[good.page * good.page_size + 16 + 40] ^= 0xFF  # inside the checksummed fields
    db = open_db(BytesSource(bytes(data)))
    assert db.meta.page == 1 - good.page
    assert db.meta.txid == good.txid - 1
    assert db.other_meta_error is not None and "checksum" in db.other_meta_error
    # The previous transaction's tree is intact (bbolt never overwrites live pages).
    state = read_backend(BytesSource(bytes(data)))
    assert state.txid == good.txid - 1
    assert state.revision <= scenario.status["header"]["revision"]

    other = (1 - good.page) * good.page_size + 16
    data[other + 40] ^= 0xFF
    with pytest.raises(FormatError, match="no valid meta page"):
        open_db(BytesSource(bytes(data)))


# --- crash, compaction and size scenarios ---------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_sigkill_leaves_a_prefix_that_the_wal_completes(role: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_etcd(role, data) as etcd:
        etcd.put_many(500, batch=PER_TXN)
        time.sleep(0.5)  # several backend commit intervals (100 ms)
        before = etcd.status()
        etcd.put_many(2000, start=500, batch=PER_TXN)
        at_kill = etcd.status()
        etcd.stop(signal.SIGKILL)
    state = read_backend(FileSource(etcd.db_path))
    assert before["header"]["revision"] <= state.revision <= at_kill["header"]["revision"]
    assert state.consistent_index is not None
    assert before["raftIndex"] <= state.consistent_index <= at_kill["raftIndex"]
    with running_etcd(role, data) as etcd:
        after = etcd.status()
    assert after["header"]["revision"] == at_kill["header"]["revision"] >= state.revision


@pytest.mark.parametrize("role", ROLES)
def test_revision_survives_compacting_a_final_delete(role: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_etcd(role, data) as etcd:
        put_rev = etcd.put_many(10)
        del_rev = etcd.delete(key_name("k", 3))
        etcd.compact(del_rev)
        status = etcd.status()
        etcd.stop(signal.SIGTERM)
    state = read_backend(FileSource(etcd.db_path))
    assert state.revision == status["header"]["revision"] == del_rev
    assert state.compact_revision == del_rev
    if minor_of(role) < (3, 5):
        # 3.4 drops the tombstone at the compaction revision: the newest key is older, and
        # only finishedCompactRev tells the real revision. 3.4 also leaves consistent_index
        # at the delete: the compaction entry does not store it.
        assert state.last_key_revision == Revision(put_rev, 9)
        assert state.consistent_index == status["raftIndex"] - 1
    else:
        assert state.last_key_revision == Revision(del_rev, 0, tombstone=True)
        assert state.consistent_index == status["raftIndex"]
    if has_hashkv(role):
        # The revision an MVCC store restores from the file (hashRevision) is the one read;
        # the hash leaves out the tombstone at the compaction revision.
        truth = hashkv(role, etcd.db_path, tmp_path / "scratch")
        assert truth == hashkv_of(etcd.db_path)
        assert (truth["hashRevision"], truth["compactRevision"]) == (del_rev, del_rev)
    with running_etcd(role, data) as etcd:
        assert etcd.status()["header"]["revision"] == state.revision


def test_bytes_read_does_not_grow_with_the_database(tmp_path: Path) -> None:
    states = {}
    depths = {}
    for n in (1000, 20000):
        data = tmp_path / f"data{n}"
        with running_etcd(ROLES[-1], data) as etcd:
            rev = etcd.put_many(n, value_size=VALUE_SIZE)
            etcd.stop(signal.SIGTERM)
        src = FileSource(etcd.db_path)
        states[n] = read_backend(src)
        assert states[n].revision == rev
        assert states[n].bytes_read == src.bytes_read
        keys = open_db(FileSource(etcd.db_path)).bucket(b"key")
        assert keys is not None
        depths[n] = keys.depth()
    small, large = states[1000], states[20000]
    assert large.data_size_bytes > 10 * small.data_size_bytes
    assert depths[20000] >= 3
    extra_levels = depths[20000] - depths[1000]
    assert large.bytes_read <= small.bytes_read + extra_levels * large.page_size
    assert large.bytes_read < 20 * large.page_size


@pytest.mark.parametrize("role", ["3.5-newest", "3.7-newest"])
def test_nospace_alarm_is_read(role: str, tmp_path: Path) -> None:
    """The alarm bucket's key is a marshalled AlarmMember: gogoproto in 3.5 and 3.6,
    google.golang.org/protobuf in 3.7 (api/go.mod @v3.7.3)."""
    data = tmp_path / "data"
    with running_etcd(role, data, extra_args=("--quota-backend-bytes", "1048576")) as etcd:
        with pytest.raises(RuntimeError, match="database space exceeded"):
            for i in range(100):
                etcd.put_many(20, start=20 * i, value_size=4096, batch=20)
        member_id = etcd.status()["header"]["member_id"]
        etcd.stop(signal.SIGTERM)
    state = read_backend(FileSource(etcd.db_path))
    assert [(a.member_id, a.alarm) for a in state.alarms] == [(member_id, "NOSPACE")]


# --- hand-built files: structure and corruption ---------------------------------------------


def simple_file(page_size: int = 1024) -> tuple[FileBuilder, int]:
    fb = FileBuilder(page_size)
    items = [(0, f"key{i:04d}".encode(), f"value{i}".encode()) for i in range(40)]
    tree = fb.tree(items, leaf_items=4, fanout=3)
    root = fb.add(lambda p: leaf_page(p, [(BUCKET_FLAG, b"b", bucket_value(tree))], page_size))
    return fb, root


def test_hand_built_tree_and_meta_choice() -> None:
    fb, root = simple_file()
    data = fb.build(root, txid=7)
    db = open_db(BytesSource(data))
    assert db.meta.page == 1 and db.meta.txid == 7 and db.meta.freelist == NO_FREELIST
    b = db.bucket(b"b")
    assert b is not None and b.depth() == 4
    assert b.get(b"key0017") == b"value17"
    assert b.get(b"key0017x") is None and b.get(b"a") is None and b.get(b"z") is None
    assert b.first() == (b"key0000", b"value0")
    assert b.last() == (b"key0039", b"value39")
    assert [k for k, _ in b.items(40)] == [f"key{i:04d}".encode() for i in range(40)]
    before = db.pages_read
    assert b.get(b"key0031") == b"value31"
    assert db.pages_read - before <= b.depth()

    # Meta 0 has the higher txid now.
    data0 = meta_page(0, 1024, root, fb.next_pgid, 9) + data[1024:]
    assert open_db(BytesSource(data0)).meta.page == 0


def test_meta_page_one_found_by_probing_when_meta_zero_is_bad() -> None:
    fb, root = simple_file(page_size=8192)
    bad0 = meta_page(0, 8192, root, fb.next_pgid, 4, bad_checksum=True)
    data = fb.build(root, txid=5, meta0=bad0)
    db = open_db(BytesSource(data))
    assert db.meta.page == 1 and db.meta.page_size == 8192
    assert db.other_meta_error is not None and "checksum" in db.other_meta_error
    b = db.bucket(b"b")
    assert b is not None and b.get(b"key0003") == b"value3"


def test_inline_nested_and_overflow_values() -> None:
    ps = 1024
    fb = FileBuilder(ps)
    big = bytes(range(256)) * 20  # 5 KiB: the leaf needs overflow pages
    inner = bucket_value(0, 3, inline=[(0, b"x", b"1"), (0, b"y", b"2")])
    outer_leaf = fb.add(lambda p: leaf_page(p, [(0, b"big", big), (BUCKET_FLAG, b"in", inner),
                                                (0, b"small", b"s")], ps))
    root = fb.add(lambda p: leaf_page(p, [(BUCKET_FLAG, b"outer", bucket_value(outer_leaf))],
                                      ps))
    db = open_db(BytesSource(fb.build(root)))
    outer = db.bucket(b"outer")
    assert outer is not None
    assert outer.get(b"big") == big
    assert outer.get(b"in") is None  # a bucket, not a value
    inb = outer.bucket(b"in")
    assert inb is not None and inb.root == 0 and inb.sequence == 3
    assert inb.get(b"y") == b"2" and inb.last() == (b"y", b"2")
    assert outer.bucket(b"small") is None


def corrupt(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def test_corrupt_pages_are_format_errors() -> None:
    ps = 1024
    fb, root = simple_file(ps)
    data = fb.build(root)
    hwm = fb.next_pgid
    b_root = open_db(BytesSource(data)).bucket(b"b")
    assert b_root is not None
    top = b_root.root

    def fails(blob: bytes, match: str) -> FormatError:
        with pytest.raises(FormatError, match=match) as info:
            b = open_db(BytesSource(blob, name="f")).bucket(b"b")
            assert b is not None
            b.get(b"key0039")
            b.get(b"a")
            list(b.items(100))
        assert info.value.file == "f"
        return info.value

    # A branch page that points at itself, and a two-page cycle.
    fails(corrupt(data, top * ps, branch_page(top, [(b"", top)], ps)), "cycle")
    child = struct.unpack_from("<Q", data, top * ps + 16 + 8)[0]
    fails(corrupt(data, child * ps, branch_page(child, [(b"", top)], ps)), "cycle")
    # Page id mismatch, bad flags, pgid beyond the high water mark, elements outside.
    err = fails(corrupt(data, top * ps, struct.pack("<Q", top + 1)), "says it is page")
    assert err.offset == top * ps
    fails(corrupt(data, top * ps + 8, struct.pack("<H", 0x10)), "flags 0x10")
    fails(corrupt(data, top * ps + 16 + 8, struct.pack("<Q", hwm)), "outside")
    fails(corrupt(data, top * ps + 10, struct.pack("<H", 500)), "do not fit")
    fails(corrupt(data, top * ps + 16, struct.pack("<I", 5000)), "outside the page")
    fails(corrupt(data, top * ps + 10, struct.pack("<H", 0)), "empty")
    # Overflow past the high water mark or past the file.
    fails(corrupt(data, top * ps + 12, struct.pack("<I", 1000)), "overflow")
    fails(data[:(hwm - 1) * ps], "past the end")


def test_too_deep_tree_is_refused() -> None:
    ps = 1024
    fb = FileBuilder(ps)
    leaf = fb.add(lambda p: leaf_page(p, [(0, b"k", b"v")], ps))
    node = leaf
    for _ in range(70):
        node = fb.add(partial(branch_page, items=[(b"k", node)], page_size=ps))
    root = fb.add(lambda p: leaf_page(p, [(BUCKET_FLAG, b"b", bucket_value(node))], ps))
    b = open_db(BytesSource(fb.build(root))).bucket(b"b")
    assert b is not None
    with pytest.raises(FormatError, match="deeper than 64"):
        b.get(b"k")
    with pytest.raises(FormatError, match="deeper than 64"):
        list(b.items(10))


def test_short_and_foreign_files() -> None:
    with pytest.raises(FormatError, match="too short"):
        open_db(BytesSource(b"\0" * 50))
    with pytest.raises(FormatError, match="no valid meta page"):
        open_db(BytesSource(b"\0" * 8192))
    fb, root = simple_file()
    with pytest.raises(FormatError, match="not an etcd backend"):
        read_backend(BytesSource(fb.build(root)))


# --- property tests -------------------------------------------------------------------------

keys_strategy = st.lists(st.binary(min_size=0, max_size=12), min_size=1, max_size=120,
                         unique=True)


@settings(max_examples=150, deadline=2000)
@given(keys=keys_strategy, leaf_items=st.integers(1, 6), fanout=st.integers(2, 5),
       probes=st.lists(st.binary(max_size=12), max_size=20))
def test_random_trees_lookups(keys: list[bytes], leaf_items: int, fanout: int,
                              probes: list[bytes]) -> None:
    keys.sort()
    ps = 4096
    fb = FileBuilder(ps)
    items = [(0, k, k[::-1] + b"!") for k in keys]
    tree = fb.tree(items, leaf_items=leaf_items, fanout=fanout)
    root = fb.add(lambda p: leaf_page(p, [(BUCKET_FLAG, b"t", bucket_value(tree))], ps))
    b = open_db(BytesSource(fb.build(root))).bucket(b"t")
    assert b is not None
    assert b.first() == (keys[0], keys[0][::-1] + b"!")
    assert b.last() == (keys[-1], keys[-1][::-1] + b"!")
    assert [k for k, _ in b.items(len(keys))] == keys
    present = set(keys)
    for k in keys + probes:
        assert b.get(k) == (k[::-1] + b"!" if k in present else None)


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[int]]:
    """A small real backend of the newest build and the offsets of the pages read_backend
    touches."""
    data = tmp_path_factory.mktemp("fuzz") / "data"
    with running_etcd(ROLES[-1], data) as etcd:
        etcd.put_many(600, value_size=100, batch=50)
        etcd.compact(5)
        etcd.delete(key_name("k", 7))
        etcd.stop(signal.SIGTERM)
    blob = etcd.db_path.read_bytes()
    shutil.rmtree(data)
    meta = open_db(BytesSource(blob)).meta
    blob = blob[:meta.pgid * meta.page_size]  # drop the preallocated tail: faster examples
    src = RecordingSource(blob)
    read_backend(src)
    return blob, sorted({offset for offset, _ in src.reads})


def outcome(blob: bytes) -> None:
    try:
        state = read_backend(BytesSource(blob))
    except FormatError as exc:
        assert exc.file == "<bytes>"
        return
    assert state.revision >= 1
    assert state.db_size_bytes == len(blob)
    assert 0 < state.bytes_read <= len(blob) + 4096


mutation = st.tuples(st.integers(0, 10**6), st.integers(0, 4095),
                     st.binary(min_size=1, max_size=8))


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=6), cut=st.none() | st.integers(0))
def test_mutated_real_db_gives_state_or_format_error(
        real_db: tuple[bytes, list[int]], mutations: list[tuple[int, int, bytes]],
        cut: int | None) -> None:
    blob, touched = real_db
    data = bytearray(blob)
    for which, within, new in mutations:
        base = touched[which % len(touched)]  # mostly hit the pages the reader follows
        pos = (base + within) % len(data)
        data[pos:pos + len(new)] = new
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    outcome(bytes(data))


meta_values = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 300),
                        st.sampled_from([0, 1, 2, 1024, 4096, 2**32 - 1, NO_FREELIST]))


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(page_size=meta_values, root=meta_values, freelist=meta_values, hwm=meta_values,
       txid=meta_values)
def test_fuzzed_meta_with_valid_checksum(real_db: tuple[bytes, list[int]], page_size: int,
                                         root: int, freelist: int, hwm: int,
                                         txid: int) -> None:
    blob, _ = real_db
    meta = open_db(BytesSource(blob)).meta
    body = struct.pack("<IIIIQQQQQ", 0xED0CDAED, 2, page_size % 2**32, 0, root, 0, freelist,
                       hwm, txid)
    page = body + struct.pack("<Q", fnv1a64(body))
    at = meta.page * meta.page_size + 16
    outcome(blob[:at] + page + blob[at + len(page):])


@settings(max_examples=200, deadline=2000)
@given(blob=st.binary(max_size=20000))
def test_arbitrary_bytes_give_format_error(blob: bytes) -> None:
    with pytest.raises(FormatError):
        read_backend(BytesSource(blob))


# --- alarm keys: etcdserverpb.AlarmMember, decoded by the generated class ---------------------


def backend_with_alarm_keys(keys: list[bytes]) -> bytes:
    """The smallest backend read_backend accepts (alarm, key and meta buckets), all inline."""
    ps = 1024
    fb = FileBuilder(ps)
    alarm = bucket_value(0, inline=[(0, k, b"") for k in sorted(keys)])
    kv = bucket_value(0, inline=[])
    meta = bucket_value(0, inline=[(0, b"consistent_index", (9).to_bytes(8, "big"))])
    root = fb.add(lambda p: leaf_page(p, [(BUCKET_FLAG, b"alarm", alarm),
                                          (BUCKET_FLAG, b"key", kv),
                                          (BUCKET_FLAG, b"meta", meta)], ps))
    return fb.build(root)


def test_alarm_keys_decode_and_bad_ones_are_format_errors() -> None:
    nospace = b"\x08\xab\x02\x10\x01"  # memberID=0x12b, alarm=NOSPACE
    corrupt = b"\x08\x07\x10\x02"  # memberID=7, alarm=CORRUPT
    future = b"\x08\x05\x10\x09\x1a\x01z"  # an alarm type and a field this build does not know
    state = read_backend(BytesSource(backend_with_alarm_keys([nospace, corrupt, future])))
    assert state.consistent_index == 9
    assert sorted((a.member_id, a.alarm) for a in state.alarms) == \
        [(5, "ALARM_9"), (7, "CORRUPT"), (0x12B, "NOSPACE")]
    for bad, why in ((b"\x08", "Error parsing"),  # truncated varint
                     (b"\x0a\x01\x07", "field 1 has the wrong wire type"),  # memberID as bytes
                     (b"\x08\x07\x15\x01\x00\x00\x00", "field 2 has the wrong wire type")):
        with pytest.raises(FormatError, match=why) as err:
            read_backend(BytesSource(backend_with_alarm_keys([bad]), "db"))
        assert err.value.file == "db" and err.value.offset > 0
        assert bad.hex() in str(err.value)

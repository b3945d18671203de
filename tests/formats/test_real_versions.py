"""Every reader, and inspect's ``read_disk``, on states real etcd 3.6 and 3.7 leave behind.

What 3.6 and 3.7 change on disk, from etcd-io/etcd's source at the tags installed here:

* ``meta/storageVersion`` (server/storage/schema/bucket.go @v3.6.16: the only key "Since
  v3.6"), set to "<major>.<minor>.0" by ``UpdateStorageVersionIfNeeded``
  (server/etcdserver/version/monitor.go) once the cluster version is known, within
  ``monitorVersionInterval`` (4 s) of a member's start; a member that joined a moment ago has
  none yet. ``etcdutl migrate`` sets it offline (schema/migration.go: one minor per step; the
  3.6 step adds the key, the 3.7 step only sets it, schema.go @v3.7.3; 3.5 removes it).
* 3.6 loads the membership from the ``members``/``members_removed`` buckets
  (``RaftCluster.UnsafeLoad``, server/etcdserver/api/membership/cluster.go @v3.6.16), not from
  the v2 store: the backend is the membership's source of truth from 3.6 on.
* 3.7 no longer loads v2 ``.snap`` files: bootstrap takes the newest WAL snapshot record
  (``recoverSnapshot``, server/etcdserver/bootstrap.go @v3.7.3), but 3.7.3 still writes them
  (``EtcdServer.snapshot``, server/etcdserver/server.go @v3.7.3: "For backward compatibility,
  generate v2 snapshot from v3 state", then ``storage.SaveSnap``). A 3.7 data dir without them
  is one 3.7.3 starts from (proven below by starting it).
* 3.7 encodes WAL records and backend values with google.golang.org/protobuf (see
  test_wal's module doc); the framing and layout are unchanged.

The hand-built 3.6/3.7 shapes that used to stand in for real builds (tests/formats/shaped.py
and test_shaped_versions.py, made by rewriting a real 3.5.16 db) are gone, fixture by fixture,
because a real build now reaches each state they modelled:

* 3.5 db + ``storageVersion`` 3.6.0 / 3.7.0 (``etcdutl migrate`` offline): made here by the
  real ``etcdutl migrate`` of 3.6 and 3.7 (``test_etcdutl_migrate_round_trip``), and by
  real 3.6 and 3.7 runs everywhere else;
* ``cluster/clusterVersion`` 3.6.0 (an online upgrade): real 3.6/3.7 runs and the
  3.5 -> 3.6 -> 3.7 upgrade of one data dir (``test_upgrade_in_place``);
* a learner kept and a member removed (``members``/``members_removed``): the real clusters
  of ``test_cluster_*``, with a learner started, caught up and promoted, another never
  started, and a voter removed;
* 3.7 without ``.snap`` files: a real 3.7.3 data dir with them removed, which 3.7.3 then
  runs on and writes to (``test_37_without_snap_files``);
* WAL entries in 3.7's encoding after older ones, and such a record with a broken CRC:
  the upgraded data dir, and test_wal's damage tests on real 3.7 WALs;
* the hand-written bbolt writer (and its control, a rewritten 3.5 db) existed only to build
  those shapes.

None is kept: no state they covered is out of a real build's reach.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.backend import BackendState, read_backend
from etcd_recovery.formats.snap import latest_snapshot, read_snap, snapshot_names
from etcd_recovery.formats.source import FileSource
from etcd_recovery.formats.wal import (
    ENTRY_TYPE,
    SNAPSHOT_TYPE,
    STATE_TYPE,
    WalState,
    read_wal,
    wal_file_names,
)
from etcd_recovery.model import PeerView
from etcd_recovery.plan.force_new_cluster import align_step
from etcd_recovery.proto.raft_pb2 import Entry, HardState
from etcd_recovery.proto.wal_pb2 import Record
from etcd_recovery.proto.wal_pb2 import Snapshot as WalSnapshot
from tests.formats.conftest import KEYS, Once, RunFactory
from tests.formats.groundtruth import (
    disk_member,
    hashkv_of,
    read_disk_local,
    snapshot_status_of,
)
from tests.formats.realetcd import (
    Cluster,
    EtcdStatus,
    Ports,
    etcdutl,
    has_hashkv,
    hashkv,
    minor_of,
    running_cluster,
    running_etcd,
    snapshot_status,
)
from tests.formats.test_wal import records_of, walk_frames

CLUSTER_ROLES = ("3.5-newest", "3.6-newest", "3.7-newest")
CLUSTER_ARGS = ("--snapshot-count=40",
                # member add/promote right after start, without waiting out the 5 s health
                # window (mayAddMember, server/etcdserver/server.go @v3.7.3)
                "--strict-reconfig-check=false")
PUTS = 25
RUN_ID = "run-real"


def _db(data_dir: Path) -> Path:
    return data_dir / "member" / "snap" / "db"


def _backend(data_dir: Path) -> BackendState:
    return read_backend(FileSource(_db(data_dir)))


def _wal(data_dir: Path) -> WalState:
    wal_dir = data_dir / "member" / "wal"
    return read_wal([FileSource(wal_dir / n, n) for n in wal_file_names(os.listdir(wal_dir))])


def _storage_version(role: str) -> str | None:
    major, minor = minor_of(role)
    return f"{major}.{minor}.0" if minor >= 6 else None


# ------------------------------------------------------------------------------ a cluster

SURVIVORS = ("m1", "m2", "m4")


@dataclass(frozen=True)
class ClusterRun:
    """A real cluster: m1-m3 started together, m4 added as a learner, started, caught up and
    promoted, m3 removed, m5 added as a learner and never started; then every running member
    stopped with SIGTERM once each had applied everything."""

    role: str
    base: Path
    members: list[dict[str, Any]]  # etcdctl member list -w json, at the end
    status: dict[str, EtcdStatus]  # each running member's, at the end
    ids: dict[str, int]
    removed: str  # the name of the removed member
    never_started: int  # m5's ID

    def dir(self, name: str) -> Path:
        return self.base / name


def _wait_applied(cluster: Cluster, names: list[str]) -> dict[str, EtcdStatus]:
    """Until ``names`` agree on one leader among them (a removed leader leaves an election
    behind, and raft drops proposals without a leader) and have applied all they hold."""
    deadline = time.monotonic() + 15
    while True:
        status = {n: cluster.member(n).status() for n in names}
        views = {(s.leader, s.raft_index, s.raft_applied_index) for s in status.values()}
        leader = next(iter(views))[0]
        if len(views) == 1 and leader in {s.member_id for s in status.values()} and \
                status[names[0]].raft_index == status[names[0]].raft_applied_index:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"members did not converge: {status}")
        time.sleep(0.05)


def _wait_storage_version_on_disk(data_dir: Path, role: str, timeout: float = 15.0) -> None:
    """Until the db file itself holds meta/storageVersion. The status reads it through the
    backend's read buffer (``StorageVersion``, server/etcdserver/server.go @v3.6.16), so it can
    show a version the file does not have yet: a full CI run once found a member that showed
    one and left a db without it. Read the running member's file until it is there."""
    want = _storage_version(role)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _backend(data_dir).storage_version == want:
                return
        except (FormatError, OSError):  # a page caught mid-write: read again
            time.sleep(0.01)
        if time.monotonic() > deadline:
            raise AssertionError(f"{data_dir}: no storage version {want} on disk in {timeout} s")
        time.sleep(0.05)


def _make_cluster(role: str, base: Path) -> ClusterRun:
    with running_cluster(role, base, extra_args=CLUSTER_ARGS) as cluster:
        m1 = cluster.member("m1")
        m1.put_many(PUTS, prefix="a", per_txn=1)
        ports = Ports.free()
        added = m1.etcdctl_json("member", "add", "m4", "--learner",
                                f"--peer-urls={ports.peer_url}")
        m4_id = int(added["member"]["ID"])
        initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster.members)
        cluster.join("m4", ports, f"{initial},m4={ports.peer_url}", learner=True)
        m1.put_many(PUTS, prefix="b", per_txn=1)
        # Raft drops a configuration change proposed before the leader applied the previous
        # one (etcd then waits out the request's deadline): let every member apply first.
        _wait_applied(cluster, ["m1", "m2", "m3"])
        deadline = time.monotonic() + 15
        while True:  # "can only promote a learner member which is in sync with leader"
            try:
                m1.etcdctl("member", "promote", f"{m4_id:x}")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        ids = {m.name: m.status().member_id for m in cluster.members}
        _wait_applied(cluster, ["m1", "m2", "m3", "m4"])
        m1.etcdctl("member", "remove", f"{ids['m3']:x}")
        cluster.member("m3").stop(signal.SIGTERM)  # it shuts itself down; make sure
        _wait_applied(cluster, list(SURVIVORS))
        m5 = m1.etcdctl_json("member", "add", "m5", "--learner",
                             "--peer-urls=http://127.0.0.1:9")
        m1.put_many(PUTS, prefix="c", per_txn=1)
        members = m1.etcdctl_json("member", "list")["members"]
        for name in ("m1", "m2"):  # ran from the start; m4 may not have had its check yet
            cluster.member(name).wait_storage_version()
            _wait_storage_version_on_disk(cluster.member(name).data_dir, role)
        status = _wait_applied(cluster, list(SURVIVORS))
        # Followers first: a leader stopped with SIGTERM hands leadership over first
        # (EtcdServer.Stop -> TransferLeadership), and the new leader's term-start entry
        # would move every survivor past the status just read.
        leader = next(n for n in SURVIVORS if status[n].leader == status[n].member_id)
        for name in sorted(SURVIVORS, key=lambda n: n == leader):
            cluster.member(name).stop(signal.SIGTERM)
    return ClusterRun(role=role, base=base, members=members, status=status, ids=ids,
                      removed="m3", never_started=int(m5["member"]["ID"]))


@pytest.fixture(scope="module", params=CLUSTER_ROLES)
def cluster_run(request: pytest.FixtureRequest, once: Once) -> ClusterRun:
    role: str = request.param
    return once(f"cluster-{role}", partial(_make_cluster, role))


def test_cluster_backend_membership(cluster_run: ClusterRun) -> None:
    """Each survivor's ``members`` bucket is the member list etcd served (names, peer and
    client URLs, learner flags; a never-started learner has neither name nor client URLs),
    ``members_removed`` names the removed voter, ``confState`` the voters and learner."""
    run = cluster_run
    listed = {int(m["ID"]): m for m in run.members}
    removed_id = run.ids[run.removed]
    survivors = {run.ids[n] for n in SURVIVORS}
    assert set(listed) == survivors | {run.never_started}
    for name in SURVIVORS:
        be = _backend(run.dir(name))
        st = run.status[name]
        assert {m.id for m in be.members} == set(listed), name
        for m in be.members:
            want = listed[m.id]
            assert m.name == want.get("name"), name
            assert m.peer_urls == tuple(want["peerURLs"]), name
            assert m.client_urls == tuple(want.get("clientURLs", ())), name
            assert m.is_learner is bool(want.get("isLearner", False)), name
        assert be.removed_member_ids == (removed_id,)
        assert be.conf_state is not None
        assert set(be.conf_state.voters) == survivors
        assert be.conf_state.learners == (run.never_started,)
        assert be.consistent_index == st.raft_applied_index == st.raft_index
        assert be.revision == st.revision == 3 * PUTS + 1
        assert be.term == st.raft_term
        assert be.cluster_version == f"{'.'.join(map(str, minor_of(run.role)))}.0"
    # m1 and m2 ran from the start (and were waited for): their storage version is set; m4
    # joined moments before the end and may not have had its first version check yet.
    want_sv = _storage_version(run.role)
    assert [_backend(run.dir(n)).storage_version for n in ("m1", "m2")] == [want_sv] * 2
    assert _backend(run.dir("m4")).storage_version in (None, want_sv)


def test_cluster_wal_and_snap(cluster_run: ClusterRun) -> None:
    """Each member's WAL names it and the cluster; its newest snapshot record and newest
    ``.snap`` file (3.7.3 still writes them) agree on index, term and membership."""
    run = cluster_run
    cluster_ids = set()
    for name in (*SURVIVORS, run.removed):
        wal = _wal(run.dir(name))
        assert wal.node_id == run.ids[name] and not wal.torn_tail
        cluster_ids.add(wal.cluster_id)
        snap_dir = run.dir(name) / "member" / "snap"
        latest = latest_snapshot(os.listdir(snap_dir))
        assert latest is not None, name
        info = read_snap(FileSource(snap_dir / latest))
        mark = wal.snapshots[-1]
        assert info.crc_ok
        assert (info.index, info.term) == (mark.index, mark.term)
        assert (info.voters, info.learners) == (mark.voters, mark.learners)
        if name in SURVIVORS:
            st = run.status[name]
            assert wal.last_index >= wal.hardstate_commit >= st.raft_index
            assert wal.hardstate_term == st.raft_term
    assert cluster_ids == {run.status["m1"].cluster_id}


def test_cluster_read_disk(cluster_run: ClusterRun) -> None:
    """inspect reads each stopped member as etcd would restart it: the membership of the
    backend (a never-started learner unnamed), the removed voter, its own IDs."""
    run = cluster_run
    want = tuple(sorted(
        (PeerView(int(m["ID"]), m.get("name", ""), tuple(m["peerURLs"]),
                  bool(m.get("isLearner", False))) for m in run.members),
        key=lambda p: p.id))
    for name in SURVIVORS:
        st, _ = read_disk_local(run.dir(name), name)
        assert st.error is None and st.source == "disk" and not st.corrupt
        assert (st.member_id, st.cluster_id) == (run.ids[name], run.status["m1"].cluster_id)
        assert tuple(sorted(st.membership, key=lambda p: p.id)) == want
        assert st.removed_ids == (run.ids[run.removed],)
        assert st.revision == run.status[name].revision
        assert st.storage_version == _backend(run.dir(name)).storage_version
    # The removed member is still readable; it knows it was removed once it applied that.
    st, _ = read_disk_local(run.dir(run.removed), run.removed)
    assert st.error is None and st.member_id == run.ids[run.removed]
    assert st.cluster_id == run.status["m1"].cluster_id


def test_cluster_kv_hashes(cluster_run: ClusterRun, tmp_path: Path) -> None:
    """The survivors hold the same keyspace: the same KV hash, from etcdutl hashkv (3.6+)
    and from this reader's walk of each db."""
    run = cluster_run
    ours = {n: hashkv_of(_db(run.dir(n))) for n in SURVIVORS}
    assert len({json.dumps(h, sort_keys=True) for h in ours.values()}) == 1
    if has_hashkv(run.role):
        for n in SURVIVORS:
            assert hashkv(run.role, _db(run.dir(n)), tmp_path) == ours[n]
    else:
        assert minor_of(run.role) < (3, 6)


# ------------------------------------------------------------------------------ caught up

CATCHUP_ROLE = "3.6-newest"


@dataclass(frozen=True)
class CatchUpRun:
    """m3 stopped; the leader moved twice (m3 was one of them or not: two new terms); the
    others went on, took snapshots and compacted their raft logs (``--snapshot-count=10``,
    ``--snapshot-catchup-entries=5``); m3 started again and caught up from the leader's
    snapshot, then got a few entries more; all stopped with SIGTERM."""

    role: str
    base: Path
    ids: dict[str, int]
    down_at: EtcdStatus  # m3 just before it stopped
    status: dict[str, EtcdStatus]  # every member at the end


def _leader(status: dict[str, EtcdStatus]) -> str:
    return next(n for n, st in status.items() if st.leader == st.member_id)


def _make_catch_up(role: str, base: Path) -> CatchUpRun:
    catchup = ("--experimental-snapshot-catchup-entries=5" if minor_of(role) < (3, 6)
               else "--snapshot-catchup-entries=5")
    args = ("--snapshot-count=10", catchup)
    with running_cluster(role, base, extra_args=args) as cluster:
        m1 = cluster.member("m1")
        m1.put_many(5, prefix="a", per_txn=1)
        status = _wait_applied(cluster, ["m1", "m2", "m3"])
        ids = {n: st.member_id for n, st in status.items()}
        down_at = status["m3"]
        cluster.member("m3").stop(signal.SIGTERM)
        status = _wait_applied(cluster, ["m1", "m2"])
        leader = _leader(status)
        other = "m2" if leader == "m1" else "m1"
        cluster.member(leader).etcdctl("move-leader", f"{ids[other]:x}")
        _wait_applied(cluster, ["m1", "m2"])
        cluster.member(other).put_many(40, prefix="b", per_txn=1)
        cluster.restart("m3")
        _wait_applied(cluster, ["m1", "m2", "m3"])
        cluster.member(other).put_many(3, prefix="c", per_txn=1)
        status = _wait_applied(cluster, ["m1", "m2", "m3"])
        leader = _leader(status)
        for name in sorted(status, key=lambda n: n == leader):
            cluster.member(name).stop(signal.SIGTERM)
    return CatchUpRun(role=role, base=base, ids=ids, down_at=down_at, status=status)


@pytest.fixture(scope="module")
def catch_up_run(once: Once) -> CatchUpRun:
    return once(f"catch-up-{CATCHUP_ROLE}", partial(_make_catch_up, CATCHUP_ROLE))


def test_caught_up_from_the_leaders_snapshot(catch_up_run: CatchUpRun) -> None:
    """A member that caught up from its leader's snapshot keeps, in its WAL, the entries it
    had before and then the snapshot record: its log is the snapshot and what followed. The
    terms read must never contradict the leader's log (the old entries' term stood for the
    indexes up to the snapshot before the fix: a term the leader's log does not have there)."""
    run = catch_up_run
    m3 = _wal(run.base / "m3")
    leader_name = _leader(run.status)
    leader = _wal(run.base / leader_name)
    got = [m for m in m3.snapshots if m.index > run.down_at.raft_index + 10]
    assert got, "m3 restored a snapshot from its leader"
    received = got[0]
    assert received.term > run.down_at.raft_term
    assert (m3.last_index, m3.last_term) == (leader.last_index, leader.last_term)
    assert m3.last_index == run.status["m3"].raft_index
    assert m3.term_starts[0] == (received.index, received.term)
    for i in range(1, leader.last_index + 1):
        mine = m3.term_at(i)
        assert mine is None or mine == leader.term_at(i), i
    assert all(m3.term_at(i) is None for i in range(1, received.index))
    st, _ = read_disk_local(run.base / "m3", "m3")
    assert (st.last_index, st.last_term) == (leader.last_index, leader.last_term)
    assert st.term_starts == m3.term_starts


def test_crash_right_after_the_leaders_snapshot(catch_up_run: CatchUpRun,
                                                 tmp_path: Path) -> None:
    """The same WAL cut where a crash right after restoring the snapshot leaves it (after the
    snapshot record and the HardState committing it, before any later entry): the log ends at
    the snapshot, in its term, not at the older entries before it."""
    run = catch_up_run
    data = tmp_path / "m3"
    shutil.copytree(run.base / "m3", data)
    full = _wal(data)
    received = next(m for m in full.snapshots if m.index > run.down_at.raft_index + 10)
    wal_dir = data / "member" / "wal"
    last = wal_dir / wal_file_names(os.listdir(wal_dir))[-1]
    raw = last.read_bytes()[:1 << 20]
    cut = None
    seen_snap = False
    for f in walk_frames(raw):
        rec = Record.FromString(raw[f.body_offset:f.body_offset + f.rec_bytes])
        if rec.type == SNAPSHOT_TYPE and WalSnapshot.FromString(rec.data).index == \
                received.index:
            seen_snap = True
        elif seen_snap and rec.type == ENTRY_TYPE:
            raise AssertionError("no HardState between the snapshot record and the entries")
        elif seen_snap and rec.type == STATE_TYPE and \
                HardState.FromString(rec.data).commit >= received.index:
            cut = f.end
            break
    assert cut is not None
    os.truncate(last, cut)
    wal = _wal(data)
    assert not wal.torn_tail and wal.end_offset == cut
    assert wal.hardstate_commit == received.index
    assert (wal.last_index, wal.last_term) == (received.index, received.term)
    assert wal.term_starts == ((received.index, received.term),)
    assert wal.entry_count < full.entry_count
    st, _ = read_disk_local(data, "m3")
    assert (st.last_index, st.last_term) == (received.index, received.term)


# ------------------------------------------------------------------------------ 3.7: no .snap

@dataclass(frozen=True)
class NoSnapRun:
    data_dir: Path  # a real 3.7.3 data dir with its .snap files removed
    before: EtcdStatus  # what 3.7.3 reported before it stopped on it
    after: EtcdStatus  # 3.7.3 started on a copy of data_dir
    removed: tuple[str, ...]
    rewritten: tuple[str, ...]  # .snap files in the copy after that start


def _make_no_snap(real_run: RunFactory, base: Path) -> NoSnapRun:
    src = real_run("3.7-newest", signal.SIGTERM)
    data = base / "data"
    shutil.copytree(src.data_dir, data)
    snap_dir = data / "member" / "snap"
    removed = tuple(snapshot_names(os.listdir(snap_dir)))
    for name in removed:
        os.remove(snap_dir / name)
    started = base / "started"
    shutil.copytree(data, started)
    with running_etcd("3.7-newest", started) as etcd:  # default --snapshot-count
        got = etcd.etcdctl_json("get", "key00000007")
        assert got["count"] == 1
        after = etcd.status()
        etcd.stop(signal.SIGTERM)
    rewritten = tuple(snapshot_names(os.listdir(started / "member" / "snap")))
    return NoSnapRun(data_dir=data, before=src.status, after=after, removed=removed,
                     rewritten=rewritten)


@pytest.fixture(scope="module")
def no_snap_run(once: Once, real_run: RunFactory) -> NoSnapRun:
    return once("no-snap-3.7", partial(_make_no_snap, real_run))


def test_37_without_snap_files(no_snap_run: NoSnapRun) -> None:
    """A 3.7 data dir whose only snapshot state is the WAL's snapshot records (its .snap
    files removed): 3.7.3 starts from it with all its data and needs no .snap to do so; the
    readers and read_disk take the snapshot index from those records."""
    run = no_snap_run
    assert len(run.removed) >= 3
    assert (run.after.member_id, run.after.revision) == (run.before.member_id,
                                                        run.before.revision)
    assert run.after.raft_applied_index > run.before.raft_index  # its own new-term entry
    assert run.rewritten == ()
    names = os.listdir(run.data_dir / "member" / "snap")
    assert latest_snapshot(names) is None and names == ["db"]
    wal = _wal(run.data_dir)
    assert 0 < wal.snapshot_index <= wal.hardstate_commit
    assert len(wal.snapshots) == len(run.removed) + 1  # and the initial empty one
    assert wal.last_index >= run.before.raft_index and not wal.torn_tail
    st, _ = read_disk_local(run.data_dir)
    assert st.error is None and not st.corrupt
    assert st.snapshot_index == wal.snapshot_index
    assert (st.last_index, st.last_term) == (wal.last_index, wal.last_term)
    assert st.revision == run.before.revision
    assert st.storage_version == "3.7.0"
    assert [p.id for p in st.membership] == [run.before.member_id]
    assert align_step(disk_member(), st, RUN_ID).params["target"] == "none"


# ------------------------------------------------------------------------------ upgrades

UPGRADE = ("3.5-newest", "3.6-newest", "3.7-newest")


@dataclass(frozen=True)
class UpgradeRun:
    data_dir: Path
    status: dict[str, EtcdStatus]  # after each build's writes
    storage_version: dict[str, str | None]  # read from the db after each build stopped


def _make_upgrade(base: Path) -> UpgradeRun:
    data = base / "data"
    status: dict[str, EtcdStatus] = {}
    sv: dict[str, str | None] = {}
    for role in UPGRADE:
        with running_etcd(role, data, extra_args=("--snapshot-count=40",)) as etcd:
            etcd.put_many(PUTS, prefix=role, per_txn=1)
            status[role] = etcd.wait_storage_version()
            etcd.stop(signal.SIGTERM)
        sv[role] = _backend(data).storage_version
    return UpgradeRun(data_dir=data, status=status, storage_version=sv)


def test_upgrade_in_place(once: Once, tmp_path: Path) -> None:
    """One data dir run by 3.5, then 3.6, then 3.7: its WAL holds entries in both encodings
    (3.7 leaves a normal entry's Type off), and every reader follows it."""
    run = once("upgrade", _make_upgrade)
    last = run.status[UPGRADE[-1]]
    assert run.storage_version == {"3.5-newest": None, "3.6-newest": "3.6.0",
                                   "3.7-newest": "3.7.0"}
    assert [run.status[r].revision for r in UPGRADE] == [1 + PUTS * (i + 1)
                                                         for i in range(len(UPGRADE))]
    wal = _wal(run.data_dir)
    assert (wal.node_id, wal.cluster_id) == (last.member_id, last.cluster_id)
    assert wal.last_index >= wal.hardstate_commit >= last.raft_index
    assert wal.last_term == last.raft_term == len(UPGRADE) + 1  # one election per start
    wal_dir = run.data_dir / "member" / "wal"
    raw = b"".join((wal_dir / n).read_bytes()[:1 << 20]
                   for n in wal_file_names(os.listdir(wal_dir)))
    normal = [r.data for r in records_of(raw)
              if r.type == ENTRY_TYPE and Entry.FromString(r.data).Type == 0]
    typed = [d[:2] == b"\x08\x00" for d in normal]
    assert typed[:2 * PUTS] == [True] * (2 * PUTS)  # 3.5 and 3.6 wrote Type
    assert False in typed[2 * PUTS:]  # 3.7 did not
    be = _backend(run.data_dir)
    assert (be.revision, be.consistent_index) == (last.revision, last.raft_index)
    assert (be.cluster_version, be.storage_version) == ("3.7.0", "3.7.0")
    assert snapshot_status("3.7-newest", _db(run.data_dir), tmp_path) == \
        snapshot_status_of(_db(run.data_dir), (3, 7))
    assert hashkv("3.7-newest", _db(run.data_dir), tmp_path) == hashkv_of(_db(run.data_dir))
    st, _ = read_disk_local(run.data_dir)
    assert (st.last_index, st.revision, st.storage_version) == (wal.last_index,
                                                                last.revision, "3.7.0")


def test_etcdutl_migrate_round_trip(real_run: RunFactory, tmp_path: Path) -> None:
    """``etcdutl migrate`` (offline) on a real 3.5 data dir: 3.6's adds storageVersion 3.6.0,
    3.7's sets 3.7.0, back to 3.5 removes it; nothing else in the db changes (the same
    etcdutl hash once back at 3.5), and the readers see just that."""
    src = real_run("3.5-newest", signal.SIGTERM)
    data = tmp_path / "data"
    shutil.copytree(src.data_dir, data)
    ref = _backend(data)
    ref_hash = snapshot_status_of(_db(data), (3, 5))["hash"]
    for util, target, want in (("3.6-newest", "3.6", "3.6.0"), ("3.7-newest", "3.7", "3.7.0"),
                               ("3.7-newest", "3.5", None)):
        res = etcdutl(util, "migrate", "--data-dir", str(data), "--target-version", target)
        assert res.returncode == 0, res.stderr
        be = _backend(data)
        assert be.storage_version == want
        assert (be.revision, be.consistent_index, be.term, be.members, be.removed_member_ids,
                be.conf_state, be.cluster_version) == \
            (ref.revision, ref.consistent_index, ref.term, ref.members,
             ref.removed_member_ids, ref.conf_state, ref.cluster_version)
        assert snapshot_status(util, _db(data), tmp_path / "scratch") == \
            snapshot_status_of(_db(data), minor_of(util))
        st, _ = read_disk_local(data)
        assert st.storage_version == want and st.revision == src.status.revision
    assert snapshot_status_of(_db(data), (3, 5))["hash"] == ref_hash


# ------------------------------------------------------------------------------ 3.6.0

def test_360_data_dir(real_run: RunFactory, tmp_path: Path) -> None:
    """The first 3.6 release: the same on disk as the newest 3.6."""
    run = real_run("3.6.0", signal.SIGTERM)
    st_ = run.status
    assert st_.version == "3.6.0"
    wal = _wal(run.data_dir)
    assert (wal.node_id, wal.cluster_id) == (st_.member_id, st_.cluster_id)
    assert wal.last_index >= wal.hardstate_commit >= st_.raft_index >= KEYS
    be = _backend(run.data_dir)
    assert (be.revision, be.consistent_index, be.term) == (st_.revision, st_.raft_index,
                                                           st_.raft_term)
    assert (be.cluster_version, be.storage_version) == ("3.6.0", "3.6.0")
    assert [m.name for m in be.members] == ["m1"]
    snap_dir = run.data_dir / "member" / "snap"
    latest = latest_snapshot(os.listdir(snap_dir))
    assert latest is not None
    info = read_snap(FileSource(snap_dir / latest))
    assert (info.index, info.term, info.voters) == (wal.snapshot_index, wal.snapshot_term,
                                                    (st_.member_id,))
    assert snapshot_status("3.6.0", _db(run.data_dir), tmp_path) == \
        snapshot_status_of(_db(run.data_dir), (3, 6))
    assert hashkv("3.6.0", _db(run.data_dir), tmp_path) == hashkv_of(_db(run.data_dir))
    st, _ = read_disk_local(run.data_dir)
    assert (st.member_id, st.revision, st.storage_version) == (st_.member_id, st_.revision,
                                                               "3.6.0")

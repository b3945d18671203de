"""The storage messages generated from proto/etcd_recovery/proto (raft.proto, wal.proto,
snap.proto, metadata.proto) against etcd's definitions, and against the bytes each real etcd
build writes (the data dirs tests/formats/conftest.py makes, shared with test_wal and test_snap).

On real data every record and payload must parse with no unknown field left over (so every
byte went to a field of our definitions, with the wire type they give it) and serialize back to
the very same bytes (so no field was dropped, and presence is kept: 3.4 to 3.6 write zero
values that 3.7 leaves off). The values themselves are checked against what etcd reported.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from etcd_recovery.formats.snap import snapshot_names
from etcd_recovery.formats.wal import (
    CRC_TYPE,
    ENTRY_TYPE,
    METADATA_TYPE,
    SNAPSHOT_TYPE,
    STATE_TYPE,
    crc32c,
    wal_file_names,
)
from etcd_recovery.proto import etcdserver_pb2, metadata_pb2, raft_pb2, snap_pb2, wal_pb2
from tests.formats.conftest import KEYS, RunFactory
from tests.formats.realetcd import ROLES, EtcdRun, minor_of
from tests.formats.test_wal import walk_frames

# (number, type, label) of each field, from etcd's .proto files: raftpb/raft.proto @raft
# v3.6.0, server/storage/wal/walpb/record.proto, server/etcdserver/api/snap/snappb/snap.proto,
# api/etcdserverpb/etcdserver.proto and api/etcdserverpb/rpc.proto (AlarmMember) @etcd v3.6.0.
ETCD_STORAGE_FIELDS: dict[str, dict[str, tuple[int, str, str]]] = {
    "raftpb.Entry": {
        "Term": (2, "UINT64", "OPTIONAL"), "Index": (3, "UINT64", "OPTIONAL"),
        "Type": (1, "ENUM", "OPTIONAL"), "Data": (4, "BYTES", "OPTIONAL"),
    },
    "raftpb.HardState": {
        "term": (1, "UINT64", "OPTIONAL"), "vote": (2, "UINT64", "OPTIONAL"),
        "commit": (3, "UINT64", "OPTIONAL"),
    },
    "raftpb.ConfState": {
        "voters": (1, "UINT64", "REPEATED"), "learners": (2, "UINT64", "REPEATED"),
        "voters_outgoing": (3, "UINT64", "REPEATED"),
        "learners_next": (4, "UINT64", "REPEATED"), "auto_leave": (5, "BOOL", "OPTIONAL"),
    },
    "raftpb.SnapshotMetadata": {
        "conf_state": (1, "MESSAGE", "OPTIONAL"), "index": (2, "UINT64", "OPTIONAL"),
        "term": (3, "UINT64", "OPTIONAL"),
    },
    "raftpb.Snapshot": {
        "data": (1, "BYTES", "OPTIONAL"), "metadata": (2, "MESSAGE", "OPTIONAL"),
    },
    "walpb.Record": {
        "type": (1, "INT64", "OPTIONAL"), "crc": (2, "UINT32", "OPTIONAL"),
        "data": (3, "BYTES", "OPTIONAL"),
    },
    "walpb.Snapshot": {
        "index": (1, "UINT64", "OPTIONAL"), "term": (2, "UINT64", "OPTIONAL"),
        "conf_state": (3, "MESSAGE", "OPTIONAL"),
    },
    "snappb.snapshot": {"crc": (1, "UINT32", "OPTIONAL"), "data": (2, "BYTES", "OPTIONAL")},
    "etcdserverpb.Metadata": {
        "NodeID": (1, "UINT64", "OPTIONAL"), "ClusterID": (2, "UINT64", "OPTIONAL"),
    },
    "etcdserverpb.AlarmMember": {
        "memberID": (1, "UINT64", "OPTIONAL"), "alarm": (2, "ENUM", "OPTIONAL"),
    },
}

MESSAGES: dict[str, Any] = {
    d.full_name: d for d in (
        raft_pb2.Entry.DESCRIPTOR, raft_pb2.HardState.DESCRIPTOR, raft_pb2.ConfState.DESCRIPTOR,
        raft_pb2.SnapshotMetadata.DESCRIPTOR, raft_pb2.Snapshot.DESCRIPTOR,
        wal_pb2.Record.DESCRIPTOR, wal_pb2.Snapshot.DESCRIPTOR, snap_pb2.snapshot.DESCRIPTOR,
        metadata_pb2.Metadata.DESCRIPTOR, etcdserver_pb2.AlarmMember.DESCRIPTOR,
    )
}

# proto2 in etcd (presence: a field absent from the wire is not set); rpc.proto is proto3.
PROTO2 = {"raftpb", "walpb", "snappb"}


@pytest.mark.parametrize("full_name", sorted(ETCD_STORAGE_FIELDS))
def test_fields_match_etcd(full_name: str) -> None:
    desc = MESSAGES[full_name]
    assert desc.full_name == full_name
    got = {
        f.name: (f.number, FieldDescriptorProto.Type.Name(f.type).removeprefix("TYPE_"),
                 "REPEATED" if f.is_repeated else "OPTIONAL")
        for f in desc.fields
    }
    assert got == ETCD_STORAGE_FIELDS[full_name]
    # presence tells proto2 (every singular field) from proto3 (messages only)
    proto2 = full_name.split(".")[0] in PROTO2 or full_name == "etcdserverpb.Metadata"
    for f in desc.fields:
        if not f.is_repeated:
            assert f.has_presence == (proto2 or f.message_type is not None), f.name


def test_entry_type_values_match_etcd() -> None:
    values = {v.name: v.number for v in raft_pb2.EntryType.DESCRIPTOR.values}
    assert values == {"EntryNormal": 0, "EntryConfChange": 1, "EntryConfChangeV2": 2}


def _unknown(msg: Message) -> list[tuple[str, int, int]]:
    """Unknown fields of ``msg`` and of every message inside it: (message, number, wire)."""
    found = []
    unknown = UnknownFieldSet(msg)
    for i in range(len(unknown)):
        found.append((msg.DESCRIPTOR.full_name, unknown[i].field_number, unknown[i].wire_type))
    for field, value in msg.ListFields():
        if field.message_type is not None:
            for sub in (value if field.is_repeated else [value]):
                found += _unknown(sub)
    return found


def _reads_back(cls: type[Message], raw: bytes) -> Message:
    msg = cls.FromString(raw)
    assert _unknown(msg) == []
    assert msg.SerializeToString() == raw
    return msg


@pytest.fixture(scope="module", params=ROLES)
def run(request: pytest.FixtureRequest, real_run: RunFactory) -> EtcdRun:
    return real_run(request.param, signal.SIGTERM)


PAYLOADS: dict[int, type[Message]] = {
    METADATA_TYPE: metadata_pb2.Metadata, ENTRY_TYPE: raft_pb2.Entry,
    STATE_TYPE: raft_pb2.HardState, SNAPSHOT_TYPE: wal_pb2.Snapshot,
}


def test_every_wal_record_reads_back_byte_for_byte(run: EtcdRun) -> None:
    member, cluster = run.status.member_id, run.status.cluster_id
    counts = dict.fromkeys((CRC_TYPE, *PAYLOADS), 0)
    last_index = 0
    for name in wal_file_names(os.listdir(run.wal_dir)):
        raw = (run.wal_dir / name).read_bytes()
        for f in walk_frames(raw):
            rec = _reads_back(wal_pb2.Record, raw[f.body_offset:f.body_offset + f.rec_bytes])
            assert isinstance(rec, wal_pb2.Record)
            counts[rec.type] += 1
            if rec.type == CRC_TYPE:
                assert rec.data == b""
                continue
            msg = _reads_back(PAYLOADS[rec.type], rec.data)
            if isinstance(msg, metadata_pb2.Metadata):
                assert (msg.NodeID, msg.ClusterID) == (member, cluster)
            elif isinstance(msg, raft_pb2.Entry):
                assert msg.Index == last_index + 1 and 1 <= msg.Term <= run.status.raft_term
                last_index = msg.Index
                # 3.4 to 3.6 always write Type, 3.7 leaves EntryNormal off
                assert msg.HasField("Type") == (minor_of(run.role) < (3, 7)
                                                or msg.Type != raft_pb2.EntryNormal)
            elif isinstance(msg, raft_pb2.HardState):
                assert msg.commit <= run.status.raft_index and msg.term <= run.status.raft_term
            else:
                assert isinstance(msg, wal_pb2.Snapshot)
                assert 0 <= msg.index <= run.status.raft_index
                # etcd writes the conf state into the WAL's snapshot records from 3.5 on
                # (not into the empty one at index 0 that starts a new WAL)
                assert msg.HasField("conf_state") == (minor_of(run.role) >= (3, 5)
                                                      and msg.index > 0)
                if msg.HasField("conf_state"):
                    assert list(msg.conf_state.voters) == [member]
    assert counts[ENTRY_TYPE] >= KEYS and counts[METADATA_TYPE] >= 1
    assert counts[STATE_TYPE] >= 1 and counts[SNAPSHOT_TYPE] >= 2
    assert last_index == run.status.raft_index


def test_every_snap_file_reads_back_byte_for_byte(run: EtcdRun) -> None:
    names = snapshot_names(os.listdir(run.snap_dir))
    assert len(names) >= 3
    for name in names:
        raw = (run.snap_dir / name).read_bytes()
        env = _reads_back(snap_pb2.snapshot, raw)
        assert isinstance(env, snap_pb2.snapshot)
        assert env.crc == crc32c(env.data)
        snap = _reads_back(raft_pb2.Snapshot, env.data)
        assert isinstance(snap, raft_pb2.Snapshot)
        meta = snap.metadata
        assert f"{meta.term:016x}-{meta.index:016x}.snap" == name
        assert list(meta.conf_state.voters) == [run.status.member_id]
        assert list(meta.conf_state.learners) == [] and not meta.conf_state.auto_leave
        assert len(snap.data) > 0

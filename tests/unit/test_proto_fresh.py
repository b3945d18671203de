"""The committed generated code matches the .proto files, and those match etcd's API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from etcd_recovery.proto import etcdserver_pb2, kv_pb2

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "etcd_recovery" / "proto"
HANDWRITTEN = {"__init__.py"}


def _committed() -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in PACKAGE.iterdir()
        if p.is_file() and p.name not in HANDWRITTEN and p.suffix in {".py", ".pyi"}
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto"), str(out)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = _committed()
    assert sorted(fresh) == sorted(committed), "run scripts/gen-proto"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale generated files {stale}: run scripts/gen-proto"


# Field name -> number, as in etcd's api/etcdserverpb/rpc.proto and api/mvccpb/kv.proto
# (identical in 3.4 and 3.5 for these fields).
ETCD_FIELDS: dict[str, dict[str, int]] = {
    "mvccpb.KeyValue": {
        "key": 1, "create_revision": 2, "mod_revision": 3, "version": 4, "value": 5,
        "lease": 6,
    },
    "etcdserverpb.ResponseHeader": {
        "cluster_id": 1, "member_id": 2, "revision": 3, "raft_term": 4,
    },
    "etcdserverpb.RangeRequest": {
        "key": 1, "range_end": 2, "limit": 3, "revision": 4, "serializable": 7,
        "keys_only": 8, "count_only": 9,
    },
    "etcdserverpb.RangeResponse": {"header": 1, "kvs": 2, "more": 3, "count": 4},
    "etcdserverpb.PutRequest": {"key": 1, "value": 2},
    "etcdserverpb.PutResponse": {"header": 1},
    "etcdserverpb.RequestOp": {"request_put": 2},
    "etcdserverpb.TxnRequest": {"success": 2, "failure": 3},
    "etcdserverpb.TxnResponse": {"header": 1, "succeeded": 2},
    "etcdserverpb.Member": {
        "ID": 1, "name": 2, "peerURLs": 3, "clientURLs": 4, "isLearner": 5,
    },
    "etcdserverpb.MemberAddRequest": {"peerURLs": 1, "isLearner": 2},
    "etcdserverpb.MemberAddResponse": {"header": 1, "member": 2, "members": 3},
    "etcdserverpb.MemberRemoveRequest": {"ID": 1},
    "etcdserverpb.MemberRemoveResponse": {"header": 1, "members": 2},
    "etcdserverpb.MemberListRequest": {"linearizable": 1},
    "etcdserverpb.MemberListResponse": {"header": 1, "members": 2},
    "etcdserverpb.MemberPromoteRequest": {"ID": 1},
    "etcdserverpb.MemberPromoteResponse": {"header": 1, "members": 2},
    "etcdserverpb.AlarmRequest": {"action": 1, "memberID": 2, "alarm": 3},
    "etcdserverpb.AlarmMember": {"memberID": 1, "alarm": 2},
    "etcdserverpb.AlarmResponse": {"header": 1, "alarms": 2},
    "etcdserverpb.StatusRequest": {},
    "etcdserverpb.StatusResponse": {
        "header": 1, "version": 2, "dbSize": 3, "leader": 4, "raftIndex": 5, "raftTerm": 6,
        "raftAppliedIndex": 7, "errors": 8, "dbSizeInUse": 9, "isLearner": 10,
        "storageVersion": 11,  # 3.6 (api/etcdserverpb/rpc.proto at v3.6.0)
    },
    "etcdserverpb.HashKVRequest": {"revision": 1},
    "etcdserverpb.HashKVResponse": {"header": 1, "hash": 2, "compact_revision": 3},
    "etcdserverpb.AuthenticateRequest": {"name": 1, "password": 2},
    "etcdserverpb.AuthenticateResponse": {"header": 1, "token": 2},
    # The watch, for the restore check (rpc.proto at v3.6.0: WatchCreateRequest's fields 4-8
    # and WatchResponse's fragment (7) and events (11) are left out, and reserved).
    "etcdserverpb.WatchRequest": {"create_request": 1},
    "etcdserverpb.WatchCreateRequest": {"key": 1, "range_end": 2, "start_revision": 3},
    "etcdserverpb.WatchResponse": {
        "header": 1, "watch_id": 2, "created": 3, "canceled": 4, "compact_revision": 5,
        "cancel_reason": 6,
    },
}

ETCD_METHODS = {
    "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/Txn",
    "/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberList", "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm", "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/HashKV", "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Watch/Watch",
}


def _message(full_name: str) -> Any:
    package, _, name = full_name.partition(".")
    module = kv_pb2 if package == "mvccpb" else etcdserver_pb2
    return module.DESCRIPTOR.message_types_by_name[name]


@pytest.mark.parametrize("full_name", sorted(ETCD_FIELDS))
def test_fields_match_etcd(full_name: str) -> None:
    desc = _message(full_name)
    assert desc.full_name == full_name
    assert {f.name: f.number for f in desc.fields} == ETCD_FIELDS[full_name]


def test_methods_match_etcd() -> None:
    paths = {
        f"/{service.full_name}/{method.name}"
        for service in etcdserver_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert paths == ETCD_METHODS


def test_enums_match_etcd() -> None:
    alarm = etcdserver_pb2.DESCRIPTOR.enum_types_by_name["AlarmType"]
    assert {v.name: v.number for v in alarm.values} == {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}
    action = etcdserver_pb2.AlarmRequest.DESCRIPTOR.enum_types_by_name["AlarmAction"]
    assert {v.name: v.number for v in action.values} == {
        "GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2,
    }


def test_wire_bytes_of_a_status_response() -> None:
    # Hand-encoded: header{member_id=5} (field 1), version "3.5.16" (field 2),
    # leader=5 (field 4), isLearner=true (field 10).
    wire = (
        b"\x0a\x02\x10\x05"
        b"\x12\x063.5.16"
        b"\x20\x05"
        b"\x50\x01"
    )
    msg = etcdserver_pb2.StatusResponse.FromString(wire)
    assert msg.header.member_id == 5
    assert msg.version == "3.5.16"
    assert msg.leader == 5
    assert msg.isLearner is True
    assert msg.SerializeToString() == wire
    # etcd 3.6's storageVersion (field 11, string): "3.6.0"
    v36 = etcdserver_pb2.StatusResponse.FromString(wire + b"\x5a\x053.6.0")
    assert v36.storageVersion == "3.6.0"

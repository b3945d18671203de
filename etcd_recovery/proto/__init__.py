"""Generated protobuf and gRPC code for the etcd messages the tool reads and sends.

* ``etcdserver_pb2`` (+ ``_grpc``), ``kv_pb2``: the subset of etcd's v3 API the tool calls; use
  :mod:`etcd_recovery.live` rather than these modules directly.
* ``raft_pb2``, ``wal_pb2``, ``snap_pb2``, ``metadata_pb2``: etcd's on-disk messages (raftpb,
  walpb, snappb, etcdserverpb.Metadata), decoded by :mod:`etcd_recovery.formats`; the backend's
  alarm keys are ``etcdserver_pb2.AlarmMember``.

Everything here except this file is written by ``scripts/gen-proto`` from
``proto/etcd_recovery/proto/*.proto``; do not edit it by hand.
"""

"""Generated protobuf and gRPC code for the subset of etcd's v3 API the tool uses.

Everything here except this file is written by ``scripts/gen-proto`` from
``proto/etcd_recovery/proto/*.proto``; do not edit it by hand. Use
:mod:`etcd_recovery.live` rather than these modules directly.
"""

"""Reader for etcd's raft snapshot files (``member/snap/*.snap``), etcd 3.4 and 3.5.

A ``.snap`` file is a ``snappb.snapshot`` {crc, data} whose ``data`` is an encoded
``raftpb.Snapshot`` (the v2 store plus the raft metadata: index, term, conf state) and whose
``crc`` is the CRC-32C of ``data``. Files are named ``%016x-%016x.snap`` (term-index).
etcd renames a file it cannot read to ``*.snap.broken``; ``*.snap.db`` files (a backend received
from the leader) and the ``db`` file live in the same directory and are not snapshots.

Both messages are decoded by the protobuf library (classes generated from
proto/etcd_recovery/proto/snap.proto and raft.proto). A known field with the wrong wire type
parses as an unknown field: in the envelope that leaves ``crc`` 0 or ``data`` empty, refused
below; in ``data``, the CRC shows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.source import ByteSource
from etcd_recovery.formats.wal import crc32c
from etcd_recovery.proto.raft_pb2 import Snapshot
from etcd_recovery.proto.snap_pb2 import snapshot as SnapEnvelope

MAX_SNAP_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 1024 * 1024

_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


@dataclass(frozen=True)
class SnapInfo:
    """What a .snap file holds, without its v2 store payload.

    ``term``/``index``/``voters``/``learners`` come from the snapshot's raft metadata;
    ``data_size`` is the size of the v2 store payload; ``crc_ok`` says whether the envelope's
    CRC matched (etcd refuses a snapshot whose CRC does not match).
    """

    name: str
    term: int
    index: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    data_size: int
    file_size: int
    crc_ok: bool


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def is_snap_name(name: str) -> bool:
    """True for ``%016x-%016x.snap`` (not ``.snap.broken``, ``.snap.db`` or ``db``)."""
    return _SNAP_NAME.match(_base(name)) is not None


def parse_snap_name(name: str) -> tuple[int, int]:
    """``%016x-%016x.snap`` -> (term, index); FormatError for any other name."""
    m = _SNAP_NAME.match(_base(name))
    if m is None:
        raise FormatError(name, 0, "not a snapshot file name (want %016x-%016x.snap)")
    return int(m.group(1), 16), int(m.group(2), 16)


def snapshot_names(names: Iterable[str]) -> list[str]:
    """The snapshot file names among ``names``, newest (highest term, then index) first."""
    return sorted((n for n in names if is_snap_name(n)), key=parse_snap_name, reverse=True)


def latest_snapshot(names: Iterable[str]) -> str | None:
    """The newest snapshot file name among ``names``, or None if there is none."""
    snaps = snapshot_names(names)
    return snaps[0] if snaps else None


def read_snap(src: ByteSource) -> SnapInfo:
    """Read and check one .snap file. FormatError if it is empty, too big or undecodable.

    A CRC mismatch is reported as ``crc_ok=False`` when the payload still decodes.
    """
    size = src.size()
    if size > MAX_SNAP_BYTES:
        raise FormatError(src.name, 0,
                          f"snapshot file is {size} bytes, more than the {MAX_SNAP_BYTES} allowed")
    raw = _read_all(src, size)
    if not raw:
        raise FormatError(src.name, 0, "empty snapshot file")
    try:
        envelope = SnapEnvelope.FromString(raw)
    except DecodeError as exc:
        raise FormatError(src.name, 0, f"malformed snapshot envelope: {exc}") from exc
    data = envelope.data
    if not data or envelope.crc == 0:
        raise FormatError(src.name, 0, "snapshot has no data or no CRC")
    crc_ok = crc32c(data) == envelope.crc
    # etcd writes the data field last, so it starts at len(raw) - len(data).
    data_off = len(raw) - len(data)
    try:
        snap = Snapshot.FromString(data)
    except DecodeError as exc:
        what = "CRC mismatch and malformed" if not crc_ok else "malformed"
        raise FormatError(src.name, max(data_off, 0),
                          f"{what} raft snapshot payload: {exc}") from exc
    meta = snap.metadata
    return SnapInfo(
        name=src.name,
        term=meta.term,
        index=meta.index,
        voters=tuple(meta.conf_state.voters),
        learners=tuple(meta.conf_state.learners),
        data_size=len(snap.data),
        file_size=len(raw),
        crc_ok=crc_ok,
    )


def _read_all(src: ByteSource, size: int) -> bytes:
    parts: list[bytes] = []
    off = 0
    while off < size:
        piece = src.read(off, min(_READ_CHUNK, size - off))
        if not piece:
            break
        parts.append(piece)
        off += len(piece)
    if off > MAX_SNAP_BYTES:
        raise FormatError(src.name, 0, f"snapshot file grew past {MAX_SNAP_BYTES} bytes")
    return b"".join(parts)


__all__ = [
    "MAX_SNAP_BYTES",
    "SnapInfo",
    "is_snap_name",
    "latest_snapshot",
    "parse_snap_name",
    "read_snap",
    "snapshot_names",
]

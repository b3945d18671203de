"""What doctor read on each host and from each member's etcd: plain frozen values, so that the
checks (checks.py) are pure functions of them and unit tests feed them recorded readings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..hostchecks import CertInfo, HostCheck
from ..live import AlarmInfo, LiveStatus, MemberInfo
from ..model import Check as ModelCheck
from .metrics import Histogram


@dataclass(frozen=True)
class Timed:
    """One timed reading: how long it took, and why it failed (None: it worked)."""

    seconds: float
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class MemberReadings:
    name: str
    host: str
    ssh: Timed | None = None          # SSH in and a command; None: not tried
    sudo: Timed | None = None         # a command as root (sudo -n for a non-root user)
    etcd_running: bool | None = None  # pgrep -x etcd
    flags: Mapping[str, str] = field(default_factory=dict)  # etcd's flags (process, else file)
    flags_source: str = ""            # "process", "config file" or ""
    status: LiveStatus | None = None
    status_error: str | None = None
    members: tuple[MemberInfo, ...] | None = None  # serializable MemberList
    member_list_error: str | None = None
    alarms: tuple[AlarmInfo, ...] | None = None
    alarms_error: str | None = None
    read_serializable: Timed | None = None
    read_linearizable: Timed | None = None
    metrics: Mapping[str, list[Histogram] | float] | None = None
    metrics_error: str | None = None
    metrics_url: str = ""
    clock_offset_s: float | None = None       # host clock minus ours, at the command's middle
    clock_uncertainty_s: float | None = None  # half the command's round trip
    data_size: int | None = None              # du -sb of the data dir
    free_bytes: int | None = None             # df of where backups go (or its parent)
    free_path: str = ""
    data_mount: str | None = None             # mount point holding the data dir
    wal_mount: str | None = None              # mount point holding --wal-dir (None: no flag)
    certs: Mapping[str, CertInfo | str] = field(default_factory=dict)  # path -> cert or why
    cert_checks: tuple[HostCheck, ...] = ()   # hostchecks' readability and SAN checks
    # the inventory's fields against the host's configuration file and running etcd
    # (crosscheck: what `inventory discover` would write for the member today)
    config_checks: tuple[ModelCheck, ...] = ()
    version: str | None = None
    data_dir_readable: Timed | None = None
    disk_reader: Timed | None = None          # inspect's WAL reader, in place, etcd running
    error: str | None = None                  # the host's reading gave up (its timeout)


@dataclass(frozen=True)
class InventoryMember:
    name: str
    peer_url: str


@dataclass(frozen=True)
class ClusterReadings:
    cluster: str
    inventory: tuple[InventoryMember, ...]
    members: tuple[MemberReadings, ...]
    now: dt.datetime
    # Status of every answering member, per round: a round is taken again (up to 3) while
    # the soft fields differ (etcd-diagnosis' retries).
    status_rounds: tuple[Mapping[str, LiveStatus], ...] = ()
    client_cert: CertInfo | str | None = None     # the operator's client certificate
    client_cert_path: str = ""
    plan: Timed | None = None                     # plan --allow-quorum, nothing changed

"""The recovery methods, and the one place that picks a method's planner.

* ``force-new-cluster`` (the default, :func:`.plan.force_new_cluster.make_plan`): the kept
  member restarts alone with --force-new-cluster; every other member comes back as a
  learner, one at a time.
* ``snapshot`` (:func:`.plan.snapshot.make_snapshot_plan`): one snapshot of the kept
  member's whole log, restored on every member at once with a new cluster token.
* ``--from-snapshot FILE`` (:func:`.plan.snapshot.make_file_plan`): every member restored
  from a snapshot file when no member's data is to be trusted.

``plan``, ``execute`` and a resumed run all derive their plan here, from the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from . import versions
from .errors import UsageError
from .inventory import Inventory
from .model import InspectReport, NewBinary
from .plan.force_new_cluster import make_plan
from .plan.snapshot import DEFAULT_BUMP, Etcdutl, SnapshotInput, make_file_plan, make_snapshot_plan
from .plan.steps import Plan

METHODS = ("force-new-cluster", "snapshot")


def derive(inv: Inventory, report: InspectReport, configs: Mapping[str, str], run_id: str, *,
           method: str = "force-new-cluster", keys_before: int | None = None,
           allow_quorum: bool = False, take_over_lock: bool = False,
           exclude: Sequence[str] = (), etcd_image: str | None = None,
           etcd_binary: NewBinary | None = None, tools: Mapping[str, Etcdutl] | None = None,
           snapshot_file: SnapshotInput | None = None, bump_revision: int | None = None,
           skip_hash_check: bool = False, allow_older_data: bool = False) -> Plan:
    """The plan of the method asked for (pure: planning over what was read)."""
    if method not in METHODS:
        raise UsageError(f"--method {method!r}: one of {', '.join(METHODS)}")
    bump = DEFAULT_BUMP if bump_revision is None else bump_revision
    if bump <= 0:
        raise UsageError(f"--bump-revision {bump}: give a positive number (etcdutl takes "
                         "--bump-revision only with --mark-compacted, which needs it > 0)")
    snapshot_way = method == "snapshot" or snapshot_file is not None
    if not snapshot_way:
        for flag, given in (("--bump-revision", bump_revision is not None),
                            ("--etcdutl", bool(tools and any(t.upload_from for t in
                                                             tools.values()))),
                            ("--skip-hash-check", skip_hash_check),
                            ("--allow-older-data", allow_older_data)):
            if given:
                raise UsageError(f"{flag} applies to the snapshot method (--method snapshot "
                                 "or --from-snapshot)")
        return with_advice(make_plan(inv, report, configs, run_id, keys_before=keys_before,
                                     allow_quorum=allow_quorum, take_over_lock=take_over_lock,
                                     exclude=exclude, etcd_image=etcd_image,
                                     etcd_binary=etcd_binary), report, method)
    if etcd_image is not None or etcd_binary is not None:
        raise UsageError("--etcd-image and --etcd-binary apply to the force-new-cluster "
                         "method; the snapshot method restores with each member's own build")
    if snapshot_file is not None:
        if allow_quorum or exclude:
            raise UsageError("--allow-quorum and --exclude do not apply to --from-snapshot")
        return make_file_plan(inv, report, configs, run_id, tools or {}, snapshot_file,
                              allow_older_data=allow_older_data,
                              skip_hash_check=skip_hash_check,
                              take_over_lock=take_over_lock, bump=bump)
    if skip_hash_check or allow_older_data:
        raise UsageError("--skip-hash-check and --allow-older-data apply to --from-snapshot")
    return with_advice(make_snapshot_plan(inv, report, configs, run_id, tools or {},
                                          keys_before=keys_before, allow_quorum=allow_quorum,
                                          take_over_lock=take_over_lock, exclude=exclude,
                                          bump=bump), report, method)


# A db this size or more, streamed through this machine to every host, is named as a cost of
# the snapshot method (the default method's learners get it from the kept member directly).
BIG_DB_BYTES = 512 << 20
# The rate at which sending the db to every host costs the snapshot method what the default
# method's learner waits cost it (each learner add after the first waits out etcd's strict
# reconfiguration check: 5 s). Measured with benchmarks/bench.py, 5 members (4 to bring back:
# 10 s of waits), both methods in one run (benchmarks/bench-methods.json): the snapshot method
# took 11.2 s less than the default at 16 MiB and 2.8 s less at 1 GB, a crossover near 1.4 GB,
# which 10 s of waits give at 143 MB/s; a second run of the 1 GB cells had it 17.1 s less
# (29.3 s against 46.4 s). 100 MB/s is kept, erring toward the default method. (Runs before
# the snapshot method skipped a needless forced start and took its backups all at once put
# the crossover at 550-820 MB, 37-54 MB/s. The sends alone ran at 58-119 MB/s per host, 1 GB
# to 3 hosts at once in 9.0-18.4 s; the default method's learners also copy the db, from the
# kept member, host to host.)
STREAM_BYTES_PER_S = 100e6
LEARNER_WAIT_S = 5.0


@dataclass(frozen=True)
class Advice:
    """Which method suits what was inspected, and every reason, for and against."""

    method: str
    reasons: tuple[str, ...]

    def line(self, planned: str) -> str:
        head = (f"method: {planned} as asked; --method {self.method} would suit this cluster "
                "better" if planned != self.method else f"method: {planned} suits this cluster")
        return f"{head}: " + "; ".join(self.reasons)


def recommend(report: InspectReport) -> Advice:
    """The method for this cluster (pure, over the inspection): the snapshot method where it
    saves learner adds (4 or more members to bring back: each add after the first waits out
    etcd's strict reconfiguration check, 5 s) or where a member not reached may still run
    the old cluster and etcd is 3.6 (whose recovery docs restore from a snapshot; the new
    cluster token makes every old member a stranger); the default otherwise, and always when
    a member's etcd is older than 3.5 (no etcdutl)."""
    reachable = [m for m in report.members if m.reachable]
    lost = [m.name for m in report.members if not m.reachable]
    vs = [versions.parse_version(m.etcd_version) for m in reachable]
    old = [m for m, v in zip(reachable, vs, strict=True) if v is not None and v[:2] < (3, 5)]
    if old:
        return Advice("force-new-cluster", (
            f"{', '.join(f'{m.name} runs etcd {m.etcd_version}' for m in old)}: the snapshot "
            "method needs etcdutl, which etcd has from 3.5",))
    newest = max((v for v in vs if v is not None), default=None)
    for_snapshot: list[str] = []
    against: list[str] = []
    db = max((m.db_size_bytes or 0 for m in reachable), default=0)
    saved_s = LEARNER_WAIT_S * max(0, len(reachable) - 2)
    stream_s = db / STREAM_BYTES_PER_S
    if len(reachable) >= 4 and stream_s < saved_s:
        for_snapshot.append(f"{len(reachable)} members to bring back: the default method adds "
                            f"{len(reachable) - 1} learners one at a time, each after the first "
                            "waiting 5 s (etcd's strict reconfiguration check); the snapshot "
                            "method starts every member at once")
    elif len(reachable) >= 4:
        against.append(f"{len(reachable)} members to bring back, but sending the "
                       f"{db >> 20} MiB db to each host takes about {stream_s:.0f} s, more "
                       f"than the {saved_s:.0f} s of learner waits the snapshot method saves")
    else:
        against.append(f"{len(reachable)} member(s) to bring back: the default method adds "
                       f"{max(0, len(reachable) - 1)} learner(s) and restarts fewer things")
    if lost and newest is not None and newest[:2] >= (3, 6):
        for_snapshot.append(f"{', '.join(lost)} not reached may still run the old cluster: etcd "
                            "3.6's recovery docs restore from a snapshot rather than with "
                            "--force-new-cluster, and the restored cluster's new token makes "
                            "every old member a stranger to it")
    if db >= BIG_DB_BYTES:
        against.append(f"the db is {db >> 20} MiB: the snapshot method streams it through this "
                       f"machine to {max(0, len(reachable) - 1)} host(s); the default method's "
                       "learners get it from the kept member directly")
    if for_snapshot and len(for_snapshot) >= len(against):
        return Advice("snapshot", tuple(for_snapshot + against))
    return Advice("force-new-cluster", tuple(against + for_snapshot))


def with_advice(plan: Plan, report: InspectReport, method: str) -> Plan:
    """The plan with the method advice as its last advisory line."""
    return replace(plan, advisories=(*plan.advisories, recommend(report).line(method)))

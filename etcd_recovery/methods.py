"""The recovery methods, and the one place that picks a method's planner.

* ``force-new-cluster`` (the default, :func:`.plan.make_plan`): the kept member restarts
  alone with --force-new-cluster; every other member comes back as a learner, one at a time.
* ``snapshot`` (:func:`.method_snapshot.make_snapshot_plan`): one snapshot of the kept
  member's whole log, restored on every member at once with a new cluster token.
* ``--from-snapshot FILE`` (:func:`.method_snapshot.make_file_plan`): every member restored
  from a snapshot file when no member's data is to be trusted.

``plan``, ``execute`` and a resumed run all derive their plan here, from the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import UsageError
from .inventory import Inventory
from .method_snapshot import (
    DEFAULT_BUMP,
    Etcdutl,
    SnapshotInput,
    make_file_plan,
    make_snapshot_plan,
)
from .model import InspectReport, NewBinary
from .plan import Plan, make_plan

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
        return make_plan(inv, report, configs, run_id, keys_before=keys_before,
                         allow_quorum=allow_quorum, take_over_lock=take_over_lock,
                         exclude=exclude, etcd_image=etcd_image, etcd_binary=etcd_binary)
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
    return make_snapshot_plan(inv, report, configs, run_id, tools or {},
                              keys_before=keys_before, allow_quorum=allow_quorum,
                              take_over_lock=take_over_lock, exclude=exclude, bump=bump)

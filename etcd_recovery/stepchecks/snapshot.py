"""The snapshot method's checks: the snapshot file as planned, the snapshot made (its
whole log, its status) and on each host with its sha256, each restore finished, and the
restored cluster's revision and compaction."""

from __future__ import annotations

import json
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..actions import CopyFile, Run
from ..errors import (
    PreconditionError,
    StepFailed,
)
from ..formats.backend import read_backend
from ..inspect import inspect_cluster
from ..model import MemberState
from ..plan import Step, StepKind, fingerprint
from ..plan.snapshot import file_given, holds_whole_log
from ..transport.base import CommandResult
from .base import FRESH_S, AfterRun, Checker, Finisher, Runner, Skipper
from .common import space_read
from .force_new_cluster import fenced_states


# ------------------------------------------------------------------ the snapshot method
def prepare_preflight_file(ex: Runner, step: Step) -> dict[int, str]:
    earlier = ex.planned_from
    if earlier is not None and time.monotonic() - ex.fresh_at < FRESH_S:
        report = earlier
    else:
        report = inspect_cluster(
            ex.inv, factory=ex.factory, prefer=ex.plan.chosen,
            known_unreachable=[s for s in earlier.members if not s.reachable]
            if earlier else ())
    if report.quorum.has_quorum:
        raise PreconditionError(f"the cluster has quorum again ({report.decision.reason})")
    if ex.check_fingerprint and fingerprint(report) != ex.plan.fingerprint:
        raise PreconditionError(
            "the cluster's state differs from the one the plan was made from (fingerprint "
            f"{fingerprint(report)} != {ex.plan.fingerprint}); make a new plan")
    for name in step.params["members"]:
        st = next(s for s in report.members if s.name == name)
        if not st.reachable:
            raise PreconditionError(f"{name} is no longer reachable: {st.error}")
    host, path = str(step.params["file_host"]), str(step.params["file"])  # host "": here
    got = ex.sha256(host, path)
    if got != step.params["sha256"]:
        raise PreconditionError(f"{file_given(host, path)} changed since the plan was made "
                                f"(sha256 {got}, the plan's {step.params['sha256']}); "
                                "make a new plan")
    return {}


def check_snapshot_made(ex: Runner, step: Step) -> dict[int, str]:
    for a in step.actions:
        # (a copy that carries its own sha256 is of a file the plan read: --from-snapshot
        # HOST:FILE, not a snapshot this run makes)
        if isinstance(a, CopyFile) and a.src_host and not a.sha256 and \
                f"snapshot:{a.src_host}" not in ex.refs:
            raise PreconditionError(f"{step.id}: the snapshot on {a.src_host} is not made "
                                    f"yet (no snapshot:{a.src_host} in the journal)")
    return {}


def snapshot_sha(ex: Runner, step: Step) -> str:
    if step.params["sha256"]:
        return str(step.params["sha256"])
    ref = ex.refs.get(step.params["ref"])
    if not isinstance(ref, dict) or not ref.get("sha256"):
        raise PreconditionError(f"{step.id}: no {step.params['ref']} in the journal: the "
                                "snapshot is not made yet")
    return str(ref["sha256"])


def check_snapshot_here(ex: Runner, step: Step) -> dict[int, str]:
    name, snap = step.host or "", step.params["snapshot"]
    if ex.session.run(name, ["test", "-e", posixpath.join(ex.rdir, "restore.done")],
                        check=False).exit_status == 0:
        return {}  # restored already (resumed): the snapshot is no longer needed there
    want = snapshot_sha(ex, step)
    if ex.still_verified(name, snap, want):
        # its sha256 was checked as it was written (or made) in this run, and the file is
        # not changed since: the same inode, size, mtime and ctime. etcdutl's restore then
        # checks the hash etcd appended to it (etcdutl/snapshot/v3_snapshot.go, saveDB,
        # v3.6.14), unless the plan gives --skip-hash-check
        return {}
    got = ex.sha256(name, snap) if ex.session.run(
        name, ["test", "-f", snap], check=False).exit_status == 0 else "(no file)"
    if got != want:
        raise PreconditionError(f"{name}: {snap} has sha256 {got}, not the snapshot's "
                                f"{want}; nothing restored there")
    return {}


def check_restored(ex: Runner, step: Step) -> dict[int, str]:
    name = step.host or ""
    done = posixpath.join(ex.rdir, "restore.done")
    if ex.session.run(name, ["test", "-e", done], check=False).exit_status != 0:
        raise PreconditionError(f"{name}: its restore did not finish ({done} is missing)")
    return {}


def finish_snapshot_make(ex: Runner, step: Step) -> None:
    """Prove the snapshot holds the kept member's whole log (its consistent index is at
    least the WAL's last index), check etcdutl's status of it against the inspection, and
    journal what it is (sha256, revision, hash, keys) as the step's named reference. The
    file's sha256 is computed on its host while the WAL and the db's consistent index are read
    here: at 1 GB each takes seconds, and neither needs the other."""
    name, snap = step.host or "", step.params["snapshot"]
    t = ex.session.t(name)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-sha256") as pool:
        sha256 = pool.submit(ex.sha256, name, snap)
        cindex = read_backend(t.open_file(snap, sudo=True)).consistent_index or 0
        wal = ex.read_wal(step)
        digest = sha256.result()
    if cindex < wal.last_index:
        raise StepFailed(f"{name}: the snapshot's consistent index {cindex} is below the "
                         f"WAL's last index {wal.last_index}: it would leave entries of the "
                         "log out; nothing was restored")
    if ex.notes.get("snapshot_status") is None:  # resumed after the status command ran
        status = next(a for a in step.actions if isinstance(a, Run)
                      and a.argv[1:3] == ("snapshot", "status"))
        ex.notes["snapshot_status"] = snapshot_status(name, ex.session.run(
            name, status.argv, timeout=status.timeout_s))
    st = ex.notes["snapshot_status"]
    if st["revision"] < step.params["min_revision"]:
        raise StepFailed(f"{name}: the snapshot's revision {st['revision']} is below the "
                         f"{step.params['min_revision']} inspected; nothing was restored")
    value = {**st, "sha256": digest, "consistent_index": cindex}
    ex.note_verified(name, snap, value["sha256"])
    ex.log(f"      snapshot: revision {st['revision']}, {st['total_key']} keys, "
             f"{st['total_size']} bytes, consistent index {cindex} >= WAL last index "
             f"{wal.last_index}")
    ex.resolve(step.params["ref"], value)


def check_kept_newest_fenced(ex: Runner, step: Step) -> dict[int, str]:
    """The forced start's own check of the choice, for the log check that may skip that
    start: every member fenced and read from its disk, and the kept member still the one to
    keep. Its disk's state is kept for the step's finisher."""
    name = step.host or ""
    states = fenced_states(ex, name) or []   # (None only where the kept may run forced)
    kept = next((s for s in states if s.name == name), None)
    if kept is None:
        raise PreconditionError(f"{name}: its disk was not read")
    ex.notes[step.id] = kept
    return {}


def finish_log_check(ex: Runner, step: Step) -> None:
    """Journal the fenced kept member's consistent index and WAL's last index (read by the
    step's check), and whether the backend holds the whole log, as the step's named
    reference: the steps it names are skipped when it does (``skipped_by_log_check``)."""
    name = step.host or ""
    st: MemberState = ex.notes[step.id]   # (check_kept_newest_fenced, just before)
    cindex, last = st.consistent_index, st.last_index
    applied = holds_whole_log(st)
    ex.log(f"      {name}: consistent index {cindex}, the WAL's last index {last}: "
           + ("the backend holds the whole log; skipping " + ", ".join(step.params["skips"])
              if applied else "the backend lacks entries of the log; the forced start runs"))
    ex.resolve(step.params["ref"], {"consistent_index": cindex, "last_index": last,
                                    "applied": applied})


def skipped_by_log_check(ex: Runner, step: Step) -> str:
    """Why ``step`` is skipped: a log check of this run named it and found the backend
    holding the whole log (its journaled reference); "" otherwise."""
    for check in ex.plan.steps:
        if check.kind is not StepKind.LOG_CHECK or step.id not in check.params["skips"]:
            continue
        ref = ex.refs.get(check.params["ref"])
        if isinstance(ref, dict) and ref.get("applied") is True:
            return (f"{check.host}'s backend holds its whole log (consistent index "
                    f"{ref['consistent_index']} >= the WAL's last index {ref['last_index']}, "
                    f"read fenced by {check.id}): no forced start needed")
    return ""


def finish_restore_check(ex: Runner, step: Step) -> None:
    bump = int(step.params["bump_revision"])
    if step.params["ref"]:
        ref = ex.refs.get(step.params["ref"])
        if not isinstance(ref, dict):
            raise PreconditionError(f"no {step.params['ref']} in the journal")
        rev0 = int(ref["revision"])
    else:
        rev0 = int(step.params["revision"])
    c = ex.session.client(ex.plan.chosen)
    st = c.status()
    if st.revision < rev0 + bump:
        raise StepFailed(f"the revision is {st.revision}, below the snapshot's {rev0} + "
                         f"the bump {bump}")
    canceled, compact, _ = c.watch_compacted(b"/etcd-recovery/probe", max(1, rev0))
    if not canceled or compact <= rev0:
        raise StepFailed(f"a watch from revision {rev0} was not refused as compacted "
                         f"(canceled {canceled}, compact revision {compact})")
    ex.log(f"      revision {st.revision} >= {rev0} + {bump}; a watch from {rev0} is "
             f"refused as compacted (compact revision {compact})")
    ex.journal.append("restore-checked", step.id, revision=st.revision,
                        compact_revision=compact)


def snapshot_status(host: str, res: CommandResult) -> dict[str, Any]:
    """etcdutl snapshot status -w json: {"hash", "revision", "totalKey", "totalSize"} (and
    "version" from 3.6: etcdutl/snapshot/v3_snapshot.go @v3.6.16, Status)."""
    try:
        d = json.loads(res.stdout.decode(errors="replace"))
        return {"hash": int(d["hash"]), "revision": int(d["revision"]),
                "total_key": int(d["totalKey"]), "total_size": int(d["totalSize"]),
                "version": str(d.get("version", ""))}
    except (ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"{host}: etcdutl snapshot status printed no status it can read: "
                         f"{res.stdout_text()[:200]!r}") from exc


K = StepKind


def status_read(ex: Runner, step: Step, n: int, a: Run, res: CommandResult) -> None:
    if a.argv[1:3] == ("snapshot", "status"):
        ex.notes["snapshot_status"] = snapshot_status(a.host, res)


CHECKS: dict[str, Checker] = {
    "as-planned-file": prepare_preflight_file, "snapshot-made": check_snapshot_made,
    "snapshot-here": check_snapshot_here, "restored": check_restored,
    "kept-newest-fenced": check_kept_newest_fenced}
FINISH: dict[StepKind, Finisher] = {K.SNAPSHOT_MAKE: finish_snapshot_make,
                                    K.LOG_CHECK: finish_log_check,
                                    K.RESTORE_CHECK: finish_restore_check}
AFTER_RUN: dict[StepKind, AfterRun] = {K.PREFLIGHT_SNAPSHOT: space_read,
                                       K.SNAPSHOT_MAKE: status_read}
SKIPS: tuple[Skipper, ...] = (skipped_by_log_check,)

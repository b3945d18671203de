"""The workflow behind plan, execute and rejoin: a plan derived from the command line's
options, bound to the plan reviewed under its ID (or to a saved plan file), the run's journal
started or resumed, a rejoin's plan made.

Everything here takes plain values (an inventory, :class:`planid.Options`, paths), raises the
tool's errors (errors.py) and prints nothing: the command line shows what these return and
maps what they raise to its exit codes. A warning that does not stop the command is returned
as text for it to say.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from . import planid
from .actions import SHA256_FN
from .errors import (
    EtcdRecoveryError,
    FormatError,
    RefusedError,
    TransportError,
    UsageError,
)
from .inspect import (
    image_on_host,
    inspect_cluster,
    read_configs,
    read_etcdutl,
    read_new_binary,
    same_file_on_host,
)
from .inventory import Inventory, Member
from .journal import Journal
from .methods import Advice, derive, recommend
from .model import InspectReport
from .plan.rejoin import make_rejoin_plan
from .plan.snapshot import Etcdutl, SnapshotInput, etcdutl_on_host, image_version
from .plan.steps import Plan, run_dir
from .runtimes import config as rconf


class NoPlan(RefusedError):
    """Inspection refused to choose a member to keep: no plan. ``report`` is what was read
    (for the command line to show before the refusal)."""

    def __init__(self, report: InspectReport) -> None:
        super().__init__(f"no plan: {report.decision.reason}")
        self.report = report


def new_run_id() -> str:
    import secrets
    import time

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def journal_dir(inventory: Path, given: Path | None) -> Path:
    """Where runs' journals and reviewed plans are kept: ``given``, else beside the
    inventory."""
    return given or inventory.resolve().parent / ".etcd-recovery"


def inspection(inv: Inventory,
               exclude: Sequence[str] = ()) -> tuple[InspectReport, Advice | None]:
    """What inspect reads, and the method it recommends (none when it refuses)."""
    report = inspect_cluster(inv, exclude=exclude)
    return report, None if report.decision.refused else recommend(report)


# ----------------------------------------------------------------- deriving a plan

def _host_file(given: str, inv: Inventory) -> bool:
    """``HOST:/path`` naming an inventory member's host (--from-snapshot's other form)."""
    host, sep, path = given.partition(":")
    return bool(sep) and path.startswith("/") and host in {m.name for m in inv.members}


def with_local_paths_resolved(o: planid.Options, inv: Inventory) -> planid.Options:
    """The options with the files on this machine named as the plan records them (absolute,
    symlinks resolved): --etcdutl, and --from-snapshot when it is not ``HOST:/path``. A
    relative path given to ``plan`` and again to ``execute --resume`` then names the same
    file, not a contradiction."""
    def local(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p else p

    snap = o.from_snapshot
    return dataclasses.replace(
        o, etcdutl=local(o.etcdutl),
        from_snapshot=snap if snap is None or _host_file(snap, inv) else local(snap))


def snapshot_input(given: str, inv: Inventory) -> SnapshotInput:
    """--from-snapshot FILE (on this machine) or HOST:FILE (an absolute path on the host of
    the member HOST), read and checked here: integrity hash, etcdutl's status figures, its
    sha256 for the copies, its age."""
    if _host_file(given, inv):
        host, _, path = given.partition(":")
        return _host_snapshot(inv.member(host), path, given)
    return _local_snapshot(given)


def _local_snapshot(path: str) -> SnapshotInput:
    import hashlib
    import time

    from .formats.snapshot import read_snapshot
    from .formats.source import FileSource

    p = Path(path)
    try:
        st = p.stat()
        info = read_snapshot(FileSource(p))
        h = hashlib.sha256()
        with p.open("rb") as f:
            while block := f.read(4 * 1024 * 1024):
                h.update(block)
    except OSError as exc:
        raise UsageError(f"--from-snapshot {path}: cannot read it: {exc.strerror or exc}") \
            from exc
    except FormatError as exc:
        raise UsageError(f"--from-snapshot {path}: {exc}") from exc
    return SnapshotInput(path=str(p.resolve()), sha256=h.hexdigest(), revision=info.revision,
                         total_key=info.total_keys or info.total_entries, hash=info.hash,
                         size=info.size, has_hash=info.has_hash,
                         age_s=max(0.0, time.time() - st.st_mtime))


def _host_snapshot(member: Member, path: str, given: str) -> SnapshotInput:
    """The file read where it is, over SSH: its bytes through the same reader, its sha256 and
    modification time from the host (the age is by the host's clock)."""
    from .formats.snapshot import read_snapshot
    from .transport.factory import ssh_transport

    t = ssh_transport(member)
    try:
        info = read_snapshot(t.open_file(path, sudo=True))
        res = t.run(["sh", "-c", SHA256_FN + 'sha256 < "$1" && stat -c %Y "$1" && date +%s',
                     "etcd-recovery", path], sudo=True, timeout=600)
        # one line each: "<digest>  -" (the file is read on stdin), mtime, the host's now
        lines = res.stdout.decode(errors="replace").splitlines()
        digest, mtime, now = lines[0].split(" ", 1)[0], int(lines[1]), int(lines[2])
    except TransportError as exc:   # (a RemoteCommandError too)
        raise UsageError(f"--from-snapshot {given}: cannot read it on {member.name}: "
                         f"{exc}") from exc
    except FormatError as exc:
        raise UsageError(f"--from-snapshot {given}: {exc}") from exc
    except (IndexError, ValueError) as exc:
        raise UsageError(f"--from-snapshot {given}: {member.name} answered sha256/stat "
                         "with something else than a digest and a time") from exc
    finally:
        t.close()
    return SnapshotInput(path=path, sha256=digest, revision=info.revision,
                         total_key=info.total_keys or info.total_entries, hash=info.hash,
                         size=info.size, has_hash=info.has_hash,
                         age_s=float(max(0, now - mtime)), host=member.name)


def local_etcdutl(path: str) -> tuple[str | None, str]:
    """--etcdutl PATH: its version (``etcdutl version``) and sha256."""
    import hashlib
    import re
    import subprocess

    p = Path(path)
    try:
        with p.open("rb") as f:   # (in blocks: a build is 25 MB, held whole it is peak RSS)
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        res = subprocess.run([str(p), "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"--etcdutl {path}: cannot run it: {exc}") from exc
    found = re.search(r"etcdutl version:\s*(\S+)", res.stdout.decode(errors="replace"))
    if res.returncode != 0 or found is None:
        raise UsageError(f"--etcdutl {path}: `{path} version` printed no etcdutl version "
                         f"(exit {res.returncode})")
    return found.group(1), digest


def derive_plan(inv: Inventory, o: planid.Options,
                run_id: str | None = None) -> tuple[Plan, InspectReport]:
    """Inspect and lay out the plan of the method the options ask for (planning is pure,
    over what inspect read); the plan and the inspection it was made from. ``o``: the
    command line's (or the reviewed plan's) options. A refused inspection raises
    :class:`NoPlan`."""
    file = snapshot_input(o.from_snapshot, inv) if o.from_snapshot else None
    report = inspect_cluster(inv, allow_quorum=o.allow_quorum, exclude=o.exclude or ())
    if report.decision.refused and file is None:
        raise NoPlan(report)
    configs = read_configs(inv, report)
    new_binary = None
    if o.etcd_binary is not None:
        if inv.runtime != "systemd":
            raise UsageError("--etcd-binary applies to a systemd cluster; for a static pod, "
                             "give the image with --etcd-image")
        # (None when inspection refused and --from-snapshot planned: no member is named)
        kept = inv.member(cast(str, report.decision.chosen))
        new_binary = read_new_binary(kept, o.etcd_binary, kept.unit or "")
    run_id = run_id or new_run_id()
    tools: dict[str, Any] = {}
    if o.method == "snapshot" or file is not None:
        reachable = [inv.member(s.name) for s in report.members if s.reachable]
        if o.etcdutl:
            version, digest = local_etcdutl(o.etcdutl)
            where = etcdutl_on_host(run_dir(run_id))
            local = str(Path(o.etcdutl).resolve())
            # A host that holds this very build at the same path runs it there: not copied.
            with ThreadPoolExecutor(max_workers=max(1, len(reachable))) as pool:
                there = list(pool.map(lambda m: same_file_on_host(m, local, digest), reachable))
            tools = {m.name: Etcdutl(local, version, from_flag=True) if has else
                     Etcdutl(where, version, local, digest)
                     for m, has in zip(reachable, there, strict=True)}
        elif inv.runtime == "systemd":
            with ThreadPoolExecutor(max_workers=max(1, len(reachable))) as pool:
                found = dict(zip([m.name for m in reachable],
                                 pool.map(read_etcdutl, reachable), strict=True))
            tools = {n: Etcdutl(f[0], f[1]) for n, f in found.items() if f is not None}
        elif inv.runtime == "static-pod":
            # kubeadm: etcdutl from the etcd image each static pod names, where containerd
            # holds it (the image's own, so of the member's very release)
            images = {m.name: rconf.manifest_image(configs[m.name], m.manifest or "")
                      for m in reachable if m.name in configs}
            with ThreadPoolExecutor(max_workers=max(1, len(reachable))) as pool:
                held = dict(zip([m.name for m in reachable], pool.map(
                    lambda m: bool(images.get(m.name)) and image_on_host(
                        m, str(images[m.name])), reachable), strict=True))
            where = etcdutl_on_host(run_dir(run_id))
            # A tag that names no release (etcd:latest) is checked against the member's
            # own version as inspect read it; with neither, the plan refuses (_check_versions)
            known = {s.name: s.etcd_version for s in report.members}
            tools = {n: Etcdutl(where, image_version(str(images[n])) or known.get(n),
                                image=str(images[n]))
                     for n, has in held.items() if has}
    plan = derive(
        inv, report, configs, run_id, method=o.method or "force-new-cluster",
        allow_quorum=o.allow_quorum, take_over_lock=o.take_over_lock,
        exclude=o.exclude or (), etcd_image=o.etcd_image, etcd_binary=new_binary,
        tools=tools, snapshot_file=file, bump_revision=o.bump_revision,
        skip_hash_check=o.skip_hash_check, allow_older_data=o.allow_older_data)
    extra = {**report.extra,
             **({"new_binary": new_binary} if new_binary is not None else {}),
             **({"tools": tools} if tools else {}),
             **({"snapshot_file": file} if file is not None else {})}
    if extra != report.extra:  # the planning inputs a reviewed plan keeps (planid.py)
        report = dataclasses.replace(report, extra=extra)
    return plan, report


# ----------------------------------------------------------------- what was reviewed

def execute_command(inventory: Path, pid: str, flags: list[str],
                    journal_dir: Path | None) -> str:
    """The exact command that runs the plan shown under ``pid``."""
    import shlex

    return shlex.join(["etcd-recovery", "execute", "-i", str(inventory), "--confirm", pid,
                       *flags, *(["--journal-dir", str(journal_dir)] if journal_dir else [])])


def keep_reviewed(record: planid.Reviewed, jdir: Path, inventory: Path,
                  journal_dir: Path | None) -> tuple[str | None, str | None]:
    """Save what was shown under its plan ID; the command that runs it, and a warning. A
    journal directory that cannot be written is said (the command is then None: the ID is
    unknown to a later execute), not fatal to a command that only shows."""
    try:
        planid.save(jdir, record)
    except EtcdRecoveryError as exc:
        return None, (f"warning: {exc}; `execute --confirm {record.plan_id}` will not know "
                      "this plan ID (give a writable --journal-dir)")
    return execute_command(inventory, record.plan_id, record.options.flags(), journal_dir), None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole, mode 0600 whatever the umask (a plan names the
    cluster's hosts, paths and certificates, like the journal): a temporary file beside it,
    created 0600, then renamed over it, so an existing file's wider mode does not stay."""
    import contextlib
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_plan(path: Path, pid: str, plan: Plan) -> None:
    """plan --save FILE: the plan as JSON with its ID, mode 0600, for execute --plan."""
    try:
        write_private(path, json.dumps({"plan_id": pid, **plan.to_json()}, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the plan: {exc.strerror or exc}") from exc


def load_saved_plan(plan_file: Path) -> Plan:
    """execute --plan FILE, loaded strictly; a file that is not a plan is a usage error."""
    try:
        data = json.loads(plan_file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{plan_file}: cannot read the plan: {exc}") from exc
    except ValueError as exc:
        raise UsageError(f"{plan_file}: not JSON: {exc}") from exc
    try:
        return Plan.from_json(data, str(plan_file))
    except FormatError as exc:  # a saved plan that is not one: a usage error, exit 2
        raise UsageError(str(exc)) from exc


# ----------------------------------------------------------------- execute's run

@dataclasses.dataclass(frozen=True)
class Bound:
    """The plan execute runs, the inspection it was derived from, its reviewed record, and
    whether it is bound to a reviewed plan (a plan ID or a saved plan given)."""

    plan: Plan
    planned_from: InspectReport
    record: planid.Reviewed
    bound: bool


def bind(current: Journal | None, inv: Inventory, jdir: Path, inventory: Path,
         given: planid.Options, plan_id: str | None = None,
         plan_file: Path | None = None) -> Bound:
    """The plan a new run carries out: derived now from the inventory and the live state,
    from the options of the saved plan ``plan_file``, of the plan reviewed under ``plan_id``,
    or else ``given`` (the command line's). It must be what was saved or reviewed, and the
    command line must not contradict it; refused (naming the first difference) otherwise,
    and while ``current`` (an unfinished run) is there."""
    if current is not None:
        raise RefusedError(f"run {current.run_id} is unfinished (journal in {jdir}): "
                           "continue it with --resume")
    if plan_file is not None:
        saved = load_saved_plan(plan_file)
        o = planid.options_of(saved)
        planid.refuse_contradictions(o, given, f"the saved plan {plan_file}")
        derived, planned_from = derive_plan(inv, o, run_id=saved.run_id)
        diff = saved.first_difference(derived)
        if diff is not None:
            raise RefusedError(f"{plan_file}: the saved plan is not what this inventory "
                               f"and the cluster's state give now: {diff}. Nothing was "
                               "changed; make a new plan")
        the_plan = saved
    elif plan_id is not None:
        reviewed = planid.load(jdir, plan_id, str(inventory))
        o = reviewed.options
        planid.refuse_contradictions(o, given, f"plan {plan_id}")
        the_plan, planned_from = derive_plan(inv, o)
    else:
        the_plan, planned_from = derive_plan(inv, given)
    record = planid.review(the_plan, inv, planned_from, planned_from.extra.get("new_binary"))
    if plan_id is not None and record.plan_id != plan_id:
        what = (planid.first_difference(reviewed, record) if plan_file is None else
                f"the plan {plan_file} and this inventory have plan ID {record.plan_id}")
        raise RefusedError(f"plan {plan_id} is not what this inventory and the cluster's "
                           f"state give now: {what}. Nothing was changed; review the plan "
                           f"again (`etcd-recovery plan -i {inventory}`) and run it with "
                           "the ID it prints")
    return Bound(the_plan, planned_from, record, plan_id is not None or plan_file is not None)


def open_journal(jdir: Path, plan: Plan, pid: str | None = None,
                 bound: bool = False) -> Journal:
    """The run's journal; with ``pid``, its run-start records whether the run is bound to a
    reviewed plan, and that plan's ID (what a resume holds the run to)."""
    if pid is None:
        return Journal.create(jdir, plan)
    return Journal.create(jdir, plan, start_detail={"bound": bound, "plan_id": pid})


def abandon(current: Journal | None, jdir: Path) -> str:
    """Give up the unfinished run (its journal is kept); its run ID."""
    if current is None:
        raise UsageError(f"nothing to abandon: no unfinished run in {jdir}")
    current.abandon()
    return current.run_id


def resumed(current: Journal | None, inv: Inventory, jdir: Path, inventory: Path,
            given: planid.Options,
            plan_id: str | None = None) -> tuple[Journal, Plan, str | None]:
    """The unfinished run's journal and its journaled plan, once the command line does not
    contradict the plan and :func:`check_resumed` holds; and a warning, when there was less
    to check."""
    if current is None:
        raise UsageError(f"nothing to resume: no unfinished run in {jdir}")
    the_plan = current.load_plan()
    planid.refuse_contradictions(planid.options_of(the_plan), given,
                                 f"run {current.run_id}'s plan")
    return current, the_plan, check_resumed(current, the_plan, inv, plan_id, jdir, inventory)


def check_resumed(journal: Journal, the_plan: Plan, inv: Inventory, given: str | None,
                  jdir: Path, inventory: Path) -> str | None:
    """A resumed run goes on only with the plan it started with: the journaled plan and
    today's inventory still have the run's plan ID, and the plan derived again from the
    planning inputs kept at its start and today's inventory is the journaled one. Refused
    (exit 3) with the first difference otherwise. A warning when the journal or the journal
    directory holds less than that to check against."""
    binding = journal.binding()
    if binding is None:  # a run started before plan IDs were journaled: nothing to hold to
        return (f"warning: run {journal.run_id} has no plan ID in its journal; its plan is "
                "run as journaled")
    started = str(binding["plan_id"])
    if given is not None and given != started:
        raise RefusedError(f"run {journal.run_id} runs plan {started}, not {given}; nothing "
                           "was changed")
    how = (f"Nothing was changed. Resume with the inventory and tool the run started with, "
           f"or close the run (`etcd-recovery execute -i {inventory} --abandon`) and make a "
           "new plan")
    try:
        record = planid.load(jdir, started, str(inventory))
    except RefusedError:
        record = None
    now = planid.plan_id(the_plan, inv)
    if now != started:
        what = (f"plan ID {started} then, {now} now" if record is None else
                planid.first_difference(record, planid.Reviewed(
                    plan_id=now, plan=the_plan, inventory=planid.inventory_facts(inv),
                    state=record.state, options=planid.options_of(the_plan))))
        raise RefusedError(f"run {journal.run_id}: its journaled plan is not the plan it "
                           f"started with: {what}. {how}")
    if record is None or not record.inputs:
        return (f"warning: the planning inputs of plan {started} are not in {jdir}; the "
                "journaled plan is checked against its ID only")
    try:
        derived = planid.rederive(record, inv, journal.run_id)
    except EtcdRecoveryError as exc:
        raise RefusedError(f"run {journal.run_id}: its plan cannot be derived again from "
                           f"what it was made from and this inventory: {exc}. {how}") from exc
    diff = planid.plan_difference(the_plan, derived)
    if diff is not None:
        raise RefusedError(f"run {journal.run_id}: derived again from what it was made from "
                           f"and this inventory, its plan differs from the journaled one: "
                           f"{diff}. {how}")
    return None


# ----------------------------------------------------------------- rejoin

def rejoin_plan(inv: Inventory, name: str, jdir: Path, take_over_lock: bool = False) -> Plan:
    """The plan that brings member ``name`` back into the healthy cluster, through a member
    that answers for it; refused while a run is unfinished, without quorum, or when the
    member cannot be reached or its configuration read."""
    member = inv.member(name)
    current = Journal.current(jdir)
    if current is not None:
        raise RefusedError(f"run {current.run_id} is unfinished (journal in {jdir}): "
                           "continue it with `execute --resume`")
    report = inspect_cluster(inv)
    if report.decision.refused == "inventory":
        raise RefusedError(f"no plan: {report.decision.reason}")
    if not report.quorum.has_quorum or report.quorum.via is None:
        raise RefusedError("the cluster has no quorum: recover it first with `etcd-recovery "
                           "execute`; rejoin adds a member to a healthy cluster")
    st = next(s for s in report.members if s.name == name)
    if not st.reachable:
        raise RefusedError(f"{name} is not reachable: {st.error}")
    configs = read_configs(inv, report, members=[member])
    if name not in configs:
        raise RefusedError(f"{name}: its etcd configuration could not be read")
    via = report.quorum.via if report.quorum.via != name else next(
        s.name for s in report.members if s.source == "live" and s.name != name)
    membership = next(s.membership for s in report.members if s.name == via)
    return make_rejoin_plan(inv, name, via, configs[name], new_run_id(), membership,
                            take_over_lock)

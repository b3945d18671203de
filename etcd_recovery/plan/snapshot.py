"""The snapshot method's planner: every member restored at once from one snapshot.

``make_snapshot_plan`` (the survivors' data) keeps the member raft's up-to-date rule chooses,
as the force-new-cluster method does, but does not bring the others back one learner at a
time: it makes one snapshot of the kept member's backend, copies it to every host, and has
``etcdutl snapshot restore`` write each member's data dir, with a new cluster token, a bumped
revision and a scheduled compaction (etcd's v3.6 disaster-recovery procedure); then every
member starts at once. ``make_file_plan`` (``--from-snapshot``) restores every member from a
snapshot file the operator has, when no member's data is to be trusted.

Facts this relies on, read in etcd-io/etcd at v3.6.16 (etcdutl/snapshot/v3_snapshot.go,
etcdutl/etcdutl/snapshot_command.go) and checked against the 3.5.16/3.5.35/3.6.16/3.7.3
builds' own ``--help``:

* ``--bump-revision`` (a uint64 added to the latest revision) and ``--mark-compacted`` go
  together; each build here has both.
* a snapshot with no integrity hash (a copied ``member/snap/db``) is restored only with
  ``--skip-hash-check``;
* ``--data-dir`` must be empty or absent; ``--wal-dir`` puts the WAL elsewhere;
* restore writes the membership from ``--initial-cluster`` (the old one is dropped), and the
  cluster ID from the members and ``--initial-cluster-token``: an old member that is still
  alive belongs to another cluster and is refused by every restored member.

The snapshot is the kept member's ``member/snap/db``, taken with etcd stopped and only when
every entry of its WAL is in it: its consistent index (the last entry the backend applied)
is at least the WAL's last index. When the member's disk shows that already (it was read with
etcd stopped), the copy is taken after the fence; otherwise the kept member first runs alone
with --force-new-cluster (after align-commit), which applies its whole log, and is stopped
again. The executor proves the condition on the copy itself before any member is touched.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .. import versions
from ..actions import CopyFile, Run, Wait, WriteFile
from ..errors import RefusedError, UsageError
from ..inventory import Inventory, Member
from ..model import InspectReport, MemberState
from ..runtimes import config as rconf
from ..runtimes.base import Runtime, runtime_for, sh
from . import common
from .force_new_cluster import make_plan
from .scripts import guarded, host_record, move_aside_argv
from .steps import BACKGROUND, Plan, Step, StepKind, fingerprint, run_dir, with_preconditions

# etcd's advice for Kubernetes and any other watch consumer: "--bump-revision 1000000000
# --mark-compacted" (etcd v3.6 docs, op-guide/recovery: "Restoring a cluster").
DEFAULT_BUMP = 1_000_000_000
SNAPSHOT_NAME = "snapshot.db"


@dataclass(frozen=True)
class Etcdutl:
    """Where a host's etcdutl comes from: a build already on the host (``upload_from`` None:
    systemd, beside the etcd binary its unit runs), or a file on this machine copied to the
    run directory first (``upload_from``, checked by ``sha256``)."""

    path: str                   # on the host
    version: str | None
    upload_from: str | None = None
    sha256: str = ""
    from_flag: bool = False     # --etcdutl PATH, found on the host at PATH: run in place
    image: str = ""             # kubeadm: taken from this etcd image (ctr), to ``path``


@dataclass(frozen=True)
class SnapshotInput:
    """``--from-snapshot FILE`` (or ``HOST:FILE``), as read when planning
    (formats/snapshot.py): on this machine, or on the member ``host``."""

    path: str
    sha256: str
    revision: int
    total_key: int
    hash: int
    size: int
    has_hash: bool
    age_s: float
    host: str = ""          # "" on this machine; else the member whose host holds it

    @property
    def shown(self) -> str:
        return file_given(self.host, self.path)


def file_given(host: str, path: str) -> str:
    """--from-snapshot as given: FILE on this machine, MEMBER:FILE on a member's host."""
    return f"{host}:{path}" if host else path


def etcdutl_on_host(rdir: str) -> str:
    return posixpath.join(rdir, "etcdutl")


# kubeadm's etcd images (registry.k8s.io/etcd:3.5.x-0 and later) hold etcdutl beside etcd in
# /usr/local/bin; containerd keeps the image the static pod runs in its k8s.io namespace.
IMAGE_ETCDUTL = "/usr/local/bin/etcdutl"
CTR_NAMESPACE = "k8s.io"


def image_version(image: str) -> str | None:
    """The etcd release of a kubeadm image tag: registry.k8s.io/etcd:3.5.16-0 -> 3.5.16."""
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    v = tag.split("-")[0].lstrip("v")
    return v if versions.parse_version(v) is not None else None


def extract_argv(image: str, dest: str, minor: str) -> list[str]:
    """Copy etcdutl out of the etcd image to ``dest``: the image mounted read-only with
    containerd's ``ctr images mount`` (a view snapshot, removed again by ``unmount --rm``),
    etcdutl copied to ``.partial``, its version checked against the member's minor, renamed.
    Rerun, it does it again (a mount left by a killed run is unmounted first)."""
    return sh('set -e; umask 077; t="$2.image"; mkdir -p "$t"; '
              f'ctr -n {CTR_NAMESPACE} images unmount --rm "$t" >/dev/null 2>&1 || true; '
              f'ctr -n {CTR_NAMESPACE} images mount "$1" "$t" >/dev/null; '
              f'trap \'ctr -n {CTR_NAMESPACE} images unmount --rm "$t" >/dev/null\' EXIT; '
              f'cp "$t{IMAGE_ETCDUTL}" "$2.partial"; chmod 0700 "$2.partial"; '
              'v=$("$2.partial" version | sed -n "s/^etcdutl version: //p"); '
              'case "$v" in "$3".*) ;; *) echo "etcdutl in $1 is ${v:-of no version}, not '
              'of etcd $3" >&2; exit 1 ;; esac; mv -f "$2.partial" "$2"; echo "etcdutl $v"',
              image, dest, minor)


def _check_versions(reachable: Sequence[Member], states: Mapping[str, MemberState],
                    tools: Mapping[str, Etcdutl]) -> None:
    for m in reachable:
        v = versions.parse_version(states[m.name].etcd_version)
        if v is not None and v[:2] < (3, 5):
            raise RefusedError(f"no plan: {m.name} runs etcd {states[m.name].etcd_version}; "
                               "the snapshot method needs etcdutl, which etcd has from 3.5 "
                               "(use the default method, --method force-new-cluster)")
        tool = tools.get(m.name)
        if tool is None:
            raise UsageError(f"{m.name}: no etcdutl to restore with; give --etcdutl PATH "
                             "(a build on this machine, copied to every host)")
        tv = versions.parse_version(tool.version)
        if tool.image and tv is None:
            raise RefusedError(
                f"no plan: {m.name}: the etcd image {tool.image} names no etcd release in its "
                "tag and the member's version is not known (etcd is not answering), so the "
                "etcdutl taken from it cannot be checked against the member's; give --etcdutl "
                "PATH (a build of the member's minor version)")
        if v is not None and tv is not None and tv[:2] != v[:2]:
            raise RefusedError(f"no plan: {m.name}: etcdutl {tool.version} ({tool.path}) is "
                               f"not of etcd {states[m.name].etcd_version}'s minor version")


def _snapshot_path(run_id: str) -> str:
    return posixpath.join(run_dir(run_id), SNAPSHOT_NAME)


def make_snapshot_argv(db: str, snap: str) -> list[str]:
    """The stopped member's backend as the snapshot file: a hard link to it where the run
    directory is on the data dir's file system, else a copy (to ``.partial``, flushed, then
    renamed); rerun, it does it again (the source holds still while etcd is stopped), or
    nothing when the file is that link already.

    A link writes nothing: at 1 GB the copy and its flush took 1.5-2 s of the snapshot step,
    beside the other members' backups on the same disk (20 s with all three at once). Nothing
    writes that file again: etcd on the kept member stays fenced until its restore, which
    moves its data dir aside by renaming it, and etcdutl opens the snapshot read-only
    (etcdutl/snapshot/v3_snapshot.go, Status: bolt.Open with ReadOnly; restore's
    copyAndVerifyDB: os.Open; v3.5.35 and v3.6.16). The file's sha256 is journaled, and every
    later step that reads it checks it against that."""
    return sh('set -e; umask 077; mkdir -p "$(dirname "$2")"; rm -f "$2.partial"; '
              '[ "$1" -ef "$2" ] || { ln "$1" "$2.partial" 2>/dev/null || cp "$1" "$2.partial"; '
              'sync "$2.partial"; mv -f "$2.partial" "$2"; }', db, snap)


def status_argv(etcdutl: str, snap: str) -> list[str]:
    return [etcdutl, "snapshot", "status", "-w", "json", snap]


def restore_argv(etcdutl: str, snap: str, m: Member, initial_cluster: str, token: str,
                 bump: int, skip_hash_check: bool, mark: str) -> list[str]:
    """Write ``m``'s data dir (and WAL dir of its own) from the snapshot with etcdutl, into
    the place the old data was moved out of. The restore goes to ``<data-dir>/restoring``
    (the same file system, so the last step is a rename) and the member directory appears
    only once whole, synced. ``mark``: ``<mark>.started`` is written before anything is
    removed, and then only what a restore of this run wrote is ever removed: a data dir that
    still holds a member directory without it (the old data, not moved aside) is refused.
    ``<mark>.done`` ends it; a rerun after that does nothing. The files get the data dir's
    owner (etcd may run as another user than root)."""
    wal = m.wal if m.wal_apart else ""
    args = [etcdutl, "snapshot", "restore", snap, "--name", m.name,
            "--initial-cluster", initial_cluster, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster-token", token, "--bump-revision", str(bump), "--mark-compacted",
            *(["--skip-hash-check"] if skip_hash_check else [])]
    return sh('set -e; umask 077; d=$1; w=$2; k=$3; shift 3; '
              '[ -e "$k.done" ] && exit 0; '
              'if [ ! -e "$k.started" ]; then '
              'if [ -e "$d/member" ] || { [ -n "$w" ] && [ -e "$w" ]; }; then '
              'echo "the old data is still in place: not restoring over it" >&2; exit 1; fi; '
              'mkdir -p "$(dirname "$k")"; : > "$k.started"; sync "$k.started"; fi; '
              'rm -rf "$d/member" "$d/restoring"; '
              'if [ -n "$w" ]; then rm -rf "$w" "$w.restoring"; '
              '"$@" --data-dir "$d/restoring" --wal-dir "$w.restoring"; '
              'chown -R "$(stat -c %u:%g "$(dirname "$w")")" "$w.restoring"; '
              'mv -T "$w.restoring" "$w"; else "$@" --data-dir "$d/restoring"; fi; '
              'chown -R "$(stat -c %u:%g "$d")" "$d/restoring"; '
              'mv -T "$d/restoring/member" "$d/member"; rmdir "$d/restoring"; '
              # etcdutl syncs what it writes (bbolt commits, wal.Create, snap.SaveSnap at
              # v3.6.14); what is left to make durable is the renames and owners above: the
              # directories they changed, not every file system of the host (a plain sync)
              'sync "$d" "$d/member" ${w:+"$w" "$(dirname "$w")"}; '
              ': > "$k.done"', m.data_dir, wal, mark, *args)


def etcdutl_line(reachable: Sequence[Member], tools: Mapping[str, Etcdutl]) -> str:
    """The plan's one line on where each host's etcdutl comes from."""
    in_place: dict[str, list[str]] = {}
    copied: dict[str, list[str]] = {}
    images: dict[str, list[str]] = {}
    for m in reachable:
        t = tools[m.name]
        if t.image:
            images.setdefault(t.image, []).append(m.name)
        elif t.upload_from is None:
            in_place.setdefault(f"{t.path}, {t.version or 'version unknown'}", []).append(m.name)
        else:
            copied.setdefault(f"{t.upload_from}, sha256 {t.sha256[:12]}", []).append(m.name)
    parts = [f"on {', '.join(names)} the host's own ({what})" for what, names in in_place.items()]
    parts += [f"copied from this machine to {', '.join(names)} ({what})"
              for what, names in copied.items()]
    parts += [f"on {', '.join(names)} taken from the etcd image {image} (ctr images mount)"
              for image, names in images.items()]
    return "etcdutl: " + "; ".join(parts)


def _tools_steps(reachable: Sequence[Member], tools: Mapping[str, Etcdutl], run_id: str,
                 first: str = "") -> list[Step]:
    """The uploads of etcdutl (or its extraction from the etcd image), in the background:
    nothing before the first etcdutl command on a host needs them, and a background step is
    waited for before the next step on its host. ``first``'s (the kept member's, needed
    soonest) starts first."""
    out = []
    for m in sorted(reachable, key=lambda m: m.name != first):
        t = tools[m.name]
        if t.image:
            sid = f"etcdutl:{m.name}"
            minor = ".".join((t.version or "").split(".")[:2])   # (the image tag's)
            out.append(Step(
                id=sid, phase="restore", kind=StepKind.SNAPSHOT_SEND, host=m.name,
                group=BACKGROUND,
                title=f"Take etcdutl {t.version or ''} from the etcd image {t.image} to "
                      f"{m.name}:{t.path} (ctr images mount, read-only)".replace("  ", " "),
                precondition="", check=f"{t.path} on {m.name} is etcdutl of etcd {minor}",
                actions=(Run(m.name, tuple(guarded(run_id, sid, extract_argv(
                    t.image, t.path, minor), 300.0)), 300.0),
                    host_record(m.name, run_id, sid)),
                params={"snapshot": t.path}))
            continue
        if t.upload_from is None:
            continue
        out.append(Step(id=f"etcdutl:{m.name}", phase="restore", kind=StepKind.SNAPSHOT_SEND,
                        host=m.name, group=BACKGROUND,
                        title=f"Copy etcdutl {t.version or ''} ({t.upload_from}) to "
                              f"{m.name}:{t.path}".replace("  ", " "),
                        precondition="", check=f"{t.path} on {m.name} has sha256 {t.sha256}",
                        actions=(CopyFile("", t.upload_from, m.name, t.path, 0o755, t.sha256),),
                        params={"snapshot": t.path}))
    return out


def _restore_and_start(rt: Runtime, reachable: Sequence[Member], configs: Mapping[str, str],
                       run_id: str, snap: str, ref: str, sha256: str, bump: int,
                       skip_hash_check: bool, tools: Mapping[str, Etcdutl],
                       kept_config: Mapping[str, str] | None = None) -> list[Step]:
    rdir = run_dir(run_id)
    token = f"etcd-recovery-{run_id}"
    initial = rconf.initial_cluster([(m.name, m.peer_url) for m in reachable])
    steps: list[Step] = []
    for m in reachable:
        moved = posixpath.join(rdir, "member.moved")
        sid = f"restore:{m.name}"
        wal_move = (Run(m.name, tuple(guarded(run_id, sid, move_aside_argv(
            m.wal, posixpath.join(rdir, "wal.moved"),
            posixpath.dirname(posixpath.normpath(m.wal))), 600.0)), 600.0),) \
            if m.wal_apart else ()
        etcdutl = tools[m.name].path
        steps.append(Step(
            id=sid, phase="restore", kind=StepKind.RESTORE, host=m.name, group="restore",
            title=f"Restore {m.name} from the snapshot: old data moved aside to {moved}, then "
                  f"etcdutl snapshot restore --name {m.name} --initial-cluster {initial} "
                  f"--initial-cluster-token {token} --bump-revision {bump} --mark-compacted"
                  + (" --skip-hash-check" if skip_hash_check else ""),
            precondition="",
            check=f"{m.data_dir}/member is the restored member's; the old data is in {moved}",
            actions=(Run(m.name, tuple(guarded(run_id, sid, move_aside_argv(
                         posixpath.join(m.data_dir, "member"), moved, m.data_dir), 600.0)),
                         600.0),
                     *wal_move,
                     Run(m.name, tuple(guarded(run_id, sid, restore_argv(
                         etcdutl, snap, m, initial, token, bump, skip_hash_check,
                         posixpath.join(rdir, "restore")), 600.0)), 600.0),
                     host_record(m.name, run_id, sid)),
            params={"snapshot": snap, "ref": ref, "sha256": sha256, "bump_revision": bump,
                    "token": token, "etcdutl": etcdutl, "skip_hash_check": skip_hash_check,
                    # --etcdutl's file, run in place: what options_of reads the flag back from
                    "etcdutl_flag": tools[m.name].from_flag}))
    # One at a time, each once the one before serves its peer URL: a member's initial
    # corruption check (on in kubeadm's and kubespray's flags) asks every peer for its
    # HashKV, one after another, each for up to etcd's request timeout (5 s + 2 x the
    # election timeout), before it serves peer traffic itself (server/etcdserver/corrupt.go
    # at v3.6.16: getPeerHashKVs). Started together, every member waits out the timeout for
    # every other one (measured: 15 s with 3 kubeadm members). Started in turn, a peer that
    # runs already answers, and one not started yet refuses the connection at once.
    for m in reachable:
        sid = f"start:{m.name}"
        cfg_file = rt.config_path(m)
        text = (kept_config or {}).get(m.name, configs[m.name])
        staged = posixpath.join(rdir, "config.staged")
        steps.append(Step(
            id=sid, phase="restore", kind=StepKind.START_RESTORED, host=m.name,
            title=f"Start {m.name} on its restored data, with its own configuration, and "
                  "wait until it serves its peer URL",
            precondition="", check=f"etcd runs on {m.name} and answers on {m.peer_url}",
            actions=(WriteFile(m.name, staged, text, 0o600,
                               rconf.unified_diff(configs[m.name], text, cfg_file)),
                     Run(m.name, tuple(guarded(run_id, sid, rt.start_argv(m, staged), 60.0)),
                         60.0),
                     Wait("etcd-running", m.name, m.client_url, 60.0),
                     Wait("serves-peers", m.name, m.peer_url, 90.0),
                     host_record(m.name, run_id, sid))))
    first = reachable[0]
    steps.append(Step(
        id="cluster-up", phase="restore", kind=StepKind.CLUSTER_UP, host=None,
        title="Wait for one leader and every member healthy",
        precondition="", check="the member list is exactly the restored members, each a "
                                "voting member with a leader, serving a linearizable read",
        actions=(Wait("members-are", first.name, first.client_url, 90.0,
                      common.members_arg([(m.name, m.peer_url) for m in reachable])),
                 *(Wait("voting-healthy", m.name, m.client_url, 90.0) for m in reachable))))
    return steps


def _restore_check(ref: str, revision: int, bump: int) -> Step:
    what = (f"the snapshot's revision ({ref}, journaled when it is made)" if ref
            else f"the snapshot's revision {revision}")
    return Step(id="restore-check", phase="verify", kind=StepKind.RESTORE_CHECK, host=None,
                mutating=False,
                title=f"Check the revision bump: at least {what} + {bump}, and a watch from "
                      "the snapshot's revision is refused as compacted",
                precondition="",
                check="the revision is at least the snapshot's plus the bump; a watch from the "
                      "snapshot's revision gets 'required revision has been compacted'",
                params={"ref": ref, "revision": revision, "bump_revision": bump})


def holds_whole_log(st: MemberState) -> bool:
    """Whether a member's backend, read from its disk with etcd stopped, holds its whole log:
    its consistent index (the last entry applied) is at least the WAL's last index. Decided
    once here, for the plan (the disk read when planning) and for the log check (the disk
    read once fenced)."""
    return (st.consistent_index is not None and st.last_index is not None
            and st.consistent_index >= st.last_index)


def log_check_step(m: Member, run_id: str, skips: Sequence[str]) -> Step:
    """Read the fenced kept member's WAL and backend: when the backend already holds the
    whole log (consistent index >= the WAL's last index), the steps ``skips`` (align-commit,
    the forced start and the stop after it) are skipped, every action journaled as skipped
    with the figures. The snapshot step proves the same on the copy itself either way."""
    sid = f"log-check:{m.name}"
    return Step(
        id=sid, phase="restore", kind=StepKind.LOG_CHECK, host=m.name, mutating=False,
        title=f"Read {m.name}'s WAL and backend now that it is fenced: when the backend holds "
              f"its whole log (consistent index >= the WAL's last index), {', '.join(skips)} "
              "are skipped (no forced start needed)",
        precondition="",
        check=f"the consistent index and the WAL's last index go into the journal as "
              f"log:{m.name}",
        params={"ref": f"log:{m.name}", "skips": list(skips)})


def make_snapshot_plan(inv: Inventory, report: InspectReport, configs: Mapping[str, str],
                       run_id: str, tools: Mapping[str, Etcdutl], keys_before: int | None = None,
                       allow_quorum: bool = False, take_over_lock: bool = False,
                       exclude: Sequence[str] = (), bump: int = DEFAULT_BUMP) -> Plan:
    """``plan --method snapshot``: fence, back up and choose as the default method; make one
    snapshot of the kept member's whole log; restore every member from it at once."""
    # The default planner's checks and its first steps (preflight, lock, fences, backups,
    # align-commit, force-new-cluster) are the same; take them from it.
    base = make_plan(inv, report, configs, run_id, keys_before=keys_before,
                     allow_quorum=allow_quorum, take_over_lock=take_over_lock, exclude=exclude)
    rt = runtime_for(inv.runtime)
    states = {s.name: s for s in report.members}
    chosen = inv.member(base.chosen)
    reachable = [m for m in inv.members if states[m.name].reachable]
    _check_versions(reachable, states, tools)
    st = states[chosen.name]
    by_kind = {s.kind: s for s in base.steps}
    head = [s for s in base.steps if s.kind in (StepKind.PREFLIGHT, StepKind.LOCK,
                                                  StepKind.FENCE, StepKind.BACKUP)]
    rdir = run_dir(run_id)
    snap = _snapshot_path(run_id)
    ref = f"snapshot:{chosen.name}"
    db = posixpath.join(chosen.data_dir, "member", "snap", "db")
    covered = st.source == "disk" and holds_whole_log(st)
    if covered or st.source != "disk":
        # The backups go one at a time only to spare the kept member's forced start
        # (common.IN_TURN_BYTES). Where none is needed, or it is likely skipped (etcd ran
        # when planned: stopped by its fence, it leaves its whole log in its backend), they
        # go all at once: 5 members, 1 GB, the forced start skipped, one at a time the last
        # ended at 30.6 s and the run at 34.8 s; all at once they ended by 24.4 s, the run at
        # 30.8 s.
        head = [common.backup_step(rt, inv.member(s.host or ""), run_id, background=True,
                                   in_turn=False) if s.group == BACKGROUND else s
                for s in head]
    # etcdutl is on every host before the first step that runs it (the snapshot's status).
    steps = [*head, *_tools_steps(reachable, tools, run_id, chosen.name)]
    if covered:
        why = (f"{chosen.name}'s backend already holds its whole log (read from its disk with "
               f"etcd stopped: consistent index {st.consistent_index} >= the WAL's last index "
               f"{st.last_index}): its db is taken as it is, no etcd start needed")
    else:
        why = (f"{chosen.name}'s backend may lack entries of its log ("
               + (f"consistent index {st.consistent_index} < the WAL's last index "
                  f"{st.last_index}" if st.source == "disk" else "etcd ran when this plan was "
                  "made") + "): it first runs alone with --force-new-cluster, which applies "
               "its whole log, and is stopped again"
               + ("" if st.source == "disk" else f", unless log-check:{chosen.name} finds "
                  "the backend holding the whole log once it is fenced")
               + "; then its db is taken")
        sid = f"stop:{chosen.name}"
        forced = [by_kind[StepKind.ALIGN_COMMIT], by_kind[StepKind.FORCE_NEW_CLUSTER],
                  Step(id=sid, phase="restore", kind=StepKind.STOP_KEPT, host=chosen.name,
                       title=f"Stop {chosen.name} again, its log applied",
                       precondition="", check=f"no etcd process on {chosen.name}",
                       actions=(Run(chosen.name, tuple(guarded(
                           run_id, sid, rt.stop_argv(chosen, rdir), 120.0)), 120.0),
                           Wait("etcd-stopped", chosen.name, chosen.client_url, 60.0),
                           host_record(chosen.name, run_id, sid)))]
        if st.source != "disk":
            # etcd ran when planned: whether its backend lags its log is known only once it
            # is fenced. Stopped cleanly, it does not (etcd commits the backend, consistent
            # index included, as it stops), and the forced start is then not needed.
            check = log_check_step(chosen, run_id, [s.id for s in forced])
            steps.append(check)
            forced = [replace(s, title=f"{s.title} (skipped when {check.id} finds the "
                                       "backend holding the whole log)") for s in forced]
        steps += forced
    etcdutl = tools[chosen.name].path
    steps.append(Step(
        id=f"snapshot:{chosen.name}", phase="restore", kind=StepKind.SNAPSHOT_MAKE,
        host=chosen.name,
        title=f"Make the snapshot {snap} from {chosen.name}'s backend ({why}): a hard link "
              "to its member/snap/db (a copy where the run directory is on another file "
              "system); check it with etcdutl snapshot status",
        precondition="",
        check=f"the snapshot's consistent index is at least the WAL's last index (nothing of "
              f"the log is left out), its revision at least {st.revision or 0} (inspected); "
              f"its sha256, revision, hash and key count go into the journal as {ref}",
        actions=(Run(chosen.name, tuple(guarded(run_id, f"snapshot:{chosen.name}",
                                                make_snapshot_argv(db, snap), 600.0)), 600.0),
                 Run(chosen.name, tuple(status_argv(etcdutl, snap)), 300.0),
                 host_record(chosen.name, run_id, f"snapshot:{chosen.name}")),
        params={"snapshot": snap, "wal_dir": chosen.wal, "ref": ref,
                "min_revision": st.revision or 0}))
    for m in reachable:
        if m.name == chosen.name:
            continue
        steps.append(Step(id=f"send:{m.name}", phase="restore", kind=StepKind.SNAPSHOT_SEND,
                          host=m.name, group="send",
                          title=f"Copy the snapshot from {chosen.name} to {m.name}",
                          precondition="",
                          check=f"{snap} on {m.name} has the snapshot's sha256 ({ref})",
                          actions=(CopyFile(chosen.name, snap, m.name, snap, 0o600),),
                          params={"snapshot": snap}))
    orig = configs[chosen.name]
    kept_first = [chosen, *[m for m in reachable if m.name != chosen.name]]
    steps += _restore_and_start(rt, kept_first, configs, run_id, snap, ref, "", bump, True,
                                tools, {chosen.name: orig})
    steps.append(_restore_check(ref, 0, bump))
    steps.append(common.verify_step([chosen.name, *[m.name for m in reachable
                                             if m.name != chosen.name]], keys_before))
    steps.append(common.unlock_step(run_id, reachable))
    return replace(base, steps=with_preconditions(steps, chosen.name),
                   reason=f"{base.reason}; every member restored from one snapshot of it",
                   advisories=(*base.advisories, etcdutl_line(reachable, tools)))


def make_file_plan(inv: Inventory, report: InspectReport, configs: Mapping[str, str],
                   run_id: str, tools: Mapping[str, Etcdutl], file: SnapshotInput,
                   allow_older_data: bool = False, skip_hash_check: bool = False,
                   take_over_lock: bool = False, bump: int = DEFAULT_BUMP) -> Plan:
    """``plan --from-snapshot FILE``: restore every reachable member from a snapshot file
    on this machine; whatever data the members hold is backed up and moved aside, never
    used."""
    rt = runtime_for(inv.runtime)
    states = {s.name: s for s in report.members}
    reachable = [m for m in inv.members if states[m.name].reachable]
    if not reachable:
        raise RefusedError("no plan: no member is reachable over SSH")
    unreachable = tuple(m.name for m in inv.members if not states[m.name].reachable)
    if report.quorum.has_quorum:
        raise RefusedError("no plan: the cluster has quorum: restoring it from a file would "
                           "throw away every write since the file was taken")
    for m in reachable:
        if m.name not in configs:
            raise RefusedError(f"{m.name}: its etcd configuration ({rt.config_path(m)}) could "
                               "not be read")
    if not file.has_hash and not skip_hash_check:
        raise RefusedError(f"no plan: {file.shown} has no integrity hash (a copied "
                           "member/snap/db, not `etcdctl snapshot save`): nothing proves it "
                           "whole; give --skip-hash-check to restore it anyway")
    newer = [f"{s.name} (revision {s.revision})" for s in report.members
             if s.readable and s.revision is not None and s.revision > file.revision]
    if newer and not allow_older_data:
        raise RefusedError(f"no plan: {', '.join(newer)} hold(s) newer data than "
                           f"{file.shown} (revision {file.revision}): restoring the file rolls "
                           "the cluster "
                           "back; give --allow-older-data to do it anyway, or use "
                           "--method snapshot to restore from the members' own data")
    _check_versions(reachable, states, tools)
    snap = _snapshot_path(run_id)
    names = [m.name for m in reachable]
    steps: list[Step] = [
        Step(id="preflight", phase="preflight", kind=StepKind.PREFLIGHT_SNAPSHOT, host=None,
             mutating=False,
             title=f"Re-check: quorum lost, the members as planned, {file.shown} unchanged "
                   "(sha256), enough free disk for backups",
             precondition="",
             check=f"no linearizable read succeeds; {file.shown} has sha256 {file.sha256}; "
                   "free space >= data size on every host",
             actions=common.space_checks(reachable),
             params={"members": names, "fingerprint": fingerprint(report), "file": file.path,
                     "file_host": file.host,
                     "sha256": file.sha256, "allow_older_data": allow_older_data,
                     "skip_hash_check": skip_hash_check}),
        common.lock_step(run_id, reachable, take_over_lock)]
    steps += [replace(common.fence_step(rt, m, run_id), group="fence") for m in reachable]
    # all at once: no forced start to spare (common.IN_TURN_BYTES, make_snapshot_plan)
    steps += [replace(common.backup_step(rt, m, run_id, background=True, in_turn=False),
                      group=BACKGROUND) for m in reachable]
    steps += _tools_steps(reachable, tools, run_id)
    for m in reachable:
        steps.append(Step(id=f"send:{m.name}", phase="restore", kind=StepKind.SNAPSHOT_SEND,
                          host=m.name, group="send",
                          title=f"Copy {file.shown} to {m.name}:{snap}",
                          precondition="", check=f"{snap} on {m.name} has sha256 {file.sha256}",
                          actions=(CopyFile(file.host, file.path, m.name, snap, 0o600,
                                            file.sha256),),
                          params={"snapshot": snap}))
    steps += _restore_and_start(rt, reachable, configs, run_id, snap, "", file.sha256, bump,
                                skip_hash_check or not file.has_hash, tools)
    steps.append(_restore_check("", file.revision, bump))
    steps.append(common.verify_step(names, None))
    steps.append(common.unlock_step(run_id, reachable))
    return Plan(cluster=inv.name, runtime=inv.runtime, run_id=run_id, chosen=names[0],
                reason=f"every member restored from {file.shown} (revision {file.revision}, "
                       f"{file.total_key} keys, {file.size} bytes, taken "
                       f"{file.age_s / 3600:.1f} h ago)",
                fingerprint=fingerprint(report),
                steps=with_preconditions(steps, names[0]),
                unreachable=unreachable, rejoin_later=unreachable, inventory=inv.path,
                advisories=(etcdutl_line(reachable, tools),))


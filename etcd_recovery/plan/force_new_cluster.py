"""The force-new-cluster method's planner (the default): pure, from an inspection to an
ordered list of steps.

Each step says on which host it acts, exactly what it runs (argv lists for SSH, named gRPC
calls for etcd's API), its precondition and the check that proves it worked. The executor
runs exactly these steps, in this order, re-checking each precondition just before acting.

Why each step exists (see also README "Safety"):
- fence before anything: an old member that comes back mid-recovery can split the cluster or
  hang (rancher/rke2#2857, k3s-io/k3s#2337), so every reachable member is stopped first and its
  supervisor can no longer start it (manifest moved out / unit disabled).
- back up, never delete (kubernetes/kops#16416): data dirs are copied with a checksum list and
  old data is only ever moved aside.
- ``--force-new-cluster`` on the member with the most up-to-date log (raft's rule, see
  choose.py): its log holds every entry any survivor knows committed, and align-commit makes
  all of it survive. The flag is removed and etcd restarted right after, or every later
  restart would force a new cluster again.
- stray learners are removed explicitly: leftover learners have made etcd panic or refuse to
  remove them after a force-new-cluster (etcd-io/etcd#12285, #20893).
- peers return one at a time as learners (3.4/3.5 allow one learner at a time), are promoted only
  when caught up, and a MemberAdd right after a promote waits out etcd's 5 s "unhealthy cluster"
  check with retries.
- verify compares HashKV at one revision across members, not just health
  (etcd-io/etcd#14009).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .. import versions
from ..actions import Action, AppendWal, EtcdCall, Run, Wait, WriteFile
from ..errors import FormatError, RefusedError, UsageError
from ..formats.walwrite import hardstate_frame
from ..inventory import Inventory, Member
from ..model import InspectReport, MemberState, NewBinary, WalTail, id_hex
from ..runtimes import config as rconf
from ..runtimes.base import Runtime, runtime_for
from . import common
from .rejoin import rejoin_steps
from .scripts import guarded, host_record, install_binary_argv
from .steps import Plan, Step, StepKind, fingerprint, run_dir, with_preconditions

# --------------------------------------------------------------------------- the plan

def make_plan(inv: Inventory, report: InspectReport, configs: Mapping[str, str],
              run_id: str, keys_before: int | None = None, allow_quorum: bool = False,
              take_over_lock: bool = False, exclude: Sequence[str] = (),
              etcd_image: str | None = None, etcd_binary: NewBinary | None = None) -> Plan:
    """Lay out the recovery. ``configs`` maps member name -> its manifest / env file text.
    ``etcd_image`` (static pods) / ``etcd_binary`` (systemd): the build the kept member runs
    from force-new-cluster on."""
    d = report.decision
    if d.refused or d.chosen is None:
        raise RefusedError(f"no plan: {d.reason}")
    rt = runtime_for(inv.runtime)
    states = {s.name: s for s in report.members}
    chosen = inv.member(d.chosen)
    if states[chosen.name].in_own_membership is False:
        raise RefusedError(f"{chosen.name} was removed from the cluster in its own data "
                           "(--force-new-cluster would panic with 'removed all voters', "
                           "etcd-io/etcd#13848); choose another member")
    reachable = [m for m in inv.members if states[m.name].reachable]
    unreachable = tuple(m.name for m in inv.members if not states[m.name].reachable)
    for m in reachable:
        if m.name not in configs:
            raise RefusedError(f"{m.name}: its etcd configuration "
                               f"({rt.config_path(m)}) could not be read")
    kept_versions = {m.name: states[m.name].etcd_version for m in reachable}
    if etcd_image is not None:
        if inv.runtime != "static-pod":
            raise UsageError("--etcd-image applies to a static-pod cluster; for systemd, put "
                             f"the etcd build to run on {chosen.name} where its unit runs it")
        tag = versions.parse_version(etcd_image.rsplit(":", 1)[-1]
                                     if ":" in etcd_image.rsplit("/", 1)[-1] else None)
        kept_versions[chosen.name] = "{}.{}.{}".format(*tag) if tag else None
    if etcd_binary is not None:
        if inv.runtime != "systemd":
            raise UsageError("--etcd-binary applies to a systemd cluster; for a static pod, "
                             "give the image with --etcd-image")
        kept_versions[chosen.name] = etcd_binary.version
    advs = versions.advisories(chosen.name, kept_versions, inv.runtime)
    for a in advs:
        if a.refuse:
            raise RefusedError(f"no plan: {a.line()}")
    rdir = run_dir(run_id)
    steps: list[Step] = []
    add = steps.append
    names = [m.name for m in reachable]

    # 1. preflight + lock
    add(Step(id="preflight", phase="preflight", kind=StepKind.PREFLIGHT, host=None,
             mutating=False,
             title="Re-check: quorum lost, one cluster ID, the same member to keep, "
                   "enough free disk for backups",
             precondition="",
             check=f"no linearizable read succeeds; cluster IDs agree; {chosen.name} still "
                   "has the most up-to-date log; free space >= data size on every host",
             actions=common.space_checks(reachable),
             params={"members": names, "fingerprint": fingerprint(report),
                     "allow_quorum": allow_quorum, "exclude": sorted(exclude)}))
    add(common.lock_step(run_id, reachable, take_over_lock))

    # 2. fence every reachable member, the one to keep last: while others stop, whatever the
    #    rest still sends it (a leader's last entries, say) reaches it too. When no other
    #    member runs etcd, nothing can reach it: all are fenced at once.
    others_run = any(states[m.name].etcd_running for m in reachable if m.name != chosen.name)
    for m in reachable:
        if m.name != chosen.name:
            add(replace(common.fence_step(rt, m, run_id), group="fence"))
    add(replace(common.fence_step(rt, chosen, run_id), group=None if others_run else "fence"))

    # 3. back up the kept member's data dir and configuration; every other member's backup
    #    runs in the background while the kept member is restored (their data is untouched
    #    until their move-aside, which waits for it)
    add(common.backup_step(rt, chosen, run_id))
    in_turn = common.backups_in_turn(states[m.name] for m in reachable if m.name != chosen.name)
    for m in reachable:
        if m.name != chosen.name:
            add(common.backup_step(rt, m, run_id, background=True, in_turn=in_turn))

    # 4. align the kept member's WAL commit, force a new cluster from it, then restart it
    #    without the flag
    add(align_step(chosen, replace(states[chosen.name],
                                   etcd_version=kept_versions[chosen.name]), run_id))
    cfg_file = rt.config_path(chosen)
    orig = configs[chosen.name]
    if etcd_image is not None:
        # the kept member keeps the image it is restored with (a patch-level change)
        orig = rconf.manifest_with_image(orig, cfg_file, etcd_image)
    forced, timed = forced_config(rt, orig, cfg_file)
    staged = posixpath.join(rdir, "config.staged")
    fnc_id, plain_id = f"force-new-cluster:{chosen.name}", f"remove-flag:{chosen.name}"
    start_forced = tuple(guarded(run_id, fnc_id, rt.start_argv(chosen, staged), 60.0))
    start_plain = tuple(guarded(run_id, plain_id, rt.start_argv(chosen, staged), 60.0))
    add(Step(id=f"force-new-cluster:{chosen.name}", phase="restore",
             kind=StepKind.FORCE_NEW_CLUSTER, host=chosen.name,
             title=f"Start {chosen.name} with --force-new-cluster ({d.reason})"
                   + (", for this start with a 100 ms election timeout (it leads at once)"
                      if timed else "")
                   + (f", from image {etcd_image}" if etcd_image else "")
                   + (f", with the etcd {etcd_binary.version or '(version unknown)'} build "
                      f"{etcd_binary.path} installed as {etcd_binary.replaces} (the original "
                      "kept in the run directory)" if etcd_binary else ""),
             precondition="",
             check=f"{chosen.name} is healthy as a one-member cluster: it leads, it is the "
                   "only voting member (a learner etcd left behind, etcd-io/etcd#20893, is "
                   "removed by remove-stale-members), a linearizable read succeeds",
             actions=(*((Run(chosen.name, tuple(guarded(
                 run_id, fnc_id, install_binary_argv(etcd_binary, rdir), 120.0)), 120.0),)
                        if etcd_binary else ()),
                      WriteFile(chosen.name, staged, forced, 0o600,
                                rconf.unified_diff(configs[chosen.name], forced, cfg_file)),
                      Run(chosen.name, start_forced, 60.0),
                      Wait("leads-alone", chosen.name, chosen.client_url, 90.0),
                      host_record(chosen.name, run_id, f"force-new-cluster:{chosen.name}")),
             params={"etcd_image": etcd_image,
                     "etcd_binary": etcd_binary.path if etcd_binary else None}))
    add(Step(id=f"remove-flag:{chosen.name}", phase="restore", kind=StepKind.RESTART_PLAIN,
             host=chosen.name,
             title=f"Restart {chosen.name} without --force-new-cluster",
             precondition="",
             check=f"{chosen.name} is healthy again and its etcd command line and "
                   "configuration hold no --force-new-cluster",
             actions=(WriteFile(chosen.name, staged, orig, 0o600,
                                rconf.unified_diff(forced, orig, cfg_file)),
                      Run(chosen.name, start_plain, 60.0),
                      Wait("healthy-without-force", chosen.name, chosen.client_url, 60.0),
                      host_record(chosen.name, run_id, f"remove-flag:{chosen.name}"))))
    kept_state = states[chosen.name]
    stale = [p for p in kept_state.membership if p.id != kept_state.member_id]
    add(Step(id="remove-stale-members", phase="restore", kind=StepKind.REMOVE_STALE,
             host=chosen.name,
             title="Remove every member but the kept one from membership (old members, "
                   "stray learners), where etcd has not already",
             precondition="",
             check=f"the member list holds only {chosen.name}",
             actions=(*(EtcdCall(chosen.name, "member-remove", chosen.client_url,
                                 name=p.name or None, peer_url=(p.peer_urls or (None,))[0],
                                 member_id=id_hex(p.id), if_listed=True, timeout_s=60.0)
                        for p in stale),
                      Wait("members-are", chosen.name, chosen.client_url, 30.0,
                           common.members_arg([(chosen.name, chosen.peer_url)])))))

    # 5. the peers come back one at a time as learners (one learner at a time is all etcd
    #    3.4/3.5 allow), each one's old data moved aside just before it is added: a move-aside
    #    waits for its host's background backup, and the backups run one at a time, so
    #    moving every peer aside at once waited for the last backup before any learner began
    #    (5 members, 1 GB: 11 s with no step running)
    others = [m for m in reachable if m.name != chosen.name]
    current = [(chosen.name, chosen.peer_url)]
    for m in others:
        steps.extend(rejoin_steps(rt, m, configs[m.name], run_id, chosen, current,
                                  unknown=m.name in exclude))
        current = [*current, (m.name, m.peer_url)]

    # 6. verify and release
    expected = [chosen.name, *[m.name for m in others]]
    add(common.verify_step(expected, keys_before))
    add(common.unlock_step(run_id, reachable))
    return Plan(cluster=inv.name, runtime=inv.runtime, run_id=run_id, chosen=chosen.name,
                reason=d.reason, fingerprint=fingerprint(report),
                steps=with_preconditions(steps, chosen.name),
                unreachable=unreachable, rejoin_later=unreachable, inventory=inv.path,
                advisories=tuple(a.line() for a in advs), minority_read=d.minority)


@dataclass(frozen=True)
class Align:
    """What align-commit does to one member's WAL, decided from its WAL read on disk."""

    outcome: str                 # "planned" | "none" | "etcd-does-it" | "skipped"
    why: str                     # one line, for the plan's title or the run's log
    record: AppendWal | None = None


def forced_config(rt: Runtime, orig: str, cfg_file: str) -> tuple[str, bool]:
    """The kept member's configuration for its forced start, and whether it carries
    rconf.FORCED_TIMING. Only a manifest does: it is the whole command line, so the flags
    set there are the ones etcd runs with. A systemd environment file is not (the unit's own
    command line may set --election-timeout, and etcd refuses to start when a variable shadows
    a flag), nor is a manifest whose container env sets the variables (refused by
    with_flags): those start with their own timing, a second or two slower."""
    force = {rconf.FLAG_FORCE_NEW_CLUSTER: "true"}
    if rt.name == rconf.STATIC_POD:
        try:
            return rt.with_flags(orig, cfg_file, {**force, **rconf.FORCED_TIMING}), True
        except FormatError:
            pass
    return rt.with_flags(orig, cfg_file, force), False


def align_decision(host: str, hardstate_commit: int, last_index: int, consistent: int,
                   torn: bool, tail: WalTail | None, commit_fix: bool) -> Align:
    """The align-commit decision, for the plan (etcd stopped when planned) and for the run
    (etcd fenced after planning) alike.

    --force-new-cluster keeps the WAL's entries up to its commit only; etcd with
    etcd-io/etcd#20055 (``commit_fix``) first raises that commit to the consistent index. The
    record written makes the commit max(last index, consistent index): the member's whole log,
    which raft's up-to-date rule chose it for."""
    target = max(consistent, last_index)
    if target <= hardstate_commit:
        return Align("none", f"Nothing to write: {host}'s WAL commit {hardstate_commit} "
                             f"already covers its log (last index {last_index}, consistent "
                             f"index {consistent})")
    if commit_fix and last_index <= max(hardstate_commit, consistent):
        return Align("etcd-does-it",
                     f"Nothing to write (confirmed no-op): {host}'s etcd raises the commit "
                     f"{hardstate_commit} to its consistent index {consistent} itself on "
                     f"--force-new-cluster (etcd-io/etcd#20055), which covers its whole log "
                     f"(last index {last_index})")
    why = ("the WAL ends in a torn write" if torn else
           f"the WAL's last entry ({last_index}) is before the consistent index ({consistent})"
           if last_index < consistent else None)
    data = b""
    if why is None and tail is not None:
        data, _ = hardstate_frame(tail.crc, tail.term, tail.vote, target)
        if tail.room < len(data):
            why = f"no room after the last record of {tail.file}"
    elif why is None:
        why = "the last WAL file holds no valid record to append after"
    if why is not None:
        return Align("skipped", f"WARNING: {host}'s WAL commit {hardstate_commit} < {target}, "
                                f"but {why}: not aligning; verify's HashKV check will tell "
                                "whether members diverge")
    assert tail is not None
    return Align("planned",
                 f"Make {host}'s WAL commit cover every entry of its log: append one HardState "
                 f"record (term {tail.term}, vote {tail.vote:x}, commit {target}; WAL commit "
                 f"{hardstate_commit}, last index {last_index}, consistent index {consistent})",
                 AppendWal(host, tail.file, tail.offset, data.hex(), tail.crc, target))


def align_step(m: Member, st: MemberState, run_id: str) -> Step:
    """Make the kept member's WAL commit cover its whole log (etcd-io/etcd#14009, #20055).

    The record is computed here when the member's WAL was read from disk (etcd stopped): its
    exact bytes and offset are in the plan, and the executor checks that the WAL still ends
    there. When etcd ran at planning time, its WAL can still change until it is fenced: the
    record is then a named reference, resolved from the WAL after fencing (the same decision,
    :func:`align_decision`) and journaled."""
    sid = f"align-commit:{m.name}"
    wal_dir = m.wal   # --wal-dir, else <data-dir>/member/wal: where etcd reads its WAL from
    db = posixpath.join(m.data_dir, "member", "snap", "db")
    fix = versions.commit_fix(versions.parse_version(st.etcd_version))

    def step(title: str, target: str, actions: tuple[Action, ...] = ()) -> Step:
        return Step(id=sid, phase="restore", kind=StepKind.ALIGN_COMMIT, host=m.name,
                    title=title, mutating=bool(actions),
                    precondition="",
                    check="the WAL's last HardState commit equals max(last index, "
                          "consistent index)",
                    actions=(*actions, host_record(m.name, run_id, sid)) if actions else (),
                    params={"wal_dir": wal_dir, "db": db, "target": target,
                            "commit_fix": fix})

    if st.source != "disk" or st.wal_tail is None:
        return step(f"Make {m.name}'s WAL commit cover every entry of its log: etcd ran when "
                    "this plan was made, so the HardState record (term and vote of the WAL's "
                    "last HardState, commit = max(last index, consistent index)) is computed "
                    "from its WAL once it is fenced; its bytes and offset go into the journal "
                    f"as wal-record:{m.name}"
                    + (" (or nothing, when etcd's own fix, etcd-io/etcd#20055, covers the "
                       "log)" if fix else ""), "after-fence",
                    (AppendWal(m.name, "", -1, "", -1, -1),))
    d = align_decision(m.name, st.hardstate_commit or 0, st.last_index or 0,
                       st.consistent_index or 0, bool(st.torn_tail), st.wal_tail, fix)
    return step(d.why, d.outcome, (d.record,) if d.record else ())


"""Bring one member back into a cluster that has quorum (``rejoin``), and the steps every
method uses to return a peer as a learner: move its old data aside, add it as a learner,
start it, promote it once caught up."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from ..actions import EtcdCall, Run, Wait, WriteFile
from ..inventory import Inventory, Member
from ..model import PeerView, id_hex
from ..runtimes import config as rconf
from ..runtimes.base import Runtime, runtime_for
from . import common
from .scripts import guarded, host_record, move_aside_argv, space_argv
from .steps import Plan, Step, StepKind, run_dir, with_preconditions


def rejoin_steps(rt: Runtime, m: Member, config: str, run_id: str, via: Member,
                 members_before: Sequence[tuple[str, str]], unknown: bool = False) -> list[Step]:
    """Move a member's old data aside and bring it back as a learner, then promote it.
    ``members_before`` are the cluster's members (name, peer URL) just before its add."""
    rdir = run_dir(run_id)
    staged = posixpath.join(rdir, "config.staged")
    moved = posixpath.join(rdir, "member.moved")
    member_dir = posixpath.join(m.data_dir, "member")
    move = guarded(run_id, f"move-aside:{m.name}", move_aside_argv(member_dir, moved, m.data_dir),
                   600.0)
    # A WAL dir of its own (--wal-dir) is moved aside too: etcd starts from the WAL it finds
    # there (etcd v3.6.16 server/etcdserver/bootstrap.go: haveWAL := wal.Exist(cfg.WALDir())),
    # so a learner with the old WAL would restart as the old member instead of joining. It is
    # left absent: etcd makes it again (server/storage/wal/wal.go: Create writes
    # <wal-dir>.tmp and renames it onto <wal-dir>).
    wal_moved = posixpath.join(rdir, "wal.moved")
    wal_move = (Run(m.name, tuple(guarded(run_id, f"move-aside:{m.name}", move_aside_argv(
        m.wal, wal_moved, posixpath.dirname(posixpath.normpath(m.wal))), 600.0)), 600.0),) \
        if m.wal_apart else ()
    after = [*members_before, (m.name, m.peer_url)]
    cfg_file = rt.config_path(m)
    new_config = rt.with_flags(config, cfg_file,
                               {"initial-cluster": rconf.initial_cluster(after),
                                "initial-cluster-state": "existing"})
    ref = f"learner-id:{m.name}"
    ep = via.client_url
    return [
        Step(id=f"move-aside:{m.name}", phase="rejoin", kind=StepKind.MOVE_ASIDE, host=m.name,
             title=f"Move {m.name}'s old data aside to {moved}"
                   + (f", and its WAL dir {m.wal} to {wal_moved}" if m.wal_apart else "")
                   + (" (its data is unknown: excluded with --exclude, never used)"
                      if unknown else ""),
             precondition="",
             check=f"{member_dir} no longer exists; the old data is in {moved}"
                   + (f"; {m.wal} no longer exists; the old WAL is in {wal_moved}"
                      if m.wal_apart else ""),
             actions=(Run(m.name, tuple(move), 600.0), *wal_move,
                      host_record(m.name, run_id, f"move-aside:{m.name}"))),
        Step(id=f"learner-add:{m.name}", phase="rejoin", kind=StepKind.LEARNER_ADD, host=m.name,
             title=f"Add {m.name} back as a learner ({m.peer_url})",
             precondition="",
             check=f"the member list holds a learner with peer URL {m.peer_url}",
             actions=(Wait("members-are", via.name, ep, 30.0, common.members_arg(members_before)),
                      EtcdCall(via.name, "member-add-learner", ep, name=m.name,
                               peer_url=m.peer_url, result=ref, timeout_s=90.0))),
        Step(id=f"start-learner:{m.name}", phase="rejoin", kind=StepKind.START_LEARNER,
             host=m.name,
             title=f"Start {m.name} with --initial-cluster-state=existing and "
                   f"--initial-cluster={rconf.initial_cluster(after)}",
             precondition="",
             check=f"etcd runs on {m.name}",
             actions=(Wait("members-are", via.name, ep, 30.0, common.members_arg(after)),
                      WriteFile(m.name, staged, new_config, 0o600,
                                rconf.unified_diff(config, new_config, cfg_file)),
                      Run(m.name, tuple(guarded(run_id, f"start-learner:{m.name}",
                                                rt.start_argv(m, staged), 60.0)), 60.0),
                      Wait("etcd-running", m.name, m.client_url, 60.0),
                      host_record(m.name, run_id, f"start-learner:{m.name}"))),
        Step(id=f"promote:{m.name}", phase="rejoin", kind=StepKind.PROMOTE, host=m.name,
             title=f"Promote {m.name} once it has caught up",
             precondition="",
             check=f"{m.name} is a voting member and healthy",
             actions=(EtcdCall(via.name, "member-promote", ep, name=m.name,
                               peer_url=m.peer_url, member_ref=ref, timeout_s=180.0),
                      Wait("voting-healthy", m.name, m.client_url, 90.0))),
    ]


def make_rejoin_plan(inv: Inventory, name: str, via: str, config: str, run_id: str,
                     membership: Sequence[PeerView], take_over_lock: bool = False) -> Plan:
    """Bring one member back into a healthy cluster: fence it, back it up, move its stale
    data aside (so it cannot split the cluster), add it as a learner, start, promote.
    ``membership`` is the cluster's member list as ``via`` reported it."""
    rt = runtime_for(inv.runtime)
    m = inv.member(name)
    via_m = inv.member(via)
    old = [p for p in membership if m.peer_url in p.peer_urls and not p.is_learner]
    voters = [(p.name, p.peer_urls[0]) for p in membership
              if not p.is_learner and m.peer_url not in p.peer_urls and p.peer_urls]
    steps = [
        Step(id="preflight-rejoin", phase="preflight", kind=StepKind.PREFLIGHT_REJOIN,
             host=None, mutating=False,
             title=f"Re-check: the cluster has quorum (through {via}) and {name} is not a "
                   "healthy voting member; free disk for the backup",
             precondition="",
             check=f"a linearizable read through {via} succeeds",
             actions=(Run(name, tuple(space_argv(m.data_dir, *common.wal_apart_from_data(m))),
                          60.0),),
             params={"via": via, "name": name}),
        common.lock_step(run_id, [m], take_over_lock),
        common.fence_step(rt, m, run_id),
        common.backup_step(rt, m, run_id),
        Step(id=f"remove-old:{name}", phase="rejoin", kind=StepKind.REMOVE_OLD, host=name,
             title=f"Remove {name}'s old voting entry from membership"
                   + ("" if old else " (none listed when planned)"),
             precondition="",
             check=f"no voting member has {name}'s peer URL {m.peer_url}",
             actions=tuple(EtcdCall(via, "member-remove", via_m.client_url, name=name,
                                    peer_url=m.peer_url, member_id=id_hex(p.id),
                                    if_listed=True, timeout_s=60.0) for p in old)),
        *rejoin_steps(rt, m, config, run_id, via_m, voters),
        common.verify_step(sorted({*(n for n, _ in voters), name}), None),
        common.unlock_step(run_id, [m]),
    ]
    return Plan(cluster=inv.name, runtime=inv.runtime, run_id=run_id, chosen=via,
                reason=f"rejoin {name} through {via}", fingerprint="",
                steps=with_preconditions(steps, via),
                unreachable=(), rejoin_later=(), inventory=inv.path)


"""The recovery plan: pure, from an inspection to an ordered list of steps.

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

import hashlib
import json
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import FormatError, RefusedError
from .inventory import Inventory, Member
from .model import InspectReport, id_hex
from .runtimes import config as rconf

STATE_DIR = "/var/lib/etcd-recovery"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Step:
    id: str
    phase: str
    kind: str
    host: str | None
    title: str
    precondition: str
    check: str
    commands: tuple[str, ...] = ()          # for people and the runbook
    params: Mapping[str, Any] = field(default_factory=dict)  # for the executor (JSON values)
    mutating: bool = True

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["commands"] = list(self.commands)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Step:
        return cls(id=d["id"], phase=d["phase"], kind=d["kind"], host=d["host"],
                   title=d["title"], precondition=d["precondition"], check=d["check"],
                   commands=tuple(d["commands"]), params=dict(d["params"]),
                   mutating=bool(d["mutating"]))


@dataclass(frozen=True)
class Plan:
    cluster: str
    runtime: str
    run_id: str
    chosen: str
    reason: str
    fingerprint: str
    steps: tuple[Step, ...]
    unreachable: tuple[str, ...]
    rejoin_later: tuple[str, ...]
    inventory: str
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "cluster": self.cluster, "runtime": self.runtime,
                "run_id": self.run_id, "chosen": self.chosen, "reason": self.reason,
                "fingerprint": self.fingerprint, "inventory": self.inventory,
                "unreachable": list(self.unreachable),
                "rejoin_later": list(self.rejoin_later),
                "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, d: Any, file: str = "<plan>") -> Plan:
        try:
            if d.get("version") != PLAN_VERSION:
                raise ValueError(f"unsupported plan version {d.get('version')!r}")
            return cls(cluster=d["cluster"], runtime=d["runtime"], run_id=d["run_id"],
                       chosen=d["chosen"], reason=d["reason"], fingerprint=d["fingerprint"],
                       inventory=d["inventory"], unreachable=tuple(d["unreachable"]),
                       rejoin_later=tuple(d["rejoin_later"]),
                       steps=tuple(Step.from_json(s) for s in d["steps"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise FormatError(file, 0, f"not a valid plan: {exc!r}") from exc


def fingerprint(report: InspectReport) -> str:
    """A digest of the facts the plan rests on; stable while nothing changes.

    Commit figures of members that run are left out: a running member's figures are read live,
    and etcd flushes a commit-only HardState lazily, so live and disk readings of the same
    member can differ by a heartbeat's worth. The member to keep is checked on its own (the
    preflight step, and again from the disks once every member is fenced).
    """
    facts = []
    for m in sorted(report.members, key=lambda m: m.name):
        facts.append([m.name, m.reachable, id_hex(m.member_id), id_hex(m.cluster_id),
                      None if m.etcd_running else m.commit_index,
                      None if m.etcd_running else m.revision])
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def run_dir(run_id: str) -> str:
    return posixpath.join(STATE_DIR, run_id)


def sh(script: str, *args: str) -> list[str]:
    """A shell snippet with its values passed as positional parameters, never interpolated."""
    return ["sh", "-c", script, "etcd-recovery", *args]


LOCK_PATH = posixpath.join(STATE_DIR, "lock")


def lock_argv(run_id: str) -> list[str]:
    """Take the host's recovery lock for ``run_id``; fails when the lock file exists."""
    return sh('set -e; umask 077; mkdir -p "$(dirname "$1")"; chmod 0700 "$(dirname "$1")"; '
              'set -C; echo "$2" > "$1"', LOCK_PATH, run_id)


def unlock_argv(run_id: str) -> list[str]:
    """Release the host's recovery lock if, and only if, ``run_id`` holds it."""
    return sh('set -e; if [ "$(cat "$1" 2>/dev/null)" = "$2" ]; then rm -f "$1"; fi',
              LOCK_PATH, run_id)


def show(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# --------------------------------------------------------------------------- per runtime

def fence_argv(runtime: str, m: Member, rdir: str) -> list[str]:
    if runtime == "static-pod":
        assert m.manifest
        return sh('set -e; mkdir -p -m 0700 "$2"; '
                  'if [ -e "$1" ]; then mv "$1" "$2/etcd.yaml.fenced"; fi; '
                  'test -e "$2/etcd.yaml.fenced"', m.manifest, rdir)
    assert m.unit
    return sh('set -e; mkdir -p -m 0700 "$2"; systemctl disable --now "$1"', m.unit, rdir)


def config_path(runtime: str, m: Member) -> str:
    path = m.manifest if runtime == "static-pod" else m.env_file
    assert path
    return path


def fenced_config_path(runtime: str, m: Member, rdir: str) -> str:
    """Where the member's original configuration is while it is fenced."""
    return posixpath.join(rdir, "etcd.yaml.fenced") if runtime == "static-pod" else \
        config_path(runtime, m)


def start_argv(runtime: str, m: Member, staged: str) -> list[str]:
    """Put a staged configuration in force and (re)start etcd with it."""
    if runtime == "static-pod":
        assert m.manifest
        # The supervisor (kubelet) starts the pod when the manifest appears or changes.
        return sh('set -e; chmod 0600 "$1"; mv "$1" "$2"', staged, m.manifest)
    assert m.unit and m.env_file
    return sh('set -e; chmod 0600 "$1"; mv "$1" "$2"; systemctl enable "$3"; '
              'systemctl restart --no-block "$3"', staged, m.env_file, m.unit)


# --------------------------------------------------------------------------- the plan

def make_plan(inv: Inventory, report: InspectReport, configs: Mapping[str, str],
              run_id: str, keys_before: int | None = None, allow_quorum: bool = False) -> Plan:
    """Lay out the recovery. ``configs`` maps member name -> its manifest / env file text."""
    d = report.decision
    if d.refused or d.chosen is None:
        raise RefusedError(f"no plan: {d.reason}")
    runtime = inv.runtime
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
                               f"({config_path(runtime, m)}) could not be read")
    rdir = run_dir(run_id)
    steps: list[Step] = []
    add = steps.append

    # 1. preflight + lock
    add(Step(id="preflight", phase="preflight", kind="preflight", host=None, mutating=False,
             title="Re-check: quorum lost, one cluster ID, the same member to keep, "
                   "enough free disk for backups",
             precondition="every reachable member answers over SSH",
             check=f"no linearizable read succeeds; cluster IDs agree; {chosen.name} still "
                   "has the most up-to-date log; free space >= data size on every host",
             commands=("etcd-recovery inspect -i INVENTORY",
                       *(f"ssh {m.name} df -B1 --output=avail /var/lib; du -sb {m.data_dir}"
                         for m in reachable)),
             params={"chosen": chosen.name, "members": [m.name for m in reachable],
                     "fingerprint": fingerprint(report), "allow_quorum": allow_quorum}))
    lock_path = LOCK_PATH
    lock = lock_argv(run_id)
    add(Step(id="lock", phase="preflight", kind="lock", host=None,
             title="Take the recovery lock on every reachable host",
             precondition=f"no other run holds {lock_path} (a stale lock is shown; take it "
                          "over with --take-over-lock)",
             check=f"{lock_path} holds this run id ({run_id}) on every host",
             commands=tuple(f"ssh {m.name} {shlex.quote(show(lock))}" for m in reachable),
             params={"argv": lock, "path": lock_path, "members": [m.name for m in reachable]}))

    # 2. fence every reachable member, the one to keep last: while others stop, whatever the
    #    rest still commits (a new leader's first entry, say) reaches it too
    for m in [*(m for m in reachable if m.name != chosen.name), chosen]:
        argv = fence_argv(runtime, m, rdir)
        how = ("manifest moved out of the kubelet's directory" if runtime == "static-pod"
               else f"{m.unit} stopped and disabled")
        add(Step(id=f"fence:{m.name}", phase="fence", kind="fence", host=m.name,
                 title=f"Fence {m.name}: {how}",
                 precondition=f"{m.name} is reachable over SSH",
                 check="no etcd process on the host, and its supervisor will not start one",
                 commands=(show(argv), "until ! pgrep -x etcd; do sleep 0.2; done"),
                 params={"argv": argv}))

    # 3. back up every reachable member's data dir and configuration
    for m in reachable:
        add(backup_step(runtime, m, rdir))

    # 4. align the kept member's WAL commit with its backend, force a new cluster from it,
    #    then restart it without the flag
    st = states[chosen.name]
    wal_dir = posixpath.join(chosen.data_dir, "member", "wal")
    add(Step(id=f"align-commit:{chosen.name}", phase="restore", kind="align_commit",
             host=chosen.name,
             title=f"Make {chosen.name}'s WAL commit cover every entry of its log and all its "
                   f"backend applied (last index {st.last_index}, consistent index "
                   f"{st.consistent_index}, WAL commit "
                   f"{st.hardstate_commit if st.hardstate_commit is not None else '?'} "
                   "when inspected)",
             precondition=f"etcd is not running on {chosen.name}; its backup is verified; "
                          "the WAL has no torn tail and holds every entry up to the consistent "
                          "index",
             check="the WAL's last HardState commit equals max(last index, consistent "
                   "index) (nothing is written when it already does)",
             commands=(f"# only if max(last index, consistent index) > WAL HardState commit: "
                       f"append one HardState record (term, vote, commit=that index) at the "
                       f"end of the last file in {wal_dir} (etcd-io/etcd#14009, #20009)",),
             params={"wal_dir": wal_dir,
                     "db": posixpath.join(chosen.data_dir, "member", "snap", "db")}))
    orig = configs[chosen.name]
    cfg_file = config_path(runtime, chosen)
    forced = rconf.config_with_flags(runtime, orig, cfg_file,
                                     {rconf.FLAG_FORCE_NEW_CLUSTER: "true"}, ())
    staged = posixpath.join(rdir, "config.staged")
    add(Step(id=f"force-new-cluster:{chosen.name}", phase="restore", kind="force_new_cluster",
             host=chosen.name,
             title=f"Start {chosen.name} with --force-new-cluster ({d.reason})",
             precondition="every reachable member is fenced (no etcd running); "
                          f"{chosen.name} still has the newest data on disk; its backup exists",
             check=f"{chosen.name} is healthy as a one-member cluster: it leads, the member "
                   "list holds only itself, a linearizable read succeeds",
             commands=(f"# write to {staged}:\n" + rconf.unified_diff(orig, forced, cfg_file),
                       show(start_argv(runtime, chosen, staged))),
             params={"config": forced, "staged": staged, "path": cfg_file,
                     "start": start_argv(runtime, chosen, staged)}))
    add(Step(id=f"remove-flag:{chosen.name}", phase="restore", kind="restart_plain",
             host=chosen.name,
             title=f"Restart {chosen.name} without --force-new-cluster",
             precondition=f"{chosen.name} is healthy as a one-member cluster",
             check=f"{chosen.name} is healthy again and its etcd command line and "
                   "configuration hold no --force-new-cluster",
             commands=(f"# write to {staged}:\n" + rconf.unified_diff(forced, orig, cfg_file),
                       show(start_argv(runtime, chosen, staged))),
             params={"config": orig, "staged": staged, "path": cfg_file,
                     "start": start_argv(runtime, chosen, staged)}))
    add(Step(id="remove-stale-members", phase="restore", kind="remove_stale", host=chosen.name,
             title="Remove every member but the kept one from membership (old members, "
                   "stray learners)",
             precondition=f"{chosen.name} is healthy",
             check=f"the member list holds only {chosen.name}",
             commands=("etcdctl member list; etcdctl member remove <id>  # for each other",),
             params={}))

    # 5. peers come back one at a time as learners
    others = [m for m in reachable if m.name != chosen.name]
    for m in others:
        steps.extend(rejoin_steps(runtime, m, configs[m.name], rdir))

    # 6. verify and release
    expected = [chosen.name, *[m.name for m in others]]
    add(Step(id="verify", phase="verify", kind="verify", host=None, mutating=False,
             title="Verify: expected voting members only, all healthy, same revision, equal "
                   "HashKV, no alarms, no --force-new-cluster left, keys all there",
             precondition="every step before it is done",
             check="all of the above hold",
             commands=("etcd-recovery verify -i INVENTORY",),
             params={"members": expected, "keys_before": keys_before}))
    unlock = unlock_argv(run_id)
    add(Step(id="unlock", phase="verify", kind="unlock", host=None,
             title="Release the recovery lock", precondition="verify passed",
             check=f"{lock_path} is gone on every host",
             commands=tuple(f"ssh {m.name} {shlex.quote(show(unlock))}" for m in reachable),
             params={"argv": unlock, "members": [m.name for m in reachable]}))

    return Plan(cluster=inv.name, runtime=runtime, run_id=run_id, chosen=chosen.name,
                reason=d.reason, fingerprint=fingerprint(report), steps=tuple(steps),
                unreachable=unreachable, rejoin_later=unreachable, inventory=inv.path)


def rejoin_steps(runtime: str, m: Member, config: str, rdir: str) -> list[Step]:
    """Move a member's old data aside and bring it back as a learner, then promote it."""
    staged = posixpath.join(rdir, "config.staged")
    moved = posixpath.join(rdir, "member.moved")
    member_dir = posixpath.join(m.data_dir, "member")
    move = sh('set -e; if [ -e "$1" ]; then mv "$1" "$2"; fi; mkdir -p -m 0700 "$3"; '
              'test ! -e "$1"', member_dir, moved, m.data_dir)
    return [
        Step(id=f"move-aside:{m.name}", phase="rejoin", kind="move_aside", host=m.name,
             title=f"Move {m.name}'s old data aside to {moved}",
             precondition=f"etcd is not running on {m.name}; its backup is verified",
             check=f"{member_dir} no longer exists; the old data is in {moved}",
             commands=(show(move),), params={"argv": move}),
        Step(id=f"learner-add:{m.name}", phase="rejoin", kind="learner_add", host=m.name,
             title=f"Add {m.name} back as a learner ({m.peer_url})",
             precondition="the cluster is healthy and has no other learner",
             check=f"the member list holds a learner with peer URL {m.peer_url}",
             commands=(f"etcdctl member add {m.name} --learner --peer-urls={m.peer_url}",),
             params={"peer_url": m.peer_url}),
        Step(id=f"start-learner:{m.name}", phase="rejoin", kind="start_learner", host=m.name,
             title=f"Start {m.name} with --initial-cluster-state=existing and the current "
                   "--initial-cluster",
             precondition=f"{m.name} is a learner in the member list; its data dir is empty",
             check=f"etcd runs on {m.name}",
             commands=(f"# rewrite {config_path(runtime, m)}: initial-cluster-state=existing, "
                       "initial-cluster=<current members + itself>",
                       show(start_argv(runtime, m, staged))),
             params={"original": config, "staged": staged, "path": config_path(runtime, m),
                     "start": start_argv(runtime, m, staged)}),
        Step(id=f"promote:{m.name}", phase="rejoin", kind="promote", host=m.name,
             title=f"Promote {m.name} once it has caught up",
             precondition=f"{m.name}'s etcd runs and is a learner",
             check=f"{m.name} is a voting member and healthy",
             commands=(f"etcdctl member promote <id of {m.name}>  "
                       "# retried while 'not in sync yet'",),
             params={"peer_url": m.peer_url}),
    ]


def make_rejoin_plan(inv: Inventory, name: str, via: str, config: str, run_id: str,
                     members_now: Sequence[str]) -> Plan:
    """Bring one member back into a healthy cluster: fence it, back it up, move its stale
    data aside (so it cannot split the cluster), add it as a learner, start, promote."""
    runtime = inv.runtime
    m = inv.member(name)
    rdir = run_dir(run_id)
    lock_path = LOCK_PATH
    lock = lock_argv(run_id)
    unlock = unlock_argv(run_id)
    fence = fence_argv(runtime, m, rdir)
    steps = [
        Step(id="preflight-rejoin", phase="preflight", kind="preflight_rejoin", host=None,
             mutating=False,
             title=f"Re-check: the cluster has quorum (through {via}) and {name} is not a "
                   "healthy voting member",
             precondition=f"{via} and {name} answer over SSH",
             check=f"a linearizable read through {via} succeeds",
             commands=("etcd-recovery inspect -i INVENTORY",),
             params={"via": via, "name": name, "members": [name]}),
        Step(id="lock", phase="preflight", kind="lock", host=None,
             title=f"Take the recovery lock on {name}",
             precondition=f"no other run holds {lock_path}",
             check=f"{lock_path} holds this run id ({run_id})",
             commands=(f"ssh {name} {shlex.quote(show(lock))}",),
             params={"argv": lock, "path": lock_path, "members": [name]}),
        Step(id=f"fence:{name}", phase="fence", kind="fence", host=name,
             title=f"Fence {name} (its old etcd must not run with its old data)",
             precondition=f"{name} is reachable over SSH",
             check="no etcd process on the host, and its supervisor will not start one",
             commands=(show(fence),), params={"argv": fence}),
        backup_step(runtime, m, rdir),
        Step(id=f"remove-old:{name}", phase="rejoin", kind="remove_old", host=name,
             title=f"Remove {name}'s old voting entry from membership, if the cluster still "
                   "lists it",
             precondition=f"{name}'s etcd is fenced",
             check=f"no voting member has {name}'s peer URL {m.peer_url}",
             commands=("etcdctl member list; etcdctl member remove <old id>  # if listed",),
             params={"peer_url": m.peer_url}),
        *rejoin_steps(runtime, m, config, rdir),
        Step(id="verify", phase="verify", kind="verify", host=None, mutating=False,
             title="Verify: expected voting members only, all healthy, same revision, equal "
                   "HashKV, no alarms, no --force-new-cluster left",
             precondition="every step before it is done", check="all of the above hold",
             commands=("etcd-recovery verify -i INVENTORY",),
             params={"members": sorted({*members_now, name}), "keys_before": None}),
        Step(id="unlock", phase="verify", kind="unlock", host=None,
             title="Release the recovery lock", precondition="verify passed",
             check=f"{lock_path} is gone", commands=(f"ssh {name} {shlex.quote(show(unlock))}",),
             params={"argv": unlock, "members": [name]}),
    ]
    return Plan(cluster=inv.name, runtime=runtime, run_id=run_id, chosen=via,
                reason=f"rejoin {name} through {via}", fingerprint="", steps=tuple(steps),
                unreachable=(), rejoin_later=(), inventory=inv.path)


def backup_step(runtime: str, m: Member, rdir: str) -> Step:
    """Copy the member's data dir and (fenced) configuration, with a verified SHA256SUMS."""
    bdir = posixpath.join(rdir, "backup")
    argv = _backup_argv(m.data_dir, fenced_config_path(runtime, m, rdir), bdir)
    return Step(id=f"backup:{m.name}", phase="backup", kind="backup", host=m.name,
                title=f"Back up {m.name}'s data dir and configuration to {bdir}",
                precondition="etcd is not running on the host; free space >= data size",
                check="sha256sum -c SHA256SUMS passes in the backup directory",
                commands=(show(argv),), params={"argv": argv, "dir": bdir})


def _backup_argv(data_dir: str, cfg: str, bdir: str) -> list[str]:
    return sh('set -e; umask 077; mkdir -p "$3"; '
              'if [ ! -f "$3/SHA256SUMS" ]; then '
              'rm -rf "$3/data.partial"; cp -a "$1" "$3/data.partial"; '
              'cp -a "$2" "$3/"; mv "$3/data.partial" "$3/data"; '
              '(cd "$3" && find data "$(basename "$2")" -type f -print0 | sort -z '
              '| xargs -0 sha256sum > SHA256SUMS.partial && '
              'mv SHA256SUMS.partial SHA256SUMS); fi; '
              'cd "$3" && sha256sum --quiet -c SHA256SUMS', data_dir, cfg, bdir)

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from . import conditions, versions
from .actions import (
    Action,
    AppendWal,
    EtcdCall,
    Run,
    Wait,
    WriteFile,
    action_from_json,
    action_to_json,
)
from .errors import FormatError, RefusedError, UsageError
from .formats.walwrite import hardstate_frame
from .inventory import Inventory, Member
from .model import InspectReport, MemberState, MinorityRead, NewBinary, PeerView, WalTail, id_hex
from .runtimes import config as rconf
from .runtimes.base import Runtime, runtime_for, sh

STATE_DIR = "/var/lib/etcd-recovery"
PLAN_VERSION = 1


class StepKind(StrEnum):
    PREFLIGHT = "preflight"
    PREFLIGHT_REJOIN = "preflight_rejoin"
    LOCK = "lock"
    FENCE = "fence"
    BACKUP = "backup"
    ALIGN_COMMIT = "align_commit"
    FORCE_NEW_CLUSTER = "force_new_cluster"
    RESTART_PLAIN = "restart_plain"
    REMOVE_STALE = "remove_stale"
    REMOVE_OLD = "remove_old"
    MOVE_ASIDE = "move_aside"
    LEARNER_ADD = "learner_add"
    START_LEARNER = "start_learner"
    PROMOTE = "promote"
    VERIFY = "verify"
    UNLOCK = "unlock"
    # the snapshot method (method_snapshot.py)
    PREFLIGHT_SNAPSHOT = "preflight_snapshot"
    STOP_KEPT = "stop_kept"
    SNAPSHOT_MAKE = "snapshot_make"
    SNAPSHOT_SEND = "snapshot_send"
    RESTORE = "restore"
    START_RESTORED = "start_restored"
    CLUSTER_UP = "cluster_up"
    RESTORE_CHECK = "restore_check"


BACKGROUND = "background"

# Each kind's parameters (what the executor needs beyond the actions), with their JSON types.
_STR_LIST = "list[str]"
STEP_PARAMS: dict[StepKind, dict[str, str]] = {
    StepKind.PREFLIGHT: {"members": _STR_LIST, "fingerprint": "str", "allow_quorum": "bool",
                         "exclude": _STR_LIST},
    StepKind.PREFLIGHT_REJOIN: {"via": "str", "name": "str"},
    StepKind.LOCK: {"path": "str", "members": _STR_LIST},
    StepKind.VERIFY: {"members": _STR_LIST, "keys_before": "int|None"},
    StepKind.ALIGN_COMMIT: {"wal_dir": "str", "db": "str", "target": "str",
                             "commit_fix": "bool"},
    StepKind.FORCE_NEW_CLUSTER: {"etcd_image": "str|None", "etcd_binary": "str|None"},
    StepKind.PREFLIGHT_SNAPSHOT: {"members": _STR_LIST, "fingerprint": "str", "file": "str",
                                  "sha256": "str", "allow_older_data": "bool",
                                  "skip_hash_check": "bool"},
    StepKind.SNAPSHOT_MAKE: {"snapshot": "str", "wal_dir": "str", "ref": "str",
                             "min_revision": "int"},
    StepKind.SNAPSHOT_SEND: {"snapshot": "str"},
    StepKind.RESTORE: {"snapshot": "str", "ref": "str", "sha256": "str",
                       "bump_revision": "int", "token": "str", "etcdutl": "str",
                       "skip_hash_check": "bool"},
    StepKind.RESTORE_CHECK: {"ref": "str", "revision": "int", "bump_revision": "int"},
}
_PARAM_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "bool": (bool,), "int": (int,),
                                             "str|None": (str, type(None)),
                                             "int|None": (int, type(None)), _STR_LIST: (list,)}


@dataclass(frozen=True)
class Step:
    id: str
    phase: str
    kind: StepKind
    host: str | None
    title: str
    precondition: str
    check: str
    actions: tuple[Action, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    mutating: bool = True
    # Consecutive steps of one group touch different hosts and run at the same time. Steps of
    # the group BACKGROUND start and the run goes on: each is waited for before the next step
    # on its host (or on every host) and before the run ends.
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "phase": self.phase, "kind": self.kind.value, "host": self.host,
                "title": self.title, "precondition": self.precondition, "check": self.check,
                "mutating": self.mutating, "group": self.group, "params": dict(self.params),
                "actions": [action_to_json(a) for a in self.actions]}

    @classmethod
    def from_json(cls, d: Any, where: str) -> Step:
        """Strictly: known kind, every field with its type, no extra field."""
        if not isinstance(d, Mapping):
            raise FormatError(where, 0, "a step must be an object")
        keys = {"id", "phase", "kind", "host", "title", "precondition", "check", "mutating",
                "group", "params", "actions"}
        if set(d) != keys:
            missing, extra = sorted(keys - set(d)), sorted(set(d) - keys)
            raise FormatError(where, 0, "step fields: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unexpected {', '.join(extra)}"] if extra else [])))
        try:
            kind = StepKind(d["kind"])
        except ValueError as exc:
            raise FormatError(where, 0, f"unknown step kind {d['kind']!r}") from exc
        for key in ("id", "phase", "title", "precondition", "check"):
            if not isinstance(d[key], str):
                raise FormatError(where, 0, f"step field {key!r} must be a string")
        if d["host"] is not None and not isinstance(d["host"], str):
            raise FormatError(where, 0, "step field 'host' must be a string or null")
        if not isinstance(d["mutating"], bool):
            raise FormatError(where, 0, "step field 'mutating' must be true or false")
        if d["group"] is not None and not isinstance(d["group"], str):
            raise FormatError(where, 0, "step field 'group' must be a string or null")
        params = d["params"]
        want = STEP_PARAMS.get(kind, {})
        if not isinstance(params, Mapping) or set(params) != set(want):
            raise FormatError(where, 0, f"{kind.value} step: params must be exactly "
                                        f"{sorted(want) or 'empty'}")
        for key, typ in want.items():
            v = params[key]
            if not isinstance(v, _PARAM_TYPES[typ]) or (isinstance(v, bool) and typ != "bool"):
                raise FormatError(where, 0, f"{kind.value} step: param {key!r} has the wrong "
                                            "type")
            if isinstance(v, list) and not all(isinstance(x, str) for x in v):
                raise FormatError(where, 0, f"{kind.value} step: param {key!r} must be a "
                                            "list of strings")
        if not isinstance(d["actions"], list):
            raise FormatError(where, 0, "step field 'actions' must be a list")
        actions = tuple(action_from_json(a, f"{where} action {i + 1}")
                        for i, a in enumerate(d["actions"]))
        return cls(id=d["id"], phase=d["phase"], kind=kind, host=d["host"], title=d["title"],
                   precondition=d["precondition"], check=d["check"], actions=actions,
                   params=dict(params), mutating=d["mutating"], group=d["group"])


_PLAN_KEYS = {"version", "cluster", "runtime", "run_id", "chosen", "reason", "fingerprint",
              "inventory", "unreachable", "rejoin_later", "advisories", "minority_read",
              "steps"}


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
    advisories: tuple[str, ...] = ()   # one line per etcd-version fact the plan answers
    minority_read: MinorityRead | None = None   # too few voters read: what may be lost
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "cluster": self.cluster, "runtime": self.runtime,
                "run_id": self.run_id, "chosen": self.chosen, "reason": self.reason,
                "fingerprint": self.fingerprint, "inventory": self.inventory,
                "unreachable": list(self.unreachable),
                "rejoin_later": list(self.rejoin_later),
                "advisories": list(self.advisories),
                "minority_read": self.minority_read.to_json() if self.minority_read else None,
                "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, d: Any, file: str = "<plan>") -> Plan:
        """Strictly: a saved plan is data; anything unknown or mistyped is refused."""
        if not isinstance(d, Mapping):
            raise FormatError(file, 0, "not a valid plan: not a JSON object")
        if d.get("version") != PLAN_VERSION:
            raise FormatError(file, 0, f"not a valid plan: unsupported plan version "
                                       f"{d.get('version')!r} (this tool writes {PLAN_VERSION})")
        # ``plan_id`` (planid.py) is the ID `plan -o json` and --save print beside the plan
        keys = set(d) - {"plan_id"}
        if keys != _PLAN_KEYS or not isinstance(d.get("plan_id", ""), str):
            missing, extra = sorted(_PLAN_KEYS - keys), sorted(keys - _PLAN_KEYS)
            extra += [] if isinstance(d.get("plan_id", ""), str) else ["plan_id (not a string)"]
            raise FormatError(file, 0, "not a valid plan: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unexpected {', '.join(extra)}"] if extra else [])))
        for key in ("cluster", "runtime", "run_id", "chosen", "reason", "fingerprint",
                    "inventory"):
            if not isinstance(d[key], str):
                raise FormatError(file, 0, f"not a valid plan: {key!r} must be a string")
        for key in ("unreachable", "rejoin_later", "advisories"):
            if not isinstance(d[key], list) or not all(isinstance(x, str) for x in d[key]):
                raise FormatError(file, 0, f"not a valid plan: {key!r} must be a list of "
                                           "strings")
        minority = MinorityRead.from_json(d["minority_read"])
        if d["minority_read"] is not None and minority is None:
            raise FormatError(file, 0, "not a valid plan: 'minority_read' must be null or the "
                                       "object plan -o json writes")
        if not isinstance(d["steps"], list):
            raise FormatError(file, 0, "not a valid plan: 'steps' must be a list")
        steps = tuple(Step.from_json(s, f"{file}: step {i + 1}")
                      for i, s in enumerate(d["steps"]))
        return cls(cluster=d["cluster"], runtime=d["runtime"], run_id=d["run_id"],
                   chosen=d["chosen"], reason=d["reason"], fingerprint=d["fingerprint"],
                   inventory=d["inventory"], unreachable=tuple(d["unreachable"]),
                   rejoin_later=tuple(d["rejoin_later"]),
                   advisories=tuple(d["advisories"]), minority_read=minority, steps=steps)

    def first_difference(self, other: Plan) -> str | None:
        """Where two plans differ in what they would do (run ids aside), or None."""
        mine, theirs = _comparable(self), _comparable(other)
        if self.fingerprint != other.fingerprint:
            return (f"the cluster's state differs from the one the plan was made from "
                    f"(fingerprint {self.fingerprint} then, {other.fingerprint} now)")
        if mine["chosen"] != theirs["chosen"]:
            return f"the member to keep: {mine['chosen']!r} here, {theirs['chosen']!r} now"
        steps_a, steps_b = mine["steps"], theirs["steps"]
        for i, (a, b) in enumerate(zip(steps_a, steps_b, strict=False), 1):
            a = {k: v for k, v in a.items() if k not in _WORDS}
            b = {k: v for k, v in b.items() if k not in _WORDS}
            if a == b:
                continue
            if a["id"] != b["id"]:
                return f"step {i}: {a['id']!r} here, {b['id']!r} now"
            for key in ("kind", "host", "mutating", "group"):
                if a[key] != b[key]:
                    return f"step {i} ({a['id']}): {key} is {a[key]!r} here, {b[key]!r} now"
            for key in sorted({*a["params"], *b["params"]}):
                if a["params"].get(key) != b["params"].get(key):
                    return (f"step {i} ({a['id']}): param {key} is {a['params'].get(key)!r} "
                            f"here, {b['params'].get(key)!r} now")
            acts_a, acts_b = a["actions"], b["actions"]
            for j, (x, y) in enumerate(zip(acts_a, acts_b, strict=False), 1):
                if x != y:
                    field_ = next((k for k in sorted({*x, *y}) if x.get(k) != y.get(k)), "?")
                    return (f"step {i} ({a['id']}), action {j} ({x.get('kind')}): {field_} "
                            f"is {x.get(field_)!r} here, {y.get(field_)!r} now")
            return f"step {i} ({a['id']}): {len(acts_a)} actions here, {len(acts_b)} now"
        if len(steps_a) != len(steps_b):
            return f"{len(steps_a)} steps here, {len(steps_b)} now"
        return None


# A step's words for people: figures in them (a running member's index) may move between two
# readings without changing any action, so they are not compared.
_WORDS = ("title", "precondition", "check", "phase")


def _comparable(plan: Plan) -> dict[str, Any]:
    """The plan's JSON with its run id taken out (it names the run's directory and lock)."""
    text = json.dumps(plan.to_json()).replace(plan.run_id, "<run>")
    d: dict[str, Any] = json.loads(text)
    return d


def fingerprint(report: InspectReport) -> str:
    """A digest of the facts the plan rests on; stable while nothing changes.

    Commit figures of members that run are left out: a running member's figures are read live,
    and etcd flushes a commit-only HardState lazily, so live and disk readings of the same
    member can differ by a heartbeat's worth. The member to keep is checked on its own (the
    preflight step, and again from the disks once every member is fenced).
    """
    facts = [[name, *f.values()] for name, f in fingerprint_facts(report).items()]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def fingerprint_facts(report: InspectReport) -> dict[str, dict[str, Any]]:
    """The facts :func:`fingerprint` is a digest of, by member (in name order), so that a
    change can be named."""
    return {m.name: {"reachable": m.reachable, "member_id": id_hex(m.member_id),
                     "cluster_id": id_hex(m.cluster_id),
                     "commit_index": None if m.etcd_running else m.commit_index,
                     "revision": None if m.etcd_running else m.revision}
            for m in sorted(report.members, key=lambda m: m.name)}


def with_preconditions(steps: Sequence[Step], chosen: str) -> tuple[Step, ...]:
    """Each step with the precondition text its kind's conditions render (conditions.py):
    what the executor checks before the step, clause for clause."""
    return tuple(replace(s, precondition=conditions.render(s, chosen)) for s in steps)


def run_dir(run_id: str) -> str:
    return posixpath.join(STATE_DIR, run_id)


LOCK_PATH = posixpath.join(STATE_DIR, "lock")
# Every host command that can take time runs under the host's command lock (flock(1) on
# COMMANDS_LOCK, held by the command and everything it starts) in a session of its own
# (setsid(1): its pid is its process group's id), its pid, run and step in COMMANDS_PID. A
# command goes on when the operator's side goes away (Ctrl-C, SIGKILL, an SSH drop: closing
# the channel stops nothing), so a later command, of a resumed run or of a run that took the
# lock over, finds it and waits until it has ended instead of racing it.
COMMANDS_LOCK = posixpath.join(STATE_DIR, "commands.lock")
COMMANDS_PID = posixpath.join(STATE_DIR, "commands.pid")
# exit status of a guarded command that gave up waiting for an earlier one (EX_TEMPFAIL)
EXIT_STILL_RUNNING = 75

_GUARD = ('set -e; umask 077; mkdir -p "$1"; chmod 0700 "$1"; exec 9>>"$1/commands.lock"; '
          'if ! flock -n 9; then '
          'echo "etcd-recovery: waiting for an earlier command to end (pid run step: '
          '$(cat "$1/commands.pid" 2>/dev/null))" >&2; '
          'flock -w "$4" 9 || { echo "etcd-recovery: the earlier command still runs after '
          '$4 s; nothing was done" >&2; exit 75; }; fi; '
          'd=$1; r=$2; s=$3; shift 4; setsid "$@" & '
          'printf "%s %s %s\\n" "$!" "$r" "$s" > "$d/commands.pid"; wait "$!"')

_PROBE = ('[ -e "$1/commands.lock" ] || exit 0; exec 9>>"$1/commands.lock"; '
          'flock -n 9 && exit 0; printf "busy "; cat "$1/commands.pid" 2>/dev/null; echo')


def guarded(run_id: str, step_id: str, argv: Sequence[str], wait_s: float,
            state_dir: str = STATE_DIR) -> list[str]:
    """``argv`` run under the host's command lock, in a session of its own (see
    COMMANDS_LOCK). An earlier command still holding the lock is waited for, at most
    ``wait_s`` seconds (then exit 75, nothing run); the exit status is ``argv``'s."""
    return sh(_GUARD, state_dir, run_id, step_id, f"{wait_s:.0f}", *argv)


def probe_argv(state_dir: str = STATE_DIR) -> list[str]:
    """Print ``busy PID RUN STEP`` while a guarded command holds the host's command lock,
    nothing when none does."""
    return sh(_PROBE, state_dir)


def is_guarded(argv: Sequence[str]) -> bool:
    return len(argv) > 2 and argv[2] == _GUARD


def lock_argv(run_id: str, path: str = LOCK_PATH, *, take_over: bool = False) -> list[str]:
    """Take the host's recovery lock for ``run_id``; fails when the lock file exists (the
    shell's noclobber, ``set -C``). With ``take_over`` (``--take-over-lock``), take it over
    from a dead run: write it anyway. (A command the dead run left running is waited for by
    the first guarded command.)"""
    noclobber = "" if take_over else "set -C; "
    return sh('set -e; umask 077; mkdir -p "$(dirname "$1")"; chmod 0700 "$(dirname "$1")"; '
              f'{noclobber}echo "$2" > "$1"', path, run_id)


def unlock_argv(run_id: str, path: str = LOCK_PATH) -> list[str]:
    """Release the host's recovery lock if, and only if, ``run_id`` holds it."""
    return sh('set -e; if [ "$(cat "$1" 2>/dev/null)" = "$2" ]; then rm -f "$1"; fi',
              path, run_id)


def space_argv(data_dir: str, *more: str) -> list[str]:
    """Make the tool's state directory and print free bytes under it, then the size of what
    the backup copies (the data dir, and ``more``: a WAL dir outside it); fails first when
    the host lacks flock or setsid, which every guarded command needs, or findmnt, which
    move-aside asks whether a rename stays within one mount."""
    return sh('set -e; for c in flock setsid findmnt; do command -v "$c" >/dev/null || { '
              'echo "$c (util-linux) is not installed: the long host commands need it" >&2; '
              'exit 3; }; done; mkdir -p -m 0700 "$1"; df -B1 --output=avail "$1" | '
              'tail -n 1; shift; du -sbc "$@" | tail -n 1 | cut -f1', STATE_DIR, data_dir,
              *more)


def space_checks(reachable: Sequence[Member]) -> tuple[Run, ...]:
    """The preflight's free-space reads, one per reachable member."""
    return tuple(Run(m.name, tuple(space_argv(m.data_dir, *_wal_apart_from_data(m))), 60.0)
                 for m in reachable)


def _wal_apart_from_data(m: Member) -> list[str]:
    """The member's WAL dir when a copy of its data dir does not hold it (``--wal-dir``
    outside the data dir), else nothing."""
    return [m.wal] if m.wal_outside_data_dir else []


def host_record(host: str, run_id: str, step_id: str) -> Run:
    """Append the step's line to the host's own journal (what happened to this host)."""
    line = json.dumps({"run": run_id, "step": step_id, "event": "done"}, sort_keys=True)
    return Run(host, tuple(sh('umask 077; mkdir -p "$(dirname "$2")"; printf "%s\\n" "$1" '
                              '>> "$2"', line, posixpath.join(run_dir(run_id),
                                                              "journal.jsonl"))), 10.0)


def _members_arg(pairs: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(f"{name}={url}" for name, url in pairs)


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
             actions=space_checks(reachable),
             params={"members": names, "fingerprint": fingerprint(report),
                     "allow_quorum": allow_quorum, "exclude": sorted(exclude)}))
    add(lock_step(run_id, reachable, take_over_lock))

    # 2. fence every reachable member, the one to keep last: while others stop, whatever the
    #    rest still sends it (a leader's last entries, say) reaches it too. When no other
    #    member runs etcd, nothing can reach it: all are fenced at once.
    others_run = any(states[m.name].etcd_running for m in reachable if m.name != chosen.name)
    for m in reachable:
        if m.name != chosen.name:
            add(replace(fence_step(rt, m, run_id), group="fence"))
    add(replace(fence_step(rt, chosen, run_id), group=None if others_run else "fence"))

    # 3. back up the kept member's data dir and configuration; every other member's backup
    #    runs in the background while the kept member is restored (their data is untouched
    #    until their move-aside, which waits for it)
    add(backup_step(rt, chosen, run_id))
    for m in reachable:
        if m.name != chosen.name:
            add(backup_step(rt, m, run_id, background=True))

    # 4. align the kept member's WAL commit, force a new cluster from it, then restart it
    #    without the flag
    add(align_step(chosen, replace(states[chosen.name],
                                   etcd_version=kept_versions[chosen.name]), run_id))
    cfg_file = rt.config_path(chosen)
    orig = configs[chosen.name]
    if etcd_image is not None:
        # the kept member keeps the image it is restored with (a patch-level change)
        orig = rconf.manifest_with_image(orig, cfg_file, etcd_image)
    forced = rt.with_flags(orig, cfg_file, {rconf.FLAG_FORCE_NEW_CLUSTER: "true"})
    staged = posixpath.join(rdir, "config.staged")
    fnc_id, plain_id = f"force-new-cluster:{chosen.name}", f"remove-flag:{chosen.name}"
    start_forced = tuple(guarded(run_id, fnc_id, rt.start_argv(chosen, staged), 60.0))
    start_plain = tuple(guarded(run_id, plain_id, rt.start_argv(chosen, staged), 60.0))
    add(Step(id=f"force-new-cluster:{chosen.name}", phase="restore",
             kind=StepKind.FORCE_NEW_CLUSTER, host=chosen.name,
             title=f"Start {chosen.name} with --force-new-cluster ({d.reason})"
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
                           _members_arg([(chosen.name, chosen.peer_url)])))))

    # 5. every peer's old data moved aside at once; then the peers come back one at a time
    #    as learners (one learner at a time is all etcd 3.4/3.5 allow)
    others = [m for m in reachable if m.name != chosen.name]
    current = [(chosen.name, chosen.peer_url)]
    later: list[Step] = []
    for m in others:
        move, *rest = rejoin_steps(rt, m, configs[m.name], run_id, chosen, current,
                                   unknown=m.name in exclude)
        add(replace(move, group="move-aside"))
        later.extend(rest)
        current = [*current, (m.name, m.peer_url)]
    steps.extend(later)

    # 6. verify and release
    expected = [chosen.name, *[m.name for m in others]]
    add(verify_step(expected, keys_before))
    add(unlock_step(run_id, reachable))
    return Plan(cluster=inv.name, runtime=inv.runtime, run_id=run_id, chosen=chosen.name,
                reason=d.reason, fingerprint=fingerprint(report),
                steps=with_preconditions(steps, chosen.name),
                unreachable=unreachable, rejoin_later=unreachable, inventory=inv.path,
                advisories=tuple(a.line() for a in advs), minority_read=d.minority)


def install_binary_argv(new: NewBinary, rdir: str) -> list[str]:
    """Put the build where the unit runs etcd, the original (file or symlink) kept in the run
    directory first; idempotent, so a resumed run neither loses the original nor stops."""
    return sh('set -e; if [ ! -e "$3/etcd.binary.orig" ] && [ ! -L "$3/etcd.binary.orig" ]; '
              'then cp -a "$1" "$3/etcd.binary.orig"; fi; install -m 0755 "$2" "$1.new"; '
              'mv -f "$1.new" "$1"', new.replaces, new.path, rdir)


def lock_step(run_id: str, members: Sequence[Member], take_over: bool) -> Step:
    argv = tuple(lock_argv(run_id, take_over=take_over))
    where = "every reachable host" if len(members) > 1 else members[0].name
    return Step(id="lock", phase="preflight", kind=StepKind.LOCK, host=None,
                title=(f"Take the recovery lock over on {where} (--take-over-lock)" if take_over
                       else f"Take the recovery lock on {where}"),
                precondition="",
                check=f"{LOCK_PATH} holds this run id ({run_id}) on every host",
                actions=tuple(Run(m.name, argv, 30.0) for m in members),
                params={"path": LOCK_PATH, "members": [m.name for m in members]})


def unlock_step(run_id: str, members: Sequence[Member]) -> Step:
    return Step(id="unlock", phase="verify", kind=StepKind.UNLOCK, host=None,
                title="Release the recovery lock", precondition="",
                check=f"{LOCK_PATH} is gone on every host",
                actions=tuple(Run(m.name, tuple(unlock_argv(run_id)), 30.0) for m in members))


def verify_step(expected: Sequence[str], keys_before: int | None) -> Step:
    return Step(id="verify", phase="verify", kind=StepKind.VERIFY, host=None, mutating=False,
                title="Verify: expected voting members only, all healthy, same revision, "
                      "equal HashKV, no alarms, no --force-new-cluster left, keys all there",
                precondition="", check="all of the above hold",
                params={"members": list(expected), "keys_before": keys_before})


def fence_step(rt: Runtime, m: Member, run_id: str) -> Step:
    sid = f"fence:{m.name}"
    return Step(id=sid, phase="fence", kind=StepKind.FENCE, host=m.name,
                title=f"Fence {m.name}: {rt.fence_how(m)}",
                precondition="",
                check="no etcd process on the host, and its supervisor will not start one",
                actions=(Run(m.name, tuple(guarded(run_id, sid, rt.fence_argv(m, run_dir(run_id)),
                                                   120.0)), 120.0),
                         Wait("etcd-stopped", m.name, m.client_url, 60.0),
                         host_record(m.name, run_id, sid)))


@dataclass(frozen=True)
class Align:
    """What align-commit does to one member's WAL, decided from its WAL read on disk."""

    outcome: str                 # "planned" | "none" | "etcd-does-it" | "skipped"
    why: str                     # one line, for the plan's title or the run's log
    record: AppendWal | None = None


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
             actions=(Wait("members-are", via.name, ep, 30.0, _members_arg(members_before)),
                      EtcdCall(via.name, "member-add-learner", ep, name=m.name,
                               peer_url=m.peer_url, result=ref, timeout_s=90.0))),
        Step(id=f"start-learner:{m.name}", phase="rejoin", kind=StepKind.START_LEARNER,
             host=m.name,
             title=f"Start {m.name} with --initial-cluster-state=existing and "
                   f"--initial-cluster={rconf.initial_cluster(after)}",
             precondition="",
             check=f"etcd runs on {m.name}",
             actions=(Wait("members-are", via.name, ep, 30.0, _members_arg(after)),
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
             actions=(Run(name, tuple(space_argv(m.data_dir, *_wal_apart_from_data(m))), 60.0),),
             params={"via": via, "name": name}),
        lock_step(run_id, [m], take_over_lock),
        fence_step(rt, m, run_id),
        backup_step(rt, m, run_id),
        Step(id=f"remove-old:{name}", phase="rejoin", kind=StepKind.REMOVE_OLD, host=name,
             title=f"Remove {name}'s old voting entry from membership"
                   + ("" if old else " (none listed when planned)"),
             precondition="",
             check=f"no voting member has {name}'s peer URL {m.peer_url}",
             actions=tuple(EtcdCall(via, "member-remove", via_m.client_url, name=name,
                                    peer_url=m.peer_url, member_id=id_hex(p.id),
                                    if_listed=True, timeout_s=60.0) for p in old)),
        *rejoin_steps(rt, m, config, run_id, via_m, voters),
        verify_step(sorted({*(n for n, _ in voters), name}), None),
        unlock_step(run_id, [m]),
    ]
    return Plan(cluster=inv.name, runtime=inv.runtime, run_id=run_id, chosen=via,
                reason=f"rejoin {name} through {via}", fingerprint="",
                steps=with_preconditions(steps, via),
                unreachable=(), rejoin_later=(), inventory=inv.path)


def backup_step(rt: Runtime, m: Member, run_id: str, background: bool = False) -> Step:
    """Copy the member's data dir and (fenced) configuration, with a verified B2SUMS. In the
    background it runs at a lower CPU priority (``nice``), so as not to slow the kept member's
    restore, which runs meanwhile."""
    rdir = run_dir(run_id)
    bdir = posixpath.join(rdir, "backup")
    argv = _backup_argv(m.data_dir, rt.fenced_config_path(m, rdir), bdir,
                        *_wal_apart_from_data(m))
    if background:
        argv = ["nice", "-n", "10", *argv]
    argv = guarded(run_id, f"backup:{m.name}", argv, 1800.0)
    return Step(id=f"backup:{m.name}", phase="backup", kind=StepKind.BACKUP, host=m.name,
                group=BACKGROUND if background else None,
                title=f"Back up {m.name}'s data dir"
                      + (f", WAL dir {m.wal}" if m.wal_outside_data_dir else "")
                      + f" and configuration to {bdir}"
                      + (" (in the background, at a lower CPU priority)" if background else ""),
                precondition="",
                check="the copy is byte for byte the source (diff -r), and its B2SUMS is "
                      "written (checked with b2sum -c when a run resumes)",
                actions=(Run(m.name, tuple(argv), 1800.0),
                         host_record(m.name, run_id, f"backup:{m.name}")))


def _backup_argv(data_dir: str, cfg: str, bdir: str, wal_dir: str | None = None) -> list[str]:
    """Copy, prove the copy equal to the source byte for byte (``diff -r``: etcd is fenced, so
    the source holds still), and record a B2SUMS of the copy; a resumed run checks the
    copy against that list instead. ``wal_dir``: a WAL dir outside the data dir (etcd's
    ``--wal-dir``), copied beside it as ``wal`` and covered by the same B2SUMS (nothing is
    copied for it when it does not exist: no WAL there to keep).

    Rerun from any point, it converges and never nests: a partial copy (``data.partial``,
    ``wal.partial``) is copied again; a complete one (``data``, ``wal``, renamed there only
    once ``cp`` has finished) is not copied again but compared with the source again, and its
    B2SUMS computed; a written B2SUMS (renamed into place last) is checked."""
    return sh('set -e; umask 077; mkdir -p "$3"; c=$(basename "$2"); '
              'if [ -f "$3/B2SUMS" ]; then cd "$3"; exec b2sum --quiet -c B2SUMS; fi; '
              'if [ ! -d "$3/data" ]; then rm -rf "$3/data.partial"; '
              'cp -a "$1" "$3/data.partial"; mv -T "$3/data.partial" "$3/data"; fi; '
              'w=; if [ -n "$4" ] && [ -e "$4" ]; then w=wal; if [ ! -d "$3/wal" ]; then '
              'rm -rf "$3/wal.partial"; cp -a "$4" "$3/wal.partial"; '
              'mv -T "$3/wal.partial" "$3/wal"; fi; fi; '
              'rm -f "$3/$c.partial"; cp -a "$2" "$3/$c.partial"; mv -T "$3/$c.partial" "$3/$c"; '
              'diff -rq "$1" "$3/data"; if [ -n "$w" ]; then diff -rq "$4" "$3/wal"; fi; '
              'diff -q "$2" "$3/$c"; cd "$3"; '
              'find data $w "$c" -type f -print0 | xargs -0 -n 1 -P 4 b2sum > B2SUMS.unsorted; '
              'sort -k 2 B2SUMS.unsorted > B2SUMS.partial; rm B2SUMS.unsorted; '
              'mv -T B2SUMS.partial B2SUMS', data_dir, cfg, bdir, *([wal_dir] if wal_dir else []))


def wal_files_argv(wal_dir: str) -> list[str]:
    """Exit 0 when ``wal_dir`` holds a WAL file (``*.wal``: what etcd's wal.Exist looks
    for), 1 when it holds none or does not exist."""
    return sh('for f in "$1"/*.wal; do [ -e "$f" ] && exit 0; done; exit 1', wal_dir)


def move_aside_argv(member_dir: str, moved: str, data_dir: str) -> list[str]:
    """Move ``member_dir`` to ``moved`` and leave an empty ``data_dir``; never deletes a byte
    that is not safely in ``moved``, and converges when rerun from any point.

    On one mount of one file system (the same device, and the same mount in the host's mount
    table: ``findmnt -T``, since a bind mount or a Docker volume of the same disk has the same
    device number) it is one rename (``mv -T``: it fails rather than nest into an existing
    ``moved``). Across mounts (the state dir on another disk, a WAL dir on a volume of its
    own), where rename(2) fails with EXDEV and ``mv`` would fall back to a copy that a kill can
    cut in half, it is a copy to ``moved.partial``, renamed to ``moved`` once complete,
    compared with the source (``diff -r``), then the source renamed to ``<source>.leaving`` and
    only then removed: a rerun finds either the source whole or nothing of it but
    ``<source>.leaving``. A complete ``moved`` already there (an earlier copy across mounts
    whose source could not be removed: a read-only disk since remounted) is compared with the
    source, which then goes the same way, never renamed into it. ``data_dir`` is made (0700)
    when missing: for a WAL dir moved aside,
    its parent directory, where etcd makes the WAL dir again."""
    return sh('set -e; umask 077; mkdir -p "$(dirname "$2")"; '
              'if [ -e "$1" ]; then '
              'm() { printf "%s:%s" "$(stat -c %d "$1")" "$(findmnt -n -o TARGET -T "$1")"; }; '
              'if [ ! -e "$2" ] && [ "$(m "$1")" = "$(m "$(dirname "$2")")" ]; then '
              'mv -T "$1" "$2"; else '
              'if [ ! -e "$2" ]; then rm -rf "$2.partial"; cp -a "$1" "$2.partial"; '
              'mv -T "$2.partial" "$2"; fi; '
              'diff -rq "$1" "$2"; mv -T "$1" "$1.leaving"; fi; fi; '
              'if [ -e "$1.leaving" ] && [ -e "$2" ]; then rm -rf "$1.leaving"; fi; '
              'mkdir -p -m 0700 "$3"; test ! -e "$1"', member_dir, moved, data_dir)

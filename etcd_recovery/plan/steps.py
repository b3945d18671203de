"""A plan's data: its steps (kinds, parameters, actions), the strict JSON loader, the
diff between two plans (:meth:`Plan.first_difference`), and the fingerprint of the state a
plan rests on. Pure: no planner lives here (see the method modules beside it)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .. import conditions
from ..actions import (
    Action,
    action_from_json,
    action_to_json,
)
from ..errors import FormatError
from ..model import InspectReport, MinorityRead, id_hex

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
    # the snapshot method (plan/snapshot.py)
    PREFLIGHT_SNAPSHOT = "preflight_snapshot"
    STOP_KEPT = "stop_kept"
    LOG_CHECK = "log_check"
    SNAPSHOT_MAKE = "snapshot_make"
    SNAPSHOT_SEND = "snapshot_send"
    RESTORE = "restore"
    START_RESTORED = "start_restored"
    CLUSTER_UP = "cluster_up"
    RESTORE_CHECK = "restore_check"


BACKGROUND = "background"

# Kinds whose commands start or stop etcd: the executor drops its client for the host after
# each of their commands (etcd restarts behind the tunnel).
RESTARTS_ETCD: frozenset[StepKind] = frozenset({
    StepKind.FORCE_NEW_CLUSTER, StepKind.RESTART_PLAIN, StepKind.START_LEARNER,
    StepKind.START_RESTORED, StepKind.STOP_KEPT})
# Steps of these kinds do not wait for the background steps on their host: a send writes
# only the snapshot file into the run's directory (STATE_DIR), which no background step
# reads or writes (a backup reads the data dir; an etcdutl upload writes its own file). The
# restore on the host, which moves the data, still waits for them all. With the backups one
# at a time, a send used to wait for its host's backup to get its turn and end: 5 members,
# 1 GB, the sends waited 4.4 s for the last host's backup (the shared read starts when every
# send has joined).
BESIDE_BACKGROUND: frozenset[StepKind] = frozenset({StepKind.SNAPSHOT_SEND})

# Each kind's parameters (what the executor needs beyond the actions), with their JSON types.
_STR_LIST = "list[str]"
STEP_PARAMS: dict[StepKind, dict[str, str]] = {
    StepKind.PREFLIGHT: {"members": _STR_LIST, "fingerprint": "str", "allow_quorum": "bool",
                         "exclude": _STR_LIST},
    StepKind.PREFLIGHT_REJOIN: {"via": "str", "name": "str"},
    StepKind.LOCK: {"path": "str", "members": _STR_LIST},
    # in_turn: a background backup that runs one at a time (plan.common.backups_in_turn)
    StepKind.BACKUP: {"in_turn": "bool"},
    StepKind.VERIFY: {"members": _STR_LIST, "keys_before": "int|None"},
    StepKind.ALIGN_COMMIT: {"wal_dir": "str", "db": "str", "target": "str",
                             "commit_fix": "bool"},
    StepKind.FORCE_NEW_CLUSTER: {"etcd_image": "str|None", "etcd_binary": "str|None"},
    StepKind.PREFLIGHT_SNAPSHOT: {"members": _STR_LIST, "fingerprint": "str", "file": "str",
                                  "file_host": "str", "sha256": "str",
                                  "allow_older_data": "bool", "skip_hash_check": "bool"},
    StepKind.SNAPSHOT_MAKE: {"snapshot": "str", "wal_dir": "str", "ref": "str",
                             "min_revision": "int"},
    StepKind.SNAPSHOT_SEND: {"snapshot": "str"},
    # skips: the steps skipped when the kept member's fenced disk holds its whole log
    StepKind.LOG_CHECK: {"ref": "str", "skips": _STR_LIST},
    StepKind.RESTORE: {"snapshot": "str", "ref": "str", "sha256": "str",
                       "bump_revision": "int", "token": "str", "etcdutl": "str",
                       "etcdutl_flag": "bool", "skip_hash_check": "bool"},
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
    # on its host (or on every host; not by steps of BESIDE_BACKGROUND's kinds) and before
    # the run ends.
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


"""The plan's identity: what the operator reviewed is what ``execute`` runs.

A plan's ID is a short digest of what the plan would do and of what it was made from: its
actions, its state fingerprint, the member it keeps, and the inventory it acts through (the
hosts' SSH addresses and users are not in the actions, but they say which machines the
actions reach). It leaves out whatever is made again on every invocation or is only words
for people: the run id (replaced by a placeholder wherever it occurs: run directory, lock
content), step titles, preconditions and checks (their figures of running members move
between two readings without changing any action), the choice's reason and the inventory
file's path as typed. So ``plan`` and a later ``execute`` on unchanged state give the same ID.

``plan`` (and ``execute`` without ``--confirm``) saves what it showed, keyed by that ID, as a
:class:`Reviewed` record in the journal directory (``plans/<ID>.json``, mode 0600): the plan,
the inventory's facts, the state's facts and the planning inputs. ``execute --confirm ID``
derives the plan again and runs it only when its ID is the same; otherwise the record says
what differs first (:func:`first_difference`). The inputs let ``--resume`` derive a run's plan
again from the journal and today's inventory (:func:`rederive`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .actions import CopyFile
from .errors import FormatError, RefusedError, UsageError
from .hostchecks import HostCheck
from .inventory import Inventory
from .methods import derive
from .model import (
    Check,
    Decision,
    InspectReport,
    MemberState,
    MinorityRead,
    NewBinary,
    PeerView,
    Quorum,
    WalTail,
)
from .plan.scripts import lock_argv
from .plan.snapshot import Etcdutl, SnapshotInput, file_given
from .plan.steps import _WORDS, Plan, StepKind, _comparable, fingerprint_facts

ID_LEN = 12
ID_RE = re.compile(rf"[0-9a-f]{{{ID_LEN}}}")
RECORD_VERSION = 1
PLANS_DIR = "plans"
_SHOWN = 100  # characters of a differing value shown in a refusal


# ------------------------------------------------------------------ what the ID is made of

def canonical(plan: Plan) -> dict[str, Any]:
    """The plan as its ID sees it: the run id replaced by ``<run>``, and without the words
    for people (step titles, preconditions, checks, phases, the reason) or the inventory's
    path as typed."""
    d = _comparable(plan)
    d.pop("run_id", None)
    d.pop("reason", None)
    d.pop("inventory", None)
    d["steps"] = [{k: v for k, v in s.items() if k not in _WORDS} for s in d["steps"]]
    return d


def inventory_facts(inv: Inventory) -> dict[str, Any]:
    """What the inventory says, one entry per field, named as a person would name it
    (``member etcd-2 ssh.host``). Local paths are as the inventory resolved them; the
    connect timeout (a tuning knob, not a target) is left out."""
    facts: dict[str, Any] = {"cluster.name": inv.name, "cluster.runtime": inv.runtime,
                             "tls.ca": inv.tls.ca, "tls.cert": inv.tls.cert,
                             "tls.key": inv.tls.key,
                             "auth.user": inv.auth.user if inv.auth else None,
                             "auth.password_file": inv.auth.password_file if inv.auth else None,
                             "members": [m.name for m in inv.members]}
    for m in inv.members:
        where = f"member {m.name}"
        for key in ("host", "port", "user", "identity_file", "known_hosts", "jump", "sudo"):
            facts[f"{where} ssh.{key}"] = getattr(m.ssh, key)
        for key in ("peer_url", "client_url", "data_dir", "manifest", "env_file", "unit"):
            facts[f"{where} {key}"] = getattr(m, key)
    return facts


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def plan_id(plan: Plan, inv: Inventory) -> str:
    """The plan's short ID: stable over the same actions, state and inventory."""
    return _digest({"plan": canonical(plan), "inventory": inventory_facts(inv)})[:ID_LEN]


def check_id_form(given: str) -> str:
    if not ID_RE.fullmatch(given):
        raise UsageError(f"{given!r} is not a plan ID: an ID is {ID_LEN} hex digits, as "
                         "`etcd-recovery plan` prints it")
    return given


# ------------------------------------------------------------------ the options a plan holds

@dataclass(frozen=True)
class Options:
    """The command-line choices that shaped a plan, as the plan itself records them."""

    allow_quorum: bool = False
    take_over_lock: bool = False
    exclude: tuple[str, ...] = ()
    etcd_image: str | None = None
    etcd_binary: str | None = None
    method: str | None = None          # None: not given (the default, force-new-cluster)
    bump_revision: int | None = None
    etcdutl: str | None = None
    from_snapshot: str | None = None
    skip_hash_check: bool = False
    allow_older_data: bool = False

    def flags(self) -> list[str]:
        """The same choices as command-line flags (for the command ``plan`` prints)."""
        out = ["--allow-quorum"] if self.allow_quorum else []
        out += ["--take-over-lock"] if self.take_over_lock else []
        for name in self.exclude:
            out += ["--exclude", name]
        out += ["--etcd-image", self.etcd_image] if self.etcd_image else []
        out += ["--etcd-binary", self.etcd_binary] if self.etcd_binary else []
        out += ["--method", self.method] if self.method and not self.from_snapshot else []
        out += ["--from-snapshot", self.from_snapshot] if self.from_snapshot else []
        out += ["--bump-revision", str(self.bump_revision)] \
            if self.bump_revision is not None else []
        out += ["--etcdutl", self.etcdutl] if self.etcdutl else []
        out += ["--skip-hash-check"] if self.skip_hash_check else []
        out += ["--allow-older-data"] if self.allow_older_data else []
        return out


def options_of(plan: Plan) -> Options:
    """Read the options back from the plan's own steps (a saved or journaled plan)."""
    pre = next((s for s in plan.steps if s.kind is StepKind.PREFLIGHT), None)
    lock = next((s for s in plan.steps if s.kind is StepKind.LOCK), None)
    force = next((s for s in plan.steps if s.kind is StepKind.FORCE_NEW_CLUSTER), None)
    takeover = bool(lock and lock.actions and getattr(lock.actions[0], "argv", None)
                    == tuple(lock_argv(plan.run_id, take_over=True)))
    file_pre = next((s for s in plan.steps if s.kind is StepKind.PREFLIGHT_SNAPSHOT), None)
    restore = next((s for s in plan.steps if s.kind is StepKind.RESTORE), None)
    uploads = [a.src_path for s in plan.steps if s.id.startswith("etcdutl:")
               for a in s.actions if isinstance(a, CopyFile)]
    snapshot = restore is not None
    return Options(allow_quorum=bool(pre and pre.params.get("allow_quorum")),
                   take_over_lock=takeover,
                   exclude=tuple(sorted(pre.params.get("exclude", []))) if pre else (),
                   etcd_image=None if snapshot or not force else force.params.get("etcd_image"),
                   etcd_binary=None if snapshot or not force
                   else force.params.get("etcd_binary"),
                   method="snapshot" if snapshot and file_pre is None else None,
                   bump_revision=int(restore.params["bump_revision"]) if restore else None,
                   etcdutl=uploads[0] if uploads else next(
                       (str(s.params["etcdutl"]) for s in plan.steps
                        if s.kind is StepKind.RESTORE and s.params["etcdutl_flag"]), None),
                   from_snapshot=file_given(str(file_pre.params["file_host"]),
                                            str(file_pre.params["file"])) if file_pre else None,
                   skip_hash_check=bool(file_pre and file_pre.params["skip_hash_check"]),
                   allow_older_data=bool(file_pre and file_pre.params["allow_older_data"]))


def contradictions(planned: Options, given: Options) -> list[str]:
    """Each flag given on the command line that the plan contradicts. A flag left out means
    "as the plan says"; a flag given must say what the plan says."""
    out = []
    if given.allow_quorum and not planned.allow_quorum:
        out.append("--allow-quorum: the plan was made without it")
    if given.take_over_lock and not planned.take_over_lock:
        out.append("--take-over-lock: the plan was made without it (its lock step does not "
                   "take a lock over)")
    if given.exclude and tuple(sorted(given.exclude)) != planned.exclude:
        out.append(f"--exclude {' '.join(sorted(given.exclude))}: the plan excludes "
                   f"{', '.join(planned.exclude) or 'no member'}")
    if given.method and given.method != (planned.method or "force-new-cluster") and not (
            given.method == "snapshot" and planned.from_snapshot):
        out.append(f"--method {given.method}: the plan's method is "
                   f"{planned.method or 'force-new-cluster'}")
    if given.bump_revision is not None and planned.bump_revision is not None and \
            given.bump_revision != planned.bump_revision:
        out.append(f"--bump-revision {given.bump_revision}: the plan bumps by "
                   f"{planned.bump_revision}")
    switches = (("--skip-hash-check", given.skip_hash_check, planned.skip_hash_check),
                ("--allow-older-data", given.allow_older_data, planned.allow_older_data))
    for switch, yes, had in switches:
        if yes and not had:
            out.append(f"{switch}: the plan was made without it")
    for flag, mine, theirs in (("--etcd-image", given.etcd_image, planned.etcd_image),
                               ("--etcd-binary", given.etcd_binary, planned.etcd_binary),
                               ("--etcdutl", given.etcdutl, planned.etcdutl),
                               ("--from-snapshot", given.from_snapshot,
                                planned.from_snapshot)):
        if mine is not None and mine != theirs:
            out.append(f"{flag} {mine}: the plan " + (f"has {flag} {theirs}" if theirs
                                                       else f"was made without {flag}"))
    return out


def refuse_contradictions(planned: Options, given: Options, what: str) -> None:
    """Exit 2 (a usage error) when the command line contradicts ``what``: nothing is
    silently ignored."""
    found = contradictions(planned, given)
    if found:
        raise UsageError(f"{what} contradicts the command line: " + "; ".join(found)
                         + ". Leave the flag out (the plan's own choice is used) or make a "
                         "new plan with it")


# ------------------------------------------------------------------ the reviewed record

@dataclass(frozen=True)
class Reviewed:
    """What was shown under one plan ID, kept to name what differs later."""

    plan_id: str
    plan: Plan
    inventory: dict[str, Any]
    state: dict[str, Any]
    options: Options
    inputs: dict[str, Any] = field(default_factory=dict)
    made_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "plan_id": self.plan_id,
                "made_at": round(self.made_at, 3), "options": asdict(self.options),
                "inventory": self.inventory, "state": self.state, "inputs": self.inputs,
                "plan": self.plan.to_json()}

    @classmethod
    def from_json(cls, d: Any, file: str) -> Reviewed:
        keys = {"version", "plan_id", "made_at", "options", "inventory", "state", "inputs",
                "plan"}
        if not isinstance(d, Mapping) or set(d) != keys or d["version"] != RECORD_VERSION:
            raise FormatError(file, 0, "not a reviewed-plan record of this version")
        try:
            opts = d["options"]
            options = Options(bool(opts["allow_quorum"]), bool(opts["take_over_lock"]),
                              tuple(str(x) for x in opts["exclude"]), opts["etcd_image"],
                              opts["etcd_binary"], opts.get("method"),
                              opts.get("bump_revision"), opts.get("etcdutl"),
                              opts.get("from_snapshot"), bool(opts.get("skip_hash_check")),
                              bool(opts.get("allow_older_data")))
        except (KeyError, TypeError) as exc:
            raise FormatError(file, 0, f"options: {exc}") from exc
        for key in ("inventory", "state", "inputs"):
            if not isinstance(d[key], dict):
                raise FormatError(file, 0, f"{key!r} must be an object")
        return cls(plan_id=str(d["plan_id"]), plan=Plan.from_json(d["plan"], file),
                   inventory=d["inventory"], state=d["state"], options=options,
                   inputs=d["inputs"], made_at=float(d["made_at"]))


def review(plan: Plan, inv: Inventory, report: InspectReport,
           new_binary: NewBinary | None = None) -> Reviewed:
    """The record of a plan just derived (``plan``, or ``execute`` before it runs). The
    snapshot method's inputs (each host's etcdutl, the snapshot file read here) ride in the
    report's ``extra``, as ``--etcd-binary``'s build does."""
    return Reviewed(plan_id=plan_id(plan, inv), plan=plan, inventory=inventory_facts(inv),
                    state=state_facts(report), options=options_of(plan),
                    inputs=inputs_json(report, new_binary, report.extra.get("tools"),
                                       report.extra.get("snapshot_file")),
                    made_at=time.time())


def state_facts(report: InspectReport) -> dict[str, Any]:
    """The facts the state fingerprint is a digest of, by member."""
    return fingerprint_facts(report)


def record_path(directory: Path, pid: str) -> Path:
    return directory / PLANS_DIR / f"{check_id_form(pid)}.json"


def save(directory: Path, record: Reviewed) -> Path:
    """Write the record to ``<dir>/plans/<ID>.json``, mode 0600 (it names hosts, paths and
    configurations, like the journal), whole or not at all."""
    d = directory / PLANS_DIR
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = d / f"{record.plan_id}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(json.dumps(record.to_json(), indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{d}: cannot keep the reviewed plan: {exc.strerror or exc}") from exc
    return path


def load(directory: Path, pid: str, inventory_arg: str) -> Reviewed:
    """The record saved for ``pid``; an ID with no record is refused (exit 3), saying how to
    get one."""
    path = record_path(directory, pid)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RefusedError(
            f"plan ID {pid} is unknown here: no plan with this ID was shown with this "
            f"journal directory ({path} does not exist). Nothing was changed. Review the "
            f"plan first with `etcd-recovery plan -i {inventory_arg}` and run the command "
            "it prints") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(str(path), 0, f"cannot read the reviewed plan: {exc}") from exc
    return Reviewed.from_json(data, str(path))


# ------------------------------------------------------------------ naming the difference

def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def _first_diff(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first place two JSON values differ: (path, here, there)."""
    if a == b:
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            found = _first_diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first_diff(x, y, f"{path}[{i}]")
            if found:
                return found
        return (f"{path} length", len(a), len(b))
    return (path, a, b)


def _facts_diff(then: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    for key in [*then, *(k for k in now if k not in then)]:
        if then.get(key, "(absent)") != now.get(key, "(absent)"):
            return key, then.get(key, "(absent)"), now.get(key, "(absent)")
    return None


def plan_difference(then: Plan, now: Plan) -> str | None:
    """The first difference between two plans in what they would do, or None."""
    a, b = canonical(then), canonical(now)
    if a["chosen"] != b["chosen"]:
        return f"chosen member differs: planned {a['chosen']}, now {b['chosen']}"
    if a["fingerprint"] != b["fingerprint"]:
        return (f"state changed: fingerprint {a['fingerprint']} when planned, "
                f"{b['fingerprint']} now")
    for i, (x, y) in enumerate(zip(a["steps"], b["steps"], strict=False), 1):
        if x == y:
            continue
        if x["id"] != y["id"]:
            return f"step {i} differs: planned {x['id']}, now {y['id']}"
        found = _first_diff(x, y)
        assert found is not None
        where, old, new = found
        where = re.sub(r"^actions\[(\d+)\]\.?", lambda m: f"action {int(m[1]) + 1} ",
                       where).strip()
        return f"step {i} {x['id']} differs: {where}: {_short(old)} -> {_short(new)}"
    if len(a["steps"]) != len(b["steps"]):
        return f"{len(a['steps'])} steps planned, {len(b['steps'])} now"
    found = _first_diff({k: v for k, v in a.items() if k != "steps"},
                        {k: v for k, v in b.items() if k != "steps"})
    if found is not None:
        return f"{found[0]} differs: planned {_short(found[1])}, now {_short(found[2])}"
    return None


def first_difference(then: Reviewed, now: Reviewed) -> str:
    """What differs first between the plan reviewed and the plan derived now: the inventory,
    then the state, then the member kept, then each step in order."""
    found = _facts_diff(then.inventory, now.inventory)
    if found is not None:
        key, old, new = found
        return f"inventory changed: {key}: {_short(old)} -> {_short(new)}"
    for name in [*then.state, *(n for n in now.state if n not in then.state)]:
        a, b = then.state.get(name), now.state.get(name)
        if a == b:
            continue
        if a is None or b is None:
            return f"state changed: member {name} " + ("appeared" if a is None else "is gone")
        diff = _facts_diff(a, b)
        assert diff is not None
        key, old, new = diff
        return (f"state changed: {name} {key} {_fact(old, key)} -> {_fact(new, key)}")
    return plan_difference(then.plan, now.plan) or "the plans differ"


def _fact(v: Any, key: str) -> str:
    if v is None and key in ("commit_index", "revision"):
        return "(etcd ran: not compared)"
    return "(unknown)" if v is None else str(v)


# ------------------------------------------------------------------ planning inputs (resume)

def inputs_json(report: InspectReport, new_binary: NewBinary | None,
                tools: Mapping[str, Etcdutl] | None = None,
                snapshot_file: SnapshotInput | None = None) -> dict[str, Any]:
    """What the planner was given, as data: the inspection (with each member's
    configuration text, as the plan's own write-file actions hold it), the build of
    ``--etcd-binary``, and the snapshot method's etcdutl per host and snapshot file."""
    return {"report": {"cluster": report.cluster,
                       "members": [asdict(m) for m in report.members],
                       "quorum": asdict(report.quorum), "decision": asdict(report.decision)},
            "new_binary": asdict(new_binary) if new_binary else None,
            **({"tools": {k: asdict(v) for k, v in tools.items()}} if tools else {}),
            **({"snapshot_file": asdict(snapshot_file)} if snapshot_file else {})}


def _member_from(d: Mapping[str, Any]) -> MemberState:
    v = dict(d)
    v["membership"] = tuple(PeerView(p["id"], p["name"], tuple(p["peer_urls"]),
                                     p["is_learner"]) for p in v.get("membership", ()))
    v["checks"] = tuple(Check(**c) for c in v.get("checks", ()))
    v["host_checks"] = tuple(HostCheck(**c) for c in v.get("host_checks", ()))
    v["wal_tail"] = WalTail(**v["wal_tail"]) if v.get("wal_tail") else None
    v["term_starts"] = tuple(tuple(x) for x in v.get("term_starts", ()))
    for key in ("alarms", "removed_ids", "notes"):
        v[key] = tuple(v.get(key, ()))
    return MemberState(**v)


def report_from(d: Mapping[str, Any]) -> InspectReport:
    dec = dict(d["decision"])
    dec["ranking"] = tuple(dec.get("ranking", ()))
    if dec.get("minority") is not None:
        m = dict(dec["minority"])
        dec["minority"] = MinorityRead(tuple(m["voters"]), tuple(m["read"]),
                                       tuple(m["not_read"]), m["quorum"])
    return InspectReport(d["cluster"], tuple(_member_from(m) for m in d["members"]),
                         Quorum(**d["quorum"]), Decision(**dec))


def rederive(record: Reviewed, inv: Inventory, run_id: str) -> Plan:
    """The run's plan derived again, by today's planner, from the inputs recorded when it
    was made and today's inventory (a resumed run: the live state has moved on since, by the
    run's own steps, and each remaining step re-checks it before acting)."""
    try:
        report = report_from(record.inputs["report"])
        nb = record.inputs.get("new_binary")
        new_binary = NewBinary(**nb) if nb else None
        tools = {k: Etcdutl(**v) for k, v in record.inputs.get("tools", {}).items()}
        sf = record.inputs.get("snapshot_file")
        snapshot_file = SnapshotInput(**sf) if sf else None
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError("reviewed plan", 0, f"planning inputs: {exc}") from exc
    configs = {s.name: s.config_text for s in report.members
               if s.reachable and s.config_text is not None}
    o = record.options
    return derive(inv, report, configs, run_id, method=o.method or "force-new-cluster",
                  allow_quorum=o.allow_quorum, take_over_lock=o.take_over_lock,
                  exclude=o.exclude, etcd_image=o.etcd_image, etcd_binary=new_binary,
                  tools=tools, snapshot_file=snapshot_file, bump_revision=o.bump_revision,
                  skip_hash_check=o.skip_hash_check, allow_older_data=o.allow_older_data)

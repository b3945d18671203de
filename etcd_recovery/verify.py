"""Verification: is the cluster whole and consistent? Reads only.

``verify_cluster`` is the plan's final check (the members the plan expects, and the key count
right after the restore). ``verify_standalone`` is ``etcd-recovery verify``: it reads the
cluster's membership from a member that answers, runs the same checks on the members of that
membership it can reach, and counts only those: a member of the membership it could not check
makes the verification incomplete (not ok). It has no key count to compare with.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import etcdflags
from .actions import db_path, read_in_order_argv
from .errors import EtcdApiError, StepFailed, TransportError
from .retry import poll
from .runtimes.base import runtime_for
from .session import Session

READ_IN_ORDER_S = 120.0   # 8 GB (etcd's largest quota) at 70 MB/s


def read_db_in_order(s: Session, name: str) -> None:
    """``read_in_order_argv`` of member ``name``'s db on its host. Only the page cache is
    changed, so a failure (no such file, a host without dd, a read slower than
    READ_IN_ORDER_S) is left to HashKV to show."""
    try:
        s.run(name, read_in_order_argv(db_path(s.m(name).data_dir)), check=False,
              timeout=READ_IN_ORDER_S)
    except TransportError:
        pass


def hash_after_reading(s: Session, name: str, rev: int) -> int:
    """Member ``name``'s HashKV at ``rev``, its db read into the page cache first."""
    read_db_in_order(s, name)
    return int(s.client(name).hash_kv(rev).hash)


def verify_cluster(s: Session, expected: list[str], keys_before: int | None,
                   timeout: float = 30.0, unchecked: Collection[str] = ()) -> list[str]:
    """Every check of the final verification; returns the problems found (empty: all good).
    ``unchecked``: members known to be in the membership that are not checked here (the
    caller reports them); the membership is expected to be ``expected`` and those."""
    problems: list[str] = []
    c = s.client(expected[0])
    members = c.member_list(serializable=False)
    names = sorted(_member_label(x) for x in members)
    if names != sorted([*expected, *unchecked]):
        problems.append(f"members are {names}, expected {sorted([*expected, *unchecked])}")
    learners = [x.name for x in members if x.is_learner]
    if learners:
        problems.append(f"learners remain: {learners}")

    # Same revision everywhere (followers apply a moment after the leader) and equal HashKV.
    def same_revision() -> int | None:
        revs = {n: s.client(n).status().revision for n in expected}
        return revs[expected[0]] if len(set(revs.values())) == 1 else None

    try:
        rev = poll(same_revision, timeout, "every member to reach the same revision")
        with ThreadPoolExecutor(max_workers=len(expected)) as pool:  # seconds each at 1 GB
            hashes = dict(zip(expected, pool.map(lambda n: hash_after_reading(s, n, rev),
                                                 expected), strict=True))
        if len(set(hashes.values())) != 1:
            problems.append(f"HashKV at revision {rev} differs: "
                            + ", ".join(f"{n}={h:x}" for n, h in hashes.items()))
    except StepFailed as exc:
        problems.append(str(exc))
    alarms = c.alarms()
    if alarms:
        problems.append(f"alarms raised: {[(hex(a.member_id), a.alarm) for a in alarms]}")
    rt = runtime_for(s.inv.runtime)

    def member(n: str) -> list[str]:
        """One member's own checks (each member's on its own connection, all at once)."""
        found = []
        st = s.client(n).status()
        if not st.leader:
            found.append(f"{n} has no leader")
        if st.errors:
            found.append(f"{n} reports errors: {list(st.errors)}")
        path = rt.config_path(s.m(n))
        res = s.run(n, ["cat", path], check=False)
        text = res.stdout.decode(errors="replace")
        if res.exit_status != 0:
            found.append(f"{n}: cannot read {path}")
        elif etcdflags.force_new_cluster_set(rt.config_flags(text, path)) is not False:
            found.append(f"{n}: {path} still has --force-new-cluster")
        if not s.runs_without_force(n):
            found.append(f"{n}: etcd is not running, or runs with --force-new-cluster")
        return found

    with ThreadPoolExecutor(max_workers=max(1, len(expected))) as pool:
        for found in pool.map(member, expected):
            problems.extend(found)
    if keys_before is not None:
        count = c.count_keys()
        if count < keys_before:
            problems.append(f"{count} keys, fewer than the {keys_before} counted before")
    return problems


@dataclass(frozen=True)
class StandaloneReport:
    """What ``etcd-recovery verify`` found. ``checked``: the members of the cluster's
    membership whose checks ran; ``not_checked``: members of the membership it could not
    check (name -> why); ``outside``: inventory members that are neither reachable nor in the
    membership (name -> why: a lost host, brought back with rejoin)."""

    cluster: str
    membership: tuple[str, ...]
    checked: tuple[str, ...]
    problems: tuple[str, ...]
    not_checked: Mapping[str, str] = field(default_factory=dict)
    outside: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every member of the membership checked, and no check failed."""
        return not self.problems and not self.not_checked and bool(self.checked)

    def to_json(self, inventory: str) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), "checked": list(self.checked),
                "membership": list(self.membership), "not_checked": dict(self.not_checked),
                "unreachable": {**self.not_checked, **self.outside},
                "rejoin": {n: rejoin_command(n, inventory) for n in self.outside}}

    def lines(self, inventory: str) -> list[str]:
        """What a person reads: each member not checked and why, each problem, then one line
        that counts only what was checked."""
        out = [f"{n}: not checked: {why}; it is a member of the cluster, so the cluster is "
               "not verified: bring it back, then verify again" for n, why in
               self.not_checked.items()]
        out += [f"{n}: not checked: {why}; it is not in the cluster's membership: once it is "
                f"back, bring it in with `{rejoin_command(n, inventory)}`"
                for n, why in self.outside.items()]
        out += [f"FAIL: {p}" for p in self.problems]
        n, total = len(self.checked), len(self.membership)
        if self.ok:
            out.append(f"cluster {self.cluster}: all {n} members of its membership "
                       f"({', '.join(self.checked)}) healthy and consistent")
        elif not self.problems and self.checked:
            out.append(f"cluster {self.cluster}: NOT VERIFIED: the {n} of {total} members "
                       f"checked ({', '.join(self.checked)}) are healthy and consistent; "
                       f"{', '.join(self.not_checked)} not checked")
        else:
            out.append(f"cluster {self.cluster}: NOT VERIFIED: {len(self.problems)} "
                       f"problem(s) above; {n} of {total} members of its membership checked"
                       + (f"; {', '.join(self.not_checked)} not checked"
                          if self.not_checked else ""))
        return out


def rejoin_command(name: str, inventory: str) -> str:
    return f"etcd-recovery rejoin {name} -i {inventory}"


def _member_label(m: Any) -> str:
    """A member list entry's name; an added member that never started has none."""
    return str(m.name) if m.name else f"(unstarted member {m.id:x})"


def _why(exc: EtcdApiError | TransportError) -> str:
    """An error without the member's name in front (a transport's label); the caller names
    the member."""
    return exc.detail if isinstance(exc, TransportError) else str(exc)


def _answers(s: Session, name: str) -> str | None:
    """None when the member's etcd answers Status, else why not."""
    try:
        s.client(name).status()
        return None
    except (EtcdApiError, TransportError) as exc:
        s.drop_client(name)
        return _why(exc)


def verify_standalone(s: Session, reachable: Sequence[str], unreachable: Mapping[str, str],
                      timeout: float = 30.0) -> StandaloneReport:
    """``etcd-recovery verify``: the membership as a member that answers reads it, then the
    checks of ``verify_cluster`` on the reachable members of it; see the module docstring."""
    cluster = s.inv.name
    problems: list[str] = []
    membership: list[str] | None = None
    silent: dict[str, str] = {}
    for n in reachable:
        try:
            membership = [_member_label(m) for m in s.client(n).member_list(serializable=False)]
            break
        except (EtcdApiError, TransportError) as exc:
            s.drop_client(n)
            silent[n] = _why(exc)
    if membership is None:
        problems.append("no member's etcd answered a linearizable member list: " + "; ".join(
            f"{n}: {why}" for n, why in silent.items()) if silent else
            "no member is reachable over SSH")
        return StandaloneReport(cluster, (), (), tuple(problems),
                                not_checked=dict(unreachable))
    in_cluster = set(membership)
    inventory = {m.name for m in s.inv.members}
    not_checked = {n: why for n, why in unreachable.items() if n in in_cluster}
    outside = {n: why for n, why in unreachable.items() if n not in in_cluster}
    for n in reachable:
        if n not in in_cluster:
            problems.append(f"{n} is in the inventory but not in the cluster's membership: "
                            f"bring it in with `{rejoin_command(n, s.inv.path)}`")
    for n in membership:
        if n not in inventory:
            problems.append(f"{n} is in the cluster's membership but not in the inventory "
                            f"{s.inv.path}: not checked")
    checked = [n for n in reachable if n in in_cluster and n not in not_checked]
    with ThreadPoolExecutor(max_workers=max(1, len(checked))) as pool:
        answers = dict(zip(checked, pool.map(lambda n: _answers(s, n), checked), strict=True))
    for n, why in answers.items():
        if why is not None:
            problems.append(f"{n}: etcd does not answer: {why}")
    checked = [n for n in checked if answers[n] is None]
    if checked:
        unknown = [n for n in membership if n not in inventory]
        problems += verify_cluster(s, checked, None, timeout,
                                   unchecked=[*not_checked, *unknown,
                                              *(n for n, why in answers.items() if why)])
    return StandaloneReport(cluster, tuple(membership), tuple(checked), tuple(problems),
                            not_checked=not_checked, outside=outside)

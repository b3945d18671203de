"""The checks of a member's return as a learner (both methods that re-add peers, and
``rejoin``): the cluster has quorum, the member list before the add, an empty data dir
before the start, etcd running before the promote."""

from __future__ import annotations

import posixpath

from ..actions import EtcdCall
from ..errors import (
    EtcdApiError,
    PreconditionError,
    RefusedError,
)
from ..plan import Step
from ..plan.scripts import wal_files_argv
from .base import Checker, Runner, find_member


def prepare_preflight_rejoin(ex: Runner, step: Step) -> dict[int, str]:
    via, name = step.params["via"], step.params["name"]
    c = ex.session.client(via)
    st = c.status()
    if not st.leader:
        raise PreconditionError(f"{via} has no leader: the cluster has no quorum; run "
                                "`etcd-recovery execute` first")
    c.get(b"/etcd-recovery/probe", serializable=False)
    me = find_member(c.member_list(serializable=False), ex.inv.member(name).peer_url)
    if me is not None and not me.is_learner and ex.session.etcd_pid(name) is not None:
        try:
            own = ex.session.client(name).status()
            if own.leader and own.member_id == me.id:
                raise RefusedError(f"{name} is already a healthy voting member; nothing "
                                   "to do")
        except EtcdApiError:
            pass
        finally:
            ex.session.drop_client(name)
    return {}


def prepare_learner_add(ex: Runner, step: Step) -> dict[int, str]:
    add = step.actions[1]
    assert isinstance(add, EtcdCall) and add.peer_url
    listed = ex.session.client(add.via).member_list(serializable=False)
    if find_member(listed, add.peer_url) is not None:
        return {1: f"{add.name} is already in the member list (resumed)"}
    return {}


def prepare_start_learner(ex: Runner, step: Step) -> dict[int, str]:
    name = step.host or ""
    if ex.session.etcd_pid(name) is not None:
        why = "etcd already runs (resumed)"
        return {2: why, 3: why}
    m = ex.session.m(name)
    member_dir = posixpath.join(m.data_dir, "member")
    if ex.session.run(name, ["test", "-e", member_dir], check=False).exit_status == 0:
        raise PreconditionError(f"{name}: {member_dir} exists; a learner starts from an "
                                "empty data dir (the move-aside step moves it)")
    # A WAL dir of its own must hold no WAL file either: etcd would restart from it as the
    # old member (etcd v3.6.16 server/storage/wal/util.go: Exist = any *.wal in the dir).
    if m.wal_apart and ex.session.run(name, list(wal_files_argv(m.wal)),
                                        check=False).exit_status == 0:
        raise PreconditionError(f"{name}: {m.wal} holds WAL files; a learner starts with "
                                "no WAL (the move-aside step moves the WAL dir aside)")
    return {}


def prepare_promote(ex: Runner, step: Step) -> dict[int, str]:
    if ex.session.etcd_pid(step.host or "") is None:
        raise PreconditionError(f"{step.host}: etcd is not running")
    return {}


CHECKS: dict[str, Checker] = {
    "rejoin-needed": prepare_preflight_rejoin, "members-before": prepare_learner_add,
    "data-empty": prepare_start_learner, "etcd-running": prepare_promote}

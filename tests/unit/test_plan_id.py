"""What the operator reviewed is what runs: plan IDs, end to end through the command line.

The cluster is a fake (an inspect report the test can change between ``plan`` and
``execute``); planning is the real planner, the inventory the real file on disk, and the run
the real journal, with the executor replaced by one that journals its start as the executor
does and records the plan it was given.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from etcd_recovery import cli, methods, planid, runs
from etcd_recovery.errors import EXIT_DRY_RUN, EXIT_REFUSED, EXIT_USAGE
from etcd_recovery.inventory import dump_inventory, load_inventory
from etcd_recovery.journal import Journal
from etcd_recovery.model import InspectReport
from etcd_recovery.plan import common as plan_mod
from etcd_recovery.plan import scripts as plan_scripts
from etcd_recovery.plan.force_new_cluster import make_plan
from etcd_recovery.plan.steps import Plan
from etcd_recovery.results import Summary

from .test_plan_actions import configs as pa_configs
from .test_plan_actions import inventory as pa_inventory
from .test_plan_actions import plan_for
from .test_plan_actions import report as pa_report

ID = re.compile(r"plan ID: ([0-9a-f]{12})")


class Cluster:
    """The fake cluster behind ``runs.derive_plan`` and the fake executor behind ``cli._run``."""

    def __init__(self, tmp: Path) -> None:
        self.inventory = tmp / "inventory.yaml"
        self.inventory.write_text(dump_inventory(pa_inventory("static-pod")))
        self.jdir = tmp / ".etcd-recovery"
        cfg = pa_configs("static-pod")
        rep = pa_report()
        self.report = replace(rep, members=tuple(
            replace(m, config_text=cfg.get(m.name) if m.reachable else None)
            for m in rep.members))
        self.derived: list[dict[str, Any]] = []
        self.ran: list[Plan] = []

    def derive(self, inv: Any, o: planid.Options,
               run_id: str | None = None) -> tuple[Plan, InspectReport]:
        self.derived.append({"allow_quorum": o.allow_quorum,
                             "take_over_lock": o.take_over_lock,
                             "exclude": list(o.exclude) or None, "etcd_image": o.etcd_image})
        cfg = {m.name: m.config_text for m in self.report.members if m.config_text}
        return methods.derive(inv, self.report, cfg, run_id or runs.new_run_id(),
                              allow_quorum=o.allow_quorum, take_over_lock=o.take_over_lock,
                              exclude=o.exclude, etcd_image=o.etcd_image), self.report

    def run(self, inv: Any, the_plan: Plan, journal: Journal, verbose: bool,
            check_fingerprint: bool, planned_from: Any = None) -> Summary:
        cli.err.print("EXECUTOR: first action", markup=False)
        self.ran.append(the_plan)
        if not journal.events():
            journal.append("run-start", chosen=the_plan.chosen)  # as the executor does
        journal.append("step-done", "preflight")
        return Summary(run_id=the_plan.run_id, ok=False, stopped_at="preflight",
                       message="stopped for the test")

    def set_member(self, name: str, **changes: Any) -> None:
        self.report = replace(self.report, members=tuple(
            replace(m, **changes) if m.name == name else m for m in self.report.members))

    def edit_inventory(self, old: str, new: str) -> None:
        text = self.inventory.read_text()
        assert old in text
        self.inventory.write_text(text.replace(old, new, 1))

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(cli.app, [args[0], "-i", str(self.inventory), *args[1:]])

    def plan(self, *args: str) -> str:
        res = self.cli("plan", *args)
        assert res.exit_code == 0, res.output
        found = ID.search(res.stdout)
        assert found, res.stdout
        return found[1]

    def run_start(self) -> dict[str, Any]:
        current = Journal.current(self.jdir)
        assert current is not None
        return next(e.detail for e in current.events() if e.event == "run-start")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cluster:
    c = Cluster(tmp_path)
    monkeypatch.setattr(cli, "_load", lambda path: load_inventory(path))  # no TCP connects
    monkeypatch.setattr(runs, "derive_plan", c.derive)
    monkeypatch.setattr(cli, "_run", c.run)
    return c


# ------------------------------------------------------------------ the ID itself

def test_the_id_is_stable_over_run_ids_and_words_and_moves_with_actions_and_state() -> None:
    inv = pa_inventory("static-pod")
    a = plan_for("static-pod")
    b = make_plan(inv, pa_report(), pa_configs("static-pod"), "20990101-000000-abcd")
    assert a.run_id != b.run_id and planid.plan_id(a, inv) == planid.plan_id(b, inv)
    reworded = replace(a, reason="other words", steps=tuple(
        replace(s, title=s.title + "!", check="c") for s in a.steps))
    assert planid.plan_id(reworded, inv) == planid.plan_id(a, inv)
    assert planid.plan_id(replace(a, fingerprint="0" * 16), inv) != planid.plan_id(a, inv)
    locked = plan_for("static-pod", take_over_lock=True)
    assert planid.plan_id(locked, inv) != planid.plan_id(a, inv)
    moved = replace(inv, members=(replace(inv.members[0], ssh=replace(
        inv.members[0].ssh, host="10.9.9.9")), *inv.members[1:]))
    assert planid.plan_id(a, moved) != planid.plan_id(a, inv)


def test_plan_prints_its_id_and_the_command_and_keeps_what_it_showed(cluster: Cluster) -> None:
    res = cluster.cli("plan")
    assert res.exit_code == 0, res.output
    pid = ID.search(res.stdout)
    assert pid, res.stdout
    assert f"etcd-recovery execute -i {cluster.inventory} --confirm {pid[1]}" in res.stdout
    kept = cluster.jdir / "plans" / f"{pid[1]}.json"
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert oct(kept.parent.stat().st_mode & 0o777) == "0o700"
    assert json.loads(kept.read_text())["plan_id"] == pid[1]
    js = cluster.cli("plan", "-o", "json")
    assert json.loads(js.stdout)["plan_id"] == pid[1]
    md = cluster.cli("plan", "-o", "markdown")
    assert f"- Plan ID: `{pid[1]}`" in md.stdout and f"--confirm {pid[1]}" in md.stdout
    # the plan's own flags are in the command it prints
    locked = cluster.cli("plan", "--take-over-lock")
    assert re.search(r"--confirm [0-9a-f]{12} --take-over-lock", locked.stdout), locked.stdout


# ------------------------------------------------------------------ execute --confirm PLAN_ID

def test_a_matching_id_runs_and_the_run_is_bound(cluster: Cluster) -> None:
    pid = cluster.plan()
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == 0, res.output
    assert len(cluster.ran) == 1 and planid.plan_id(
        cluster.ran[0], load_inventory(cluster.inventory)) == pid
    assert cluster.run_start() == {"bound": True, "plan_id": pid, "chosen": "etcd-1"}


def test_the_reviewed_plans_own_flags_are_used_when_left_out(cluster: Cluster) -> None:
    pid = cluster.plan("--take-over-lock", "--etcd-image", "registry.k8s.io/etcd:3.5.21-0")
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == 0, res.output
    assert cluster.derived[-1]["take_over_lock"] is True
    assert cluster.derived[-1]["etcd_image"] == "registry.k8s.io/etcd:3.5.21-0"


def test_an_edited_inventory_is_refused_naming_the_field(cluster: Cluster) -> None:
    pid = cluster.plan()
    cluster.edit_inventory("host: 10.9.0.3", "host: 10.9.0.33")
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "inventory changed: member etcd-3 ssh.host: 10.9.0.3 -> 10.9.0.33" in res.stderr
    assert cluster.ran == [] and Journal.current(cluster.jdir) is None


def test_an_edited_data_dir_is_refused_naming_it(cluster: Cluster) -> None:
    pid = cluster.plan()
    text = cluster.inventory.read_text()
    cluster.inventory.write_text(text.replace("data_dir: /var/lib/etcd",
                                              "data_dir: /srv/etcd", 1))
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == EXIT_REFUSED, res.output
    assert ("inventory changed: member etcd-1 data_dir: /var/lib/etcd -> /srv/etcd"
            in res.stderr), res.stderr
    assert cluster.ran == []


def test_a_drifted_state_is_refused_naming_the_figure(cluster: Cluster) -> None:
    pid = cluster.plan()
    cluster.set_member("etcd-1", revision=160)
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "state changed: etcd-1 revision 150 -> 160" in res.stderr, res.stderr
    assert cluster.ran == []


def test_another_member_chosen_is_refused(cluster: Cluster) -> None:
    from etcd_recovery.choose import decide

    pid = cluster.plan()
    cluster.set_member("etcd-3", last_term=8)  # etcd-3 (running) now holds the newest log
    cluster.report = replace(cluster.report, decision=decide(cluster.report.members,
                                                             cluster.report.quorum))
    assert cluster.report.decision.chosen == "etcd-3"
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "chosen member differs: planned etcd-1, now etcd-3" in res.stderr, res.stderr
    assert cluster.ran == []


def test_a_changed_step_is_refused_naming_it(cluster: Cluster,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pid = cluster.plan()
    real = plan_scripts.backup_argv
    monkeypatch.setattr(plan_mod, "backup_argv",
                        lambda d, c, b: real(d, c, b.replace("backup", "bak")))
    res = cluster.cli("execute", "--confirm", pid)
    assert res.exit_code == EXIT_REFUSED, res.output
    assert re.search(r"step 5 backup:etcd-1 differs: action 1 argv\[\d+\]: "
                     r"/var/lib/etcd-recovery/<run>/backup -> /var/lib/etcd-recovery/<run>/bak",
                     res.stderr), res.stderr


def test_an_unknown_id_is_refused_saying_how_to_get_one(cluster: Cluster) -> None:
    res = cluster.cli("execute", "--confirm", "0123456789ab")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "plan ID 0123456789ab is unknown here" in res.stderr
    assert f"etcd-recovery plan -i {cluster.inventory}" in res.stderr
    assert cluster.derived == [] and cluster.ran == []  # refused before any host is read
    bad = cluster.cli("execute", "--confirm", "../../etc/x")
    assert bad.exit_code == EXIT_USAGE and "is not a plan ID" in bad.stderr, bad.output


def test_a_dry_run_shows_the_whole_plan_and_its_id(cluster: Cluster) -> None:
    res = cluster.cli("execute")
    assert res.exit_code == EXIT_DRY_RUN, res.output
    pid = ID.search(res.stderr)
    assert pid and "unlock" in res.stderr and "fence:etcd-3" in res.stderr, res.stderr
    assert f"--confirm {pid[1]}" in res.stderr
    # what the dry run showed can be run by its ID
    assert cluster.cli("execute", "--confirm", pid[1]).exit_code == 0
    assert cluster.run_start()["bound"] is True


def test_bare_confirm_shows_steps_and_id_first_and_journals_unbound(cluster: Cluster) -> None:
    res = cluster.cli("execute", "--confirm")
    assert res.exit_code == 0, res.output
    start = cluster.run_start()
    assert start["bound"] is False and planid.ID_RE.fullmatch(start["plan_id"])
    first = res.stderr.index("EXECUTOR: first action")
    assert -1 < res.stderr.find(f"plan ID {start['plan_id']}: not bound") < first
    assert -1 < res.stderr.find("force-new-cluster:etcd-1") < first, res.stderr


# ------------------------------------------------------------------ --plan FILE and flags

@pytest.mark.parametrize("flag", [["--allow-quorum"], ["--exclude", "etcd-3"],
                                  ["--etcd-image", "registry.k8s.io/etcd:3.5.21-0"],
                                  ["--etcd-binary", "/opt/etcd"], ["--take-over-lock"]])
def test_a_flag_the_saved_plan_contradicts_is_refused(cluster: Cluster,
                                                      flag: list[str]) -> None:
    saved = cluster.inventory.parent / "plan.json"
    assert cluster.cli("plan", "--save", str(saved)).exit_code == 0
    res = cluster.cli("execute", "--plan", str(saved), "--confirm", *flag)
    assert res.exit_code == EXIT_USAGE, res.output
    assert f"contradicts the command line: {flag[0]}" in res.stderr, res.stderr
    assert cluster.ran == [] and len(cluster.derived) == 1  # refused before deriving again


def test_a_flag_the_reviewed_plan_contradicts_is_refused(cluster: Cluster) -> None:
    pid = cluster.plan("--exclude", "etcd-3")
    res = cluster.cli("execute", "--confirm", pid, "--exclude", "etcd-1")
    assert res.exit_code == EXIT_USAGE, res.output
    assert "--exclude etcd-1: the plan excludes etcd-3" in res.stderr, res.stderr
    same = cluster.cli("execute", "--confirm", pid, "--exclude", "etcd-3")
    assert same.exit_code == 0, same.output


def test_a_saved_plan_with_its_own_flags_runs_without_repeating_them(cluster: Cluster) -> None:
    saved = cluster.inventory.parent / "plan.json"
    assert cluster.cli("plan", "--take-over-lock", "--save", str(saved)).exit_code == 0
    res = cluster.cli("execute", "--plan", str(saved), "--confirm")
    assert res.exit_code == 0, res.output
    assert cluster.derived[-1]["take_over_lock"] is True
    assert cluster.run_start()["bound"] is True


# ------------------------------------------------------------------ --resume

def _started(cluster: Cluster) -> Journal:
    assert cluster.cli("execute", "--confirm").exit_code == 0
    current = Journal.current(cluster.jdir)
    assert current is not None
    return current


def test_resume_with_the_same_plan_goes_on(cluster: Cluster) -> None:
    run = _started(cluster)
    res = cluster.cli("execute", "--resume", "--confirm")
    assert res.exit_code == 0, res.output
    assert [p.run_id for p in cluster.ran] == [run.run_id, run.run_id]


def test_resume_of_an_edited_journaled_plan_is_refused(cluster: Cluster) -> None:
    run = _started(cluster)
    data = json.loads(run.plan_path.read_text())
    backup = next(s for s in data["steps"] if s["id"] == "backup:etcd-1")
    backup["actions"][0]["argv"][-1] = "/tmp/elsewhere"
    run.plan_path.write_text(json.dumps(data))
    res = cluster.cli("execute", "--resume", "--confirm")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert re.search(r"step 5 backup:etcd-1 differs: action 1 argv\[\d+\]: "
                     r"/var/lib/etcd-recovery/<run>/backup -> /tmp/elsewhere", res.stderr), \
        res.stderr
    assert len(cluster.ran) == 1  # nothing more ran


def test_resume_with_an_edited_inventory_is_refused(cluster: Cluster) -> None:
    _started(cluster)
    cluster.edit_inventory("host: 10.9.0.1", "host: 10.9.0.11")
    res = cluster.cli("execute", "--resume", "--confirm")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "inventory changed: member etcd-1 ssh.host: 10.9.0.1 -> 10.9.0.11" in res.stderr
    assert len(cluster.ran) == 1


def test_resume_derives_the_plan_again_and_refuses_another_one(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    _started(cluster)
    real = plan_scripts.backup_argv  # the planner now makes another backup command
    monkeypatch.setattr(plan_mod, "backup_argv",
                        lambda d, c, b: ["nice", *real(d, c, b)])
    res = cluster.cli("execute", "--resume", "--confirm")
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "derived again from what it was made from" in res.stderr, res.stderr
    # the backup runs under the host's command guard: the changed word is inside its argv
    assert re.search(r"step 5 backup:etcd-1 differs: action 1 argv\[\d+\]: \S+ -> nice",
                     res.stderr), res.stderr
    assert len(cluster.ran) == 1


def test_resume_refuses_a_flag_its_plan_contradicts_and_another_id(cluster: Cluster) -> None:
    _started(cluster)
    res = cluster.cli("execute", "--resume", "--confirm", "--allow-quorum")
    assert res.exit_code == EXIT_USAGE, res.output
    assert "--allow-quorum: the plan was made without it" in res.stderr
    other = cluster.cli("execute", "--resume", "--confirm", "0123456789ab")
    assert other.exit_code == EXIT_REFUSED and "not 0123456789ab" in other.stderr, other.output
    assert len(cluster.ran) == 1


def test_the_executor_journals_the_runs_binding_in_run_start(tmp_path: Path) -> None:
    from etcd_recovery.executor import Executor
    from etcd_recovery.plan.scripts import lock_argv

    from .test_executor import NAMES, RUN, World, inv, lock_step

    w = World()
    for n in NAMES:
        w.hosts[n].expect(lock_argv(RUN))
    the_plan = Plan(cluster="c", runtime="systemd", run_id=RUN, chosen="a", reason="r",
                    fingerprint="f", steps=(lock_step(),), unreachable=(), rejoin_later=(),
                    inventory="inv.yaml")
    journal = Journal.create(tmp_path, the_plan,
                             start_detail={"bound": True, "plan_id": "0123456789ab"})
    Executor(inv(), the_plan, journal, factory=w.factory, client_factory=w.client_factory).run()
    first = Journal(tmp_path, RUN).events()[0]
    assert (first.event, first.detail) == ("run-start", {"bound": True,
                                                         "plan_id": "0123456789ab",
                                                         "chosen": "a"})
    assert Journal(tmp_path, RUN).binding() == first.detail


def test_a_saved_plan_may_carry_its_id_and_nothing_else_extra() -> None:
    from etcd_recovery.errors import FormatError

    d = plan_for("static-pod").to_json()
    assert Plan.from_json({"plan_id": "0123456789ab", **d}) == Plan.from_json(d)
    with pytest.raises(FormatError, match="plan_id"):
        Plan.from_json({"plan_id": 5, **d})
    with pytest.raises(FormatError, match="unexpected bound"):
        Plan.from_json({"bound": True, **d})


def test_the_planning_inputs_come_back_as_they_were_recorded() -> None:
    """A resumed run re-plans from the recorded inspection: every nested record (host
    checks, the minority line, the WAL tail, membership) comes back typed, not as dicts, and
    equal to what was recorded."""
    from etcd_recovery.choose import minority_read
    from etcd_recovery.hostchecks import HostCheck
    from etcd_recovery.model import Check, WalTail

    rep = pa_report()
    first = replace(rep.members[0],
                    host_checks=(HostCheck("etcd-1", "port", "peer port 2380", False,
                                           "in use", "stop what holds it"),),
                    checks=(Check("etcd-1", "data_dir", "/var/lib/etcd", "/var/lib/etcd",
                                  "manifest", True),),
                    wal_tail=WalTail("/var/lib/etcd/member/wal/0.wal", 4096, 7, 100, 2, 1),
                    term_starts=((1, 1), (9, 2)))
    members = (first, *rep.members[1:])
    minority = minority_read([m if m is first else replace(m, source=None, commit_index=None)
                              for m in members])
    assert minority is not None
    report = replace(rep, members=members,
                     decision=replace(rep.decision, minority=minority))
    recorded = json.dumps(planid.inputs_json(report, None)["report"])
    back = planid.report_from(json.loads(recorded))
    assert back == report
    assert isinstance(back.decision.minority, type(minority))
    assert isinstance(back.members[0].host_checks[0], HostCheck)


def test_a_relative_local_path_names_the_file_the_plan_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--etcdutl and a local --from-snapshot are recorded resolved; the same relative path
    given again (execute --resume from the same directory) is the same file, not a
    contradiction; HOST:/path is a file on that host and stays as given."""
    inv = pa_inventory("static-pod")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "etcdutl").write_text("")
    (tmp_path / "snap.db").write_text("")
    monkeypatch.chdir(tmp_path)
    given = runs.with_local_paths_resolved(
        planid.Options(etcdutl="bin/etcdutl", from_snapshot="./snap.db"), inv)
    assert given.etcdutl == str(tmp_path.resolve() / "bin" / "etcdutl")
    assert given.from_snapshot == str(tmp_path.resolve() / "snap.db")
    planned = planid.Options(etcdutl=given.etcdutl, from_snapshot=given.from_snapshot)
    assert planid.contradictions(planned, given) == []
    assert planid.contradictions(planned, planid.Options(etcdutl="bin/etcdutl")) != []
    host = inv.members[0].name
    on_host = runs.with_local_paths_resolved(
        planid.Options(from_snapshot=f"{host}:/var/tmp/snap.db"), inv)
    assert on_host.from_snapshot == f"{host}:/var/tmp/snap.db"

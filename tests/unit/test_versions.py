"""Version facts, the plan's advisories, and the align-commit decision they feed."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from etcd_recovery.actions import AppendWal, Run, WriteFile
from etcd_recovery.errors import RefusedError, UsageError
from etcd_recovery.model import InspectReport, NewBinary, WalTail
from etcd_recovery.plan.force_new_cluster import align_decision, make_plan
from etcd_recovery.plan.scripts import install_binary_argv
from etcd_recovery.plan.steps import Plan
from etcd_recovery.runbook import plan_markdown
from etcd_recovery.runtimes.config import (
    FORCED_TIMING,
    manifest_flags,
    manifest_image,
    manifest_with_image,
)
from etcd_recovery.versions import advisories, commit_fix, parse_version

from .test_plan_actions import TAIL, configs, inventory, report


def test_parse_version() -> None:
    assert parse_version("3.5.30") == (3, 5, 30)
    assert parse_version("v3.6.1") == (3, 6, 1)
    assert parse_version("3.6.0-rc.1") == (3, 6, 0)
    assert parse_version("latest") is None and parse_version(None) is None


@pytest.mark.parametrize(("version", "fixed"), [
    ("3.4.23", False), ("3.4.45", False), ("3.5.16", False), ("3.5.21", False),
    ("3.5.22", True), ("3.5.30", True), ("3.6.0", False), ("3.6.1", True), ("3.7.1", True),
    (None, False)])
def test_force_new_cluster_commit_fix_by_version(version: str | None, fixed: bool) -> None:
    assert commit_fix(parse_version(version)) is fixed


def issues(kept: str, versions: dict[str, str | None]) -> set[str]:
    return {a.issue for a in advisories(kept, versions)}


def test_advisories_name_the_bugs_each_version_has() -> None:
    assert issues("a", {"a": "3.5.24"}) >= {"etcd-io/etcd#20055", "etcd-io/etcd#20893"}
    assert "etcd-io/etcd#20893" not in issues("a", {"a": "3.5.25"})
    assert "etcd-io/etcd#20893" in issues("a", {"a": "3.6.5"})
    assert "etcd-io/etcd#20893" not in issues("a", {"a": "3.6.6"})
    assert "etcd-io/etcd#21867" in issues("a", {"a": "3.6.6"})
    assert "etcd-io/etcd#21867" not in issues("a", {"a": "3.7.1"})
    # A peer's version matters for its own promotion (#20793, fixed in 3.5.24).
    assert "etcd-io/etcd#20793" in issues("a", {"a": "3.5.30", "b": "3.5.16"})
    assert "etcd-io/etcd#20793" not in issues("a", {"a": "3.5.30", "b": "3.5.24"})
    # 3.6.0 as the member to keep is refused; anywhere else it is not.
    refused = [a for a in advisories("a", {"a": "3.6.0"}) if a.refuse]
    assert len(refused) == 1 and "#20009" in refused[0].line() and "3.6.1" in refused[0].text
    assert not any(a.refuse for a in advisories("a", {"a": "3.6.1", "b": "3.6.0"}))
    assert "--etcd-image" in refused[0].text
    systemd = next(a for a in advisories("a", {"a": "3.6.0"}, "systemd") if a.refuse)
    assert "--etcd-binary" in systemd.text and "--etcd-image" not in systemd.text
    # Each advisory is one line naming the member, its version and the issue.
    for a in advisories("a", {"a": "3.4.23", "b": None}):
        assert "\n" not in a.line() and a.line().startswith("a (etcd 3.4.23): ")
    unknown = advisories("a", {"a": None})
    assert len(unknown) == 1 and "unknown" in unknown[0].line()


TIGHT = replace(TAIL, room=10)
RUN = "20261128-000000-beef"


@pytest.mark.parametrize(
    ("hs", "last", "cindex", "torn", "tail", "fix", "outcome"), [
        (205, 205, 200, False, TAIL, False, "none"),
        (198, 205, 200, False, TAIL, False, "planned"),
        (198, 205, 200, False, TAIL, True, "planned"),      # the log goes past the index
        (198, 200, 200, False, TAIL, True, "etcd-does-it"),  # etcd's own fix covers it
        (198, 200, 200, False, TAIL, False, "planned"),
        (198, 205, 200, True, TAIL, False, "skipped"),
        (198, 199, 200, False, TAIL, False, "skipped"),      # log ends before the index
        (198, 205, 200, False, TIGHT, False, "skipped"),     # no room in the file
        (198, 205, 200, False, None, False, "skipped"),
    ])
def test_align_decision(hs: int, last: int, cindex: int, torn: bool, tail: WalTail | None,
                        fix: bool, outcome: str) -> None:
    d = align_decision("m", hs, last, cindex, torn, tail, fix)
    assert d.outcome == outcome, d.why
    assert (d.record is not None) == (outcome == "planned")
    if d.record is not None:
        assert d.record.commit == max(last, cindex) and d.record.offset == TAIL.offset
    if outcome == "etcd-does-it":
        assert "#20055" in d.why and "confirmed no-op" in d.why
    if outcome == "skipped":
        assert d.why.startswith("WARNING")


def with_version(rep: InspectReport, version: str | None, **kw: object) -> InspectReport:
    return replace(rep, members=tuple(replace(m, etcd_version=version, **kw)  # type: ignore
                                      if m.reachable else m for m in rep.members))


def test_plan_carries_advisories_and_the_align_step_follows_the_version() -> None:
    # last index 205 > consistent index 200: a record is written on every version.
    for version in ("3.4.23", "3.5.30", "3.7.1"):
        plan = make_plan(inventory("systemd"), with_version(report(), version),
                         configs("systemd"), RUN)
        align = next(s for s in plan.steps if s.kind.value == "align_commit")
        assert isinstance(align.actions[0], AppendWal), version
        assert align.params["commit_fix"] is commit_fix(parse_version(version))
        assert any("#20055" in line for line in plan.advisories)
    # The whole log within the consistent index: 3.5.30 needs nothing written, 3.5.16 does.
    rep = replace(report(), members=(replace(report().members[0], last_index=200),
                                     *report().members[1:]))
    fixed = make_plan(inventory("systemd"), with_version(rep, "3.5.30"), configs("systemd"),
                      RUN)
    align = next(s for s in fixed.steps if s.kind.value == "align_commit")
    assert align.actions == () and align.params["target"] == "etcd-does-it"
    old = make_plan(inventory("systemd"), with_version(rep, "3.5.16"), configs("systemd"), RUN)
    assert isinstance(next(s for s in old.steps if s.kind.value == "align_commit").actions[0],
                      AppendWal)
    # Advisories appear in every rendering and survive a saved plan.
    assert fixed.advisories and all(f"- Advisory: {line}" in plan_markdown(
        fixed, inventory("systemd")) for line in fixed.advisories)
    again = Plan.from_json(json.loads(json.dumps(fixed.to_json())))
    assert again.advisories == fixed.advisories and again.first_difference(fixed) is None


def test_3_6_0_is_refused_unless_a_fixed_image_restores() -> None:
    rep = with_version(report(), "3.6.0")
    with pytest.raises(RefusedError, match="#20009"):
        make_plan(inventory("static-pod"), rep, configs("static-pod"), RUN)
    image = "registry.k8s.io/etcd:3.6.1-0"
    plan = make_plan(inventory("static-pod"), rep, configs("static-pod"), RUN,
                     etcd_image=image)
    force = next(s for s in plan.steps if s.kind.value == "force_new_cluster")
    plain = next(s for s in plan.steps if s.kind.value == "restart_plain")
    assert force.params["etcd_image"] == image and image in force.title
    for step in (force, plain):
        write = step.actions[0]
        assert isinstance(write, WriteFile)
        assert manifest_image(write.content, "m") == image
    assert "+    image: registry.k8s.io/etcd:3.6.1-0" in force.actions[0].diff  # type: ignore
    assert not any("#20009" in line for line in plan.advisories)
    # An image whose tag is still 3.6.0 does not help; systemd has no image to set.
    with pytest.raises(RefusedError, match="#20009"):
        make_plan(inventory("static-pod"), rep, configs("static-pod"), RUN,
                  etcd_image="registry.k8s.io/etcd:3.6.0-0")
    with pytest.raises(UsageError, match="static-pod"):
        make_plan(inventory("systemd"), rep, configs("systemd"), RUN, etcd_image=image)


def test_no_flag_a_version_removed_is_written() -> None:
    # etcd 3.7 removed every --experimental-* flag (etcd-io/etcd#19959): the plan writes
    # only --force-new-cluster (with its start's raft timing, --heartbeat-interval and
    # --election-timeout, which 3.7 keeps: embed/config.go at v3.7.3), --initial-cluster and
    # --initial-cluster-state.
    plan = make_plan(inventory("static-pod"), with_version(report(), "3.7.1"),
                     configs("static-pod"), RUN)
    before = {n: set(manifest_flags(c, n)) for n, c in configs("static-pod").items()}
    for s in plan.steps:
        for a in s.actions:
            if isinstance(a, WriteFile) and s.host:
                added = set(manifest_flags(a.content, a.path)) - before[s.host]
                assert added <= {"force-new-cluster", "initial-cluster-state",
                                 *FORCED_TIMING}, added
                assert not any(f.startswith("experimental") for f in added)


def test_image_edit_changes_only_the_image() -> None:
    text = configs("static-pod")["etcd-1"]
    new = manifest_with_image(text, "etcd.yaml", "example.org/etcd:3.6.14-0")
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True)
               if a != b]
    assert changed == [("    image: registry.k8s.io/etcd:3.5.16-0",
                        "    image: example.org/etcd:3.6.14-0")]
    assert manifest_with_image(new, "etcd.yaml", "example.org/etcd:3.6.14-0") == new
    quoted = text.replace("image: registry.k8s.io/etcd:3.5.16-0",
                          "image: 'registry.k8s.io/etcd:3.5.16-0'  # pinned")
    assert "image: 'x/etcd:3.6.1-0'  # pinned" in manifest_with_image(quoted, "f",
                                                                      "x/etcd:3.6.1-0")
    with pytest.raises(UsageError):
        manifest_with_image(text, "f", "two\nlines")


NEW = NewBinary(path="/opt/etcd-3.6.1/etcd", version="3.6.1", replaces="/usr/local/bin/etcd")


def test_3_6_0_on_systemd_is_restored_with_another_build() -> None:
    rep = with_version(report(), "3.6.0")
    with pytest.raises(RefusedError, match="--etcd-binary"):
        make_plan(inventory("systemd"), rep, configs("systemd"), RUN)
    plan = make_plan(inventory("systemd"), rep, configs("systemd"), RUN, etcd_binary=NEW)
    force = next(s for s in plan.steps if s.kind.value == "force_new_cluster")
    install = force.actions[0]
    assert isinstance(install, Run) and "/opt/etcd-3.6.1/etcd" in install.argv
    assert force.params == {"etcd_image": None, "etcd_binary": NEW.path}
    assert "3.6.1" in force.title and "/usr/local/bin/etcd" in force.title
    assert not any("#20009" in line for line in plan.advisories)
    old = replace(NEW, version="3.6.0")
    with pytest.raises(RefusedError, match="#20009"):
        make_plan(inventory("systemd"), rep, configs("systemd"), RUN, etcd_binary=old)
    with pytest.raises(UsageError, match="--etcd-image"):
        make_plan(inventory("static-pod"), rep, configs("static-pod"), RUN, etcd_binary=NEW)


def test_installing_a_build_keeps_the_original_and_can_run_twice(tmp_path: Path) -> None:
    (tmp_path / "opt").mkdir()
    build = tmp_path / "opt" / "etcd-new"
    build.write_text("new build")
    old = tmp_path / "opt" / "etcd-old"
    old.write_text("old build")
    unit_binary = tmp_path / "etcd"
    unit_binary.symlink_to(old)
    rdir = tmp_path / "run"
    rdir.mkdir()
    argv = install_binary_argv(NewBinary(str(build), "3.6.1", str(unit_binary)), str(rdir))
    for _ in range(2):   # a resumed run does it again: the original stays the original
        subprocess.run(argv, check=True)
        assert not unit_binary.is_symlink() and unit_binary.read_text() == "new build"
        assert os.stat(unit_binary).st_mode & 0o777 == 0o755
        kept = rdir / "etcd.binary.orig"
        assert kept.is_symlink() and os.readlink(kept) == str(old)
    assert old.read_text() == "old build"


@pytest.mark.parametrize("runtime", ["static-pod", "systemd"])
def test_an_older_minor_cannot_rejoin_a_newer_kept_member(runtime: str) -> None:
    # Mid-upgrade: the member kept runs 3.6, another 3.5 (seen on real builds: a 3.5 learner
    # of a member that ran --force-new-cluster alone on 3.6 exits "incompatible with current
    # running cluster").
    refusing = [a for a in advisories("b", {"a": "3.5.35", "b": "3.6.16", "c": "3.6.16"},
                                      runtime) if a.refuse]
    assert [a.member for a in refusing] == ["a"], refusing
    line = refusing[0].line()
    assert "makes the cluster 3.6" in line and "etcd 3.5 refuses to join" in line, line
    assert "--exclude" in line, line
    assert "upgrade a to etcd 3.6 first" in line, line
    # The other way round (kept 3.5, re-added 3.6), and the same minor, are fine.
    assert not [a for a in advisories("a", {"a": "3.5.35", "b": "3.6.16"}, runtime) if a.refuse]
    assert not [a for a in advisories("a", {"a": "3.6.16", "b": "3.6.5"}, runtime) if a.refuse]


def _forced_and_plain(plan: Plan) -> tuple[WriteFile, WriteFile]:
    force = next(s for s in plan.steps if s.kind.value == "force_new_cluster")
    plain = next(s for s in plan.steps if s.kind.value == "restart_plain")
    fw, pw = force.actions[0], plain.actions[0]
    assert isinstance(fw, WriteFile) and isinstance(pw, WriteFile)
    return fw, pw


def test_the_forced_start_of_a_static_pod_leads_at_once_and_the_restart_drops_it() -> None:
    """A manifest is the whole command line: the forced start gets a 100 ms election
    timeout (etcd would otherwise wait out a whole default one, 1-2 s, before it leads
    alone); the restart without --force-new-cluster writes the member's own manifest back."""
    conf = configs("static-pod")
    plan = make_plan(inventory("static-pod"), report(), conf, RUN)
    fw, pw = _forced_and_plain(plan)
    forced = manifest_flags(fw.content, fw.path)
    assert {k: forced[k] for k in FORCED_TIMING} == FORCED_TIMING
    assert int(forced["election-timeout"]) >= 5 * int(forced["heartbeat-interval"])  # etcd's rule
    assert "+    - --election-timeout=100" in fw.diff
    assert pw.content == conf["etcd-1"] and not set(FORCED_TIMING) & set(
        manifest_flags(pw.content, pw.path))
    force = next(s for s in plan.steps if s.kind.value == "force_new_cluster")
    assert "100 ms election timeout" in force.title


def test_the_forced_start_keeps_its_own_timing_where_a_flag_could_be_shadowed() -> None:
    """systemd: the unit's command line may set --election-timeout, and etcd refuses to start
    when an ETCD_* variable shadows a flag; a manifest whose container env sets one: the
    same. Neither gets the timing; each still gets its plan."""
    plan = make_plan(inventory("systemd"), report(), configs("systemd"), RUN)
    fw, _ = _forced_and_plain(plan)
    assert "ETCD_FORCE_NEW_CLUSTER" in fw.content and "ETCD_ELECTION_TIMEOUT" not in fw.content
    conf = configs("static-pod")
    with_env = {n: c.replace("    image:", "    env:\n    - name: ETCD_ELECTION_TIMEOUT\n"
                                         "      value: \"1000\"\n    image:", 1)
                for n, c in conf.items()}
    assert all("ETCD_ELECTION_TIMEOUT" in c for c in with_env.values())
    plan = make_plan(inventory("static-pod"), report(), with_env, RUN)
    fw, _ = _forced_and_plain(plan)
    forced = manifest_flags(fw.content, fw.path)
    assert forced.get("force-new-cluster") == "true" and "election-timeout" not in forced

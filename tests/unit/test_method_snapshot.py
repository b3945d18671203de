"""The snapshot method's planning (pure) and its host scripts (in a real shell).

The planner: which steps each path has (the kept member's disk already holds its whole log,
or it first applies it with --force-new-cluster), what restore is given, what is refused;
the runbook gives the copies and the revision checks as shell; a copy's receiving end and
the restore script do what they say when run, rerun and interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from etcd_recovery.actions import (
    CopyFile,
    Run,
    action_from_json,
    action_to_json,
    receive_argv,
    sha256_argv,
)
from etcd_recovery.choose import decide
from etcd_recovery.errors import FormatError, RefusedError, UsageError
from etcd_recovery.inventory import Member
from etcd_recovery.methods import derive
from etcd_recovery.model import InspectReport, Quorum
from etcd_recovery.plan.snapshot import (
    DEFAULT_BUMP,
    Etcdutl,
    SnapshotInput,
    extract_argv,
    image_version,
    make_file_plan,
    make_snapshot_argv,
    make_snapshot_plan,
    restore_argv,
)
from etcd_recovery.plan.steps import Plan, StepKind
from etcd_recovery.runbook import plan_markdown

from .test_plan_actions import configs, inventory, report

TOOLS = {n: Etcdutl("/var/lib/etcd-recovery/r1/etcdutl", "3.5.16", "/opt/etcd-3.5.16/etcdutl",
                    "ab" * 32) for n in ("etcd-1", "etcd-2", "etcd-3")}


def versioned(r: InspectReport, version: str = "3.5.16") -> InspectReport:
    return replace(r, members=tuple(replace(m, etcd_version=version if m.reachable else None)
                                    for m in r.members))


def covered(r: InspectReport) -> InspectReport:
    """etcd-1's backend already holds its whole log (consistent index = last index)."""
    ms = tuple(replace(m, consistent_index=m.last_index) if m.name == "etcd-1" else m
               for m in r.members)
    return InspectReport(r.cluster, ms, r.quorum, decide(ms, r.quorum, allow_quorum=False))


def kinds(plan_steps: object) -> list[str]:
    return [s.id for s in plan_steps]  # type: ignore[attr-defined]


@pytest.mark.parametrize("runtime", ["systemd", "static-pod"])
def test_a_backend_with_its_whole_log_is_copied_without_starting_etcd(runtime: str) -> None:
    plan = make_snapshot_plan(inventory(runtime), versioned(covered(report())),
                              configs(runtime), "r1", TOOLS)
    ids = kinds(plan.steps)
    assert plan.chosen == "etcd-1"
    assert not any(i.startswith(("align-commit", "force-new-cluster", "stop:")) for i in ids)
    # etcd-2 is unreachable: no copy, restore or start for it; it is not in the new cluster.
    # (the live member is fenced first; etcdutl is on each host before the snapshot's status)
    assert ids == ["preflight", "lock", "fence:etcd-3", "fence:etcd-1", "backup:etcd-1",
                   "backup:etcd-3", "etcdutl:etcd-1", "etcdutl:etcd-3", "snapshot:etcd-1",
                   "send:etcd-3", "restore:etcd-1", "restore:etcd-3", "start:etcd-1",
                   "start:etcd-3", "cluster-up", "restore-check", "verify", "unlock"]
    restore = next(s for s in plan.steps if s.id == "restore:etcd-3")
    argv = next(a for a in restore.actions if isinstance(a, Run) and "restore" in a.argv).argv
    assert argv[argv.index("--bump-revision") + 1] == str(DEFAULT_BUMP)
    assert "--mark-compacted" in argv and "--skip-hash-check" in argv  # a copied db: no hash
    cluster = argv[argv.index("--initial-cluster") + 1]
    assert "etcd-1=" in cluster and "etcd-3=" in cluster and "etcd-2" not in cluster
    assert argv[argv.index("--initial-cluster-token") + 1] == "etcd-recovery-r1"
    send = next(s for s in plan.steps if s.id == "send:etcd-3").actions[0]
    assert isinstance(send, CopyFile) and send.src_host == "etcd-1" and send.host == "etcd-3"
    assert plan.rejoin_later == ("etcd-2",)


def test_a_host_holding_the_same_etcdutl_runs_it_in_place_and_the_plan_says_where() -> None:
    # etcd-1 has the build at the same path with the same sha256 (runs.py checks it on the
    # host): it is not copied there; etcd-3 gets the copy.
    tools = {**TOOLS, "etcd-1": Etcdutl("/opt/etcd-3.5.16/etcdutl", "3.5.16")}
    plan = make_snapshot_plan(inventory("static-pod"), versioned(covered(report())),
                              configs("static-pod"), "r1", tools)
    ids = kinds(plan.steps)
    assert "etcdutl:etcd-1" not in ids and "etcdutl:etcd-3" in ids
    restore = next(s for s in plan.steps if s.id == "restore:etcd-1")
    assert any(isinstance(a, Run) and "/opt/etcd-3.5.16/etcdutl" in a.argv
               for a in restore.actions), restore.actions
    line = next(a for a in plan.advisories if a.startswith("etcdutl: "))
    assert line == ("etcdutl: on etcd-1 the host's own (/opt/etcd-3.5.16/etcdutl, 3.5.16); "
                    "copied from this machine to etcd-3 (/opt/etcd-3.5.16/etcdutl, sha256 "
                    + "ab" * 6 + ")")


def test_a_backend_behind_its_log_applies_it_alone_first_and_stops_again() -> None:
    plan = make_snapshot_plan(inventory("systemd"), versioned(report()), configs("systemd"),
                              "r1", TOOLS)
    ids = kinds(plan.steps)
    at = ids.index("snapshot:etcd-1")
    assert ids[at - 3:at] == ["align-commit:etcd-1", "force-new-cluster:etcd-1", "stop:etcd-1"]
    snap = plan.steps[at]
    assert snap.kind is StepKind.SNAPSHOT_MAKE and snap.params["min_revision"] == 150


def test_the_snapshot_method_refuses_what_cannot_restore() -> None:
    inv, cfg = inventory("systemd"), configs("systemd")
    with pytest.raises(RefusedError, match="etcd 3.4.30.*etcdutl"):
        make_snapshot_plan(inv, versioned(report(), "3.4.30"), cfg, "r1", TOOLS)
    other = {n: replace(t, version="3.6.16") for n, t in TOOLS.items()}
    with pytest.raises(RefusedError, match="not of etcd 3.5.16's minor version"):
        make_snapshot_plan(inv, versioned(report()), cfg, "r1", other)
    with pytest.raises(UsageError, match="etcd-1: no etcdutl.*--etcdutl"):
        make_snapshot_plan(inv, versioned(report()), cfg, "r1", {})


def test_method_flags_that_do_not_apply_are_refused() -> None:
    inv, cfg, r = inventory("systemd"), configs("systemd"), versioned(report())
    with pytest.raises(UsageError, match="--bump-revision applies to the snapshot method"):
        derive(inv, r, cfg, "r1", bump_revision=5)
    with pytest.raises(UsageError, match="--method 'x'"):
        derive(inv, r, cfg, "r1", method="x")
    with pytest.raises(UsageError, match="positive"):
        derive(inv, r, cfg, "r1", method="snapshot", tools=TOOLS, bump_revision=0)
    with pytest.raises(UsageError, match="--skip-hash-check and --allow-older-data"):
        derive(inv, r, cfg, "r1", method="snapshot", tools=TOOLS, skip_hash_check=True)
    plan = derive(inv, r, cfg, "r1", method="snapshot", tools=TOOLS, bump_revision=77)
    restore = next(s for s in plan.steps if s.kind is StepKind.RESTORE)
    assert restore.params["bump_revision"] == 77


FILE = SnapshotInput(path="/backups/etcd.db", sha256="cd" * 32, revision=140, total_key=99,
                     hash=0xBEEF, size=1 << 20, has_hash=True, age_s=7200)


def test_from_snapshot_refuses_quorum_an_unhashed_file_and_newer_member_data() -> None:
    inv, cfg, r = inventory("systemd"), configs("systemd"), versioned(report())
    with pytest.raises(RefusedError, match="has quorum"):
        make_file_plan(inv, replace(r, quorum=Quorum(True, via="etcd-3")), cfg, "r1", TOOLS,
                       FILE)
    with pytest.raises(RefusedError, match="no integrity hash.*--skip-hash-check"):
        make_file_plan(inv, r, cfg, "r1", TOOLS, replace(FILE, has_hash=False))
    # etcd-1 is at revision 150, the file at 140
    with pytest.raises(RefusedError, match=r"etcd-1 \(revision 150\).*--allow-older-data"):
        make_file_plan(inv, r, cfg, "r1", TOOLS, FILE)
    plan = make_file_plan(inv, r, cfg, "r1", TOOLS, FILE, allow_older_data=True)
    sends = [s.actions[0] for s in plan.steps if s.id.startswith("send:")]
    assert [(a.src_host, a.src_path, a.host, a.sha256) for a in sends  # type: ignore[union-attr]
            ] == [("", FILE.path, n, FILE.sha256) for n in ("etcd-1", "etcd-3")]
    assert not any(s.kind is StepKind.FORCE_NEW_CLUSTER for s in plan.steps)
    check = next(s for s in plan.steps if s.kind is StepKind.RESTORE_CHECK)
    assert check.params["revision"] == 140 and check.params["ref"] == ""
    restore = next(s for s in plan.steps if s.id == "restore:etcd-1")
    argv = next(a for a in restore.actions if isinstance(a, Run) and "restore" in a.argv).argv
    assert "--skip-hash-check" not in argv  # the file has its hash: etcdutl checks it


def test_a_copy_survives_the_saved_plan_round_trip() -> None:
    a = CopyFile("etcd-1", "/run/x/snapshot.db", "etcd-3", "/run/x/snapshot.db", 0o600,
                 "ef" * 32, 90.0)
    assert action_from_json(json.loads(json.dumps(action_to_json(a))), "plan.json") == a
    with pytest.raises(FormatError, match="copy-file action: field .mode. has the wrong type"):
        action_from_json({**action_to_json(a), "mode": "0600"}, "plan.json")


def test_the_runbook_gives_the_copies_and_the_revision_checks_as_shell(tmp_path: Path) -> None:
    inv = inventory("systemd")
    plan = make_snapshot_plan(inv, versioned(covered(report())), configs("systemd"), "r1",
                              TOOLS)
    text = plan_markdown(plan, inv)
    assert "copy_between etcd-1 /var/lib/etcd-recovery/r1/snapshot.db etcd-3" in text
    assert "copy_in /opt/etcd-3.5.16/etcdutl etcd-1" in text
    assert "SNAPSHOT_REVISION=$(on etcd-1" in text
    assert f'-ge $(($SNAPSHOT_REVISION + {DEFAULT_BUMP}))' in text
    assert "watch --rev=$SNAPSHOT_REVISION" in text
    # No force-new-cluster step: no key count taken after one, none compared against.
    assert "KEYS_AFTER_RESTORE" not in text
    blocks = [b.split("```", 1)[0] for b in text.split("```sh\n")[1:]]
    script = tmp_path / "runbook.sh"
    script.write_text("\n".join(blocks))
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _sh(argv: list[str] | tuple[str, ...], stdin: bytes = b""
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), input=stdin, capture_output=True, timeout=30)


def test_the_receiving_end_renames_only_a_whole_checked_file(tmp_path: Path) -> None:
    dest = tmp_path / "d" / "snapshot.db"
    data = os.urandom(100_000)
    bad = _sh(receive_argv(str(dest), 0o600, "00" * 32), data)
    assert bad.returncode != 0 and not dest.exists()
    good = _sh(receive_argv(str(dest), 0o600, hashlib.sha256(data).hexdigest()), data)
    assert good.returncode == 0, good.stderr
    assert dest.read_bytes() == data and stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert not (tmp_path / "d" / "snapshot.db.partial").exists()
    # A write that fails (a full disk): tee still feeds the hash every byte, so its own
    # status must refuse the copy, although the sha256 matches.
    full = tmp_path / "f" / "snapshot.db"
    full.parent.mkdir()
    (full.parent / "snapshot.db.partial").symlink_to("/dev/full")
    cut = _sh(receive_argv(str(full), 0o600, hashlib.sha256(data).hexdigest()), data)
    assert cut.returncode != 0 and b"not written whole" in cut.stderr, cut.stderr
    assert not full.exists() and not (full.parent / "snapshot.db.failed").exists()


def test_the_snapshot_is_a_hard_link_to_the_db_else_a_copy(tmp_path: Path) -> None:
    """On the data dir's file system the snapshot is the stopped member's db itself, linked
    (nothing written); where ``ln`` cannot link (another file system), a copy. Rerun, either
    way it is made again, whole."""
    db = tmp_path / "data" / "member" / "snap" / "db"
    db.parent.mkdir(parents=True)
    db.write_bytes(os.urandom(50_000))
    snap = tmp_path / "run" / "snapshot.db"
    for _ in range(2):
        made = _sh(make_snapshot_argv(str(db), str(snap)))
        assert made.returncode == 0, made.stderr
        assert snap.stat().st_ino == db.stat().st_ino and snap.read_bytes() == db.read_bytes()
        assert not snap.with_name("snapshot.db.partial").exists()
    # a file system that refuses the link (EXDEV): a PATH whose ln fails, as it then does
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ln").write_text("#!/bin/sh\necho 'ln: Invalid cross-device link' >&2\nexit 1\n")
    (bin_dir / "ln").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    snap = tmp_path / "run-elsewhere" / "snapshot.db"
    copied = subprocess.run(make_snapshot_argv(str(db), str(snap)), capture_output=True,
                            timeout=30, env=env)
    assert copied.returncode == 0, copied.stderr
    assert snap.stat().st_ino != db.stat().st_ino and snap.read_bytes() == db.read_bytes()
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600 and b"cross-device" not in copied.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_the_receiving_end_asks_for_a_1_mib_pipe(tmp_path: Path) -> None:
    """With python3, the receiving end grows the pipe it reads from to 1 MiB (reads of up to
    1 MiB instead of 64 KiB: 1 GB to three hosts at once took 7.3-8.2 s against 11.4-11.8 s),
    and writes and hashes what comes through it."""
    import fcntl

    dest = tmp_path / "d" / "snapshot.db"
    data = os.urandom(3_000_000)
    r, w = os.pipe()
    assert fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) < 1 << 20   # the kernel's default
    proc = subprocess.Popen(receive_argv(str(dest), 0o600, hashlib.sha256(data).hexdigest()),
                            stdin=r, stderr=subprocess.PIPE)
    os.close(r)
    deadline = time.monotonic() + 20
    while fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) < 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    grown = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    with os.fdopen(w, "wb") as f:
        f.write(data)
    _, err = proc.communicate(timeout=30)
    assert grown == 1 << 20
    assert proc.returncode == 0 and dest.read_bytes() == data, err


def _path_with(tmp_path: Path, python3: str | None) -> dict[str, str]:
    """A PATH of the tools the host scripts use; ``python3``: None for none, "real", or a
    script's text (a python3 without a usable hashlib)."""
    bin_dir = tmp_path / ("bin-" + ("none" if python3 is None else str(len(python3))))
    bin_dir.mkdir()
    for tool in ("sh", "sha256sum", "tee", "mkdir", "dirname", "rm", "chmod", "mv", "cat"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    if python3 == "real":
        (bin_dir / "python3").symlink_to(sys.executable)
    elif python3 is not None:
        (bin_dir / "python3").write_text(python3)
        (bin_dir / "python3").chmod(0o755)
    return {**os.environ, "PATH": str(bin_dir)}


@pytest.mark.parametrize("python3", ["real", None, "#!/bin/sh\nexit 1\n"],
                         ids=["python3", "no-python3", "python3-without-hashlib"])
def test_the_hosts_sha256_is_sha256_with_or_without_python3(tmp_path: Path,
                                                            python3: str | None) -> None:
    """The host's sha256 (python3's hashlib where it works, else sha256sum) is the same
    digest, of a file (sha256_argv) and of a copy's stream (receive_argv)."""
    env = _path_with(tmp_path, python3)
    data = os.urandom(3_000_000)
    src = tmp_path / "src.db"
    src.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    got = subprocess.run(sha256_argv(str(src)), capture_output=True, env=env, timeout=30)
    assert got.returncode == 0 and got.stdout.decode().split()[0] == want, got.stderr
    missing = subprocess.run(sha256_argv(str(tmp_path / "nope")), capture_output=True,
                             env=env, timeout=30)
    assert missing.returncode != 0 and missing.stderr
    dest = tmp_path / "d" / "snapshot.db"
    sent = subprocess.run(receive_argv(str(dest), 0o600, want), input=data,
                          capture_output=True, env=env, timeout=30)
    assert sent.returncode == 0, sent.stderr
    assert dest.read_bytes() == data
    wrong = subprocess.run(receive_argv(str(dest) + ".2", 0o600, "0" * 64), input=data,
                           capture_output=True, env=env, timeout=30)
    assert wrong.returncode != 0 and f"sha256 {want}, not".encode() in wrong.stderr


FAKE_ETCDUTL = """#!/bin/sh
# snapshot restore FILE ... --data-dir D [--wal-dir W]: what etcdutl leaves, and fails once
# when $FAIL_ONCE names a file that does not exist yet
[ -n "$FAIL_ONCE" ] && [ ! -e "$FAIL_ONCE" ] && { : > "$FAIL_ONCE"; exit 3; }
snap=$3; d=""; w=""
while [ $# -gt 0 ]; do
  case "$1" in --data-dir) d=$2; shift ;; --wal-dir) w=$2; shift ;; esac; shift
done
[ -e "$d" ] && { echo "data-dir $d exists" >&2; exit 1; }
mkdir -p "$d/member/snap" "${w:-$d/member/wal}"
cp "$snap" "$d/member/snap/db"
echo restored > "${w:-$d/member/wal}/0.wal"
"""


def _restore_env(tmp_path: Path) -> tuple[list[str], Path, Path]:
    tool = tmp_path / "etcdutl"
    tool.write_text(FAKE_ETCDUTL)
    tool.chmod(0o755)
    snap = tmp_path / "snapshot.db"
    snap.write_bytes(b"the snapshot")
    data = tmp_path / "data"
    data.mkdir()
    m = inventory("systemd").members[0]
    m = replace(m, data_dir=str(data))
    argv = restore_argv(str(tool), str(snap), m, "etcd-1=https://10.9.1.1:2380", "tok",
                        DEFAULT_BUMP, True, str(tmp_path / "run" / "restore"))
    return argv, data, tmp_path / "run" / "restore.done"


def test_restore_refuses_old_data_in_place_and_is_done_once(tmp_path: Path) -> None:
    argv, data, done = _restore_env(tmp_path)
    (data / "member").mkdir()
    (data / "member" / "old").write_text("old data")
    refused = _sh(argv)
    assert refused.returncode == 1 and b"old data is still in place" in refused.stderr
    assert (data / "member" / "old").read_text() == "old data"
    (data / "member" / "old").unlink()
    (data / "member").rmdir()        # moved aside, as the step's first action does
    ok = _sh(argv)
    assert ok.returncode == 0, ok.stderr
    assert (data / "member" / "snap" / "db").read_bytes() == b"the snapshot"
    assert done.exists() and not (data / "restoring").exists()
    (data / "member" / "snap" / "db").write_bytes(b"written by etcd since")
    again = _sh(argv)                 # a rerun after it ended does nothing
    assert again.returncode == 0
    assert (data / "member" / "snap" / "db").read_bytes() == b"written by etcd since"


def test_restore_cut_short_is_redone_from_the_start(tmp_path: Path) -> None:
    argv, data, done = _restore_env(tmp_path)
    env = {**os.environ, "FAIL_ONCE": str(tmp_path / "failed-once")}
    first = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert first.returncode == 3 and not done.exists()
    # A part-written restore of this run is what is in the data dir now; the rerun clears
    # what its own restore wrote (the started mark says so) and restores again.
    (data / "restoring" / "member").mkdir(parents=True)
    (data / "member").mkdir()
    second = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert second.returncode == 0, second.stderr
    assert (data / "member" / "snap" / "db").read_bytes() == b"the snapshot" and done.exists()


def test_a_snapshot_plans_options_are_read_back_from_its_steps_and_contradictions_named() -> None:
    from etcd_recovery import planid

    inv, cfg, r = inventory("static-pod"), configs("static-pod"), versioned(report())
    plan = derive(inv, r, cfg, "r1", method="snapshot", tools=TOOLS, bump_revision=500)
    got = planid.options_of(plan)
    assert (got.method, got.bump_revision) == ("snapshot", 500)
    assert got.flags()[:4] == ["--method", "snapshot", "--bump-revision", "500"]
    said = planid.contradictions(got, planid.Options(method="force-new-cluster",
                                                     bump_revision=7, skip_hash_check=True))
    assert said == ["--method force-new-cluster: the plan's method is snapshot",
                    "--bump-revision 7: the plan bumps by 500",
                    "--skip-hash-check: the plan was made without it"]
    assert planid.contradictions(got, planid.Options(method="snapshot")) == []


def _members(n: int, version: str, lost: int = 0, db: int = 1 << 20) -> InspectReport:
    from etcd_recovery.model import MemberState

    ms = tuple(MemberState(name=f"etcd-{i}", host=f"h{i}", reachable=i > lost,
                           etcd_version=version if i > lost else None,
                           db_size_bytes=db if i > lost else None) for i in range(1, n + 1))
    return InspectReport("lab", ms, Quorum(False), decide(ms, Quorum(False), allow_quorum=False))


@pytest.mark.parametrize(("n", "version", "lost", "db", "method", "says"), [
    (5, "3.5.35", 0, 1 << 20, "snapshot", "adds 4 learners one at a time"),
    # 5 members, 2 GiB: the sends (at 100 MB/s, below where the bench put the crossover)
    # cost more than the 15 s of waits; 1 GiB (about 11 s) still less
    (5, "3.5.35", 0, 2 << 30, "force-new-cluster", "takes about 21 s, more than the 15 s"),
    (5, "3.5.35", 0, 1 << 30, "snapshot", "adds 4 learners one at a time"),
    (5, "3.5.35", 0, 450 << 20, "snapshot", "adds 4 learners one at a time"),
    # 4 to bring back (10 s of waits): 1 GiB (about 11 s) is more
    (4, "3.5.35", 0, 1 << 30, "force-new-cluster", "takes about 11 s, more than the 10 s"),
    (3, "3.5.35", 1, 1 << 20, "force-new-cluster", "adds 1 learner(s)"),
    (3, "3.6.16", 1, 1 << 20, "snapshot", "etcd-1 not reached may still run the old cluster"),
    (3, "3.6.16", 1, 1 << 30, "force-new-cluster", "the db is 1024 MiB"),
    (5, "3.4.23", 0, 1 << 20, "force-new-cluster", "needs etcdutl"),
])
def test_the_method_advice_weighs_size_version_lost_members_and_the_db(
        n: int, version: str, lost: int, db: int, method: str, says: str) -> None:
    from etcd_recovery.methods import recommend

    advice = recommend(_members(n, version, lost, db))
    assert advice.method == method and any(says in r for r in advice.reasons), advice
    line = advice.line("force-new-cluster")
    assert line.startswith("method: force-new-cluster suits this cluster" if
                           method == "force-new-cluster" else
                           "method: force-new-cluster as asked; --method snapshot would suit")


def test_every_plan_of_the_survivors_data_ends_its_advisories_with_the_method_advice() -> None:
    inv, cfg, r = inventory("systemd"), configs("systemd"), versioned(report(), "3.6.16")
    for method in ("force-new-cluster", "snapshot"):
        tools = {n: replace(t, version="3.6.16") for n, t in TOOLS.items()}
        plan = derive(inv, r, cfg, "r1", method=method,
                      tools=tools if method == "snapshot" else None)
        assert plan.advisories[-1].startswith(f"method: {method}"), plan.advisories


def test_the_peer_probe_tells_a_served_port_from_a_bound_one_and_a_closed_one() -> None:
    import socket
    import threading

    from etcd_recovery.actions import peer_probe_argv

    bound = socket.socket()            # listening, never accepting: etcd in its initial check
    bound.bind(("127.0.0.1", 0))
    bound.listen(8)
    served = socket.socket()
    served.bind(("127.0.0.1", 0))
    served.listen(8)

    def answer() -> None:
        conn, _ = served.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        def probe(port: int) -> int:
            return _sh(peer_probe_argv(f"https://127.0.0.1:{port}")).returncode

        assert probe(served.getsockname()[1]) == 0
        assert probe(bound.getsockname()[1]) == 124      # timed out: nothing read
        assert probe(closed_port) == 1                   # refused
    finally:
        bound.close()
        served.close()


def test_a_snapshot_file_on_a_host_is_sent_from_there_and_read_back_as_given() -> None:
    from etcd_recovery.planid import options_of

    inv, cfg, r = inventory("systemd"), configs("systemd"), versioned(report())
    on_host = replace(FILE, host="etcd-3")
    plan = make_file_plan(inv, r, cfg, "r1", TOOLS, on_host, allow_older_data=True)
    sends = [s.actions[0] for s in plan.steps if s.id.startswith("send:")]
    assert [(a.src_host, a.src_path, a.host) for a in sends  # type: ignore[union-attr]
            ] == [("etcd-3", FILE.path, n) for n in ("etcd-1", "etcd-3")]
    pre = next(s for s in plan.steps if s.kind is StepKind.PREFLIGHT_SNAPSHOT)
    assert pre.params["file_host"] == "etcd-3" and "etcd-3:/backups/etcd.db" in pre.title
    assert "etcd-3:/backups/etcd.db" in plan.reason
    # what --plan FILE and --resume compare the command line with
    assert options_of(plan).from_snapshot == "etcd-3:/backups/etcd.db"
    assert options_of(make_file_plan(inv, r, cfg, "r1", TOOLS, FILE, allow_older_data=True)
                      ).from_snapshot == FILE.path
    local = make_file_plan(inv, r, cfg, "r1", TOOLS, FILE, allow_older_data=True)
    assert next(s for s in local.steps
                if s.kind is StepKind.PREFLIGHT_SNAPSHOT).params["file_host"] == ""
    # the saved plan reads back whole through the strict loader
    assert Plan.from_json(json.loads(json.dumps(plan.to_json())), "p").steps == plan.steps


def test_from_snapshot_host_form_needs_a_member_name_and_an_absolute_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from etcd_recovery import runs

    seen: list[tuple[str, str]] = []

    def on_host(m: Member, path: str, given: str) -> SnapshotInput:
        seen.append((m.name, path))
        return FILE

    def here(path: str) -> SnapshotInput:
        seen.append(("", path))
        return FILE

    monkeypatch.setattr(runs, "_host_snapshot", on_host)
    monkeypatch.setattr(runs, "_local_snapshot", here)
    inv = inventory("systemd")
    for given in ("etcd-2:/var/backups/etcd.db", "etcd-9:/x.db", "etcd-2:rel.db",
                  "/a:b/c.db", "backup.db"):
        runs.snapshot_input(given, inv)
    assert seen == [("etcd-2", "/var/backups/etcd.db"), ("", "etcd-9:/x.db"),
                    ("", "etcd-2:rel.db"), ("", "/a:b/c.db"), ("", "backup.db")]


def test_an_etcdutl_run_in_place_everywhere_is_still_read_back_as_the_flag() -> None:
    from etcd_recovery.planid import options_of

    tools = {n: Etcdutl("/opt/etcd-3.5.16/etcdutl", "3.5.16", from_flag=True)
             for n in ("etcd-1", "etcd-2", "etcd-3")}
    plan = make_snapshot_plan(inventory("static-pod"), versioned(covered(report())),
                              configs("static-pod"), "r1", tools)
    assert not any(s.id.startswith("etcdutl:") for s in plan.steps)
    assert options_of(plan).etcdutl == "/opt/etcd-3.5.16/etcdutl"
    loaded = Plan.from_json(json.loads(json.dumps(plan.to_json())), "p")
    assert options_of(loaded).etcdutl == "/opt/etcd-3.5.16/etcdutl"
    beside = {n: Etcdutl("/usr/local/bin/etcdutl", "3.5.16") for n in tools}
    assert options_of(make_snapshot_plan(inventory("systemd"), versioned(covered(report())),
                                         configs("systemd"), "r1", beside)).etcdutl is None


# ------------------------------------------------- kubeadm: etcdutl from the etcd image

IMAGE_TOOLS = {n: Etcdutl("/var/lib/etcd-recovery/r1/etcdutl", "3.5.16",
                          image="registry.k8s.io/etcd:3.5.16-0")
               for n in ("etcd-1", "etcd-2", "etcd-3")}


def test_image_versions_are_read_from_kubeadm_tags() -> None:
    assert image_version("registry.k8s.io/etcd:3.5.16-0") == "3.5.16"
    assert image_version("localhost:5000/etcd:v3.6.5") == "3.6.5"
    assert image_version("localhost:5000/etcd") is None       # a port, not a tag
    assert image_version("registry.k8s.io/etcd:latest") is None


def test_an_image_tag_without_a_release_is_checked_against_the_members_version() -> None:
    # etcd:latest names no release: the version inspect read from the member stands in for
    # the tag's (the extraction checks etcdutl's own against its minor); with neither, refused
    latest = {n: replace(t, image="registry.k8s.io/etcd:latest") for n, t in IMAGE_TOOLS.items()}
    plan = make_snapshot_plan(inventory("static-pod"), versioned(covered(report())),
                              configs("static-pod"), "r1", latest)
    take = next(s for s in plan.steps if s.id == "etcdutl:etcd-3")
    run = take.actions[0]
    assert isinstance(run, Run) and run.argv[-1] == "3.5" and "etcd 3.5" in take.check
    unknown = {n: replace(t, version=None) for n, t in latest.items()}
    with pytest.raises(RefusedError, match="etcd-1: the etcd image registry.k8s.io/etcd:latest "
                                           "names no etcd release.*--etcdutl PATH"):
        make_snapshot_plan(inventory("static-pod"), versioned(covered(report())),
                           configs("static-pod"), "r1", unknown)


def test_kubeadm_hosts_take_etcdutl_from_their_etcd_image_and_the_plan_says_so() -> None:
    plan = make_snapshot_plan(inventory("static-pod"), versioned(covered(report())),
                              configs("static-pod"), "r1", IMAGE_TOOLS)
    steps = {s.id: s for s in plan.steps}
    take = steps["etcdutl:etcd-3"]
    run = take.actions[0]
    assert isinstance(run, Run) and "registry.k8s.io/etcd:3.5.16-0" in run.argv
    assert take.group == "background" and "ctr images mount" in take.title
    line = next(a for a in plan.advisories if a.startswith("etcdutl: "))
    assert line == ("etcdutl: on etcd-1, etcd-3 taken from the etcd image "
                    "registry.k8s.io/etcd:3.5.16-0 (ctr images mount)")
    from etcd_recovery.planid import options_of

    assert options_of(plan).etcdutl is None     # no --etcdutl to read back
    text = plan_markdown(plan, inventory("static-pod"))
    assert "ctr -n k8s.io images mount" in text


FAKE_CTR = """#!/bin/sh
# ctr -n k8s.io images mount REF DIR / unmount --rm DIR, over $IMAGES/<tag>/etcdutl
shift 2
case "$1 $2" in
  "images mount") tag=${3##*:}; [ -d "$IMAGES/$tag" ] || exit 1
    mkdir -p "$4/usr/local/bin"; cp "$IMAGES/$tag/etcdutl" "$4/usr/local/bin/"
    echo mounted >> "$IMAGES/log" ;;
  "images unmount") rm -rf "$4/usr"; echo unmounted >> "$IMAGES/log" ;;
  *) exit 2 ;;
esac
"""


def test_etcdutl_is_copied_out_of_the_image_checked_and_unmounted(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for tag, version in (("3.5.16-0", "3.5.16"), ("3.6.5-0", "3.6.5")):
        (images / tag).mkdir(parents=True)
        tool = images / tag / "etcdutl"
        tool.write_text(f"#!/bin/sh\necho 'etcdutl version: {version}'\n")
        tool.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ctr").write_text(FAKE_CTR)
    (bin_dir / "ctr").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "IMAGES": str(images)}
    dest = tmp_path / "run" / "etcdutl"

    def extract(image: str, minor: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(extract_argv(image, str(dest), minor), capture_output=True,
                              text=True, timeout=30, env=env)

    wrong = extract("registry.k8s.io/etcd:3.6.5-0", "3.5")
    assert wrong.returncode != 0 and "is 3.6.5, not of etcd 3.5" in wrong.stderr
    assert not dest.exists()
    for _ in range(2):   # rerun (a resumed run): the same result
        ok = extract("registry.k8s.io/etcd:3.5.16-0", "3.5")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "etcdutl 3.5.16"
        assert "3.5.16" in subprocess.run([str(dest), "version"], capture_output=True,
                                          text=True).stdout
    log = (images / "log").read_text().split()
    assert log.count("mounted") == 3 and log[-1] == "unmounted"   # every mount is undone
    assert not (tmp_path / "run" / "etcdutl.image" / "usr").exists()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700

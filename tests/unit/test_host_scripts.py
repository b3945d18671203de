"""The real host scripts of a plan (backup, move-aside, lock, unlock, and the guard every
long command runs under), run by a real shell in a temporary directory.

A command on a host goes on when the operator's side goes away, and a host command can
itself be cut short (a reboot, a kill). Each script is interrupted at every point where it
could be (a command on PATH that stops there, then the command's process group killed, as
a later run would stop it), then run again: it must converge, byte for byte, never nesting
a copy inside another. A second run started while the first still runs waits for it on the
host's command lock instead of racing it.
"""

from __future__ import annotations

import fcntl
import filecmp
import os
import random
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etcd_recovery.actions import Run
from etcd_recovery.inventory import Member, SshTarget
from etcd_recovery.plan.common import backup_step
from etcd_recovery.plan.scripts import (
    EXIT_STILL_RUNNING,
    backup_argv,
    guarded,
    lock_argv,
    move_aside_argv,
    probe_argv,
    unlock_argv,
    wal_files_argv,
)
from etcd_recovery.runtimes.base import runtime_for

RUN = "20261128-000000-beef"
SHELLS = ["sh", "bash"]


def in_shell(argv: list[str], shell: str) -> list[str]:
    """The same argv, every ``sh -c`` run by ``shell`` instead."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "sh" and out[i + 1] == "-c":
            out[i] = shell
    return out


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def make_data_dir(root: Path) -> Path:
    """A data dir shaped like etcd's: 0700, member/snap/db, member/wal/*.wal, a few MB."""
    rng = random.Random(7)
    d = root / "etcd"
    for sub in ("member/snap", "member/wal"):
        (d / sub).mkdir(parents=True)
    (d / "member/snap/db").write_bytes(rng.randbytes(1 << 20))
    for i in range(3):
        (d / f"member/wal/{i:016x}-{i:016x}.wal").write_bytes(rng.randbytes(512 << 10))
    (d / "member/snap/0000000000000002-0000000000000005.snap").write_bytes(b"snap")
    for p in (d, d / "member", d / "member/snap", d / "member/wal"):
        p.chmod(0o700)
    return d


def same_tree(a: Path, b: Path) -> None:
    """``b`` holds exactly ``a``'s entries, byte for byte, with the same modes."""
    got = sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    want = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    assert got == want, (got, want)
    for rel in want:
        pa, pb = a / rel, b / rel
        assert stat.S_IMODE(pa.stat().st_mode) == stat.S_IMODE(pb.stat().st_mode), rel
        if pa.is_file():
            assert filecmp.cmp(pa, pb, shallow=False), rel
    assert stat.S_IMODE(a.stat().st_mode) == stat.S_IMODE(b.stat().st_mode)


class Host:
    """A host's directories under ``root``: its data dir, its configuration, the state dir."""

    def __init__(self, root: Path, shell: str = "sh") -> None:
        self.root = root
        self.shell = shell
        self.data = make_data_dir(root / "var-lib")
        self.cfg = root / "etc" / "etcd.env"
        self.cfg.parent.mkdir()
        self.cfg.write_text("ETCD_NAME=etcd-1\nETCD_DATA_DIR=/var/lib/etcd\n")
        self.state = root / "state"
        self.bdir = self.state / RUN / "backup"
        self.stops = root / "stops"
        self.stops.mkdir()
        self.shims = root / "shims"
        self.shims.mkdir()

    def backup_argv(self, step: str = "backup:etcd-1") -> list[str]:
        inner = backup_argv(str(self.data), str(self.cfg), str(self.bdir))
        return in_shell(guarded(RUN, step, inner, 60, state_dir=str(self.state)), self.shell)

    def guarded(self, argv: list[str], step: str = "s", wait_s: float = 60) -> list[str]:
        return in_shell(guarded(RUN, step, argv, wait_s, state_dir=str(self.state)),
                        self.shell)

    def stop_at(self, name: str, pattern: str, before: str = "") -> None:
        """Make ``name`` (a command on PATH) stop when its arguments hold ``pattern``: run
        ``before`` (REAL in it: the real command), say so in stops/reached, then wait for
        stops/go; else run the real one."""
        real = shutil.which(name)
        assert real, name
        shim = self.shims / name
        shim.write_text(f"""#!/bin/sh
case " $* " in *{pattern}*)
  {before.replace('REAL', real) or ':'}
  : > "{self.stops}/reached"
  while [ ! -e "{self.stops}/go" ]; do sleep 0.01; done ;;
esac
exec {real} "$@"
""")
        shim.chmod(0o755)

    def env(self, shims: bool) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/bin:/bin")
        return {**os.environ, "PATH": f"{self.shims}:{path}" if shims else path}

    def start(self, argv: list[str], shims: bool = True,
              stderr: Path | None = None) -> subprocess.Popen[bytes]:
        if stderr is None:
            return subprocess.Popen(argv, env=self.env(shims), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        with open(stderr, "wb") as err:
            return subprocess.Popen(argv, env=self.env(shims), stdout=subprocess.DEVNULL,
                                    stderr=err)

    def run(self, argv: list[str], shims: bool = False) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(argv, env=self.env(shims), capture_output=True, timeout=60)

    def holder_pid(self) -> int:
        """(The guard writes it just after the command has started: wait for it.)"""
        line = self.state / "commands.pid"
        wait_until(lambda: line.exists() and line.read_text()[:1].isdigit(), "its pid")
        return int(line.read_text().split()[0])

    def kill_command(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill the guarded command's whole process group (its own session), as one kills a
        command that outlived its step; the guard's shell then ends too."""
        os.killpg(self.holder_pid(), signal.SIGKILL)
        proc.wait(timeout=20)
        wait_until(lambda: not self.probe(), "the lock to be free after the kill")

    def probe(self) -> str:
        res = self.run(in_shell(probe_argv(str(self.state)), self.shell))
        assert res.returncode == 0, res.stderr
        return res.stdout.decode().strip()


@pytest.fixture(params=SHELLS)
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    return Host(tmp_path, request.param)


def assert_backup_complete(h: Host) -> None:
    same_tree(h.data, h.bdir / "data")
    assert filecmp.cmp(h.cfg, h.bdir / "etcd.env", shallow=False)
    left = sorted(p.name for p in h.bdir.iterdir())
    assert left == ["B2SUMS", "data", "etcd.env"], left   # nothing partial, nothing nested
    res = subprocess.run(["b2sum", "--quiet", "-c", "B2SUMS"], cwd=h.bdir, capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr
    listed = sorted(line.split(None, 1)[1] for line in
                    (h.bdir / "B2SUMS").read_text().splitlines())
    files = sorted(str(p.relative_to(h.bdir)) for p in (h.bdir / "data").rglob("*")
                   if p.is_file())
    assert listed == sorted([*files, "etcd.env"])


# --------------------------------------------------------------------------- backup

def test_the_plan_runs_this_backup_script_under_the_guard() -> None:
    m = Member(name="etcd-1", ssh=SshTarget(host="h"), peer_url="https://h:2380",
               client_url="https://h:2379", data_dir="/var/lib/etcd",
               env_file="/etc/etcd/etcd.env", unit="etcd.service")
    rt = runtime_for("systemd")
    bdir = f"/var/lib/etcd-recovery/{RUN}/backup"
    inner = backup_argv("/var/lib/etcd", "/etc/etcd/etcd.env", bdir)
    fg, bg = (backup_step(rt, m, RUN, background=b).actions[0] for b in (False, True))
    assert isinstance(fg, Run) and isinstance(bg, Run)
    assert fg.argv == tuple(guarded(RUN, "backup:etcd-1", inner, 1800))
    assert bg.argv == tuple(guarded(RUN, "backup:etcd-1", ["nice", "-n", "10", *inner], 1800))


def test_a_backup_is_the_source_byte_for_byte_and_a_rerun_only_checks_it(host: Host) -> None:
    res = host.run(host.backup_argv())
    assert res.returncode == 0, res.stderr
    assert_backup_complete(host)
    db = host.bdir / "data/member/snap/db"
    inode = db.stat().st_ino
    again = host.run(host.backup_argv())
    assert again.returncode == 0, again.stderr
    assert db.stat().st_ino == inode   # not copied again
    assert_backup_complete(host)
    # The rerun checks the copy against its B2SUMS: a changed byte fails it.
    raw = bytearray(db.read_bytes())
    raw[100] ^= 0xFF
    db.write_bytes(bytes(raw))
    assert host.run(host.backup_argv()).returncode != 0


# (command, what its arguments hold, what it does first) for every point where a backup can
# be cut short, in the order the script reaches them
BACKUP_STOPS = [
    # in the middle of the copy: half of one file written, then killed
    ("cp", "data.partial", 'REAL "$@"; truncate -s 1000 "$3/member/snap/db"'),
    ("mv", "data.partial", ""),           # copy complete, not yet renamed
    ("cp", "etcd.env.partial", ""),       # data renamed, configuration not copied yet
    ("diff", "-rq", ""),                  # data renamed, not yet compared
    ("find", "-print0", ""),              # compared, no B2SUMS yet
    ("sort", "B2SUMS.unsorted", ""),      # sums computed, not sorted
    ("mv", "B2SUMS.partial", ""),         # sorted, not renamed into place
]


@pytest.mark.parametrize(("name", "pattern", "before"), BACKUP_STOPS,
                         ids=[f"{n}-{p}" for n, p, _ in BACKUP_STOPS])
def test_a_backup_killed_at_any_point_converges_when_run_again(
        host: Host, name: str, pattern: str, before: str) -> None:
    host.stop_at(name, pattern, before)
    first = host.start(host.backup_argv())
    wait_until(lambda: (host.stops / "reached").exists(), f"the backup to reach {name}")
    renamed = (host.bdir / "data").is_dir()
    if name == "cp" and pattern == "data.partial":
        # really cut in the middle: the partial copy differs from the source
        part = host.bdir / "data.partial/member/snap/db"
        assert part.stat().st_size == 1000 and not renamed
    inode = (host.bdir / "data/member/snap/db").stat().st_ino if renamed else None
    host.kill_command(first)
    assert not (host.bdir / "B2SUMS").exists()
    res = host.run(host.backup_argv())
    assert res.returncode == 0, res.stderr
    assert_backup_complete(host)
    if inode is not None:  # a complete copy is checked again, not copied again
        assert (host.bdir / "data/member/snap/db").stat().st_ino == inode


def test_the_first_cp_stop_really_copies_then_cuts(tmp_path: Path) -> None:
    """(The shim of the mid-copy case runs the real cp first: its partial copy exists.)"""
    h = Host(tmp_path)
    name, pattern, before = BACKUP_STOPS[0]
    h.stop_at(name, pattern, before)
    proc = h.start(h.backup_argv())
    wait_until(lambda: (h.stops / "reached").exists(), "the copy")
    wal = sorted((h.bdir / "data.partial/member/wal").iterdir())
    assert len(wal) == 3 and all(p.stat().st_size == 512 << 10 for p in wal)
    h.kill_command(proc)


def test_a_rerun_while_the_first_backup_still_runs_waits_for_it(host: Host) -> None:
    host.stop_at("find", "-print0")
    first = host.start(host.backup_argv())
    wait_until(lambda: (host.stops / "reached").exists(), "the first backup to be running")
    first_pid = host.holder_pid()
    assert host.probe() == f"busy {first_pid} {RUN} backup:etcd-1"
    err = host.root / "second.err"
    second = host.start(host.backup_argv(), shims=False, stderr=err)
    wait_until(lambda: b"waiting for an earlier command" in err.read_bytes(),
               "the second run to say it waits")
    assert f"{first_pid} {RUN} backup:etcd-1".encode() in err.read_bytes()
    # It waits on the lock: it has neither removed nor written anything of the first's.
    assert second.poll() is None and first.poll() is None
    assert (host.bdir / "data").is_dir() and not (host.bdir / "B2SUMS").exists()
    (host.stops / "go").touch()
    assert first.wait(timeout=30) == 0
    assert second.wait(timeout=30) == 0
    assert_backup_complete(host)
    assert not host.probe()


# --------------------------------------------------------------------------- the guard

def test_the_guard_runs_the_command_in_its_own_session_and_passes_its_status_on(
        host: Host) -> None:
    out = host.root / "out"
    inner = ["sh", "-c", 'echo "$$ $(cut -d" " -f6 /proc/$$/stat)" > "$1"; exit 7',
             "x", str(out)]
    res = host.run(host.guarded(inner, step="fence:etcd-2"))
    assert res.returncode == 7, res.stderr
    pid, sid = out.read_text().split()
    assert pid == sid   # a session (and process group) of its own: findable, stoppable
    assert (host.state / "commands.pid").read_text() == f"{pid} {RUN} fence:etcd-2\n"
    assert stat.S_IMODE(host.state.stat().st_mode) == 0o700
    assert not host.probe()   # the lock went with the command


def test_the_guard_gives_up_waiting_after_its_time_and_runs_nothing(host: Host) -> None:
    host.state.mkdir()
    (host.state / "commands.pid").write_text(f"999 {RUN} backup:etcd-3\n")
    marker = host.root / "ran"
    with open(host.state / "commands.lock", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert host.probe() == f"busy 999 {RUN} backup:etcd-3"
        t0 = time.monotonic()
        res = host.run(host.guarded(["touch", str(marker)], wait_s=1))
        assert time.monotonic() - t0 >= 1.0
    assert res.returncode == EXIT_STILL_RUNNING
    assert b"still runs after 1 s" in res.stderr
    assert not marker.exists()
    assert not host.probe()


def test_the_probe_leaves_no_file_behind(host: Host) -> None:
    assert host.probe() == ""
    assert not host.state.exists()


# --------------------------------------------------------------------------- move-aside

def move(h: Host, data: Path) -> list[str]:
    moved = h.state / RUN / "member.moved"
    return h.guarded(move_aside_argv(str(data / "member"), str(moved), str(data)),
                     step="move-aside:etcd-3")


def test_move_aside_on_one_file_system_renames_and_a_rerun_changes_nothing(host: Host) -> None:
    original = host.root / "original"
    shutil.copytree(host.data, original, symlinks=True)
    res = host.run(move(host, host.data))
    assert res.returncode == 0, res.stderr
    moved = host.state / RUN / "member.moved"
    same_tree(original / "member", moved)
    assert list(host.data.iterdir()) == [] and stat.S_IMODE(host.data.stat().st_mode) == 0o700
    again = host.run(move(host, host.data))
    assert again.returncode == 0, again.stderr
    same_tree(original / "member", moved)   # not nested, not touched
    # A member dir that came back (a new etcd wrote one) is not moved into the old data.
    (host.data / "member").mkdir()
    (host.data / "member/new").write_text("new")
    assert host.run(move(host, host.data)).returncode != 0
    same_tree(original / "member", moved)
    assert (host.data / "member/new").read_text() == "new"


@pytest.fixture
def other_fs() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


MOVE_STOPS = [
    ("cp", "member.moved.partial", 'REAL "$@"; truncate -s 10 "$3/snap/db"'),
    ("mv", "member.moved.partial", ""),   # copied, not yet renamed
    ("diff", "-rq", ""),                  # renamed, not compared
    ("mv", "member.leaving", ""),         # compared, the source not yet renamed away
    ("rm", "member.leaving", ""),         # the source renamed away, not yet removed
]


@pytest.mark.parametrize(("name", "pattern", "before"), MOVE_STOPS,
                         ids=[f"{n}-{p}" for n, p, _ in MOVE_STOPS])
def test_move_aside_across_file_systems_killed_at_any_point_converges(
        tmp_path: Path, other_fs: Path, name: str, pattern: str, before: str) -> None:
    h = Host(tmp_path)
    data = make_data_dir(other_fs)
    h.state.mkdir()
    assert os.stat(data).st_dev != os.stat(h.state).st_dev   # really two file systems
    original = tmp_path / "original"
    shutil.copytree(data, original, symlinks=True)
    h.stop_at(name, pattern, before)
    proc = h.start(move(h, data))
    wait_until(lambda: (h.stops / "reached").exists(), f"the move to reach {name}")
    h.kill_command(proc)
    # Never lost: the data is whole in one of the two places.
    moved = h.state / RUN / "member.moved"
    if (data / "member").exists() and not moved.exists():
        same_tree(original / "member", data / "member")
    res = h.run(move(h, data))
    assert res.returncode == 0, res.stderr
    same_tree(original / "member", moved)
    assert list(data.iterdir()) == []
    assert sorted(p.name for p in moved.parent.iterdir()) == ["member.moved"]


def test_move_aside_finding_a_complete_copy_on_one_mount_compares_it_and_converges(
        host: Host) -> None:
    """An earlier run copied across mounts (a read-only bind mount over the data dir), then
    could not take the source away; the mount is gone now, so the data dir and the state dir
    are on one mount: the rerun does not rename into the copy (mv: Directory not empty) but
    compares it with the source, which then goes."""
    original = host.root / "original"
    shutil.copytree(host.data, original, symlinks=True)
    moved = host.state / RUN / "member.moved"
    moved.parent.mkdir(parents=True)
    shutil.copytree(host.data / "member", moved, symlinks=True)
    res = host.run(move(host, host.data))
    assert res.returncode == 0, res.stderr
    same_tree(original / "member", moved)
    assert list(host.data.iterdir()) == []
    assert sorted(p.name for p in moved.parent.iterdir()) == ["member.moved"]
    # A copy that differs from the source is not taken for it: nothing is removed.
    shutil.copytree(original / "member", host.data / "member", symlinks=True)
    (host.data / "member" / "extra").write_text("written since")
    assert host.run(move(host, host.data)).returncode != 0
    assert (host.data / "member" / "extra").read_text() == "written since"
    same_tree(original / "member", moved)


# --------------------------------------------------------------------------- lock, unlock

@pytest.mark.parametrize("shell", SHELLS)
def test_lock_unlock_and_take_over(tmp_path: Path, shell: str) -> None:
    path = tmp_path / "state" / "lock"

    def run(argv: list[str]) -> int:
        return subprocess.run(in_shell(argv, shell), capture_output=True).returncode

    assert run(lock_argv("run-a", str(path))) == 0
    assert path.read_text() == "run-a\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Held: a second lock fails, whoever asks, and changes nothing.
    assert run(lock_argv("run-b", str(path))) != 0
    assert run(lock_argv("run-a", str(path))) != 0   # (the executor then reads the holder)
    assert path.read_text() == "run-a\n"
    # Only the holder's unlock releases it; a release rerun is a no-op.
    assert run(unlock_argv("run-b", str(path))) == 0 and path.read_text() == "run-a\n"
    assert run(unlock_argv("run-a", str(path))) == 0 and not path.exists()
    assert run(unlock_argv("run-a", str(path))) == 0 and not path.exists()
    # Taken over: written whoever held it, and then held by the new run.
    assert run(lock_argv("run-a", str(path))) == 0
    assert run(lock_argv("run-c", str(path), take_over=True)) == 0 and path.read_text() == "run-c\n"
    assert run(unlock_argv("run-a", str(path))) == 0 and path.read_text() == "run-c\n"



def test_lock_and_take_over_are_one_script_but_for_noclobber() -> None:
    # The argv every plan written so far holds, byte for byte (plan IDs hash them).
    prefix = ('set -e; umask 077; mkdir -p "$(dirname "$1")"; chmod 0700 "$(dirname "$1")"; ')
    tail = ["etcd-recovery", "/p/lock", "run-a"]
    assert lock_argv("run-a", "/p/lock") == [
        "sh", "-c", prefix + 'set -C; echo "$2" > "$1"', *tail]
    assert lock_argv("run-a", "/p/lock", take_over=True) == [
        "sh", "-c", prefix + 'echo "$2" > "$1"', *tail]

# --------------------------------------------------------------------------- a WAL dir apart

def make_wal_dir(root: Path) -> Path:
    """etcd's --wal-dir on a disk of its own: <disk>/wal, 0700, a few WAL files."""
    rng = random.Random(11)
    w = root / "wal-disk" / "wal"
    w.mkdir(parents=True)
    for i in range(2):
        (w / f"{i:016x}-{i:016x}.wal").write_bytes(rng.randbytes(256 << 10))
    (w / "0.tmp").write_bytes(b"\0" * 4096)
    w.chmod(0o700)
    return w


class WalHost(Host):
    def __init__(self, root: Path, shell: str = "sh") -> None:
        super().__init__(root, shell)
        self.wal = make_wal_dir(root)

    def backup_argv(self, step: str = "backup:etcd-1") -> list[str]:
        inner = backup_argv(str(self.data), str(self.cfg), str(self.bdir), str(self.wal))
        return in_shell(guarded(RUN, step, inner, 60, state_dir=str(self.state)), self.shell)


@pytest.fixture(params=SHELLS)
def wal_host(request: pytest.FixtureRequest, tmp_path: Path) -> WalHost:
    return WalHost(tmp_path, request.param)


def assert_wal_backup_complete(h: WalHost) -> None:
    same_tree(h.data, h.bdir / "data")
    same_tree(h.wal, h.bdir / "wal")
    left = sorted(p.name for p in h.bdir.iterdir())
    assert left == ["B2SUMS", "data", "etcd.env", "wal"], left
    res = subprocess.run(["b2sum", "--quiet", "-c", "B2SUMS"], cwd=h.bdir, capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr
    listed = sorted(line.split(None, 1)[1] for line in
                    (h.bdir / "B2SUMS").read_text().splitlines())
    files = sorted(str(p.relative_to(h.bdir)) for d in ("data", "wal")
                   for p in (h.bdir / d).rglob("*") if p.is_file())
    assert listed == sorted([*files, "etcd.env"]) and any(f.startswith("wal/") for f in files)


def test_a_backup_with_a_wal_dir_covers_it_and_a_rerun_only_checks_it(wal_host: WalHost) -> None:
    res = wal_host.run(wal_host.backup_argv())
    assert res.returncode == 0, res.stderr
    assert_wal_backup_complete(wal_host)
    again = wal_host.run(wal_host.backup_argv())
    assert again.returncode == 0, again.stderr
    # a changed byte of the WAL's copy fails the rerun's check against B2SUMS
    wal = sorted((wal_host.bdir / "wal").glob("*.wal"))[0]
    raw = bytearray(wal.read_bytes())
    raw[7] ^= 0xFF
    wal.write_bytes(bytes(raw))
    assert wal_host.run(wal_host.backup_argv()).returncode != 0


def test_a_backup_whose_wal_dir_is_absent_copies_the_rest(host: Host) -> None:
    inner = backup_argv(str(host.data), str(host.cfg), str(host.bdir),
                         str(host.root / "no-such-wal"))
    res = host.run(in_shell(guarded(RUN, "b", inner, 60, state_dir=str(host.state)),
                            host.shell))
    assert res.returncode == 0, res.stderr
    assert_backup_complete(host)


WAL_BACKUP_STOPS = [
    ("cp", "wal.partial", 'REAL "$@"; truncate -s 100 "$3/0000000000000000-0000000000000000.wal"'),
    ("mv", "wal.partial", ""),            # the WAL copied, not yet renamed
    ("diff", "wal-disk", ""),             # the WAL renamed, not yet compared
    ("find", "-print0", ""),              # compared, no B2SUMS yet
]


@pytest.mark.parametrize(("name", "pattern", "before"), WAL_BACKUP_STOPS,
                         ids=[f"{n}-{p.strip()}" for n, p, _ in WAL_BACKUP_STOPS])
def test_a_backup_with_a_wal_dir_killed_at_any_point_converges(
        wal_host: WalHost, name: str, pattern: str, before: str) -> None:
    wal_host.stop_at(name, pattern, before)
    first = wal_host.start(wal_host.backup_argv())
    wait_until(lambda: (wal_host.stops / "reached").exists(), f"the backup to reach {name}")
    if name == "cp":   # really cut in the middle of the WAL's copy
        part = wal_host.bdir / "wal.partial/0000000000000000-0000000000000000.wal"
        assert part.stat().st_size == 100 and not (wal_host.bdir / "wal").exists()
    wal_host.kill_command(first)
    assert not (wal_host.bdir / "B2SUMS").exists()
    res = wal_host.run(wal_host.backup_argv())
    assert res.returncode == 0, res.stderr
    assert_wal_backup_complete(wal_host)


def test_move_aside_of_a_wal_dir_leaves_it_absent_and_a_rerun_changes_nothing(
        wal_host: WalHost) -> None:
    original = wal_host.root / "original-wal"
    shutil.copytree(wal_host.wal, original, symlinks=True)
    moved = wal_host.state / RUN / "wal.moved"
    argv = wal_host.guarded(move_aside_argv(str(wal_host.wal), str(moved),
                                            str(wal_host.wal.parent)), step="move-aside:etcd-3")
    for _ in range(2):
        res = wal_host.run(argv)
        assert res.returncode == 0, res.stderr
        same_tree(original, moved)
        assert not wal_host.wal.exists() and wal_host.wal.parent.is_dir()
    assert sorted(p.name for p in wal_host.wal.parent.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_wal_files_argv_finds_only_wal_files(tmp_path: Path, shell: str) -> None:
    def has(d: Path) -> int:
        return subprocess.run(in_shell(wal_files_argv(str(d)), shell)).returncode

    d = tmp_path / "wal"
    assert has(d) == 1                      # absent
    d.mkdir()
    assert has(d) == 1                      # empty
    (d / "0.tmp").write_bytes(b"")
    assert has(d) == 1                      # etcd's preallocated file is no WAL
    (d / "0000000000000000-0000000000000000.wal").write_bytes(b"")
    assert has(d) == 0

"""Fixtures for lab tests: real Docker hosts, real sshd, real etcd with TLS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etcd_recovery.lab import builds
from etcd_recovery.lab.lab import Lab
from etcd_recovery.lab.state import LabState

CLI = str(Path(sys.executable).parent / "etcd-recovery")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)


def cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real console script, as a user would."""
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"etcd-recovery {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def ssh(lab_dir: Path, ip: str, command: str, user: str = "root",
        timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Plain OpenSSH with strict host-key checking against the lab's known_hosts."""
    argv = ["ssh", "-i", str(lab_dir / "ssh" / "id_ed25519"),
            "-o", f"UserKnownHostsFile={lab_dir / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=3", "-F", "/dev/null", f"{user}@{ip}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def etcdctl(lab_dir: Path, args: str, endpoint: str | None = None,
            timeout: float = 30, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Plain etcdctl from the machine, configured only by `eval "$(etcd-recovery lab env)"`.

    ``endpoint`` narrows it to one member; ``unset`` drops some of the exported settings
    (etcdctl 3.5 refuses a flag that shadows an ETCDCTL_* variable, so we never mix them).
    """
    drop = [*unset, "ETCDCTL_ENDPOINTS"] if endpoint else list(unset)
    ep = f" --endpoints={endpoint}" if endpoint else ""
    unset_cmd = f"unset {' '.join(drop)}; " if drop else ""
    script = (f'eval "$({CLI} lab env --dir {lab_dir})" && {unset_cmd}'
              f"etcdctl --dial-timeout=2s --command-timeout=3s{ep} {args}")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=timeout)


def etcdctl_txn(lab_dir: Path, puts: list[tuple[str, str]], endpoint: str | None = None,
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """One transaction of puts through plain etcdctl (values must not contain quotes)."""
    ops = "".join(f'put {k} "{v}"\n' for k, v in puts)
    ep = f"ETCDCTL_ENDPOINTS={endpoint} " if endpoint else ""
    script = f'eval "$({CLI} lab env --dir {lab_dir})" && {ep}etcdctl txn'
    return subprocess.run(["bash", "-c", script], input="\n" + ops + "\n\n", text=True,
                          capture_output=True, timeout=timeout)


class LabHandle:
    def __init__(self, lab_dir: Path) -> None:
        self.dir = lab_dir
        self.lab = Lab(lab_dir)

    @property
    def state(self) -> LabState:
        return self.lab.state()

    def ip(self, name: str) -> str:
        return self.state.host(name).mgmt_ip

    def client_url(self, name: str) -> str:
        return self.state.host(name).client_url


def _lab_factory(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Callable[..., LabHandle]]:
    """Bring labs up through the CLI; every lab made here is taken down afterwards."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: run scripts/setup")
    made: list[Path] = []

    def make(members: int = 3, runtime: str = "static-pod", version: str = "3.5-newest",
             keys: int = 1000, auth: bool = False, wal_dir: str = "",
             data_disk: bool = False) -> LabHandle:
        """``version``: a build's role in etcd_recovery/lab/builds.txt ("3.6-newest"), or a
        comma list of roles, one per host; ``wal_dir``: etcd's --wal-dir on every host (its
        own disk: ``lab up --wal-dir``); ``data_disk``: the data dir on a disk of its own."""
        version = ",".join(builds.version_of(r.strip()) for r in version.split(","))
        lab_dir = tmp_path_factory.mktemp(f"lab-{runtime}-{version.replace(',', '_')}-{members}")
        made.append(lab_dir)
        cli("lab", "up", "--dir", str(lab_dir), "--members", str(members), "--runtime",
            runtime, "--etcd-version", version, "--keys", str(keys),
            *(["--auth"] if auth else []), *(["--wal-dir", wal_dir] if wal_dir else []),
            *(["--data-disk"] if data_disk else []))
        return LabHandle(lab_dir)

    yield make
    for lab_dir in made:
        cli("lab", "down", "--dir", str(lab_dir), check=False)


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LabHandle]]:
    """Labs for one test, taken down when it ends. Not kept for the module: a CI run lost
    three labs at once when the labs a module had made were all still up. Each running host's
    systemd holds five or six of root's inotify instances (fs.inotify.max_user_instances, 128
    by default), and a systemd that cannot get one exits at boot (status 255)."""
    yield from _lab_factory(tmp_path_factory)


@pytest.fixture(scope="module")
def make_module_lab(tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Callable[..., LabHandle]]:
    """Labs shared by a module's tests, taken down when the module ends."""
    yield from _lab_factory(tmp_path_factory)

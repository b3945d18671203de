"""Real sshd servers on loopback for the transport tests.

Two servers run for the whole session: ``target`` (the host the tests talk to) and
``jump`` (a ProxyJump host, logging at DEBUG1 so the tests can see what it forwarded).
Both accept one generated ed25519 user key.  HOME points at a fresh directory for every
test, so nothing reads the developer's own ~/.ssh or ssh-agent.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from etcd_recovery.transport.base import HostTarget
from etcd_recovery.transport.ssh import SshTransport

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    return path


def key_fingerprint(pub: Path) -> str:
    """What ``ssh-keygen -lf`` says the SHA256 fingerprint is."""
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[1]


@dataclass
class Sshd:
    name: str
    port: int
    host_key: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def known_hosts_line(self, key_pub: Path | None = None) -> str:
        kind, blob = (key_pub or self.host_key.with_suffix(".pub")).read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def fingerprint(self) -> str:
        return key_fingerprint(self.host_key.with_suffix(".pub"))


@dataclass
class SshEnv:
    root: Path
    user: str
    user_key: Path
    target: Sshd
    jump: Sshd
    rekeying: Sshd  # re-keys after every 64 KiB either way; offers no AES-GCM


def _start_sshd(root: Path, name: str, authorized_keys: Path, log_level: str,
                extra: str = "") -> Sshd:
    host_key = keygen(root / f"{name}_host_ed25519")
    port = free_port()
    config = root / f"{name}_sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        f"PidFile {root / (name + '.pid')}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "AllowTcpForwarding yes\n"
        "MaxSessions 64\n"
        "MaxStartups 64\n"
        "PrintMotd no\n"
        f"LogLevel {log_level}\n"
        "Subsystem sftp internal-sftp\n"
        + extra
    )
    log = root / f"{name}.log"
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log_fh,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd {name} exited {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd {name} did not listen on {port}") from None
            time.sleep(0.05)
    return Sshd(name, port, host_key, log, proc)


def _stop_sshd(server: Sshd) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshEnv]:
    # sshd insists on its privilege-separation directory
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    root = tmp_path_factory.mktemp("sshd")
    user_key = keygen(root / "user_ed25519")
    authorized = root / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    servers: list[Sshd] = []
    try:
        servers.append(_start_sshd(root, "target", authorized, "INFO"))
        servers.append(_start_sshd(root, "jump", authorized, "DEBUG1"))
        servers.append(_start_sshd(root, "rekeying", authorized, "INFO",
                                   "RekeyLimit 64K\nCiphers aes128-ctr,aes256-ctr\n"))
        yield SshEnv(root, getpass.getuser(), user_key, *servers)
    finally:
        for server in servers:
            _stop_sshd(server)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def known_hosts(ssh_env: SshEnv, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(ssh_env.target.known_hosts_line() + ssh_env.jump.known_hosts_line()
                    + ssh_env.rekeying.known_hosts_line())
    return path


@pytest.fixture
def base_target(ssh_env: SshEnv, known_hosts: Path) -> HostTarget:
    return HostTarget(host="127.0.0.1", port=ssh_env.target.port, user=ssh_env.user,
                      identity_file=str(ssh_env.user_key), known_hosts=str(known_hosts),
                      use_agent=False, connect_timeout=3.0)


MakeTransport = Callable[..., SshTransport]


@pytest.fixture
def make_transport(base_target: HostTarget) -> Iterator[MakeTransport]:
    made: list[SshTransport] = []

    def make(label: str = "etcd-1", sudo_command: list[str] | None = None,
             **changes: object) -> SshTransport:
        target = replace(base_target, **changes)  # type: ignore[arg-type]
        if sudo_command is None:
            transport = SshTransport(label, target)
        else:
            transport = SshTransport(label, target, sudo_command=sudo_command)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def transport(make_transport: MakeTransport) -> SshTransport:
    return make_transport()

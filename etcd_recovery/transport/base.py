"""What the rest of the tool needs from a host: run a command, read and write files, tunnel.

Commands are argument lists, never shell strings: each argument is quoted with
:func:`shlex.quote` before it reaches the remote shell, so values from an inventory cannot
inject shell syntax.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from etcd_recovery.formats.source import ByteSource, StreamedSource

DEFAULT_SUDO_COMMAND: tuple[str, ...] = ("sudo", "-n")


@dataclass(frozen=True)
class CommandResult:
    """What a finished remote command left behind."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class FileInfo:
    """One entry of a remote directory. ``mode`` is the full ``st_mode`` (type and bits)."""

    name: str
    size: int
    mode: int
    is_dir: bool


@dataclass(frozen=True)
class HostTarget:
    """How to reach one host over SSH.

    Values given here win over ``~/.ssh/config`` (a port of 22 too); ``port`` and ``user``
    None mean "not set", so the config's ``Port`` and ``User`` apply (else 22 and the local
    user).  ``sudo`` says that privileged
    operations on this host go through ``sudo -n`` (a non-root SSH user); with ``sudo``
    False, calls that ask for privileges run as the SSH user as is (e.g. root).
    ``ssh_config`` None means ``~/.ssh/config``; ``known_hosts`` None means the config's
    ``UserKnownHostsFile``, else ``~/.ssh/known_hosts`` (plus ``/etc/ssh/ssh_known_hosts``).
    ``proxy_jump`` (``[user@]host[:port]``, one hop) wins over the config's ``ProxyJump``;
    the jump host is looked up in the config too, is checked against the same known_hosts,
    and uses the target's identity file when the config names none for it.
    """

    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None
    sudo: bool = False
    connect_timeout: float = 5.0   # SSH handshake, authentication, channels
    probe_timeout: float = 1.0     # the first TCP connect: how long a dead host costs
    use_agent: bool = True
    ssh_config: str | None = None


def shell_command(argv: Sequence[str], prefix: Sequence[str] = ()) -> str:
    """Join ``prefix + argv`` into one POSIX shell command line, every word quoted."""
    if isinstance(argv, str):
        raise TypeError("argv must be a sequence of arguments, not a string")
    words = [*prefix, *argv]
    if not words:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(word)) for word in words)


class Transport(Protocol):
    """A connection to one host.

    Every method raises only :class:`~etcd_recovery.errors.TransportError` and its
    subclasses: ``HostUnreachable`` (cannot connect or authenticate), ``HostKeyError``
    (unknown or changed host key), ``RemoteCommandError`` (non-zero exit with ``check``).
    """

    @property
    def host(self) -> str:
        """The member or host label used in messages."""
        ...

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float = 30.0,
            stdin: bytes | Iterable[bytes] | None = None,
            check: bool = True) -> CommandResult:
        """Run ``argv`` on the host; with ``check``, a non-zero exit raises."""
        ...

    def open_file(self, path: str, *, sudo: bool = False) -> ByteSource:
        """A random-access reader over a remote file (it counts ``bytes_read``)."""
        ...

    def stream(self, argv: Sequence[str], *, sudo: bool = False,
               timeout: float = 30.0) -> Iterator[bytes]:
        """``argv``'s standard output as it comes (held to SSH's flow-control window, never
        all in memory); after the last block, a non-zero exit raises."""
        ...

    def list_dir(self, path: str, *, sudo: bool = False) -> list[FileInfo]:
        """The entries of a remote directory, sorted by name, without ``.`` and ``..``."""
        ...

    def write_file(self, path: str, data: bytes, *, mode: int = 0o600,
                   sudo: bool = False) -> None:
        """Replace ``path`` atomically (temporary file in the same directory, then rename)."""
        ...

    def tunnel(self, remote_host: str,
               remote_port: int) -> AbstractContextManager[tuple[str, int]]:
        """Forward a local loopback port to ``remote_host:remote_port`` as seen by the host."""
        ...

    def close(self) -> None:
        """Close the connection; later calls may reconnect."""
        ...


READ_THROUGH_S = 120.0   # a file streamed by read_through, at most (a 64 MiB WAL file: 0.1 s)


def read_through(t: Transport, path: str, *, sudo: bool = False) -> StreamedSource:
    """``path`` on ``t``'s host, for a reader that goes from its start to its end (a WAL
    file): its forward reads come from one ``cat`` of it, the others from ``open_file``'s
    reader, which is opened now (so a missing file fails here, as ``open_file`` does).
    The caller closes it."""
    return StreamedSource(t.open_file(path, sudo=sudo),
                          lambda: t.stream(["cat", "--", path], sudo=sudo,
                                           timeout=READ_THROUGH_S))


@contextmanager
def read_through_all(t: Transport, paths: Sequence[str], *,
                     sudo: bool = False) -> Iterator[list[StreamedSource]]:
    """``read_through`` of each path (a member's last WAL files, in order), all closed when
    the block ends, however it ends."""
    sources = [read_through(t, p, sudo=sudo) for p in paths]
    try:
        yield sources
    finally:
        for s in sources:
            s.close()

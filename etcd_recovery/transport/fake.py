"""An in-memory Transport for unit tests of the logic that sits on top of transports.

Commands are scripted: ``expect(argv, ...)`` queues results for that exact argv; they are
handed out in order and the last one repeats.  Files live in ``files`` (path -> bytes);
directories are implied by file paths, or listed in ``dirs`` when empty.
Every call is recorded in ``calls``.  An unscripted command fails the test loudly
(AssertionError), so a code path cannot silently run something nobody expected.
"""

from __future__ import annotations

import base64
import posixpath
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from etcd_recovery.errors import HostUnreachable, RemoteCommandError, TransportError
from etcd_recovery.formats.source import BytesSource
from etcd_recovery.transport.base import CommandResult, FileInfo


@dataclass(frozen=True)
class FakeCall:
    """One recorded call: ``op`` is run/open_file/list_dir/write_file/tunnel."""

    op: str
    args: tuple[str, ...]
    sudo: bool = False
    stdin: bytes | None = None


class FakeTransport:
    """Scripted commands and an in-memory file system; see the module docstring."""

    def __init__(self, host: str = "fake", files: dict[str, bytes] | None = None,
                 tunnels: dict[tuple[str, int], tuple[str, int]] | None = None) -> None:
        self.host = host
        self.files: dict[str, bytes] = dict(files or {})
        self.modes: dict[str, int] = {}
        self.dirs: set[str] = set()  # directories that exist even when empty
        self.tunnels: dict[tuple[str, int], tuple[str, int]] = dict(tunnels or {})
        self.calls: list[FakeCall] = []
        self.unreachable: str | None = None
        self.closed = False
        self._script: dict[tuple[str, ...], list[CommandResult | Exception]] = {}

    def __repr__(self) -> str:
        return f"FakeTransport({self.host!r})"

    # ---------------------------------------------------------------- scripting

    def expect(self, argv: Sequence[str], stdout: bytes | str = b"", *, exit_status: int = 0,
               stderr: bytes | str = b"", error: Exception | None = None) -> None:
        """Queue the outcome of the next ``run(argv)``; the last queued outcome repeats."""
        key = tuple(argv)
        outcome: CommandResult | Exception
        if error is not None:
            outcome = error
        else:
            outcome = CommandResult(key, exit_status, _b(stdout), _b(stderr), 0.0)
        self._script.setdefault(key, []).append(outcome)

    def expect_etcd(self, *processes: tuple[int, Sequence[str], Mapping[str, str]]) -> None:
        """Queue one look at the host's etcd processes (processes.etcd_processes): ``pgrep -x
        etcd`` and, when some run, the read of their argv and environment."""
        from ..processes import DUMP

        if not processes:
            self.expect(["pgrep", "-x", "etcd"], exit_status=1)
            return
        pids = [str(pid) for pid, _, _ in processes]
        self.expect(["pgrep", "-x", "etcd"], "".join(f"{p}\n" for p in pids))
        lines = []
        for pid, argv, env in processes:
            cmd = b"".join(a.encode() + b"\0" for a in argv)
            envb = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
            lines += [str(pid), base64.b64encode(cmd).decode(), base64.b64encode(envb).decode()]
        self.expect(["sh", "-c", DUMP, "etcd-recovery", *pids], "\n".join(lines) + "\n")

    def go_down(self, cause: str = "connection refused") -> None:
        """Make every later call raise HostUnreachable."""
        self.unreachable = cause

    @property
    def commands(self) -> list[tuple[str, ...]]:
        """The argv of every ``run`` so far, in order."""
        return [c.args for c in self.calls if c.op == "run"]

    def _record(self, call: FakeCall) -> None:
        self.calls.append(call)
        if self.unreachable is not None:
            raise HostUnreachable(self.host, self.unreachable)

    # ---------------------------------------------------------------- transport

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float = 30.0,
            stdin: bytes | Iterable[bytes] | None = None,
            check: bool = True) -> CommandResult:
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not a string")
        key = tuple(argv)
        if stdin is not None and not isinstance(stdin, bytes):
            stdin = b"".join(stdin)
        self._record(FakeCall("run", key, sudo, stdin))
        queue = self._script.get(key)
        if not queue:
            raise AssertionError(f"{self.host}: unexpected command {list(key)!r}")
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(outcome, Exception):
            raise outcome
        if check and outcome.exit_status != 0:
            raise RemoteCommandError(self.host, " ".join(key), outcome.exit_status,
                                     outcome.stderr_text())
        return outcome

    def stream(self, argv: Sequence[str], *, sudo: bool = False,
               timeout: float = 30.0) -> Iterator[bytes]:
        """``run``'s scripted outcome, its stdout in blocks of 1 MiB; ``cat PATH`` (with or
        without ``--``) of a file in ``files`` streams that file."""
        key = tuple(argv)
        path = key[-1]
        if key[:1] == ("cat",) and path in self.files and key not in self._script:
            self._record(FakeCall("stream", key, sudo))
            data = self.files[path]
        else:
            data = self.run(argv, sudo=sudo, timeout=timeout).stdout
        for at in range(0, len(data), 1 << 20):
            yield data[at:at + (1 << 20)]

    def open_file(self, path: str, *, sudo: bool = False) -> BytesSource:
        self._record(FakeCall("open_file", (path,), sudo))
        if path not in self.files:
            raise TransportError(self.host, f"stat {path}: no such file")
        return BytesSource(self.files[path], name=f"{self.host}:{path}")

    def list_dir(self, path: str, *, sudo: bool = False) -> list[FileInfo]:
        self._record(FakeCall("list_dir", (path,), sudo))
        prefix = path.rstrip("/") + "/"
        entries: dict[str, FileInfo] = {}
        for name, data in self.files.items():
            if not name.startswith(prefix):
                continue
            first, _, rest = name[len(prefix):].partition("/")
            if rest:
                entries[first] = FileInfo(first, 4096, stat.S_IFDIR | 0o700, True)
            elif first not in entries:
                mode = stat.S_IFREG | self.modes.get(name, 0o600)
                entries[first] = FileInfo(first, len(data), mode, False)
        if not entries and path.rstrip("/") not in self.dirs and path not in ("/", ""):
            raise TransportError(self.host, f"list {path}: no such file")
        return sorted(entries.values(), key=lambda e: e.name)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o600,
                   sudo: bool = False) -> None:
        self._record(FakeCall("write_file", (path,), sudo, data))
        if not posixpath.basename(path):
            raise TransportError(self.host, f"write {path}: not a file name")
        self.files[path] = bytes(data)
        self.modes[path] = mode

    @contextmanager
    def tunnel(self, remote_host: str, remote_port: int) -> Iterator[tuple[str, int]]:
        """Yields ``tunnels[(host, port)]`` when set (e.g. a local etcd), else the target."""
        self._record(FakeCall("tunnel", (remote_host, str(remote_port))))
        yield self.tunnels.get((remote_host, remote_port), (remote_host, remote_port))

    def close(self) -> None:
        self.closed = True


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value

"""The SSH transport, on paramiko: :class:`SshTransport` composes the pieces.

Host keys are always checked: an unknown host is refused with its fingerprint and the
command that would add it, a changed key is refused with both fingerprints.  Every
paramiko and socket exception is translated into the tool's TransportError tree, here and
in the modules below.

- :mod:`.ssh_config`: ~/.ssh/config, HostName/User/Port/IdentityFile/ProxyJump
- :mod:`.hostkeys`: the strict known_hosts policy and its refusal messages
- :mod:`.commands`: one command on a session channel (stdin, output, timeout, kill)
- :mod:`.files`: SFTP and ``sudo`` readers, directory listings, atomic writes
- :mod:`.forward`: the loopback tunnel over direct-tcpip channels
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import paramiko

from etcd_recovery.errors import (
    AccessDenied,
    HostUnreachable,
    JumpHostError,
    RemoteCommandError,
    TransportError,
)
from etcd_recovery.formats.source import ByteSource
from etcd_recovery.retry import Backoff, retry
from etcd_recovery.transport import early, files, forward
from etcd_recovery.transport.base import (
    DEFAULT_SUDO_COMMAND,
    CommandResult,
    FileInfo,
    HostTarget,
    shell_command,
)
from etcd_recovery.transport.commands import CommandTimeout, collect, kill, start_stdin_feeder
from etcd_recovery.transport.files import SftpSource, SudoSource
from etcd_recovery.transport.hostkeys import enforce_known_hosts, fingerprint, host_key_changed
from etcd_recovery.transport.ssh_common import READ_CHUNK, describe
from etcd_recovery.transport.ssh_config import Endpoint, parse_jump, resolve
from etcd_recovery.transport.tuning import tuned_transport

__all__ = ["KEEPALIVE_S", "SshTransport", "fingerprint", "parse_jump"]

_log = logging.getLogger(__name__)

KEEPALIVE_S = 5
# commands at once on one connection: under sshd's default MaxSessions (10), with room for
# the shared SFTP session
SESSION_SLOTS = 8
OPEN_BACKOFF = Backoff(0.05, 2.0, 0.4)


class _Refused(Exception):
    """The server refused a channel open at once (sshd's MaxSessions, for one)."""

    def __init__(self, cause: paramiko.SSHException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SshTransport:
    """A :class:`~etcd_recovery.transport.base.Transport` over SSH.

    Connects on first use; several threads may share one instance.  ``sudo_command`` is
    what privileged calls are prefixed with when ``target.sudo`` is set.
    """

    def __init__(self, label: str, target: HostTarget, *,
                 sudo_command: Sequence[str] = DEFAULT_SUDO_COMMAND,
                 io_timeout: float = 60.0) -> None:
        self._label = label
        self.target = target
        self.sudo_command: tuple[str, ...] = tuple(sudo_command)
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(SESSION_SLOTS)
        self._client: paramiko.SSHClient | None = None
        self._jump_client: paramiko.SSHClient | None = None
        self._sftp_client: paramiko.SFTPClient | None = None
        self._generation = 0
        # open SFTP handles, closed with the transport (or by paramiko when collected)
        self._sources: weakref.WeakSet[SftpSource] = weakref.WeakSet()

    @property
    def host(self) -> str:
        return self._label

    def __repr__(self) -> str:
        t = self.target
        jump = f" via {t.proxy_jump}" if t.proxy_jump else ""
        return f"SshTransport({self._label!r}, {t.user or ''}@{t.host}:{t.port or 22}{jump})"

    # ----------------------------------------------------------------- connecting

    def _connect_one(self, ep: Endpoint, known_hosts: str, extra_known: list[str],
                     sock: paramiko.Channel | None) -> paramiko.SSHClient:
        t = self.target
        for identity in ep.identity_files:
            if not os.access(identity, os.R_OK):
                raise AccessDenied(self._label, f"{ep.role} {ep.where}: identity file "
                                      f"{identity} is missing or unreadable")
        client = paramiko.SSHClient()
        enforce_known_hosts(client, self._label, ep, known_hosts, extra_known,
                            jumped=sock is not None)
        timeout = t.connect_timeout
        where = f"{ep.role} {ep.where}"
        conn: paramiko.Channel | socket.socket | None = sock
        if conn is None:
            # A fast TCP connect first: a host that is gone costs the probe timeout (1 s by
            # default), not the SSH handshake's; the connected socket is then handed over.
            # The command may have started that connect already (transport.early).
            early_conn = early.take(ep.hostname, ep.port)
            try:
                conn = (early_conn.result() if early_conn is not None else
                        socket.create_connection((ep.hostname, ep.port),
                                                 timeout=t.probe_timeout))
            except OSError as exc:
                err = (JumpHostError if ep.role == "jump host" else HostUnreachable)
                raise err(self._label, f"{where}: {describe(exc, t.probe_timeout)}") from exc
            # Small SSH packets (a channel open, a command, its exit status) otherwise wait on
            # Nagle's algorithm against the peer's delayed ACK: about 40 ms per command.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(
                ep.hostname, ep.port, username=ep.user,
                # paramiko takes a list of key files; its stubs only say str
                key_filename=list(ep.identity_files) or None,  # type: ignore[arg-type]
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                channel_timeout=timeout, allow_agent=t.use_agent,
                look_for_keys=not ep.identity_files, sock=conn,
                # AES-GCM first, OpenSSH's re-key limits (transport.tuning)
                transport_factory=tuned_transport,
            )
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C and exits pass through
                raise
            client.close()
            if isinstance(exc, TransportError):
                raise
            if isinstance(exc, paramiko.BadHostKeyException):
                raise host_key_changed(self._label, ep, known_hosts, exc) from exc
            if isinstance(exc, paramiko.PasswordRequiredException):
                raise AccessDenied(
                    self._label, f"{where}: authentication failed for user {ep.user}: the "
                    "private key is passphrase-protected; load it into ssh-agent") from exc
            if isinstance(exc, paramiko.AuthenticationException):
                raise AccessDenied(
                    self._label, f"{where}: authentication failed for user {ep.user}"
                ) from exc
            if ep.role == "jump host":  # nothing learned about the member behind it
                raise JumpHostError(self._label, f"{where}: {describe(exc, timeout)}") from exc
            raise HostUnreachable(self._label, f"{where}: {describe(exc, timeout)}") from exc
        transport = client.get_transport()
        if transport is None:  # pragma: no cover - connect() always sets it
            client.close()
            raise HostUnreachable(self._label, f"{where}: no SSH session")
        transport.set_keepalive(KEEPALIVE_S)
        return client

    def _transport(self) -> paramiko.Transport:
        """The live paramiko transport, connecting (again) if needed."""
        with self._lock:
            client = self._client
            if client is not None:
                live = client.get_transport()
                if live is not None and live.is_active():
                    return live
                self._teardown()
            final, jump, known_hosts, extra = resolve(self._label, self.target)
            sock: paramiko.Channel | None = None
            if jump is not None:
                _log.debug("%s: connecting to %s@%s through %s@%s", self._label, final.user,
                           final.where, jump.user, jump.where)
                self._jump_client = self._connect_one(jump, known_hosts, extra, None)
                jump_transport = self._jump_client.get_transport()
                assert jump_transport is not None
                try:
                    sock = jump_transport.open_channel(
                        "direct-tcpip", (final.hostname, final.port), ("127.0.0.1", 0),
                        timeout=self.target.connect_timeout)
                except BaseException as exc:
                    if not isinstance(exc, Exception):  # Ctrl-C and exits pass through
                        raise
                    self._teardown()
                    raise HostUnreachable(
                        self._label, f"{final.where} through jump host {jump.where}: "
                        f"{describe(exc, self.target.connect_timeout)}") from exc
            else:
                _log.debug("%s: connecting to %s@%s", self._label, final.user, final.where)
            try:
                self._client = self._connect_one(final, known_hosts, extra, sock)
            except BaseException:
                self._teardown()
                raise
            self._generation += 1
            live = self._client.get_transport()
            assert live is not None
            return live

    def _teardown(self) -> None:
        """Drop the connection (caller holds ``_lock``)."""
        sftp, self._sftp_client = self._sftp_client, None
        client, self._client = self._client, None
        jump, self._jump_client = self._jump_client, None
        for closeable in (sftp, client, jump):
            if closeable is not None:
                try:
                    closeable.close()
                except (OSError, EOFError, paramiko.SSHException):
                    pass

    def connect(self) -> None:
        """Connect now rather than on first use (raises what first use would)."""
        self._transport()

    def close(self) -> None:
        with self._sftp_lock:
            for source in list(self._sources):
                source.close()
            self._sources.clear()
        with self._lock:
            self._teardown()

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands

    def _sudo_prefix(self, sudo: bool) -> tuple[str, ...]:
        return self.sudo_command if sudo and self.target.sudo else ()

    @contextmanager
    def _session(self, transport: paramiko.Transport, shown: str,
                 timeout: float) -> Iterator[paramiko.Channel]:
        """A session channel for one command, its errors translated, closed afterwards.

        sshd allows MaxSessions (10 by default) sessions per connection and refuses the next
        channel open; paramiko then raises a bare "Unable to open channel." when another
        thread's open took the saved reason.  So at most SESSION_SLOTS commands run at once
        on one connection (the shared SFTP session takes one more), and an open the server
        refused at once is tried again with a short backoff: nothing has run yet.  A slot
        not free within the connect timeout is not waited for any longer (a caller that
        nests streams must not deadlock), the retry covers that case."""
        held = self._slots.acquire(timeout=self.target.connect_timeout)
        try:
            chan = self._open_session(transport, shown, timeout)
            with self._command_errors(chan, shown, timeout):
                yield chan
        finally:
            if held:
                self._slots.release()

    def _open_session(self, transport: paramiko.Transport, shown: str,
                      timeout: float) -> paramiko.Channel:
        open_timeout = self.target.connect_timeout

        def attempt() -> paramiko.Channel:
            started = time.monotonic()
            try:
                return transport.open_session(timeout=open_timeout)
            except paramiko.SSHException as exc:
                if transport.is_active() and time.monotonic() - started < open_timeout:
                    raise _Refused(exc) from exc  # refused, not timed out: try again
                raise

        try:
            return retry(attempt, open_timeout, OPEN_BACKOFF, retry_on=(_Refused,))
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C and exits pass through
                raise
            cause = exc.cause if isinstance(exc, _Refused) else exc
            raise TransportError(self._label, f"cannot open a session for {shown!r}: "
                                 f"{describe(cause, timeout)}") from cause

    @contextmanager
    def _command_errors(self, chan: paramiko.Channel, shown: str,
                        timeout: float) -> Iterator[None]:
        """A command's channel: its errors as TransportError (a deadline passed: the
        command killed), and closed afterwards."""
        try:
            try:
                yield
            except (TimeoutError, CommandTimeout):
                kill(chan)
                raise TransportError(
                    self._label, f"command {shown!r} timed out after {timeout:g} s") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise TransportError(self._label, f"command {shown!r}: "
                                     f"{describe(exc, timeout)}") from exc
        finally:
            chan.close()

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float = 30.0,
            stdin: bytes | Iterable[bytes] | None = None,
            check: bool = True) -> CommandResult:
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not a string")
        args = tuple(str(a) for a in argv)
        command = shell_command(args, self._sudo_prefix(sudo))
        shown = shlex.join(args)
        started = time.monotonic()
        deadline = started + timeout
        transport = self._transport()
        with self._session(transport, shown, timeout) as chan:
            chan.exec_command(command)
            feeder = start_stdin_feeder(chan, stdin)
            stdout, stderr = collect(chan, deadline)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise CommandTimeout()
            status = chan.recv_exit_status()
            if feeder is not None:
                feeder.join(max(0.0, deadline - time.monotonic()))
        if status == -1:
            # the channel closed with no exit-status: the SSH connection went away, or sshd
            # sent exit-signal instead (the command was killed by a signal on the host), a
            # request paramiko does not record
            if not transport.is_active():
                raise TransportError(
                    self._label, f"the SSH connection dropped while {shown!r} ran (the command "
                    "may still be running on the host)")
            if check:
                raise RemoteCommandError(self._label, shown, status, stderr.decode(
                    errors="replace") or "it ended with no exit status: killed by a signal on "
                    "the host (sshd reports that as exit-signal)")
        result = CommandResult(args, status, stdout, stderr, time.monotonic() - started)
        if check and status != 0:
            raise RemoteCommandError(self._label, shown, status, result.stderr_text())
        return result

    def stream(self, argv: Sequence[str], *, sudo: bool = False,
               timeout: float = 30.0) -> Iterator[bytes]:
        # A file streamed off a host with `cat` (the snapshot's sends): paramiko's SFTP readv
        # keeps a slice of every prefetched block it has read from until the file is closed
        # (sftp_file.py _read_prefetch), so 1 GB read that way held about 190 MiB.
        args = tuple(str(a) for a in argv)
        shown = shlex.join(args)
        deadline = time.monotonic() + timeout
        err: list[bytes] = []
        with self._session(self._transport(), shown, timeout) as chan:
            chan.exec_command(shell_command(args, self._sudo_prefix(sudo)))
            chan.shutdown_write()
            chan.settimeout(max(0.1, deadline - time.monotonic()))
            while block := chan.recv(READ_CHUNK * 16):
                yield block
                chan.settimeout(max(0.1, deadline - time.monotonic()))
            while part := chan.recv_stderr(READ_CHUNK):
                err.append(part)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise CommandTimeout()
            status = chan.recv_exit_status()
        if status != 0:
            raise RemoteCommandError(self._label, shown, status,
                                     b"".join(err).decode(errors="replace").strip()
                                     or "it ended with no exit status")

    # --------------------------------------------------------------------- files

    @contextmanager
    def _sftp(self, what: str) -> Iterator[tuple[paramiko.SFTPClient, int]]:
        """The shared SFTP session, held under a lock; translates errors for ``what``."""
        with self._sftp_lock:
            try:
                transport = self._transport()
                if self._sftp_client is None or self._sftp_client.sock.closed:
                    client = paramiko.SFTPClient.from_transport(transport)
                    if client is None:
                        raise paramiko.SSHException("the server refused the SFTP subsystem")
                    channel = client.get_channel()
                    if channel is not None:
                        channel.settimeout(self.io_timeout)
                    self._sftp_client = client
                yield self._sftp_client, self._generation
            except TransportError:
                raise
            except FileNotFoundError as exc:
                raise TransportError(self._label, f"{what}: no such file") from exc
            except PermissionError as exc:
                raise TransportError(self._label, f"{what}: permission denied (use sudo)") \
                    from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._drop_sftp()
                raise TransportError(self._label,
                                     f"{what}: {describe(exc, self.io_timeout)}") from exc

    def _drop_sftp(self) -> None:
        client, self._sftp_client = self._sftp_client, None
        if client is not None:
            try:
                client.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass

    def open_file(self, path: str, *, sudo: bool = False) -> ByteSource:
        if sudo and self.target.sudo:
            sudo_source = SudoSource(self, path)
            sudo_source.size()  # fail now if it is missing
            return sudo_source
        source = SftpSource(self, path)
        source.size()
        with self._sftp_lock:
            self._sources.add(source)
        return source

    def list_dir(self, path: str, *, sudo: bool = False) -> list[FileInfo]:
        return files.list_dir(self, path, sudo=sudo and self.target.sudo)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o600,
                   sudo: bool = False) -> None:
        files.write_file(self, path, data, mode=mode, sudo=sudo and self.target.sudo)

    # -------------------------------------------------------------------- tunnel

    def tunnel(self, remote_host: str,
               remote_port: int) -> AbstractContextManager[tuple[str, int]]:
        """Forward a loopback port to ``remote_host:remote_port`` as the host sees it.

        Every local connection gets its own direct-tcpip channel; the forwarder stops and
        closes all of them when the block ends.
        """
        return forward.tunnel(self, remote_host, remote_port)

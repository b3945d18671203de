"""The SSH transport, on paramiko.

Host keys are always checked: an unknown host is refused with its fingerprint and the
command that would add it, a changed key is refused with both fingerprints.  Every
paramiko and socket exception is translated into the tool's TransportError tree here.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
import os
import posixpath
import secrets
import select
import shlex
import socket
import stat
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from etcd_recovery.errors import (
    HostKeyError,
    HostUnreachable,
    RemoteCommandError,
    TransportError,
)
from etcd_recovery.formats.source import ByteSource
from etcd_recovery.transport.base import (
    DEFAULT_SUDO_COMMAND,
    CommandResult,
    FileInfo,
    HostTarget,
    shell_command,
)

_log = logging.getLogger(__name__)

KEEPALIVE_S = 5
_READ_CHUNK = 65536
_PIPELINE_THRESHOLD = 65536
_SUDO_READ_TIMEOUT_S = 120.0

_FIND_TYPES = {
    "d": stat.S_IFDIR,
    "f": stat.S_IFREG,
    "l": stat.S_IFLNK,
    "p": stat.S_IFIFO,
    "s": stat.S_IFSOCK,
    "c": stat.S_IFCHR,
    "b": stat.S_IFBLK,
}

# Atomically replace $2 with stdin: a private temporary file $1 in the same directory,
# chmod $3, rename.  The script is constant; paths only ever arrive as arguments.
_SUDO_WRITE_SCRIPT = (
    'umask 077 && tee -- "$1" >/dev/null && chmod -- "$3" "$1" && mv -f -- "$1" "$2"'
    ' || { rm -f -- "$1"; exit 1; }'
)


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _key_kind(key: paramiko.PKey) -> str:
    """``ed25519``, ``rsa``, ``ecdsa``: the word OpenSSH uses in host key file names."""
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    if "rsa" in name:
        return "rsa"
    return name


@dataclass(frozen=True)
class _Endpoint:
    """One SSH server after ~/.ssh/config has been applied."""

    role: str  # "host" or "jump host"
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """Split a ProxyJump value ``[user@]host[:port]`` (``[v6addr]:port`` allowed)."""
    spec = spec.strip()
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://"):]
    if not spec or "," in spec:
        raise ValueError(f"ProxyJump {spec!r}: exactly one jump host is supported")
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
        user = user or None
    port: int | None = None
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep:
            raise ValueError(f"ProxyJump {spec!r}: unclosed '['")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"ProxyJump {spec!r}: junk after ']'")
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = int(port_text)
    else:
        host = spec
    if not host:
        raise ValueError(f"ProxyJump {spec!r}: no host")
    return user, host, port


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """Refuses every host that is not in known_hosts, saying how to add it."""

    def __init__(self, label: str, endpoint: _Endpoint, known_hosts: str, jumped: bool) -> None:
        self._label = label
        self._endpoint = endpoint
        self._known_hosts = known_hosts
        self._jumped = jumped

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        ep = self._endpoint
        scan_from = " (run it where that address is reachable, e.g. on the jump host)" \
            if self._jumped else ""
        raise HostKeyError(
            self._label,
            f"{ep.role} {ep.where} is not in {self._known_hosts}: it offered a "
            f"{key.get_name()} key with fingerprint {fingerprint(key)}. Refusing to trust "
            f"it unseen. To add it: ssh-keyscan -p {ep.port} {ep.hostname} >> "
            f"{self._known_hosts}{scan_from}, then check the fingerprint out of band "
            f"(on the host: ssh-keygen -lf /etc/ssh/ssh_host_{_key_kind(key)}_key.pub).",
        )


class _SftpSource:
    """ByteSource over SFTP; keeps one handle open, reopened after a reconnect."""

    def __init__(self, owner: SshTransport, path: str) -> None:
        self._owner = owner
        self._path = path
        self._handle: paramiko.SFTPFile | None = None
        self._generation = -1
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return f"{self._owner.host}:{self._path}"

    def _file(self, sftp: paramiko.SFTPClient, generation: int) -> paramiko.SFTPFile:
        if self._handle is None or self._generation != generation:
            self._handle = sftp.open(self._path, "rb")
            self._generation = generation
        return self._handle

    def _drop(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass

    def size(self) -> int:
        with self._owner._sftp(f"stat {self._path}") as (sftp, generation):
            try:
                return int(self._file(sftp, generation).stat().st_size or 0)
            except BaseException:
                self._drop()
                raise

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        if length == 0:
            return b""
        with self._owner._sftp(f"read {self._path}") as (sftp, generation):
            try:
                handle = self._file(sftp, generation)
                if length > _PIPELINE_THRESHOLD:
                    size = int(handle.stat().st_size or 0)
                    length = max(0, min(length, size - offset))
                    data = b"".join(handle.readv([(offset, length)])) if length else b""
                else:
                    handle.seek(offset)
                    data = handle.read(length)
            except BaseException:
                self._drop()
                raise
            self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._drop()


class _SudoSource:
    """ByteSource over ``sudo dd`` and ``sudo stat`` for files the SSH user cannot read."""

    def __init__(self, owner: SshTransport, path: str) -> None:
        self._owner = owner
        self._path = path
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return f"{self._owner.host}:{self._path}"

    def size(self) -> int:
        result = self._owner.run(["stat", "-L", "-c", "%s", "--", self._path], sudo=True)
        text = result.stdout_text().strip()
        if not text.isdigit():
            raise TransportError(self._owner.host, f"stat {self._path}: unexpected output "
                                 f"{text[:80]!r}")
        return int(text)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        if length == 0:
            return b""
        argv = ["dd", f"if={self._path}", f"bs={min(length, 1 << 20)}",
                "iflag=skip_bytes,count_bytes", f"skip={offset}", f"count={length}",
                "status=none"]
        data = self._owner.run(argv, sudo=True, timeout=_SUDO_READ_TIMEOUT_S).stdout
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        return None


class _CommandTimeout(Exception):
    pass


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
        self._client: paramiko.SSHClient | None = None
        self._jump_client: paramiko.SSHClient | None = None
        self._sftp_client: paramiko.SFTPClient | None = None
        self._generation = 0
        # open SFTP handles, closed with the transport (or by paramiko when collected)
        self._sources: weakref.WeakSet[_SftpSource] = weakref.WeakSet()

    @property
    def host(self) -> str:
        return self._label

    def __repr__(self) -> str:
        t = self.target
        jump = f" via {t.proxy_jump}" if t.proxy_jump else ""
        return f"SshTransport({self._label!r}, {t.user or ''}@{t.host}:{t.port}{jump})"

    # ----------------------------------------------------------------- connecting

    def _config(self) -> paramiko.SSHConfig:
        path = os.path.expanduser(self.target.ssh_config or "~/.ssh/config")
        if not os.path.exists(path):
            return paramiko.SSHConfig()
        try:
            return paramiko.SSHConfig.from_path(path)
        except (OSError, UnicodeDecodeError, ValueError, paramiko.SSHException) as exc:
            raise TransportError(self._label, f"cannot read ssh config {path}: {exc}") from exc

    def _lookup(self, config: paramiko.SSHConfig, alias: str) -> dict[str, object]:
        try:
            return dict(config.lookup(alias))
        except (OSError, ValueError, ImportError, paramiko.SSHException) as exc:
            raise TransportError(self._label, f"ssh config for {alias}: {exc}") from exc

    def _endpoint(self, role: str, opts: dict[str, object], alias: str, port: int | None,
                  user: str | None, identity: str | None) -> _Endpoint:
        hostname = str(opts.get("hostname") or alias)
        if port is None:
            try:
                port = int(str(opts.get("port", 22)))
            except ValueError as exc:
                raise TransportError(self._label, f"ssh config for {alias}: bad Port "
                                     f"{opts.get('port')!r}") from exc
        if user is None:
            configured = opts.get("user")
            user = str(configured) if configured else getpass.getuser()
        if identity is not None:
            identities: tuple[str, ...] = (identity,)
        else:
            configured_ids = opts.get("identityfile")
            if isinstance(configured_ids, str):
                identities = (configured_ids,)
            elif isinstance(configured_ids, list | tuple):
                identities = tuple(str(i) for i in configured_ids)
            else:
                identities = ()
        identities = tuple(os.path.expanduser(i) for i in identities)
        return _Endpoint(role, hostname, port, user, identities)

    def _plan(self) -> tuple[_Endpoint, _Endpoint | None, str, list[str]]:
        """Resolve target, jump host and known_hosts files from the target and ssh config."""
        t = self.target
        config = self._config()
        opts = self._lookup(config, t.host)
        if opts.get("proxycommand") and not (t.proxy_jump or opts.get("proxyjump")):
            raise TransportError(self._label, "ssh config sets ProxyCommand for "
                                 f"{t.host}, which is not supported; use ProxyJump")
        final = self._endpoint("host", opts, t.host, None if t.port == 22 else t.port,
                               t.user, t.identity_file)
        jump_spec = t.proxy_jump or (str(opts["proxyjump"]) if opts.get("proxyjump") else None)
        jump: _Endpoint | None = None
        if jump_spec and jump_spec.strip().lower() != "none":
            try:
                j_user, j_host, j_port = parse_jump(jump_spec)
            except ValueError as exc:
                raise TransportError(self._label, str(exc)) from exc
            j_opts = self._lookup(config, j_host)
            jump = self._endpoint("jump host", j_opts, j_host, j_port, j_user, None)
            if not jump.identity_files and final.identity_files:
                # no key configured for the jump host: offer the target's (usually the same)
                jump = replace(jump, identity_files=final.identity_files)
        extra: list[str] = []
        if t.known_hosts is not None:
            known_hosts = os.path.expanduser(t.known_hosts)
        else:
            configured = str(opts.get("userknownhostsfile") or "").split()
            known_hosts = os.path.expanduser(configured[0] if configured
                                             else "~/.ssh/known_hosts")
            extra.append("/etc/ssh/ssh_known_hosts")
        return final, jump, known_hosts, extra

    def _connect_one(self, ep: _Endpoint, known_hosts: str, extra_known: list[str],
                     sock: paramiko.Channel | None) -> paramiko.SSHClient:
        t = self.target
        for identity in ep.identity_files:
            if not os.access(identity, os.R_OK):
                raise HostUnreachable(self._label, f"{ep.role} {ep.where}: identity file "
                                      f"{identity} is missing or unreadable")
        client = paramiko.SSHClient()
        try:
            if os.path.exists(known_hosts):
                client.load_system_host_keys(known_hosts)
            for path in extra_known:
                if os.path.exists(path):
                    client.get_host_keys().load(path)
        except (OSError, UnicodeDecodeError) as exc:
            client.close()
            raise TransportError(self._label, f"cannot read known_hosts: {exc}") from exc
        client.set_missing_host_key_policy(
            _RejectUnknownHost(self._label, ep, known_hosts, jumped=sock is not None))
        timeout = t.connect_timeout
        where = f"{ep.role} {ep.where}"
        try:
            client.connect(
                ep.hostname, ep.port, username=ep.user,
                # paramiko takes a list of key files; its stubs only say str
                key_filename=list(ep.identity_files) or None,  # type: ignore[arg-type]
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                channel_timeout=timeout, allow_agent=t.use_agent,
                look_for_keys=not ep.identity_files, sock=sock,
            )
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C and exits pass through
                raise
            client.close()
            if isinstance(exc, TransportError):
                raise
            if isinstance(exc, paramiko.BadHostKeyException):
                raise HostKeyError(
                    self._label,
                    f"HOST KEY CHANGED for {where}: {known_hosts} has "
                    f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, but the "
                    f"host offered {exc.key.get_name()} {fingerprint(exc.key)}. Either the "
                    "host was reinstalled or someone is intercepting the connection. Verify "
                    "the new fingerprint out of band, then remove the old entry with: "
                    f"ssh-keygen -R '{ep.known_hosts_name}' -f {known_hosts}",
                ) from exc
            if isinstance(exc, paramiko.PasswordRequiredException):
                raise HostUnreachable(
                    self._label, f"{where}: authentication failed for user {ep.user}: the "
                    "private key is passphrase-protected; load it into ssh-agent") from exc
            if isinstance(exc, paramiko.AuthenticationException):
                raise HostUnreachable(
                    self._label, f"{where}: authentication failed for user {ep.user}"
                ) from exc
            raise HostUnreachable(self._label, f"{where}: {_describe(exc, timeout)}") from exc
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
            final, jump, known_hosts, extra = self._plan()
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
                        f"{_describe(exc, self.target.connect_timeout)}") from exc
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

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float = 30.0,
            stdin: bytes | None = None, check: bool = True) -> CommandResult:
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not a string")
        args = tuple(str(a) for a in argv)
        command = shell_command(args, self._sudo_prefix(sudo))
        shown = shlex.join(args)
        started = time.monotonic()
        deadline = started + timeout
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=self.target.connect_timeout)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C and exits pass through
                raise
            raise TransportError(self._label, f"cannot open a session for {shown!r}: "
                                 f"{_describe(exc, timeout)}") from exc
        try:
            try:
                chan.exec_command(command)
                feeder = _start_stdin_feeder(chan, stdin)
                stdout, stderr = _collect(chan, deadline)
                if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                    raise _CommandTimeout()
                status = chan.recv_exit_status()
                if feeder is not None:
                    feeder.join(max(0.0, deadline - time.monotonic()))
            except _CommandTimeout:
                _kill(chan)
                raise TransportError(
                    self._label, f"command {shown!r} timed out after {timeout:g} s") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise TransportError(self._label, f"command {shown!r}: "
                                     f"{_describe(exc, timeout)}") from exc
        finally:
            chan.close()
        result = CommandResult(args, status, stdout, stderr, time.monotonic() - started)
        if check and status != 0:
            raise RemoteCommandError(self._label, shown, status, result.stderr_text())
        return result

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
                                     f"{what}: {_describe(exc, self.io_timeout)}") from exc

    def _drop_sftp(self) -> None:
        client, self._sftp_client = self._sftp_client, None
        if client is not None:
            try:
                client.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass

    def open_file(self, path: str, *, sudo: bool = False) -> ByteSource:
        if sudo and self.target.sudo:
            sudo_source = _SudoSource(self, path)
            sudo_source.size()  # fail now if it is missing
            return sudo_source
        source = _SftpSource(self, path)
        source.size()
        with self._sftp_lock:
            self._sources.add(source)
        return source

    def list_dir(self, path: str, *, sudo: bool = False) -> list[FileInfo]:
        if sudo and self.target.sudo:
            return self._list_dir_sudo(path)
        with self._sftp(f"list {path}") as (sftp, _):
            entries = sftp.listdir_attr(path)
        infos = []
        for attr in entries:
            if attr.filename in (".", ".."):
                continue
            mode = int(attr.st_mode or 0)
            infos.append(FileInfo(attr.filename, int(attr.st_size or 0), mode,
                                  stat.S_ISDIR(mode)))
        return sorted(infos, key=lambda info: info.name)

    def _list_dir_sudo(self, path: str) -> list[FileInfo]:
        directory = path if path.endswith("/") else path + "/"
        result = self.run(["find", directory, "-mindepth", "1", "-maxdepth", "1",
                           "-printf", r"%f\0%s\0%m\0%y\0"], sudo=True)
        fields = result.stdout.split(b"\0")
        if fields and fields[-1] == b"":
            fields.pop()
        if len(fields) % 4:
            raise TransportError(self._label, f"list {path}: unexpected find output")
        infos = []
        for i in range(0, len(fields), 4):
            name = fields[i].decode("utf-8", errors="surrogateescape")
            size, perms, kind = int(fields[i + 1]), int(fields[i + 2], 8), fields[i + 3]
            mode = _FIND_TYPES.get(kind.decode("ascii", errors="replace"), 0) | perms
            infos.append(FileInfo(name, size, mode, stat.S_ISDIR(mode)))
        return sorted(infos, key=lambda info: info.name)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o600,
                   sudo: bool = False) -> None:
        directory, base = posixpath.split(path)
        if not base:
            raise TransportError(self._label, f"write {path}: not a file name")
        tmp = posixpath.join(directory, f".{base}.tmp-{secrets.token_hex(6)}")
        if sudo and self.target.sudo:
            self.run(["sh", "-c", _SUDO_WRITE_SCRIPT, "sh", tmp, path, format(mode, "o")],
                     sudo=True, stdin=data, timeout=max(30.0, self.io_timeout))
            return
        with self._sftp(f"write {path}") as (sftp, _):
            try:
                with sftp.open(tmp, "wbx") as fh:
                    fh.chmod(mode)  # before any byte is written
                    fh.set_pipelined(True)
                    fh.write(data)
                sftp.posix_rename(tmp, path)
            except BaseException:
                try:
                    sftp.remove(tmp)
                except (OSError, EOFError, paramiko.SSHException):
                    pass
                raise

    # -------------------------------------------------------------------- tunnel

    @contextmanager
    def tunnel(self, remote_host: str, remote_port: int) -> Iterator[tuple[str, int]]:
        """Forward a loopback port to ``remote_host:remote_port`` as the host sees it.

        Every local connection gets its own direct-tcpip channel; the forwarder stops and
        closes all of them when the block ends.
        """
        self._transport()  # connection errors surface here, not in the first client
        try:
            forwarder = _Forwarder(self, remote_host, remote_port)
        except OSError as exc:
            raise TransportError(self._label, f"cannot open a local port for the tunnel to "
                                 f"{remote_host}:{remote_port}: {_describe(exc, 0)}") from exc
        try:
            yield forwarder.address
        finally:
            forwarder.stop()


class _Forwarder:
    """A loopback listener whose connections are piped through direct-tcpip channels."""

    def __init__(self, owner: SshTransport, remote_host: str, remote_port: int) -> None:
        self._owner = owner
        self._remote = (remote_host, remote_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.address: tuple[str, int] = ("127.0.0.1", self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[tuple[socket.socket, paramiko.Channel | None]] = set()
        self._threads: list[threading.Thread] = []
        self.last_error: str | None = None
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"tunnel-{owner.host}-{remote_port}")
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(conn, peer), daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            transport = self._owner._transport()
            chan = transport.open_channel("direct-tcpip", self._remote, peer,
                                          timeout=self._owner.target.connect_timeout)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C and exits pass through
                raise
            self.last_error = f"{self._remote[0]}:{self._remote[1]}: {_describe(exc, 0)}"
            _log.warning("%s: tunnel to %s", self._owner.host, self.last_error)
            _close_socket(conn)
            return
        pair = (conn, chan)
        with self._lock:
            if self._stopping.is_set():
                chan.close()
                _close_socket(conn)
                return
            self._open.add(pair)
        upstream = threading.Thread(target=_pump_to_channel, args=(conn, chan), daemon=True)
        upstream.start()
        try:
            while True:
                data = chan.recv(_READ_CHUNK)
                if not data:
                    try:
                        conn.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    break
                conn.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        upstream.join()
        chan.close()
        _close_socket(conn)
        with self._lock:
            self._open.discard(pair)

    def stop(self) -> None:
        self._stopping.set()
        _close_socket(self._listener)
        self._acceptor.join(2.0)
        with self._lock:
            pairs = list(self._open)
            threads = list(self._threads)
        for conn, chan in pairs:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if chan is not None:
                chan.close()
        for thread in threads:
            thread.join(2.0)


def _pump_to_channel(conn: socket.socket, chan: paramiko.Channel) -> None:
    try:
        while True:
            data = conn.recv(_READ_CHUNK)
            if not data:
                chan.shutdown_write()
                return
            chan.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        chan.close()


def _close_socket(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _start_stdin_feeder(chan: paramiko.Channel, stdin: bytes | None) -> threading.Thread | None:
    """Send stdin from a thread so a chatty command cannot deadlock against it."""
    if not stdin:
        chan.shutdown_write()
        return None

    def feed() -> None:
        try:
            chan.sendall(stdin)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command stopped reading; its exit status tells the story

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def _collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr until EOF, interleaved, or raise _CommandTimeout."""
    out: list[bytes] = []
    err: list[bytes] = []
    chan.fileno()  # makes the channel selectable
    while True:
        if chan.recv_ready():
            out.append(chan.recv(_READ_CHUNK))
            continue
        if chan.recv_stderr_ready():
            err.append(chan.recv_stderr(_READ_CHUNK))
            continue
        if chan.eof_received or chan.closed:
            return b"".join(out), b"".join(err)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _CommandTimeout()
        select.select([chan], [], [], remaining)


def _kill(chan: paramiko.Channel) -> None:
    """Best effort: ask sshd to SIGKILL the command, then drop the channel.

    OpenSSH honours the ``signal`` request only for privilege-separated (non-root)
    sessions; for root logins the closed channel is all the command sees.
    """
    send = getattr(chan.transport, "_send_user_message", None)
    if send is not None and not chan.closed:
        msg = Message()
        msg.add_byte(cMSG_CHANNEL_REQUEST)
        msg.add_int(chan.remote_chanid)
        msg.add_string("signal")
        msg.add_boolean(False)
        msg.add_string("KILL")
        try:
            send(msg)
        except (OSError, EOFError, paramiko.SSHException):
            pass
    chan.close()


def _describe(exc: BaseException, timeout: float) -> str:
    """A short, secret-free cause for a connection or I/O failure."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {str(getattr(e, "strerror", None) or e).lower() for e in exc.errors.values()}
        return ", ".join(sorted(causes)) or "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, paramiko.ChannelException):
        return f"channel open failed: {exc.text}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        return "connection closed by the remote side"
    if isinstance(exc, paramiko.SSHException):
        return f"SSH error: {exc}"
    return f"{type(exc).__name__}: {exc}"

"""Remote files over SSH: random-access readers, directory listings, atomic writes.

Each comes in two flavours: SFTP as the SSH user, and ``sudo`` commands (``dd``,
``stat``, ``find``, ``tee``) for files only root may touch.
"""

from __future__ import annotations

import posixpath
import secrets
import stat
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import paramiko

from etcd_recovery.errors import TransportError
from etcd_recovery.transport.base import CommandResult, FileInfo

_PIPELINE_THRESHOLD = 65536
# paramiko's readv keeps, in the handle's prefetch buffers, the part of each block before the
# position read from (sftp_file.py, _read_prefetch): read in 1 MiB steps, a 64 MiB WAL file
# held 14 MiB until its handle closed. A handle that has served this much through readv is
# closed and opened again for the next read, which bounds what it holds for one round trip.
_REOPEN_AFTER = 8 << 20
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


class FileHost(Protocol):
    """What the readers and writers need from the transport (an SshTransport)."""

    @property
    def host(self) -> str: ...

    @property
    def io_timeout(self) -> float: ...

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: float = 30.0,
            stdin: bytes | Iterable[bytes] | None = None,
            check: bool = True) -> CommandResult: ...

    def _sftp(self, what: str) -> AbstractContextManager[tuple[paramiko.SFTPClient, int]]:
        """The shared SFTP session and its connection generation; translates errors."""
        ...


class SftpSource:
    """ByteSource over SFTP; keeps one handle open, reopened after a reconnect."""

    def __init__(self, owner: FileHost, path: str) -> None:
        self._owner = owner
        self._path = path
        self._handle: paramiko.SFTPFile | None = None
        self._generation = -1
        self._pipelined = 0      # bytes readv served through the open handle
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return f"{self._owner.host}:{self._path}"

    def _file(self, sftp: paramiko.SFTPClient, generation: int) -> paramiko.SFTPFile:
        if self._handle is None or self._generation != generation:
            self._handle = sftp.open(self._path, "rb")
            self._generation = generation
            self._pipelined = 0
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
                    self._pipelined += len(data)
                    if self._pipelined >= _REOPEN_AFTER:
                        self._drop()
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


class SudoSource:
    """ByteSource over ``sudo dd`` and ``sudo stat`` for files the SSH user cannot read."""

    def __init__(self, owner: FileHost, path: str) -> None:
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


def list_dir(owner: FileHost, path: str, *, sudo: bool) -> list[FileInfo]:
    """The entries of ``path`` sorted by name; ``sudo`` lists it with ``sudo find``."""
    if sudo:
        return _list_dir_sudo(owner, path)
    with owner._sftp(f"list {path}") as (sftp, _):
        entries = sftp.listdir_attr(path)
    infos = []
    for attr in entries:
        if attr.filename in (".", ".."):
            continue
        mode = int(attr.st_mode or 0)
        infos.append(FileInfo(attr.filename, int(attr.st_size or 0), mode,
                              stat.S_ISDIR(mode)))
    return sorted(infos, key=lambda info: info.name)


def _list_dir_sudo(owner: FileHost, path: str) -> list[FileInfo]:
    directory = path if path.endswith("/") else path + "/"
    result = owner.run(["find", directory, "-mindepth", "1", "-maxdepth", "1",
                        "-printf", r"%f\0%s\0%m\0%y\0"], sudo=True)
    fields = result.stdout.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    if len(fields) % 4:
        raise TransportError(owner.host, f"list {path}: unexpected find output")
    infos = []
    for i in range(0, len(fields), 4):
        name = fields[i].decode("utf-8", errors="surrogateescape")
        size, perms, kind = int(fields[i + 1]), int(fields[i + 2], 8), fields[i + 3]
        mode = _FIND_TYPES.get(kind.decode("ascii", errors="replace"), 0) | perms
        infos.append(FileInfo(name, size, mode, stat.S_ISDIR(mode)))
    return sorted(infos, key=lambda info: info.name)


def write_file(owner: FileHost, path: str, data: bytes, *, mode: int, sudo: bool) -> None:
    """Replace ``path`` atomically: a private temporary file beside it, then rename."""
    directory, base = posixpath.split(path)
    if not base:
        raise TransportError(owner.host, f"write {path}: not a file name")
    tmp = posixpath.join(directory, f".{base}.tmp-{secrets.token_hex(6)}")
    if sudo:
        owner.run(["sh", "-c", _SUDO_WRITE_SCRIPT, "sh", tmp, path, format(mode, "o")],
                  sudo=True, stdin=data, timeout=max(30.0, owner.io_timeout))
        return
    with owner._sftp(f"write {path}") as (sftp, _):
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

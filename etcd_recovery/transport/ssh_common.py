"""Pieces the SSH transport's modules share: the read size and the failure wording."""

from __future__ import annotations

import socket

import paramiko

READ_CHUNK = 65536


def describe(exc: BaseException, timeout: float) -> str:
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

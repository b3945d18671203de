"""Reaching hosts: run commands, read and write files, tunnel to etcd's client port."""

from __future__ import annotations

from etcd_recovery.transport.base import (
    DEFAULT_SUDO_COMMAND,
    CommandResult,
    FileInfo,
    HostTarget,
    Transport,
    shell_command,
)

__all__ = [
    "DEFAULT_SUDO_COMMAND",
    "CommandResult",
    "FileInfo",
    "HostTarget",
    "Transport",
    "shell_command",
]

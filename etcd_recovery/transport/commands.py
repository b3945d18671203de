"""Running one command on an SSH session channel: stdin, output, timeout, kill."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterable

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from etcd_recovery.transport.ssh_common import READ_CHUNK


class CommandTimeout(Exception):
    """The command's deadline passed before it finished."""


SEND_PIECE = 32 * 1024  # paramiko's largest packet: one send each


def start_stdin_feeder(chan: paramiko.Channel,
                       stdin: bytes | Iterable[bytes] | None) -> threading.Thread | None:
    """Send stdin from a thread so a chatty command cannot deadlock against it. ``stdin``
    may be blocks from an iterator (a file streamed through: never all in memory)."""
    if not stdin:
        chan.shutdown_write()
        return None

    def feed() -> None:
        try:
            for block in [stdin] if isinstance(stdin, bytes) else stdin:
                # paramiko's sendall re-slices what is left after every packet (32 KiB), a
                # copy of the rest each time: fed whole, a 4 MiB block costs 128 copies
                view = memoryview(block)
                for at in range(0, len(view), SEND_PIECE):
                    chan.sendall(view[at:at + SEND_PIECE].tobytes())
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command stopped reading; its exit status tells the story

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr until EOF, interleaved, or raise CommandTimeout."""
    out: list[bytes] = []
    err: list[bytes] = []
    chan.fileno()  # makes the channel selectable
    while True:
        if chan.recv_ready():
            out.append(chan.recv(READ_CHUNK))
            continue
        if chan.recv_stderr_ready():
            err.append(chan.recv_stderr(READ_CHUNK))
            continue
        if chan.eof_received or chan.closed:
            return b"".join(out), b"".join(err)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandTimeout()
        select.select([chan], [], [], remaining)


def kill(chan: paramiko.Channel) -> None:
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

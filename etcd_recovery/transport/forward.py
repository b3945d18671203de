"""Port forwarding: a loopback port piped to ``host:port`` as the SSH server sees it."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import paramiko

from etcd_recovery.errors import TransportError
from etcd_recovery.transport.base import HostTarget
from etcd_recovery.transport.ssh_common import READ_CHUNK, describe

_log = logging.getLogger(__name__)


class TunnelHost(Protocol):
    """What the forwarder needs from the transport (an SshTransport)."""

    @property
    def host(self) -> str: ...

    @property
    def target(self) -> HostTarget: ...

    def _transport(self) -> paramiko.Transport:
        """The live paramiko transport, connecting (again) if needed."""
        ...


@contextmanager
def tunnel(owner: TunnelHost, remote_host: str, remote_port: int) -> Iterator[tuple[str, int]]:
    """Forward a loopback port to ``remote_host:remote_port`` as the host sees it.

    Every local connection gets its own direct-tcpip channel; the forwarder stops and
    closes all of them when the block ends.
    """
    owner._transport()  # connection errors surface here, not in the first client
    try:
        forwarder = Forwarder(owner, remote_host, remote_port)
    except OSError as exc:
        raise TransportError(owner.host, f"cannot open a local port for the tunnel to "
                             f"{remote_host}:{remote_port}: {describe(exc, 0)}") from exc
    try:
        yield forwarder.address
    finally:
        forwarder.stop()


class Forwarder:
    """A loopback listener whose connections are piped through direct-tcpip channels."""

    def __init__(self, owner: TunnelHost, remote_host: str, remote_port: int) -> None:
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
            self.last_error = f"{self._remote[0]}:{self._remote[1]}: {describe(exc, 0)}"
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
                data = chan.recv(READ_CHUNK)
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
        # (close alone does not wake an accept() blocked in another thread: it would sit out
        # its 0.2 s timeout, paid on every restart of etcd behind the tunnel; shutdown wakes it)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
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
            data = conn.recv(READ_CHUNK)
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

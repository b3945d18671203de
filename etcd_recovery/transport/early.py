"""TCP connections to the inventory's SSH endpoints, opened as soon as a command has read the
inventory, while the rest of the tool still loads: a host that is gone then costs its probe
timeout from the command's start, not after imports and SSH configuration.

``start`` connects in background threads; ``take`` hands a connected socket (or the error) to
the first SSH transport for that endpoint. An endpoint nobody takes (the SSH configuration sent
the transport elsewhere, say) is simply closed when the process ends. Standard library only, so
that nothing slow is imported before the probes are under way.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from concurrent.futures import Future

_lock = threading.Lock()
_pending: dict[tuple[str, int], Future[socket.socket]] = {}


def _connect(host: str, port: int, timeout: float, future: Future[socket.socket]) -> None:
    try:
        future.set_result(socket.create_connection((host, port), timeout=timeout))
    except OSError as exc:
        future.set_exception(exc)


def start(endpoints: Iterable[tuple[str, int, float]]) -> None:
    """Begin connecting to each (host, port, timeout), once per endpoint."""
    for host, port, timeout in endpoints:
        with _lock:
            if (host, port) in _pending:
                continue
            future: Future[socket.socket] = Future()
            _pending[(host, port)] = future
        threading.Thread(target=_connect, args=(host, port, timeout, future),
                         name=f"tcp-{host}", daemon=True).start()


def take(host: str, port: int) -> Future[socket.socket] | None:
    """The early connection to this endpoint, handed over once (None: none was started)."""
    with _lock:
        return _pending.pop((host, port), None)

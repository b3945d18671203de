"""Early TCP connects: started at once, handed over once, errors kept for the transport."""

from __future__ import annotations

import socket

import pytest

from etcd_recovery.transport import early


def test_a_connect_is_handed_over_once_and_a_refusal_is_kept() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead = closed.getsockname()[1]   # bound, never listening: refused
            early.start([("127.0.0.1", port, 1.0), ("127.0.0.1", dead, 1.0),
                         ("127.0.0.1", port, 1.0)])
            got = early.take("127.0.0.1", port)
            assert got is not None
            conn = got.result(timeout=5)
            assert conn.getpeername()[1] == port
            conn.close()
            assert early.take("127.0.0.1", port) is None   # once only
            refused = early.take("127.0.0.1", dead)
            assert refused is not None
            with pytest.raises(OSError):
                refused.result(timeout=5)
    assert early.take("127.0.0.1", 1) is None              # never started

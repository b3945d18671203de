"""Session channels on one SSH connection: a channel open the server refused at once (sshd's
MaxSessions) is tried again; one that keeps being refused, or a dead connection, is a
TransportError naming the host; no more than SESSION_SLOTS commands run at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import paramiko
import pytest

from etcd_recovery.errors import TransportError
from etcd_recovery.transport.base import HostTarget
from etcd_recovery.transport.ssh import SESSION_SLOTS, SshTransport


class FakeChannel:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """open_session refuses ``refusals`` times (paramiko's bare message), then opens."""

    def __init__(self, refusals: int, active: bool = True) -> None:
        self.refusals = refusals
        self.active = active
        self.opens = 0
        self.lock = threading.Lock()

    def is_active(self) -> bool:
        return self.active

    def open_session(self, timeout: float | None = None) -> FakeChannel:
        with self.lock:
            self.opens += 1
            if self.opens <= self.refusals:
                raise paramiko.SSHException("Unable to open channel.")
        return FakeChannel()


def _ssh(connect_timeout: float = 2.0) -> SshTransport:
    return SshTransport("etcd-5", HostTarget(host="10.0.0.5", connect_timeout=connect_timeout))


def test_a_refused_open_is_tried_again() -> None:
    fake = FakeTransport(refusals=3)
    ssh = _ssh()
    with ssh._session(fake, "cp -a x y", 30.0) as chan:  # type: ignore[arg-type]
        assert isinstance(chan, FakeChannel) and not chan.closed
    assert chan.closed and fake.opens == 4


def test_an_open_refused_until_the_deadline_names_the_host_and_command() -> None:
    fake = FakeTransport(refusals=10_000)
    ssh = _ssh(connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        with ssh._session(fake, "cp -a x y", 30.0):  # type: ignore[arg-type]
            pass
    assert time.monotonic() - started < 2.0
    assert info.value.host == "etcd-5"
    assert "cannot open a session for 'cp -a x y'" in str(info.value)
    assert "Unable to open channel" in str(info.value)
    assert fake.opens > 2


def test_a_dead_connection_is_not_retried() -> None:
    fake = FakeTransport(refusals=10_000, active=False)
    with pytest.raises(TransportError):
        with _ssh()._session(fake, "true", 30.0):  # type: ignore[arg-type]
            pass
    assert fake.opens == 1


def test_no_more_than_the_slots_at_once_and_a_slot_is_given_back() -> None:
    fake = FakeTransport(refusals=0)
    ssh = _ssh(connect_timeout=30.0)
    held: list[Any] = []
    for _ in range(SESSION_SLOTS):
        cm = ssh._session(fake, "sleep 1", 30.0)  # type: ignore[arg-type]
        cm.__enter__()
        held.append(cm)
    opened = threading.Event()

    def one_more() -> None:
        with ssh._session(fake, "true", 30.0):  # type: ignore[arg-type]
            opened.set()

    worker = threading.Thread(target=one_more)
    worker.start()
    assert not opened.wait(0.3)           # every slot taken: it waits
    assert fake.opens == SESSION_SLOTS
    held.pop().__exit__(None, None, None)  # one ends: the waiting one runs
    assert opened.wait(5.0)
    worker.join(5.0)
    for cm in held:
        cm.__exit__(None, None, None)


def test_a_failed_open_gives_its_slot_back() -> None:
    ssh = _ssh(connect_timeout=0.2)
    for _ in range(SESSION_SLOTS + 2):
        with pytest.raises(TransportError):
            with ssh._session(FakeTransport(10_000, active=False), "x", 1.0):  # type: ignore[arg-type]
                pass
    fake = FakeTransport(refusals=0)
    started = time.monotonic()
    with ssh._session(fake, "x", 1.0):  # type: ignore[arg-type]
        pass
    assert time.monotonic() - started < 0.15  # no slot was leaked: no wait for one


def test_cipher_order_puts_aes_gcm_first_and_never_offers_3des() -> None:
    import paramiko

    from etcd_recovery.transport.tuning import TunedTransport

    order = TunedTransport._preferred_ciphers
    assert order[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert "3des-cbc" not in order
    rest = [c for c in paramiko.Transport._preferred_ciphers  # type: ignore[attr-defined]
            if c not in order[:2] and c != "3des-cbc"]
    assert list(order[2:]) == rest

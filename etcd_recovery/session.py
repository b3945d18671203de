"""One object per command that owns the connections to the hosts.

A :class:`Session` opens each host's SSH transport once and each member's etcd client once
(through an SSH tunnel), and closes them all at the end. Two seams make everything above it
testable without hosts: ``factory`` builds a transport for a member (the fake transport in
tests) and ``client_factory`` builds an etcd client for a member over its transport (a fake
etcd in tests). inspect, execute, rejoin and verify borrow from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from . import processes
from .errors import TransportError
from .inventory import Inventory, Member
from .live import EtcdClient
from .plan.scripts import probe_argv
from .transport.base import CommandResult, Transport
from .transport.factory import TransportFactory, ssh_transport

ClientFactory = Callable[[Inventory, Member, Transport], AbstractContextManager[Any]]


@contextlib.contextmanager
def tunnel_client(inv: Inventory, m: Member, t: Transport) -> Any:
    """An etcd client for ``m`` through an SSH tunnel over ``t``."""
    host, port = m.client_hostport
    with t.tunnel(host, port) as (lhost, lport):
        user, password = inv.credentials()
        with EtcdClient(f"{lhost}:{lport}", ca_file=inv.tls.ca, cert_file=inv.tls.cert,
                        key_file=inv.tls.key, server_name=host, username=user,
                        password=password, timeout=5.0) as client:
            yield client


class Session:
    def __init__(self, inv: Inventory, factory: TransportFactory = ssh_transport,
                 client_factory: ClientFactory = tunnel_client) -> None:
        self.inv = inv
        self.factory = factory
        self.client_factory = client_factory
        self._transports: dict[str, Transport] = {}
        self._clients: dict[str, tuple[Any, contextlib.ExitStack]] = {}

    def t(self, name: str) -> Transport:
        if name not in self._transports:
            self._transports[name] = self.factory(self.inv.member(name))
        return self._transports[name]

    def connect_all(self, names: list[str]) -> None:
        """Open the SSH connections to these hosts at the same time, ahead of first use. A
        host that fails here fails again, with its own message, where it is first used."""
        todo = [n for n in names if n not in self._transports]
        for n in todo:
            self.t(n)
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            list(pool.map(self._connect_quietly, todo))

    def _connect_quietly(self, name: str) -> None:
        connect = getattr(self._transports[name], "connect", None)
        if connect is not None:
            with contextlib.suppress(Exception):
                connect()

    def m(self, name: str) -> Member:
        return self.inv.member(name)

    def run(self, name: str, argv: list[str] | tuple[str, ...], timeout: float = 60.0,
            check: bool = True, stdin: bytes | Iterable[bytes] | None = None
            ) -> CommandResult:
        """Run ``argv`` on the member's host as root (``sudo -n`` for a non-root user)."""
        return self.t(name).run(list(argv), sudo=True, timeout=timeout, check=check,
                                stdin=stdin)

    def client(self, name: str) -> Any:
        """The member's etcd client, opened once and kept for the session."""
        if name not in self._clients:
            stack = contextlib.ExitStack()
            try:
                client = stack.enter_context(
                    self.client_factory(self.inv, self.m(name), self.t(name)))
            except BaseException:
                stack.close()
                raise
            self._clients[name] = (client, stack)
        return self._clients[name][0]

    def drop_client(self, name: str) -> None:
        entry = self._clients.pop(name, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                entry[1].close()

    def etcd_pid(self, name: str) -> int | None:
        """The member's own etcd process (by its data dir, among every etcd on the host)."""
        return processes.own_pid(processes.etcd_processes(self.t(name)), self.m(name).data_dir)

    def command_holder(self, name: str) -> tuple[str, str, str] | None:
        """The guarded command that holds the host's command lock now, as (pid, run, step),
        or None when none does (plan.COMMANDS_LOCK)."""
        res = self.run(name, probe_argv(), check=False, timeout=10)
        words = res.stdout.decode(errors="replace").split()
        if res.exit_status != 0:
            raise TransportError(name, "cannot read the host's command lock: "
                                       + (res.stderr.decode(errors="replace").strip()
                                          or f"exit status {res.exit_status}"))
        if words[:1] != ["busy"]:
            return None
        pid, run, step = (*words[1:4], "?", "?", "?")[:3]
        return pid, run, step

    def runs_without_force(self, name: str) -> bool | None:
        """True: the member's etcd runs without --force-new-cluster; False: it runs with it (or
        etcd's config file decides); None: it does not run (etcdflags reads the flags)."""
        return processes.runs_without_force(processes.etcd_processes(self.t(name)),
                                            self.m(name).data_dir)

    def close(self) -> None:
        for name in list(self._clients):
            self.drop_client(name)
        for t in self._transports.values():
            with contextlib.suppress(Exception):
                t.close()
        self._transports.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reachable_members(inv: Inventory, factory: TransportFactory = ssh_transport
                      ) -> tuple[list[str], dict[str, str]]:
    """Which inventory members answer over SSH (concurrently); the others with the reason."""
    from concurrent.futures import ThreadPoolExecutor

    def one(m: Member) -> str | None:
        t = factory(m)
        try:
            t.run(["true"], timeout=10)
            return None
        except TransportError as exc:
            return exc.detail  # the caller names the member
        finally:
            t.close()

    with ThreadPoolExecutor(max_workers=max(1, len(inv.members))) as pool:
        errors = list(pool.map(one, inv.members))
    ok = [m.name for m, e in zip(inv.members, errors, strict=True) if e is None]
    bad = {m.name: e for m, e in zip(inv.members, errors, strict=True) if e is not None}
    return ok, bad

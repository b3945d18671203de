"""From an inventory member to its transport: the seam every command reaches hosts through.

Above :mod:`..inventory` (it reads a member's ``ssh:``), below everything that talks to hosts
(inspect, the session, doctor), which take a :data:`TransportFactory` so that tests can hand
them fakes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..inventory import Member, SshTarget
from .base import HostTarget, Transport

TransportFactory = Callable[[Member], Transport]


def host_target(s: SshTarget) -> HostTarget:
    """How to reach a host, from an inventory's ``ssh:`` (a member's, or one ``inventory
    discover`` builds from its options before there is an inventory)."""
    return HostTarget(
        host=s.host, port=s.port, user=s.user, identity_file=s.identity_file,
        known_hosts=s.known_hosts, proxy_jump=s.jump, sudo=s.sudo,
        probe_timeout=s.connect_timeout or 1.0)


def ssh_transport(member: Member) -> Transport:
    from .ssh import SshTransport

    return SshTransport(member.name, host_target(member.ssh))

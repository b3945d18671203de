"""From an inventory member to its transport: the seam every command reaches hosts through.

Above :mod:`..inventory` (it reads a member's ``ssh:``), below everything that talks to hosts
(inspect, the session, doctor), which take a :data:`TransportFactory` so that tests can hand
them fakes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..inventory import Member
from .base import HostTarget, Transport

TransportFactory = Callable[[Member], Transport]


def ssh_transport(member: Member) -> Transport:
    from .ssh import SshTransport

    s = member.ssh
    return SshTransport(member.name, HostTarget(
        host=s.host, port=s.port, user=s.user, identity_file=s.identity_file,
        known_hosts=s.known_hosts, proxy_jump=s.jump, sudo=s.sudo,
        probe_timeout=s.connect_timeout or 1.0))

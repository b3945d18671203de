"""Strict host key checking: known_hosts only, never trust on first use.

An unknown host is refused with its fingerprint and the command that would add it; a
changed key is refused with both fingerprints and the command that removes the old entry.
"""

from __future__ import annotations

import base64
import hashlib
import os

import paramiko

from etcd_recovery.errors import HostKeyError, TransportError
from etcd_recovery.transport.ssh_config import Endpoint


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _key_kind(key: paramiko.PKey) -> str:
    """``ed25519``, ``rsa``, ``ecdsa``: the word OpenSSH uses in host key file names."""
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    if "rsa" in name:
        return "rsa"
    return name


class RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """Refuses every host that is not in known_hosts, saying how to add it."""

    def __init__(self, label: str, endpoint: Endpoint, known_hosts: str, jumped: bool) -> None:
        self._label = label
        self._endpoint = endpoint
        self._known_hosts = known_hosts
        self._jumped = jumped

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        ep = self._endpoint
        scan_from = " (run it where that address is reachable, e.g. on the jump host)" \
            if self._jumped else ""
        raise HostKeyError(
            self._label,
            f"{ep.role} {ep.where} is not in {self._known_hosts}: it offered a "
            f"{key.get_name()} key with fingerprint {fingerprint(key)}. Refusing to trust "
            f"it unseen. To add it: ssh-keyscan -p {ep.port} {ep.hostname} >> "
            f"{self._known_hosts}{scan_from}, then check the fingerprint out of band "
            f"(on the host: ssh-keygen -lf /etc/ssh/ssh_host_{_key_kind(key)}_key.pub).",
        )


def enforce_known_hosts(client: paramiko.SSHClient, label: str, endpoint: Endpoint,
                        known_hosts: str, extra_known: list[str], *, jumped: bool) -> None:
    """Load the known_hosts files into ``client`` and refuse any host not in them.

    Closes ``client`` if a file cannot be read.
    """
    try:
        if os.path.exists(known_hosts):
            client.load_system_host_keys(known_hosts)
        for path in extra_known:
            if os.path.exists(path):
                client.get_host_keys().load(path)
    except (OSError, UnicodeDecodeError) as exc:
        client.close()
        raise TransportError(label, f"cannot read known_hosts: {exc}") from exc
    client.set_missing_host_key_policy(
        RejectUnknownHost(label, endpoint, known_hosts, jumped=jumped))


def host_key_changed(label: str, endpoint: Endpoint, known_hosts: str,
                     exc: paramiko.BadHostKeyException) -> HostKeyError:
    """The refusal for a host whose key differs from the one in known_hosts."""
    return HostKeyError(
        label,
        f"HOST KEY CHANGED for {endpoint.role} {endpoint.where}: {known_hosts} has "
        f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, but the "
        f"host offered {exc.key.get_name()} {fingerprint(exc.key)}. Either the "
        "host was reinstalled or someone is intercepting the connection. Verify "
        "the new fingerprint out of band, then remove the old entry with: "
        f"ssh-keygen -R '{endpoint.known_hosts_name}' -f {known_hosts}",
    )

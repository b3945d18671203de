"""How the SSH connections are negotiated: AES-GCM first, and re-keying as OpenSSH does it.

**Ciphers.** paramiko offers AES-CTR with HMAC first and AES-GCM last.  In GCM one call does
both the encryption and the tag: reading 1 GB through one connection took 3.4 s (2.9 s of
CPU) with aes128-ctr and hmac-sha2-256, 2.2 s (1.9 s) with aes128-gcm@openssh.com, on this
machine; the snapshot's sends move every byte through this one process.  Both AES-GCM
ciphers come first, the rest keep paramiko's order; 3des-cbc (8-byte blocks) is not offered
at all (OpenSSH no longer offers it either, and the re-key limit below is 16-byte blocks').

**Re-keying.**
paramiko starts a key exchange after every 512 MiB (or 2**29 packets) either way
(``Packetizer.REKEY_BYTES``, paramiko/packet.py, 3.4-5.1).  From its own ``KEXINIT`` until
``NEWKEYS`` it holds every connection-layer message in ``Transport._send_user_message``
(RFC 4253, section 7.1).  But the server's messages sent before it saw that ``KEXINIT`` still
arrive, in the transport's own thread, and ``Channel._handle_close`` (a command ending)
answers them through that same call: the one thread that could finish the key exchange waits
for it.  The connection stalls for 30 s (``clear_to_send_timeout``) and dies with
"Key-exchange timed out waiting for key negotiation" (paramiko issue #822, open).  It happened
here on the second 1 GB stream through one connection: the stream's last bytes crossed the
limit as the command ended.  tests/transport/test_ssh.py repeats it.

A key exchange the server starts is safe: after its ``KEXINIT`` it sends nothing else until
``NEWKEYS``.  So the client re-keys at OpenSSH's own limit for 16-byte-block ciphers
(``ssh_set_newkeys``, packet.c: 2**32 blocks, 64 GiB; ``MAX_PACKETS`` 2**31), and the server
re-keys whenever its ``RekeyLimit`` says.  Every cipher paramiko offers here (AES) has
16-byte blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import paramiko

__all__ = ["REKEY_BYTES", "REKEY_PACKETS", "TunedTransport", "tuned_transport"]

REKEY_BYTES = 1 << 36
REKEY_PACKETS = 1 << 31
GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
NOT_OFFERED = ("3des-cbc",)
_PARAMIKO_ORDER: tuple[str, ...] = tuple(
    paramiko.Transport._preferred_ciphers)  # type: ignore[attr-defined]  # not in the stubs


class TunedTransport(paramiko.Transport):
    """paramiko's Transport with AES-GCM first and OpenSSH's re-key limits, both above
    (``SSHClient.connect``'s transport_factory). Ciphers this paramiko does not know are left
    out, never offered by name alone."""

    _preferred_ciphers = tuple(
        [c for c in GCM if c in _PARAMIKO_ORDER]
        + [c for c in _PARAMIKO_ORDER if c not in GCM and c not in NOT_OFFERED])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # paramiko reads the limits off the packetizer instance
        self.packetizer.REKEY_BYTES = REKEY_BYTES
        self.packetizer.REKEY_PACKETS = REKEY_PACKETS


def tuned_transport(sock: Any, /, *, gss_kex: bool = False, gss_deleg_creds: bool = True,
                    disabled_algorithms: Mapping[str, Iterable[str]] | None = None
                    ) -> paramiko.Transport:
    """``SSHClient.connect``'s transport_factory (GSS-API is never asked for here)."""
    return TunedTransport(sock, disabled_algorithms=disabled_algorithms)


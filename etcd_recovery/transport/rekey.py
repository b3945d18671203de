"""Re-keying as OpenSSH does it, so that paramiko never starts a key exchange mid-stream.

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

import paramiko

__all__ = ["REKEY_BYTES", "REKEY_PACKETS", "rekey_like_openssh"]

REKEY_BYTES = 1 << 36
REKEY_PACKETS = 1 << 31


def rekey_like_openssh(transport: paramiko.Transport) -> None:
    """Raise ``transport``'s re-key limits to OpenSSH's (paramiko reads them off the
    packetizer instance)."""
    transport.packetizer.REKEY_BYTES = REKEY_BYTES
    transport.packetizer.REKEY_PACKETS = REKEY_PACKETS

"""Protocol buffer fields encoded by hand, independently of the protobuf library: the
tests build records with these and check that the generated decoders read them as etcd's
Go code does (varint: encoding/binary's Uvarint; a length-delimited field: wire type 2)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def f_bytes(num: int, value: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(value)) + value

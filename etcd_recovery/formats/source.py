"""Random-access byte sources the format readers read from."""

from __future__ import annotations

import os
from typing import Protocol


class ByteSource(Protocol):
    """A read-only file that supports reads at any offset.

    ``name`` is what error messages call the file (e.g. ``etcd-1:/var/lib/etcd/member/snap/db``).
    ``read`` returns at most ``length`` bytes; fewer only at end of file.
    """

    @property
    def name(self) -> str: ...

    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class BytesSource:
    """A ByteSource over bytes in memory (tests, small files)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = data
        self._name = name
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return self._name

    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        chunk = self._data[offset:offset + length]
        self.bytes_read += len(chunk)
        return chunk


class FileSource:
    """A ByteSource over a local file; counts the bytes it reads."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self._path = os.fspath(path)
        self._name = name or self._path
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return self._name

    def size(self) -> int:
        return os.stat(self._path).st_size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        with open(self._path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(length)
        self.bytes_read += len(chunk)
        return chunk

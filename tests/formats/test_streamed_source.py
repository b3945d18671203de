"""StreamedSource: a file read from its start onwards through one stream (a ``cat`` over SSH),
with the file's random-access reader for every other read. Whatever the reads and however the
stream cuts its blocks, every read returns the file's bytes at that offset; the forward reads
of a WAL cost the random-access reader nothing; a reader that stops early ends the stream."""

from __future__ import annotations

import signal
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_recovery.formats.source import STREAM_SKIP_MAX, BytesSource, StreamedSource
from etcd_recovery.formats.wal import (
    CRC_TYPE,
    ENTRY_TYPE,
    METADATA_TYPE,
    SEGMENT_SIZE_BYTES,
    crc32c,
    crc32c_update,
    read_wal,
)
from tests.formats.conftest import RunFactory
from tests.formats.realetcd import ROLES
from tests.formats.test_wal import comparable, frame, single_wal
from tests.formats.wire import f_bytes, f_varint


class Stream:
    """A stream of ``data`` in blocks of the given sizes (cycled); says how far it got and
    whether it was closed."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = sizes
        self.opened = 0
        self.sent = 0
        self.closed = False

    def __call__(self) -> Iterator[bytes]:
        self.opened += 1
        return self._blocks()

    def _blocks(self) -> Iterator[bytes]:
        try:
            i = 0
            while self.sent < len(self.data):
                n = self.sizes[i % len(self.sizes)]
                i += 1
                block = self.data[self.sent:self.sent + n]
                self.sent += len(block)
                yield block
        finally:
            self.closed = True


reads = st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 700)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2500), sizes=st.lists(st.integers(1, 900), min_size=1,
                                                      max_size=5), asked=reads,
       forward=st.booleans())
def test_every_read_is_the_files_bytes(data: bytes, sizes: list[int],
                                       asked: list[tuple[int, int]], forward: bool) -> None:
    if forward:     # the WAL reader's pattern: each read at or after where the last ended
        at, seq = 0, []
        for gap, n in asked:
            at += gap // 10
            seq.append((at, n))
            at += n
        asked = seq
    random = BytesSource(data, "etcd-1:/w.wal")
    src = StreamedSource(random, Stream(data, sizes))
    for off, n in asked:
        assert src.read(off, n) == data[off:off + n], (off, n)
    assert src.bytes_read == sum(len(data[o:o + n]) for o, n in asked)
    if forward:
        assert random.bytes_read == 0      # all of it from the stream
    assert src.name == "etcd-1:/w.wal" and src.size() == len(data)


def test_a_read_behind_or_far_ahead_goes_to_the_random_reader() -> None:
    data = bytes(range(256)) * (STREAM_SKIP_MAX // 128)
    random = BytesSource(data, "f")
    stream = Stream(data, [4096])
    src = StreamedSource(random, stream)
    assert src.read(STREAM_SKIP_MAX + 10, 5) == data[STREAM_SKIP_MAX + 10:][:5]
    assert stream.opened == 0 and random.bytes_read == 5    # not worth a stream
    assert src.read(100, 50) == data[100:150] and stream.opened == 1
    assert src.read(0, 10) == data[:10] and random.bytes_read == 15     # behind: random
    assert src.read(150, 10) == data[150:160] and src.streamed == 60


def test_close_ends_the_stream_and_later_reads_still_answer() -> None:
    data = bytes(1 << 20)
    stream = Stream(data, [65536])
    src = StreamedSource(BytesSource(data), stream)
    assert src.read(0, 100) == bytes(100)
    src.close()
    assert stream.closed and stream.sent == 65536
    assert src.read(100, 10) == bytes(10) and stream.opened == 1


def test_a_preallocated_wal_is_read_through_its_records_only() -> None:
    """The last WAL file is 64 MiB, mostly zeros: the reader stops at the first zero length
    word, and the caller's close stops the stream there, a few blocks in."""
    meta = f_varint(1, 0xABC) + f_varint(2, 0xDEF)
    crc = crc32c(meta)
    data = frame(CRC_TYPE, 0, b"") + frame(METADATA_TYPE, crc, meta)
    for i in range(1, 200):
        ent = f_varint(2, 1) + f_varint(3, i) + f_bytes(4, b"v" * 1000)
        crc = crc32c_update(crc, ent)
        data += frame(ENTRY_TYPE, crc, ent)
    whole = data + bytes(SEGMENT_SIZE_BYTES - len(data))
    random = BytesSource(whole, "0.wal")
    stream = Stream(whole, [1 << 20])
    src = StreamedSource(random, stream)
    ws = read_wal([src])
    src.close()
    assert ws.last_index == 199 and ws.end_offset == len(data)
    assert random.bytes_read == 0 and stream.closed
    assert stream.sent <= 2 << 20


def test_a_real_wal_reads_the_same_streamed(real_run: RunFactory) -> None:
    """etcd's own WAL (the newest build, killed): the state read through a stream in odd
    block sizes is the state read at random."""
    raw = single_wal(real_run(ROLES[-1], signal.SIGKILL)).read_bytes()
    random = BytesSource(raw, "0.wal")
    streamed = StreamedSource(random, Stream(raw, [7, 65536, 1000, 1 << 20]))
    got = read_wal([streamed])
    streamed.close()
    assert comparable(got) == comparable(read_wal([BytesSource(raw, "0.wal")]))
    assert got.last_index > 0 and random.bytes_read == 0

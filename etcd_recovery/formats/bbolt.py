"""A random-access reader for bbolt database files (etcd's ``member/snap/db``).

Only the pages on the path to what is asked for are read, a page at a time, so the
cost of a lookup is O(tree depth) pages whatever the size of the file: this matters
when the file is read over SFTP.

On-disk layout (bbolt ``internal/common``; all integers little-endian):

* page header, 16 bytes: ``id u64, flags u16, count u16, overflow u32``; a page and
  its ``overflow`` following pages form one contiguous block.
* meta (pages 0 and 1, after the header): ``magic u32 (0xED0CDAED), version u32 (2),
  pageSize u32, flags u32, root bucket {root pgid u64, sequence u64}, freelist pgid u64,
  pgid u64 (high water mark), txid u64, checksum u64``; the checksum is FNV-1a 64 over
  the 56 bytes before it. The valid meta with the highest txid is the current one.
* branch page (flags 0x01): ``count`` elements ``pos u32, ksize u32, pgid u64``.
* leaf page (flags 0x02): ``count`` elements ``flags u32, pos u32, ksize u32, vsize u32``;
  element flag 0x01 marks a nested bucket. In both kinds ``pos`` counts from the start of
  the element itself; a leaf's value follows its key.
* a bucket value is ``root pgid u64, sequence u64``; root 0 means an inline bucket whose
  (leaf) page follows those 16 bytes inside the value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from etcd_recovery.errors import FormatError
from etcd_recovery.formats.source import ByteSource

MAGIC = 0xED0CDAED
VERSION = 2

PAGE_HEADER_SIZE = 16
META_SIZE = 64
META_CHECKSUMMED = 56
ELEMENT_SIZE = 16  # branch and leaf elements are both 16 bytes
BUCKET_HEADER_SIZE = 16

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10

BUCKET_LEAF_FLAG = 0x01

NO_FREELIST = 0xFFFF_FFFF_FFFF_FFFF

MAX_DEPTH = 64
MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 1 << 24
FIRST_READ = 4096
MAX_PAGE_BYTES = 64 << 20  # one page with its overflow: refuse to read more than this

_PAGE_HEADER = struct.Struct("<QHHI")
_META = struct.Struct("<IIIIQQQQQQ")
_BRANCH_ELEM = struct.Struct("<IIQ")
_LEAF_ELEM = struct.Struct("<IIII")
_BUCKET = struct.Struct("<QQ")

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF

_CACHE_BUDGET = 8 << 20  # bytes of page data kept per open database


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64-bit hash, as bbolt uses for the meta checksum."""
    h = _FNV64_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV64_PRIME) & _MASK64
    return h


@dataclass(frozen=True)
class Meta:
    """One decoded meta page."""

    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int
    txid: int
    checksum: int
    page: int  # which meta page (0 or 1) it came from


def parse_meta(buf: bytes, page: int) -> tuple[Meta | None, str]:
    """Decode a meta page (header included); returns (meta, "") or (None, why invalid)."""
    need = PAGE_HEADER_SIZE + META_SIZE
    if len(buf) < need:
        return None, f"meta page {page} truncated ({len(buf)} of {need} bytes)"
    (magic, version, page_size, flags, root, sequence, freelist, pgid, txid,
     checksum) = _META.unpack_from(buf, PAGE_HEADER_SIZE)
    if magic != MAGIC:
        return None, f"meta page {page}: bad magic {magic:#010x}"
    if version != VERSION:
        return None, f"meta page {page}: unsupported version {version}"
    body = buf[PAGE_HEADER_SIZE:PAGE_HEADER_SIZE + META_CHECKSUMMED]
    if fnv1a64(body) != checksum:
        return None, f"meta page {page}: checksum mismatch"
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        return None, f"meta page {page}: implausible page size {page_size}"
    if not 2 <= root < pgid:
        return None, f"meta page {page}: root page {root} outside [2, {pgid})"
    if freelist != NO_FREELIST and not 2 <= freelist < pgid:
        return None, f"meta page {page}: freelist page {freelist} outside [2, {pgid})"
    return Meta(page_size=page_size, flags=flags, root=root, sequence=sequence,
                freelist=freelist, pgid=pgid, txid=txid, checksum=checksum, page=page), ""


@dataclass(frozen=True)
class _Page:
    """A branch or leaf page (with its overflow), or an inline bucket's page."""

    data: bytes  # starts at the page header
    offset: int  # file offset of data[0], for error messages
    pgid: int  # 0 for an inline page
    flags: int
    count: int


@dataclass(frozen=True)
class Entry:
    """One leaf element: a key with its value, or a nested bucket's header."""

    key: bytes
    value: bytes
    flags: int
    value_offset: int  # file offset of the value (for error messages)

    @property
    def is_bucket(self) -> bool:
        return bool(self.flags & BUCKET_LEAF_FLAG)


def _validate_id_range(file: str, offset: int, pgid: int, hwm: int) -> None:
    if not 2 <= pgid < hwm:
        raise FormatError(file, offset, f"page id {pgid} outside [2, {hwm})")


class BoltDB:
    """An open bbolt file: the chosen meta page plus page reads with validation."""

    def __init__(self, src: ByteSource, meta: Meta, other_meta_error: str | None,
                 file_size: int, bytes_read: int) -> None:
        self._src = src
        self.meta = meta
        self.other_meta_error = other_meta_error
        self.file_size = file_size
        self.bytes_read = bytes_read
        self.pages_read = 0
        self._cache: dict[int, _Page] = {}
        self._cache_bytes = 0

    @property
    def name(self) -> str:
        return self._src.name

    def _read(self, offset: int, length: int) -> bytes:
        data = _read(self._src, offset, length)
        self.bytes_read += len(data)
        return data

    def error(self, offset: int, message: str) -> FormatError:
        return FormatError(self._src.name, offset, message)

    def page(self, pgid: int, offset_of_ref: int) -> _Page:
        """Read the branch or leaf page ``pgid`` (and its overflow pages), validated."""
        cached = self._cache.get(pgid)
        if cached is not None:
            return cached
        ps = self.meta.page_size
        _validate_id_range(self.name, offset_of_ref, pgid, self.meta.pgid)
        start = pgid * ps
        if start + ps > self.file_size:
            raise self.error(start, f"page {pgid} lies past the end of the file "
                                    f"({self.file_size} bytes)")
        first = self._read(start, ps)
        self.pages_read += 1
        if len(first) < ps:
            raise self.error(start, f"page {pgid} truncated: {len(first)} of {ps} bytes")
        pid, flags, count, overflow = _PAGE_HEADER.unpack_from(first, 0)
        if pid != pgid:
            raise self.error(start, f"page {pgid} says it is page {pid}")
        if flags not in (BRANCH_PAGE, LEAF_PAGE):
            raise self.error(start + 8, f"page {pgid} has flags {flags:#x}, "
                                        "expected a branch or leaf page")
        if overflow:
            if (overflow + 1) * ps > MAX_PAGE_BYTES:
                raise self.error(start + 12, f"page {pgid} overflow {overflow} makes it "
                                             f"larger than {MAX_PAGE_BYTES} bytes")
            if pgid + overflow >= self.meta.pgid:
                raise self.error(start + 12, f"page {pgid} overflow {overflow} runs past the "
                                             f"high water mark {self.meta.pgid}")
            end = start + (overflow + 1) * ps
            if end > self.file_size:
                raise self.error(start + 12, f"page {pgid} overflow {overflow} runs past the "
                                             f"end of the file ({self.file_size} bytes)")
            rest = self._read(start + ps, overflow * ps)
            self.pages_read += overflow
            if len(rest) < overflow * ps:
                raise self.error(start + ps, f"page {pgid} overflow truncated")
            data = first + rest
        else:
            data = first
        page = _Page(data=data, offset=start, pgid=pgid, flags=flags, count=count)
        self._check_element_table(page)
        if self._cache_bytes + len(data) <= _CACHE_BUDGET:
            self._cache[pgid] = page
            self._cache_bytes += len(data)
        return page

    def inline_page(self, value: bytes, value_offset: int) -> _Page:
        """The leaf page stored inside an inline bucket's value."""
        data = value[BUCKET_HEADER_SIZE:]
        offset = value_offset + BUCKET_HEADER_SIZE
        if len(data) < PAGE_HEADER_SIZE:
            raise self.error(offset, f"inline bucket page truncated ({len(data)} bytes)")
        _pid, flags, count, _overflow = _PAGE_HEADER.unpack_from(data, 0)
        if flags != LEAF_PAGE:
            raise self.error(offset + 8, f"inline bucket page has flags {flags:#x}, "
                                         "expected a leaf page")
        page = _Page(data=data, offset=offset, pgid=0, flags=flags, count=count)
        self._check_element_table(page)
        return page

    def _check_element_table(self, page: _Page) -> None:
        table_end = PAGE_HEADER_SIZE + page.count * ELEMENT_SIZE
        if table_end > len(page.data):
            raise self.error(page.offset + 10, f"{_describe(page)}: {page.count} elements "
                                               f"do not fit in {len(page.data)} bytes")
        if page.flags == BRANCH_PAGE and page.count == 0:
            raise self.error(page.offset + 10, f"{_describe(page)}: branch page is empty")

    def branch_key(self, page: _Page, i: int) -> bytes:
        eoff = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        pos, ksize, _child = _BRANCH_ELEM.unpack_from(page.data, eoff)
        start = eoff + pos
        if start + ksize > len(page.data):
            raise self.error(page.offset + eoff, f"{_describe(page)}: branch element {i} "
                                                 "key lies outside the page")
        return page.data[start:start + ksize]

    def branch_child(self, page: _Page, i: int) -> tuple[int, int]:
        """Child page id of branch element ``i`` and the file offset of that field."""
        eoff = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        _pos, _ksize, child = _BRANCH_ELEM.unpack_from(page.data, eoff)
        return child, page.offset + eoff + 8

    def leaf(self, page: _Page, i: int) -> Entry:
        eoff = PAGE_HEADER_SIZE + i * ELEMENT_SIZE
        flags, pos, ksize, vsize = _LEAF_ELEM.unpack_from(page.data, eoff)
        start = eoff + pos
        end = start + ksize + vsize
        if end > len(page.data):
            raise self.error(page.offset + eoff, f"{_describe(page)}: leaf element {i} "
                                                 "key/value lies outside the page")
        key = page.data[start:start + ksize]
        value = page.data[start + ksize:end]
        return Entry(key=key, value=value, flags=flags,
                     value_offset=page.offset + start + ksize)

    def leaf_tuples(self, page: _Page) -> Iterator[tuple[bytes, bytes, int, int]]:
        """Every element of a leaf page as ``(key, value, flags, value_offset)``, checked as
        :meth:`leaf` checks one."""
        data = page.data
        n = len(data)
        table = data[PAGE_HEADER_SIZE:PAGE_HEADER_SIZE + page.count * ELEMENT_SIZE]
        eoff = PAGE_HEADER_SIZE
        for flags, pos, ksize, vsize in _LEAF_ELEM.iter_unpack(table):
            start = eoff + pos
            mid = start + ksize
            end = mid + vsize
            if end > n:
                i = (eoff - PAGE_HEADER_SIZE) // ELEMENT_SIZE
                raise self.error(page.offset + eoff, f"{_describe(page)}: leaf element {i} "
                                                     "key/value lies outside the page")
            yield data[start:mid], data[mid:end], flags, page.offset + mid
            eoff += ELEMENT_SIZE

    def root_bucket(self) -> Bucket:
        return Bucket(self, b"", root=self.meta.root, sequence=self.meta.sequence,
                      inline=None, ref_offset=self.meta.page * self.meta.page_size + 32)

    def bucket(self, name: bytes) -> Bucket | None:
        """A top-level bucket by name, or None if there is none."""
        return self.root_bucket().bucket(name)


def _describe(page: _Page) -> str:
    return f"page {page.pgid}" if page.pgid else "inline bucket page"


class Bucket:
    """A bucket: lookups descend from its root page; nothing is read in advance."""

    def __init__(self, db: BoltDB, name: bytes, root: int, sequence: int,
                 inline: _Page | None, ref_offset: int) -> None:
        self._db = db
        self.name = name
        self.root = root
        self.sequence = sequence
        self._inline = inline
        self._ref_offset = ref_offset

    def _root_page(self) -> _Page:
        if self._inline is not None:
            return self._inline
        return self._db.page(self.root, self._ref_offset)

    def _descend(self, choose: Callable[[_Page], int]) -> _Page:
        """Walk from the root to a leaf, taking branch element ``choose(page)`` each time."""
        page = self._root_page()
        path = {page.pgid}
        depth = 0
        while page.flags == BRANCH_PAGE:
            depth += 1
            if depth > MAX_DEPTH:
                raise self._db.error(page.offset, f"tree deeper than {MAX_DEPTH} pages")
            child, ref = self._db.branch_child(page, choose(page))
            if child in path:
                raise self._db.error(ref, f"page {child} refers back to itself (cycle)")
            path.add(child)
            page = self._db.page(child, ref)
        if page.count == 0 and depth > 0:
            raise self._db.error(page.offset + 10, f"{_describe(page)}: empty leaf page "
                                                   "below a branch page")
        return page

    def depth(self) -> int:
        """Number of pages from the root to a leaf (1 for a single leaf page)."""
        depth = 1
        page = self._root_page()
        seen = {page.pgid}
        while page.flags == BRANCH_PAGE:
            depth += 1
            if depth > MAX_DEPTH:
                raise self._db.error(page.offset, f"tree deeper than {MAX_DEPTH} pages")
            child, ref = self._db.branch_child(page, 0)
            if child in seen:
                raise self._db.error(ref, f"page {child} refers back to itself (cycle)")
            seen.add(child)
            page = self._db.page(child, ref)
        return depth

    def _find_leaf(self, key: bytes) -> tuple[_Page, int]:
        """The leaf page that would hold ``key`` and the index of the first element >= key."""
        def choose(page: _Page) -> int:
            # Last element whose key is <= key (element 0 if key is below them all).
            lo, hi = 0, page.count
            while lo < hi:
                mid = (lo + hi) // 2
                if self._db.branch_key(page, mid) <= key:
                    lo = mid + 1
                else:
                    hi = mid
            return max(lo - 1, 0)

        page = self._descend(choose)
        lo, hi = 0, page.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._db.leaf(page, mid).key < key:
                lo = mid + 1
            else:
                hi = mid
        return page, lo

    def entry(self, key: bytes) -> Entry | None:
        """The leaf element for ``key`` (plain value or nested bucket), or None."""
        page, i = self._find_leaf(key)
        if i >= page.count:
            return None
        leaf = self._db.leaf(page, i)
        return leaf if leaf.key == key else None

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``; None if absent or if ``key`` names a bucket."""
        leaf = self.entry(key)
        if leaf is None or leaf.is_bucket:
            return None
        return leaf.value

    def bucket(self, name: bytes) -> Bucket | None:
        """The nested bucket ``name``, or None if absent or a plain key."""
        leaf = self.entry(name)
        if leaf is None or not leaf.is_bucket:
            return None
        if len(leaf.value) < BUCKET_HEADER_SIZE:
            raise self._db.error(leaf.value_offset, f"bucket {name!r}: value of "
                                                    f"{len(leaf.value)} bytes is too short")
        root, sequence = _BUCKET.unpack_from(leaf.value, 0)
        inline = self._db.inline_page(leaf.value, leaf.value_offset) if root == 0 else None
        return Bucket(self._db, name, root=root, sequence=sequence, inline=inline,
                      ref_offset=leaf.value_offset)

    def first_entry(self) -> Entry | None:
        """The element with the smallest key (walks the leftmost path only)."""
        page = self._descend(lambda _page: 0)
        return self._db.leaf(page, 0) if page.count else None

    def last_entry(self) -> Entry | None:
        """The element with the largest key (walks the rightmost path only)."""
        page = self._descend(lambda p: p.count - 1)
        return self._db.leaf(page, page.count - 1) if page.count else None

    def first(self) -> tuple[bytes, bytes] | None:
        """The smallest key and its value."""
        leaf = self.first_entry()
        return None if leaf is None else (leaf.key, leaf.value)

    def last(self) -> tuple[bytes, bytes] | None:
        """The largest key and its value."""
        leaf = self.last_entry()
        return None if leaf is None else (leaf.key, leaf.value)

    def items(self, limit: int) -> Iterator[tuple[bytes, bytes]]:
        """All (key, value) pairs in key order, for buckets known to be small.

        Raises FormatError once more than ``limit`` entries turn up. For a nested bucket
        the value is its raw bucket header (open it with :meth:`bucket`).
        """
        for leaf in self.entries(limit):
            yield leaf.key, leaf.value

    def entries(self, limit: int) -> Iterator[Entry]:
        """All elements in key order; FormatError once more than ``limit`` turn up."""
        db = self._db
        produced = 0
        for page in self._leaf_pages(limit):
            for j in range(page.count):
                leaf = db.leaf(page, j)
                if produced >= limit:
                    raise db.error(page.offset, f"bucket {self.name!r} has more than "
                                                f"{limit} entries")
                produced += 1
                yield leaf

    def raw_entries(self, limit: int) -> Iterator[tuple[bytes, bytes, int, int]]:
        """What :meth:`entries` yields, as ``(key, value, flags, value_offset)`` tuples.

        For walks over every element of a big bucket (a snapshot's status): no Entry is made
        per element. FormatError once more than ``limit`` turn up (a whole page at a time).
        """
        db = self._db
        produced = 0
        for page in self._leaf_pages(limit):
            produced += page.count
            if produced > limit:
                raise db.error(page.offset, f"bucket {self.name!r} has more than "
                                            f"{limit} entries")
            yield from db.leaf_tuples(page)

    def _leaf_pages(self, limit: int) -> Iterator[_Page]:
        """The leaf pages in key order, walked depth first (cycles and depth checked; no
        more pages than ``limit`` entries can need)."""
        db = self._db
        root = self._root_page()
        page_budget = 2 * limit + 2 * MAX_DEPTH
        seen = {root.pgid}
        stack: list[tuple[_Page, int]] = [(root, 0)]
        while stack:
            page, i = stack.pop()
            if page.flags == LEAF_PAGE:
                yield page
                continue
            if i >= page.count:
                continue
            stack.append((page, i + 1))
            if len(stack) > MAX_DEPTH:
                raise db.error(page.offset, f"tree deeper than {MAX_DEPTH} pages")
            child, ref = db.branch_child(page, i)
            if child in seen:
                raise db.error(ref, f"page {child} is reachable twice (cycle)")
            seen.add(child)
            if len(seen) > page_budget:
                raise db.error(ref, f"bucket {self.name!r} spans more pages than "
                                    f"{limit} entries can need")
            stack.append((db.page(child, ref), 0))


def _read(src: ByteSource, offset: int, length: int) -> bytes:
    try:
        return src.read(offset, length)
    except OSError as exc:
        raise FormatError(src.name, offset, f"read of {length} bytes failed: {exc}") from exc


def _size(src: ByteSource) -> int:
    try:
        return src.size()
    except OSError as exc:
        raise FormatError(src.name, 0, f"cannot get the file size: {exc}") from exc


def open_db(src: ByteSource) -> BoltDB:
    """Read and choose the meta page; raises FormatError if neither meta page is valid."""
    size = _size(src)
    bytes_read = 0
    head = _read(src, 0, FIRST_READ)
    bytes_read += len(head)
    if len(head) < PAGE_HEADER_SIZE + META_SIZE:
        raise FormatError(src.name, 0, f"file too short for a bbolt database "
                                       f"({size} bytes)")
    meta0, why0 = parse_meta(head, 0)
    meta1: Meta | None = None
    why1 = ""
    if meta0 is not None:
        ps = meta0.page_size
        if ps + PAGE_HEADER_SIZE + META_SIZE <= len(head):
            buf = head[ps:ps + PAGE_HEADER_SIZE + META_SIZE]
        else:
            buf = _read(src, ps, ps)  # the whole page: remote reads go a page at a time
            bytes_read += len(buf)
        meta1, why1 = parse_meta(buf, 1)
        if meta1 is not None and meta1.page_size != ps:
            why1 = f"meta page 1: page size {meta1.page_size} differs from meta page 0 ({ps})"
            meta1 = None
    else:
        # Page size unknown: try where page 1 would start for each plausible size.
        why1 = "meta page 1: not found at any plausible page size"
        ps = MIN_PAGE_SIZE
        while ps <= MAX_PAGE_SIZE and ps + PAGE_HEADER_SIZE + META_SIZE <= size:
            if ps + PAGE_HEADER_SIZE + META_SIZE <= len(head):
                buf = head[ps:ps + PAGE_HEADER_SIZE + META_SIZE]
            else:
                buf = _read(src, ps, FIRST_READ)
                bytes_read += len(buf)
            candidate, _why = parse_meta(buf, 1)
            if candidate is not None and candidate.page_size == ps:
                meta1, why1 = candidate, ""
                break
            ps *= 2
    if meta0 is None and meta1 is None:
        raise FormatError(src.name, 0, f"no valid meta page: {why0}; {why1}")
    if meta0 is not None and meta1 is not None:
        chosen, other = (meta1, None) if meta1.txid > meta0.txid else (meta0, None)
    elif meta0 is not None:
        chosen, other = meta0, why1
    else:
        assert meta1 is not None
        chosen, other = meta1, why0
    return BoltDB(src, chosen, other, size, bytes_read)

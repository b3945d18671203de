"""glibc malloc settings for a process that streams gigabytes through threads.

A run's sends, background steps and SSH connections each allocate 1 MiB blocks from their own
thread. glibc gives every thread an arena of its own (up to 8 per core) that keeps what was
freed in it, and raises its mmap threshold each time a large block is freed, so that the next
1 MiB blocks come from an arena too instead of from mmap (returned to the system at free).
Measured on a 5-member, 1 GB snapshot-method run: peak RSS 149-150 MiB with glibc's defaults,
109 MiB with two arenas and a fixed 256 KiB mmap threshold (mallopt(3): M_ARENA_MAX,
M_MMAP_THRESHOLD, which also turns the dynamic threshold off)."""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3   # <malloc.h>
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 256 * 1024


def tame_malloc() -> bool:
    """Apply the settings above; False where the C library has no mallopt (not glibc). Call
    it before threads start: an arena is bound to a thread at its first allocation."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))

"""The malloc settings a run starts with (memory.py), seen by their effect in glibc."""

from __future__ import annotations

import subprocess
import sys


def test_a_run_starts_with_a_fixed_mmap_threshold() -> None:
    # In a process of its own: the settings are the process's. mallinfo2 cannot read them
    # back, so the test checks their effect: a 512 KiB block freed and taken again comes
    # from mmap (its address is page-aligned plus malloc's 16-byte header), which glibc's
    # dynamic threshold would have stopped after the first free.
    code = """
import ctypes
from etcd_recovery.memory import tame_malloc
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
assert tame_malloc()
for _ in range(3):
    p = libc.malloc(512 * 1024)
    print(p % 4096)
    libc.free(p)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["16", "16", "16"]

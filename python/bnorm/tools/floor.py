"""The benchmark's floor: the fastest plain copy of a tensor with the run's
thread count, timed right beside each case.

Two copies are timed and the faster one counts: ``numpy.copyto`` (one
thread) and a parallel memcpy that cuts the tensor into one contiguous piece
per thread, each copied by its own OpenMP thread with the C library's
``memcpy`` (``_copy.pyx``, a few compiled lines). Neither is a bnorm kernel.
Where the package was built without OpenMP, Python threads calling
``memmove`` through ctypes stand in; their start and join cost tens of
microseconds, which makes the floor of a tensor that a copy moves in ~100 us
(one in cache) several times too slow, so the benchmark says which copy it
timed. A copy moves the least data an elementwise pass can; how many
copies an op's floor is depends on what it must read and write (``copies``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import List, Optional

import numpy as np


try:
    from . import _copy
except ImportError:  # a source tree without the compiled helper
    _copy = None


class ParallelCopy:
    """dst[...] = src with `threads` threads, one contiguous piece each:
    OpenMP threads in compiled code when the package has them (``kind`` is
    "openmp"), else Python threads (the calling thread takes the first
    piece) that live as long as the object (``kind`` "python-threads");
    ``close()`` ends them."""

    def __init__(self, threads: int, compiled: bool = True):
        self.threads = max(1, int(threads))
        self._compiled = bool(compiled and _copy is not None and _copy.openmp)
        self.kind = "openmp" if self._compiled else "python-threads"
        self._workers: List[threading.Thread] = []
        self._stop = False
        if self._compiled:
            return
        self._start = threading.Barrier(self.threads)
        self._done = threading.Barrier(self.threads)
        self._pieces: List[tuple] = []
        self._workers = [threading.Thread(target=self._work, args=(k,), daemon=True)
                         for k in range(1, self.threads)]
        for t in self._workers:
            t.start()

    def _work(self, k: int) -> None:
        while True:
            self._start.wait()
            if self._stop:
                return
            dst, src, n = self._pieces[k]
            if n:
                ctypes.memmove(dst, src, n)
            self._done.wait()

    def __call__(self, dst: np.ndarray, src: np.ndarray) -> None:
        if dst.nbytes != src.nbytes or not (dst.flags.c_contiguous and src.flags.c_contiguous):
            raise ValueError("ParallelCopy needs two C-contiguous arrays of one size")
        if self._compiled:
            _copy.parallel_copy(dst, src, self.threads)
            return
        total = src.nbytes
        d, s = dst.ctypes.data, src.ctypes.data
        # pieces of whole cache lines, as even as that allows
        step = max(64, (-(-total // self.threads) + 63) // 64 * 64)
        pieces = []
        for k in range(self.threads):
            lo = min(total, k * step)
            hi = total if k == self.threads - 1 else min(total, lo + step)
            pieces.append((d + lo, s + lo, hi - lo))
        self._pieces = pieces
        if self.threads == 1:
            ctypes.memmove(*pieces[0])
            return
        self._start.wait()
        if pieces[0][2]:
            ctypes.memmove(*pieces[0])
        self._done.wait()

    def read(self, src: np.ndarray) -> int:
        """One pass over src that only reads it, on the same threads (the
        compiled copy only; returns the OR of its 8-byte words)."""
        if not self._compiled:
            raise RuntimeError("ParallelCopy.read needs the compiled helper (OpenMP)")
        return _copy.parallel_read(src, self.threads)

    def close(self) -> None:
        if self._workers and not self._stop:
            self._stop = True
            self._start.wait()
            for t in self._workers:
                t.join()


def last_level_cache_bytes() -> Optional[int]:
    """The size of the largest cache the system lists for CPU 0 (Linux
    sysfs), or None when it lists none."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    best = None
    try:
        entries = os.listdir(base)
    except OSError:
        return None
    for e in entries:
        if not e.startswith("index"):
            continue
        try:
            with open(os.path.join(base, e, "size")) as f:
                text = f.read().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        best = size if best is None else max(best, size)
    return best


def copies(op: str, rows_layout: bool, nbytes: int, llc: Optional[int]) -> float:
    """Copies of the tensor an op's floor is: inference reads x and writes y
    (1); training too, reading x a second time from cache, except a
    channels-last tensor larger than the last-level cache, whose statistics
    need every row before any output (1.5); backward reads x and dy and
    writes dx (1.5), both twice when channels-last and larger than the
    cache (2.5). ``op`` is "inference", "train fwd" or "backward"."""
    big = rows_layout and llc is not None and nbytes > llc
    if op == "inference":
        return 1.0
    if op == "train fwd":
        return 1.5 if big else 1.0
    if op == "backward":
        return 2.5 if big else 1.5
    raise ValueError(f"unknown op {op!r}")

"""An opt-in allocator setting for machines short of memory: ``spkadv protect|restore --low-memory``.

Streaming keeps what a command holds bounded by the block size, but glibc's allocator decides how
much of what was freed it keeps. By default its mmap threshold adapts: once a large block has been
freed, later allocations up to that size come from the heap, and freed heap is returned to the
system only above a trim threshold. Peak resident memory then varies between runs of the same file
(benchmarks/bench_stream.py measured 57-84 MiB above the loaded model for one 60 s file).

:func:`low_memory` fixes the mmap threshold (and the trim threshold) at ``threshold`` bytes: every
allocation above it is its own mapping, returned to the system as soon as it is freed. Measured on
the 2-core development VM (``benchmarks/bench_stream.py``, zero code): the peak drops to about
40 MiB and no longer moves between runs, at the cost of mapping and zeroing pages for every large
tensor, which makes the command about 1.5-2x slower. It changes nothing in the output.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 1 << 20  # bytes


def low_memory(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds at ``threshold`` bytes for this process.

    Returns True when the allocator took the setting, False where there is no glibc ``mallopt``
    (musl, macOS, Windows): the command then runs as usual. Raises ValueError for a threshold
    that is not a positive number of bytes.
    """
    if not isinstance(threshold, int) or threshold <= 0:
        raise ValueError(f"threshold {threshold!r}: give a positive number of bytes")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))

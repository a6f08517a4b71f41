"""``spkadv.base.allocator.low_memory``: freed large buffers go back to the system at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from spkadv.base import allocator

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from spkadv.base import allocator

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    took = allocator.low_memory() if sys.argv[1] == "low" else None
    base = rss_mib()
    a = np.ones(5 << 20, dtype=np.float32); del a  # 20 MiB: raises glibc's adaptive threshold
    b = np.ones(5 << 19, dtype=np.float32); del b  # 10 MiB from the heap unless the threshold is fixed
    c = [np.ones(3 << 18, dtype=np.float32) for _ in range(4)]; del c
    print(took, rss_mib() - base)
    """
)


def _kept_mib(mode: str) -> tuple[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_low_memory_returns_freed_buffers_to_the_system() -> None:
    took, kept = _kept_mib("low")
    if took != "True":
        pytest.skip("no glibc mallopt on this system")
    assert kept < 3.0  # MiB still resident after freeing 20 + 10 + 9 MiB


def test_bad_threshold_is_refused() -> None:
    for bad in (0, -5, 1.5):
        with pytest.raises(ValueError, match="positive number of bytes"):
            allocator.low_memory(bad)

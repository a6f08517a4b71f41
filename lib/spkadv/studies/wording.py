"""Words for the studies' generated conclusions: numbers and comparisons as text.

A study's conclusion is built from its run's numbers (never typed), so it reads true on every
profile; these helpers choose the words ("raised", "lowered", "unchanged") from the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

# Differences of a mean cosine similarity below this are read as no change (the subsets' cosines
# move by about this much between runs of one setting).
COS_TOLERANCE = 1e-3


def change(delta: float, tolerance: float = 0.0, up: str = "raised", down: str = "lowered") -> str:
    """``up`` for a positive ``delta``, ``down`` for a negative one, ``"left unchanged"`` within
    ``tolerance`` (or where ``delta`` is not a number)."""
    if not math.isfinite(delta) or abs(delta) <= tolerance:
        return "left unchanged"
    return up if delta > 0 else down


def times(a: float, b: float, digits: int = 2) -> str:
    """``a / b`` as ``"1.53×"``; ``"unbounded"`` where ``b`` is 0 and ``a`` is not."""
    if b == 0:
        return "unbounded" if a != 0 else "1×"
    return f"{a / b:.{digits}f}×"


def signed(value: float, digits: int) -> str:
    """``value`` with its sign, e.g. ``"+0.020"``; a value that rounds to 0 is ``"+0.000"``, never
    ``"-0.000"``."""
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def spread(values: Iterable[float], digits: int = 2, unit: str = "") -> str:
    """``"mean (min-max)"`` of ``values``, e.g. ``"13.70 % (11.25-16.51)"``."""
    arr = np.asarray(list(values), dtype=float)
    return f"{arr.mean():.{digits}f}{unit} ({arr.min():.{digits}f}-{arr.max():.{digits}f})"


def listing(names: Iterable[str]) -> str:
    """``"a, b and c"``."""
    names = [str(n) for n in names]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def bullets(lines: Iterable[str]) -> str:
    """Markdown bullet list of the non-empty ``lines``."""
    return "\n".join(f"- {line}" for line in lines if line)

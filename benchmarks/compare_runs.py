"""Compare two finished pipeline runs of one profile: are their figures of merit, audio and figures
identical?

    python -m benchmarks.compare_runs RUN_A RUN_B [--figures-a DIR --figures-b DIR]

RUN_A and RUN_B are profile folders (``runs/<profile>``). Compared:

- every stage's ``metrics.json``, value by value (numbers must be equal, not close);
- every ``.wav`` below the stages, by its samples;
- every figure (``--figures-a`` / ``--figures-b``, e.g. ``figures/<profile>``), by its pixels
  (PNG metadata such as the writer's version is ignored);
- the tables (``*.csv``) written by the stages, by their text.

Timings (keys ending in ``_s``, ``seconds``, ``minutes`` or ``per_minute``, and the figures drawn
over wall-clock time, ``TIMED_FIGURES``) and paths differ between any two runs and are skipped. Prints one line per kind with the count compared and every difference; exits 1
when anything differs. Used to show that a refactoring left every result of the smoke pipeline
unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

SKIP_KEY_SUFFIXES = (
    "_s", "seconds", "minutes", "per_minute", "_path", "_dir", "commit", "started", "finished"
)  # fmt: skip
# figures whose x axis is wall-clock time (the attackers' learning curves over training minutes)
TIMED_FIGURES = frozenset({"attackers_learning_curve.png"})


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _skipped(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
    return leaf.endswith(SKIP_KEY_SUFFIXES)


def compare_metrics(a: Path, b: Path) -> tuple[int, list[str]]:
    """(values compared, differences) over every stage's metrics.json."""
    count, diffs = 0, []
    for path_a in sorted(a.glob("*/metrics.json")):
        rel = path_a.relative_to(a)
        path_b = b / rel
        if not path_b.is_file():
            diffs.append(f"{rel}: missing in B")
            continue
        flat_a = dict(_flatten(json.loads(path_a.read_text())))
        flat_b = dict(_flatten(json.loads(path_b.read_text())))
        for key in sorted(set(flat_a) | set(flat_b)):
            if _skipped(key):
                continue
            count += 1
            va, vb = flat_a.get(key, "<absent>"), flat_b.get(key, "<absent>")
            same = va == vb or (
                isinstance(va, float) and isinstance(vb, float) and np.isnan(va) and np.isnan(vb)
            )
            if not same:
                diffs.append(f"{rel} {key}: {va!r} != {vb!r}")
    return count, diffs


def compare_files(a: Path, b: Path, pattern: str, same) -> tuple[int, list[str]]:
    count, diffs = 0, []
    for path_a in sorted(a.rglob(pattern)):
        rel = path_a.relative_to(a)
        if (rel.parts and rel.parts[0] in {"cache", "report"}) or rel.name in TIMED_FIGURES:
            continue
        path_b = b / rel
        count += 1
        if not path_b.is_file():
            diffs.append(f"{rel}: missing in B")
        elif not same(path_a, path_b):
            diffs.append(f"{rel}: differs")
    return count, diffs


def same_audio(a: Path, b: Path) -> bool:
    xa, ra = sf.read(a, dtype="float64", always_2d=True)
    xb, rb = sf.read(b, dtype="float64", always_2d=True)
    return ra == rb and xa.shape == xb.shape and np.array_equal(xa, xb)


def same_pixels(a: Path, b: Path) -> bool:
    with Image.open(a) as ia, Image.open(b) as ib:
        return ia.size == ib.size and np.array_equal(np.asarray(ia), np.asarray(ib))


def same_text(a: Path, b: Path) -> bool:
    return a.read_text() == b.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--figures-a", type=Path)
    parser.add_argument("--figures-b", type=Path)
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not run.is_dir():
            parser.error(f"{run} is not a folder; give two runs/<profile> folders")
    results = {
        "metrics values": compare_metrics(args.run_a, args.run_b),
        "audio files": compare_files(args.run_a, args.run_b, "*.wav", same_audio),
        "csv tables": compare_files(args.run_a, args.run_b, "*.csv", same_text),
    }
    if args.figures_a and args.figures_b:
        results["figures"] = compare_files(args.figures_a, args.figures_b, "*.png", same_pixels)
    failed = False
    for kind, (count, diffs) in results.items():
        print(f"{kind}: {count} compared, {len(diffs)} different")
        for line in diffs[:50]:
            print(f"  {line}")
        failed |= bool(diffs)
    print("IDENTICAL" if not failed else "DIFFERENT")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

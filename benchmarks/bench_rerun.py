"""Item rerun: re-executing the table notebooks (40, 50) of the default profile with warm caches
against a cold run (target >= 10x). Runs when ``runs/default`` holds stages 00-30; otherwise the
figure is recorded as not measured, with the reason.

Both runs happen in a scratch copy, so nothing of the real runs or of the repository changes:
``runs/<profile>`` is mirrored as real folders holding symbolic links to its files (atomic
writes replace a link, never the file behind it), without the embedding/transcript cache and
without the outputs of 40 and 50 (cold); ``SPKADV_ROOT`` points at a scratch project root whose
``figures/`` is empty and whose other entries link to the repository. The cold run computes
every embedding and transcript; the warm run (``--force``, caches kept) is the rerun a user makes
after changing a table. Each run is a ``spkadv.run.pipeline`` process at the benchmark's priority.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

TABLE_STAGES = ("40_table1_eer", "50_table2_quality")
NEEDED = ("00_data_prep", "20_joint_training", "30_purification")
SKIPPED = ("cache", ".previous", ".pipeline.lock", "summary.json", *TABLE_STAGES)


def mirror(source: Path, dest: Path, skip: tuple[str, ...] = SKIPPED) -> int:
    """Real folders, symbolic links to files; returns the number of files linked."""
    count = 0
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name in skip:
            continue
        if entry.is_dir() and not entry.is_symlink():
            count += mirror(entry, dest / entry.name, ())
        else:
            (dest / entry.name).symlink_to(entry.resolve())
            count += 1
    return count


def scratch_root(tmp: Path) -> Path:
    """A project root whose ``figures/`` and ``runs/`` are scratch folders (the rest linked)."""
    from spkadv.base.config import project_root

    real, root = project_root(), tmp / "root"
    root.mkdir()
    for entry in real.iterdir():
        if entry.name not in ("figures", "runs", ".git"):
            (root / entry.name).symlink_to(entry)
    (root / "figures").mkdir()
    return root


def _run_stages(root: Path, runs: Path, profile: str) -> float:
    env = dict(os.environ, SPKADV_ROOT=str(root), SPKADV_RUNS=str(runs), TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "spkadv.run.pipeline", "--profile", profile, "--force"]
    for stage in TABLE_STAGES:
        cmd += ["--only", stage]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
    return time.perf_counter() - t0


def slowest_cells(profile_runs: Path, top: int = 5) -> list[str]:
    """The slowest code cells of the executed table notebooks (papermill's per-cell durations)."""
    cells = []
    for stage in TABLE_STAGES:
        executed = profile_runs / stage / f"{stage}.ipynb"
        if not executed.exists():
            continue
        for i, cell in enumerate(json.loads(executed.read_text(encoding="utf-8"))["cells"]):
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            if cell["cell_type"] == "code" and duration:
                first = "".join(cell["source"]).strip().splitlines()[0][:70]
                cells.append((duration, f"{stage} cell {i}: {duration:.1f} s: {first}"))
    return [text for _, text in sorted(cells, reverse=True)[:top]]


def table_rerun(profile: str) -> dict[str, Any]:
    """Cold and warm runs of the table notebooks of ``profile`` in a scratch copy."""
    from spkadv.base.config import notebooks_dir, runs_root

    source = runs_root() / profile
    missing = [s for s in TABLE_STAGES if not (notebooks_dir() / f"{s}.ipynb").exists()]
    if missing:
        raise common.Unavailable(f"notebooks {missing} are not in {notebooks_dir()} yet")
    absent = [s for s in NEEDED if not (source / s / "metrics.json").exists()]
    if absent:
        raise common.Unavailable(
            f"stages {absent} of the {profile} profile have not run in {source}: "
            f"python -m spkadv.run.pipeline --profile {profile}"
        )
    with tempfile.TemporaryDirectory(prefix="spkadv-bench-rerun-") as tmp:
        root = scratch_root(Path(tmp))
        runs = Path(tmp) / "runs"
        linked = mirror(source, runs / profile)
        cold = _run_stages(root, runs, profile)
        cold_cells = slowest_cells(runs / profile)
        warm = _run_stages(root, runs, profile)
        warm_cells = slowest_cells(runs / profile)
    return {
        "profile": profile,
        "stages": list(TABLE_STAGES),
        "files_linked": linked,
        "table_cold_seconds": cold,
        "table_warm_seconds": warm,
        "cold_slowest_cells": cold_cells,
        "warm_slowest_cells": warm_cells,
        "table_rerun_speedup": cold / warm,
    }


def run(quick: bool = False) -> dict[str, Any]:
    if quick:
        return {
            "table_rerun_speedup_default": None,
            "table_rerun_speedup_default_reason": "not measured in a quick run",
        }
    try:
        result = table_rerun("default")
    except (common.Unavailable, RuntimeError) as err:
        return {
            "table_rerun_speedup_default": None,
            "table_rerun_speedup_default_reason": str(err),
        }
    result["table_rerun_speedup_default"] = result["table_rerun_speedup"]
    return result

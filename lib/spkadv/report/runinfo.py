"""What the report reads from a run: its stages, their notebooks' titles and figures, versions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from spkadv.base import config

PACKAGES = (  # the versions table of the report
    "torch",
    "torchaudio",
    "speechbrain",
    "numpy",
    "scipy",
    "pesq",
    "faster-whisper",
    "openai-whisper",
    "soundfile",
    "papermill",
    "nbconvert",
    "latex2mathml",
    "jinja2",
)


def stage_notebook(stage_path: Path) -> Path | None:
    """A stage's executed notebook (or the failed one), or None when it has none."""
    for name in (f"{stage_path.name}.ipynb", f"{stage_path.name}.failed.ipynb"):
        if (stage_path / name).exists():
            return stage_path / name
    return None


def stages_of(root: Path, summary: Mapping[str, Any]) -> list[str]:
    """Every stage of the run: those in ``summary.json`` and any other ``NN_name`` folder."""
    found = set(summary.get("stages", {}))
    found |= {p.name for p in root.glob("[0-9][0-9]_*") if p.is_dir()}
    return sorted(found)


def _cell_source(cell: Mapping[str, Any]) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def notebook_intro(nb_path: Path | None) -> tuple[str, str]:
    """(title, opening paragraphs) of a notebook's first markdown cell."""
    if nb_path is None:
        return "", ""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            lines = _cell_source(cell).strip().splitlines()
            title = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
            paras = [p.strip() for p in "\n".join(lines[1:] if title else lines).split("\n\n")]
            intro = []
            for para in (p for p in paras if p):  # the opening paragraphs, about 600 characters
                intro.append(para)
                if sum(map(len, intro)) > 600 or len(intro) == 3:
                    break
            return title, "\n\n".join(intro)
    return "", ""


_SAVE_FIGURE = re.compile(r"save_figure\(\s*\w+\s*,\s*f?[\"']([^\"'{]+)")


def figure_prefixes(nb_path: Path | None) -> list[str]:
    """Names (or f-string prefixes) of the figures a notebook saves with ``save_figure``."""
    if nb_path is None:
        return []
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    code = "\n".join(_cell_source(c) for c in nb.get("cells", []) if c.get("cell_type") == "code")
    return _SAVE_FIGURE.findall(code)


def executed_at(nb_path: Path) -> str:
    """When papermill finished the notebook (ISO time, UTC), or ''."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return nb.get("metadata", {}).get("papermill", {}).get("end_time", "") or ""


def versions() -> dict[str, str]:
    """Python, the key packages and the code's git commit."""
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        root = str(config.project_root())
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        out["spkadv code (git)"] = (commit or "unknown") + (" with local changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["spkadv code (git)"] = "unknown"
    return out

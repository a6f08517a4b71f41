"""What the report reads from a run: its stages, their notebooks' titles and figures, versions."""

from __future__ import annotations

import hashlib
import json
import os
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
    state = git_state(config.project_root())
    out["spkadv code (git)"] = state["commit"] + (" with local changes" if state["dirty"] else "")
    return out


# the package's sources and its package data (pyproject's [tool.setuptools.package-data])
PACKAGE_SUFFIXES = frozenset({".py", ".json", ".txt", ".j2"})


def package_digest(root: Path) -> str:
    """A hash of the library: every source and package-data file under ``root``, by path and content.

    Compiled files (``__pycache__``) and hidden files are left out, so only an edit of the code or
    its data changes it.
    """
    files = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.suffix in PACKAGE_SUFFIXES
        and p.is_file()
        and not any(
            part == "__pycache__" or part.startswith(".") for part in p.relative_to(root).parts
        )
    )
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def git_state(root: Path) -> dict[str, Any]:
    """``{"commit": short hash or "unknown", "dirty": tracked files changed}`` of a checkout."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else False
    return {"commit": commit or "unknown", "dirty": dirty}


def machine() -> dict[str, Any]:
    """The CPU model, its vector extensions that matter here, and the usable cores."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    isa = "AMX" if "amx_tile" in flags else ("AVX-512" if "avx512f" in flags else "AVX2")
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {
        "cpu": f"{model or 'unknown CPU'} ({isa})" if flags else (model or "unknown CPU"),
        "cores": cores,
    }
